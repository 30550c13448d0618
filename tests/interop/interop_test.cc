// Interop: the real ferryd from gRPC clients that share no code with it.
//
// - The Python examples (examples/python), on stubs generated from proto/ at
//   test time by Debian's python3-grpc-tools: worker.py runs jobs submitted
//   with the ferry CLI and the C++ SDK, and submit.py submits jobs that the
//   real ferry-worker runs.
// - Server reflection and health, read with a generic stub: Debian 12 ships
//   no Python module and no .proto for either (no grpc_reflection, no
//   grpc_health, no reflection.proto or health.proto anywhere), so the few
//   fields involved are encoded and decoded here as plain protobuf wire
//   format (google::protobuf::UnknownFieldSet), as a client without the
//   .proto files would.
//
// - The Python examples with TLS and a token, against a FakeBroker that
//   checks them as ferryd does (tests/fake_broker.h).
//
// Waits are for events (a line printed, a process exit, a Wait RPC), each
// with a deadline; nothing sleeps for time to pass.

#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/unknown_field_set.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/e2e/subprocess.h"
#include "tests/fake_broker.h"
#include "tests/raw_call.h"
#include "tests/status_matchers.h"
#include "tests/temp_dir.h"
#include "tests/tls_certs.h"

namespace ferry::testing {
namespace {

using ::google::protobuf::UnknownField;
using ::google::protobuf::UnknownFieldSet;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::StartsWith;

// Debian's interpreter, which has python3-grpcio and python3-grpc-tools (a
// python3 earlier on PATH may not).
constexpr char kPython[] = "/usr/bin/python3";
constexpr char kExamples[] = FERRY_SOURCE_DIR "/examples/python";
constexpr absl::Duration kStartTimeout = absl::Seconds(30);
constexpr absl::Duration kJobTimeout = absl::Seconds(60);
constexpr absl::Duration kExitTimeout = absl::Seconds(30);

class InteropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FERRY_ASSERT_OK_AND_ASSIGN(
        ferryd_, StartFerryd(FERRYD_PATH, {"--db=" + Db()}, &address_));
    ClientOptions options;
    options.broker = address_;
    client_ = std::make_unique<Client>(options);
    // The stubs, generated as docs/protocol.md and the examples' README say.
    stubs_ = dir_.path() + "/stubs";
    std::filesystem::create_directories(stubs_);
    const std::string proto = FERRY_SOURCE_DIR "/proto";
    std::string output;
    FERRY_ASSERT_OK_AND_ASSIGN(
        int code,
        RunCommand(
            {kPython, "-m", "grpc_tools.protoc", "-I", proto,
             "--python_out=" + stubs_, "--grpc_python_out=" + stubs_,
             proto + "/ferry/v1/job.proto", proto + "/ferry/v1/jobs.proto",
             proto + "/ferry/v1/workers.proto"},
            {}, absl::Seconds(60), nullptr, &output));
    ASSERT_EQ(code, 0) << "generating the Python stubs failed (are "
                          "python3-grpc-tools and python3-pkg-resources "
                          "installed?):\n"
                       << output;
  }

  void TearDown() override {
    if (HasFailure() && ferryd_ != nullptr) {
      std::cerr << "ferryd's log:\n" << ferryd_->Output() << "\n";
    }
  }

  std::string Db() const { return dir_.path() + "/ferry.db"; }

  // Python with the generated stubs importable, writing no bytecode into
  // the source tree.
  Subprocess::Options PythonEnv() const {
    Subprocess::Options options;
    options.env = {"PYTHONPATH=" + stubs_, "PYTHONDONTWRITEBYTECODE=1"};
    return options;
  }

  // Starts examples/python/worker.py and waits until ferryd welcomed it.
  absl::StatusOr<std::unique_ptr<Subprocess>> StartPythonWorker(
      std::vector<std::string> args) {
    std::vector<std::string> argv = {
        kPython, absl::StrCat(kExamples, "/worker.py"), "--broker=" + address_};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<std::unique_ptr<Subprocess>> worker =
        Subprocess::Start(argv, PythonEnv());
    if (!worker.ok()) return worker.status();
    absl::Status connected =
        (*worker)->WaitForLine("worker: connected", kStartTimeout).status();
    if (!connected.ok()) return connected;
    return worker;
  }

  // Runs examples/python/submit.py to completion; its exit code.
  absl::StatusOr<int> RunSubmitPy(std::vector<std::string> args,
                                  std::string* out, std::string* all) {
    std::vector<std::string> argv = {
        kPython, absl::StrCat(kExamples, "/submit.py"), "--broker=" + address_};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, PythonEnv(), kJobTimeout + absl::Seconds(30), out,
                      all);
  }

  // The job once terminal (fails the test if it is not within kJobTimeout).
  v1::Job WaitForJob(const std::string& id) {
    absl::StatusOr<v1::WaitResponse> waited = client_->Wait(id, kJobTimeout);
    EXPECT_THAT(waited, IsOk());
    if (!waited.ok()) return v1::Job();
    EXPECT_TRUE(waited->done()) << "job " << id << " still "
                                << v1::JobState_Name(waited->job().state());
    return waited->job();
  }

  ScopedTempDir dir_;
  std::unique_ptr<Subprocess> ferryd_;
  std::string address_;
  std::unique_ptr<Client> client_;
  std::string stubs_;
};

TEST_F(InteropTest, PythonWorkerRunsJobsFromTheCliAndTheSdk) {
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subprocess> worker,
                             StartPythonWorker({"--queue=py", "--concurrency=2",
                                                "--worker-id=py-interop"}));

  // ferryd lists it with the identity from its Hello.
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<v1::WorkerInfo> workers,
                             client_->ListWorkers());
  ASSERT_THAT(workers, SizeIs(1));
  EXPECT_EQ(workers[0].worker_id(), "py-interop");
  EXPECT_EQ(workers[0].pid(), static_cast<uint32_t>(worker->pid()));
  EXPECT_THAT(workers[0].queues(), ElementsAre("py"));
  EXPECT_THAT(workers[0].version(), StartsWith("ferry-python-example"));
  EXPECT_EQ(workers[0].credits(), 2u);

  // The ferry CLI, waiting for the outcome: it prints the result.
  std::string out, all;
  FERRY_ASSERT_OK_AND_ASSIGN(
      int code,
      RunCommand({FERRY_PATH, "--broker", address_, "submit", "py", "--payload",
                  "from the cli", "--wait", "--wait-timeout", "60s"},
                 {}, kJobTimeout + absl::Seconds(30), &out, &all));
  EXPECT_EQ(code, 0) << all;
  EXPECT_EQ(out, "FROM THE CLI");

  // The ferry CLI without --wait prints the job's id.
  FERRY_ASSERT_OK_AND_ASSIGN(
      code, RunCommand({FERRY_PATH, "--broker", address_, "submit", "py",
                        "--kind", "cli", "--payload", "cli, no wait"},
                       {}, absl::Seconds(30), &out, &all));
  ASSERT_EQ(code, 0) << all;
  const std::string cli_id(absl::StripAsciiWhitespace(out));
  v1::Job cli_job = WaitForJob(cli_id);
  EXPECT_EQ(cli_job.state(), v1::JOB_STATE_SUCCEEDED) << cli_job.last_error();
  EXPECT_EQ(cli_job.result(), "CLI, NO WAIT");
  EXPECT_EQ(cli_job.kind(), "cli");
  EXPECT_EQ(cli_job.worker_id(), "py-interop");

  // The C++ SDK; payloads are bytes, not text, on both sides.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"one", "ONE"},
      {"Two words", "TWO WORDS"},
      {std::string("bin\0\xff\x80z", 7), std::string("BIN\0\xff\x80Z", 7)},
      {"", ""},
      {std::string(100000, 'q'), std::string(100000, 'Q')},
  };
  std::vector<std::string> ids;
  for (const auto& [payload, expected] : cases) {
    SubmitOptions options;
    options.queue = "py";
    options.kind = "sdk";
    options.payload = payload;
    FERRY_ASSERT_OK_AND_ASSIGN(SubmitResult submitted,
                               client_->Submit(options));
    ids.push_back(submitted.job.id());
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    v1::Job job = WaitForJob(ids[i]);
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.last_error();
    EXPECT_EQ(job.result(), cases[i].second) << "job " << ids[i];
    EXPECT_EQ(job.worker_id(), "py-interop");
    EXPECT_EQ(job.attempt(), 1u);
  }

  // SIGTERM: it reports what it ran, half-closes and exits 0, and ferryd
  // has let go of its session by then.
  worker->Signal(SIGTERM);
  FERRY_ASSERT_OK_AND_ASSIGN(code, worker->Wait(kExitTimeout));
  EXPECT_EQ(code, 0) << worker->Output();
  EXPECT_THAT(worker->Output(), HasSubstr("stopped after 7 job(s)"));
  EXPECT_THAT(worker->Output(), HasSubstr("stream closed"));
  FERRY_ASSERT_OK_AND_ASSIGN(workers, client_->ListWorkers());
  EXPECT_THAT(workers, SizeIs(0));

  // Now submit.py's jobs, on the same queue, are run by the real
  // ferry-worker with a shell command.
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> cxx_worker,
      Subprocess::Start({FERRY_WORKER_PATH, "--broker=" + address_,
                         "--queues=py", "--worker_id=cxx-interop", "--",
                         "/bin/sh", "-c", "printf sh:; tr a-z A-Z"}));
  absl::StatusOr<int> submitted =
      RunSubmitPy({"--queue=py", "--count=3", "--payload=python job {n}",
                   "--wait", "--timeout=60"},
                  &out, &all);
  ASSERT_THAT(submitted, IsOk()) << all << "\nferry-worker:\n"
                                 << cxx_worker->Output();
  EXPECT_EQ(*submitted, 0) << all << "\nferry-worker:\n"
                           << cxx_worker->Output();
  std::vector<std::string> lines =
      absl::StrSplit(out, '\n', absl::SkipWhitespace());
  ASSERT_THAT(lines, SizeIs(3)) << all;
  for (int n = 1; n <= 3; ++n) {
    const std::string expected = absl::StrCat("sh:PYTHON JOB ", n);
    std::vector<std::string> fields = absl::StrSplit(lines[n - 1], ' ');
    ASSERT_GE(fields.size(), 2u) << lines[n - 1];
    EXPECT_EQ(lines[n - 1], absl::StrCat(fields[0], " SUCCEEDED ", expected));
    FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, client_->Get(fields[0]));
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
    EXPECT_EQ(job.result(), expected);
    EXPECT_EQ(job.payload(), absl::StrCat("python job ", n));
    EXPECT_EQ(job.worker_id(), "cxx-interop");
  }
  cxx_worker->Signal(SIGTERM);
  FERRY_ASSERT_OK_AND_ASSIGN(code, cxx_worker->Wait(kExitTimeout));
  EXPECT_EQ(code, 0) << cxx_worker->Output();
}

TEST_F(InteropTest, PythonWorkerFailsJobsAndStopsAfterMaxJobs) {
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> worker,
      StartPythonWorker(
          {"--queue=doomed", "--fail", "--max-jobs=2", "--worker-id=py-fail"}));
  // submit.py reports the failures and exits 1.
  std::string out, all;
  FERRY_ASSERT_OK_AND_ASSIGN(
      int code,
      RunSubmitPy({"--queue=doomed", "--count=2", "--wait"}, &out, &all));
  EXPECT_EQ(code, 1) << all;
  std::vector<std::string> lines =
      absl::StrSplit(out, '\n', absl::SkipWhitespace());
  ASSERT_THAT(lines, SizeIs(2)) << all;
  for (const std::string& line : lines) {
    const std::string id = line.substr(0, line.find(' '));
    EXPECT_EQ(line, absl::StrCat(id, " FAILED job ", id,
                                 " failed on purpose (--fail)"));
    // Not retryable: FAILED after one attempt of the default five.
    FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, client_->Get(id));
    EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
    EXPECT_EQ(job.attempt(), 1u);
    EXPECT_EQ(job.retry().max_attempts(), 5u);
    EXPECT_EQ(job.worker_id(), "py-fail");
  }
  // Two jobs done: it exits by itself, having taken no third one.
  FERRY_ASSERT_OK_AND_ASSIGN(code, worker->Wait(kExitTimeout));
  EXPECT_EQ(code, 0) << worker->Output();
  EXPECT_THAT(worker->Output(), HasSubstr("stopped after 2 job(s)"));
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<v1::QueueInfo> stats,
                             client_->QueueStats("doomed"));
  ASSERT_THAT(stats, SizeIs(1));
  EXPECT_EQ(stats[0].failed(), 2u);
  EXPECT_EQ(stats[0].running() + stats[0].queued(), 0u);

  // submit.py without --wait prints each id.
  FERRY_ASSERT_OK_AND_ASSIGN(
      code, RunSubmitPy({"--queue=doomed", "--count=2"}, &out, &all));
  EXPECT_EQ(code, 0) << all;
  lines = absl::StrSplit(out, '\n', absl::SkipWhitespace());
  ASSERT_THAT(lines, SizeIs(2)) << all;
  for (const std::string& id : lines) {
    FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, client_->Get(id));
    EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
    EXPECT_EQ(job.payload(), "hello from python");
  }
}

TEST_F(InteropTest, PythonWorkerKeepsItsLeaseAcrossABrokerRestart) {
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> worker,
      StartPythonWorker(
          {"--queue=slow", "--work-seconds=5", "--worker-id=py-slow"}));
  SubmitOptions options;
  options.queue = "slow";
  options.kind = "k";
  options.payload = "survive";
  FERRY_ASSERT_OK_AND_ASSIGN(SubmitResult submitted, client_->Submit(options));
  const std::string id = submitted.job.id();
  ASSERT_THAT(
      worker->WaitForLine(absl::StrCat("job ", id, " started"), kStartTimeout),
      IsOk());

  // kill -9 mid-job, and the same database and port again.
  ferryd_->Signal(SIGKILL);
  ASSERT_THAT(ferryd_->Wait(kExitTimeout), IsOk());
  std::string address;
  FERRY_ASSERT_OK_AND_ASSIGN(
      ferryd_, StartFerryd(FERRYD_PATH,
                           {"--listen=" + address_, "--db=" + Db()}, &address));
  ASSERT_EQ(address, address_);
  // A fresh channel: the old one's connection died with the old process.
  ClientOptions options_after;
  options_after.broker = address_;
  client_ = std::make_unique<Client>(options_after);

  // The worker reconnects with the lease in held_leases (or, if the job
  // finished first, resends its result): one attempt, run by it.
  v1::Job job = WaitForJob(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.last_error();
  EXPECT_EQ(job.result(), "SURVIVE");
  EXPECT_EQ(job.attempt(), 1u);
  EXPECT_EQ(job.worker_id(), "py-slow");
  EXPECT_THAT(worker->Output(), HasSubstr("stream ended: UNAVAILABLE"));
  EXPECT_THAT(worker->Output(), HasSubstr("reconnecting in"));
  std::vector<std::string> lines = absl::StrSplit(worker->Output(), '\n');
  int connects = 0;
  for (const std::string& line : lines) {
    connects += absl::StrContains(line, "worker: connected");
  }
  EXPECT_EQ(connects, 2) << worker->Output();
  // Usually the job still runs at the reconnect and its lease is taken back;
  // on a slow machine it may have finished, and its result is resent.
  EXPECT_TRUE(
      absl::StrContains(worker->Output(), "held_leases=1 resent_results=0") ||
      absl::StrContains(worker->Output(), "held_leases=0 resent_results=1"))
      << worker->Output();

  worker->Signal(SIGINT);
  FERRY_ASSERT_OK_AND_ASSIGN(int code, worker->Wait(kExitTimeout));
  EXPECT_EQ(code, 0) << worker->Output();
}

TEST_F(InteropTest, GenStubsScriptWritesImportableStubs) {
  const std::string out_dir = dir_.path() + "/gen";
  std::string all;
  FERRY_ASSERT_OK_AND_ASSIGN(
      int code,
      RunCommand({"/bin/sh", absl::StrCat(kExamples, "/gen_stubs.sh"), out_dir},
                 {}, absl::Seconds(60), nullptr, &all));
  ASSERT_EQ(code, 0) << all;
  Subprocess::Options env;
  env.env = {"PYTHONPATH=" + out_dir, "PYTHONDONTWRITEBYTECODE=1"};
  std::string out;
  FERRY_ASSERT_OK_AND_ASSIGN(
      code, RunCommand({kPython, "-c",
                        "from ferry.v1 import jobs_pb2_grpc, workers_pb2_grpc\n"
                        "print(jobs_pb2_grpc.JobsStub.__name__, "
                        "workers_pb2_grpc.WorkersStub.__name__)"},
                       env, absl::Seconds(30), &out, &all));
  EXPECT_EQ(code, 0) << all;
  EXPECT_EQ(out, "JobsStub WorkersStub\n");
}

// ------------------------------------------- reflection and health, raw

// The length-delimited fields numbered `number` of a message (wire format).
std::vector<std::string> Fields(const std::string& message, int number) {
  UnknownFieldSet fields;
  EXPECT_TRUE(fields.ParseFromString(message));
  std::vector<std::string> values;
  for (int i = 0; i < fields.field_count(); ++i) {
    const UnknownField& field = fields.field(i);
    if (field.number() == number &&
        field.type() == UnknownField::TYPE_LENGTH_DELIMITED) {
      values.push_back(field.length_delimited());
    }
  }
  return values;
}

constexpr char kReflection[] =
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

TEST_F(InteropTest, ServerReflectionListsAndDescribesTheFerryServices) {
  // ServerReflectionRequest{list_services (7): "*"}.
  UnknownFieldSet request;
  request.AddLengthDelimited(7, "*");
  std::string bytes;
  ASSERT_TRUE(request.SerializeToString(&bytes));
  FERRY_ASSERT_OK_AND_ASSIGN(std::string response,
                             RawCall(address_, kReflection, bytes));
  // ServerReflectionResponse{list_services_response (6):
  //   ListServiceResponse{service (1): ServiceResponse{name (1)}...}}.
  std::vector<std::string> list = Fields(response, 6);
  ASSERT_THAT(list, SizeIs(1)) << "no list_services_response";
  std::vector<std::string> names;
  for (const std::string& service : Fields(list[0], 1)) {
    for (const std::string& name : Fields(service, 1)) names.push_back(name);
  }
  EXPECT_THAT(names, Contains("ferry.v1.Jobs"));
  EXPECT_THAT(names, Contains("ferry.v1.Workers"));
  EXPECT_THAT(names, Contains("grpc.health.v1.Health"));

  // ServerReflectionRequest{file_containing_symbol (4): "ferry.v1.Workers"}
  // gives the file descriptors a tool like grpcurl builds requests from.
  request.Clear();
  request.AddLengthDelimited(4, "ferry.v1.Workers");
  ASSERT_TRUE(request.SerializeToString(&bytes));
  FERRY_ASSERT_OK_AND_ASSIGN(response, RawCall(address_, kReflection, bytes));
  // ServerReflectionResponse{file_descriptor_response (4):
  //   FileDescriptorResponse{file_descriptor_proto (1): bytes...}}.
  std::vector<std::string> files = Fields(response, 4);
  ASSERT_THAT(files, SizeIs(1)) << "no file_descriptor_response";
  bool found_connect = false;
  for (const std::string& serialized : Fields(files[0], 1)) {
    google::protobuf::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(serialized));
    if (file.name() != "ferry/v1/workers.proto") continue;
    EXPECT_EQ(file.package(), "ferry.v1");
    ASSERT_THAT(file.service(), SizeIs(1));
    for (const auto& method : file.service(0).method()) {
      if (method.name() != "Connect") continue;
      found_connect = true;
      EXPECT_TRUE(method.client_streaming());
      EXPECT_TRUE(method.server_streaming());
      EXPECT_EQ(method.input_type(), ".ferry.v1.WorkerMessage");
      EXPECT_EQ(method.output_type(), ".ferry.v1.ServerMessage");
    }
  }
  EXPECT_TRUE(found_connect) << "ferry/v1/workers.proto with Workers.Connect "
                                "not among the file descriptors";
}

TEST_F(InteropTest, HealthCheckIsServingForTheServerOnly) {
  constexpr char kCheck[] = "/grpc.health.v1.Health/Check";
  // HealthCheckRequest{service (1): ""} is the empty message.
  FERRY_ASSERT_OK_AND_ASSIGN(std::string response,
                             RawCall(address_, kCheck, ""));
  // HealthCheckResponse{status (1): SERVING = 1}.
  UnknownFieldSet fields;
  ASSERT_TRUE(fields.ParseFromString(response));
  ASSERT_EQ(fields.field_count(), 1);
  EXPECT_EQ(fields.field(0).number(), 1);
  ASSERT_EQ(fields.field(0).type(), UnknownField::TYPE_VARINT);
  EXPECT_EQ(fields.field(0).varint(), 1u) << "not SERVING";

  // Named services are not registered (docs/protocol.md, 1.1).
  UnknownFieldSet request;
  request.AddLengthDelimited(1, "ferry.v1.Jobs");
  std::string bytes;
  ASSERT_TRUE(request.SerializeToString(&bytes));
  EXPECT_THAT(RawCall(address_, kCheck, bytes),
              StatusIs(absl::StatusCode::kNotFound));
}

// ------------------------------------------- the Python examples and TLS

constexpr char kPythonToken[] =
    "ferry_pyTokenQ1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6J7k";

class PythonTlsTest : public InteropTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(InteropTest::SetUp());
    const std::string pki_dir = dir_.path() + "/pki";
    std::filesystem::create_directories(pki_dir);
    FERRY_ASSERT_OK_AND_ASSIGN(pki_, MakeTestPki(pki_dir));
    token_file_ = dir_.path() + "/py.token";
    std::ofstream(token_file_) << kPythonToken << "\n";
  }

  // Runs examples/python/SCRIPT with `args` and `env` to its end; the exit
  // code. Nothing it prints may hold the token.
  int RunPython(const std::string& script, std::vector<std::string> args,
                std::vector<std::string> env, std::string* all) {
    std::vector<std::string> argv = {kPython,
                                     absl::StrCat(kExamples, "/", script)};
    argv.insert(argv.end(), args.begin(), args.end());
    Subprocess::Options options = PythonEnv();
    options.env.insert(options.env.end(), env.begin(), env.end());
    absl::StatusOr<int> code =
        RunCommand(argv, options, kJobTimeout, nullptr, all);
    EXPECT_THAT(code, IsOk());
    EXPECT_THAT(*all, Not(HasSubstr(kPythonToken)));
    return code.value_or(-1);
  }

  TestPki pki_;
  std::string token_file_;
};

TEST_F(PythonTlsTest, SubmitAndWorkerSendTheTokenOverMutualTls) {
  FakeBroker::Options options;
  options.server_cert = pki_.server_cert;
  options.server_key = pki_.server_key;
  options.client_ca = pki_.ca;
  options.tokens = {{kPythonToken, "python"}};
  FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start(options));
  const std::vector<std::string> tls = {
      "--broker=" + broker->address(), "--tls_ca=" + pki_.ca,
      "--tls_cert=" + pki_.client_cert, "--tls_key=" + pki_.client_key};

  std::vector<std::string> args = tls;
  args.push_back("--token_file=" + token_file_);
  std::string all;
  EXPECT_EQ(RunPython("submit.py", args, {}, &all), 0) << all;
  EXPECT_EQ(all, "1");  // the id, alone
  // From the environment.
  EXPECT_EQ(RunPython("submit.py", {"--broker=" + broker->address()},
                      {"FERRY_TLS_CA=" + pki_.ca,
                       "FERRY_TLS_CERT=" + pki_.client_cert,
                       "FERRY_TLS_KEY=" + pki_.client_key,
                       absl::StrCat("FERRY_TOKEN=", kPythonToken)},
                      &all),
            0)
      << all;

  // worker.py: the broker sees its Connect (and refuses it as a fake).
  std::vector<std::string> argv = {kPython,
                                   absl::StrCat(kExamples, "/worker.py")};
  argv.insert(argv.end(), tls.begin(), tls.end());
  Subprocess::Options env = PythonEnv();
  env.env.push_back("FERRY_TOKEN_FILE=" + token_file_);
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subprocess> worker,
                             Subprocess::Start(argv, env));
  ASSERT_TRUE(broker->AwaitCalls(3, kStartTimeout)) << worker->Output();
  ASSERT_THAT(
      worker->WaitForLine("the fake broker takes no workers", kStartTimeout),
      IsOk());
  worker->Signal(SIGTERM);
  FERRY_ASSERT_OK_AND_ASSIGN(int code, worker->Wait(kExitTimeout));
  EXPECT_EQ(code, 0) << worker->Output();
  EXPECT_THAT(worker->Output(), HasSubstr("tls=True token=True"));
  EXPECT_THAT(worker->Output(), Not(HasSubstr(kPythonToken)));
  for (const std::string& authorization : broker->Authorizations()) {
    EXPECT_EQ(authorization, absl::StrCat("Bearer ", kPythonToken));
  }
}

TEST_F(PythonTlsTest, ServerNameOverridesTheHostDialed) {
  FERRY_ASSERT_OK_AND_ASSIGN(
      CertFiles named, MakeCert(dir_.path() + "/pki", "named", pki_.ca_files(),
                                {"DNS:broker.test"}));
  FakeBroker::Options options;
  options.server_cert = named.cert;
  options.server_key = named.key;
  FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start(options));
  std::string all;
  EXPECT_EQ(RunPython("submit.py",
                      {"--broker=" + broker->address(), "--tls_ca=" + pki_.ca,
                       "--tls_server_name=broker.test"},
                      {}, &all),
            0)
      << all;
  EXPECT_EQ(RunPython("submit.py",
                      {"--broker=" + broker->address(), "--tls_ca=" + pki_.ca},
                      {}, &all),
            2)
      << all;
  EXPECT_THAT(all, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(all, HasSubstr("--tls_server_name"));
}

TEST_F(PythonTlsTest, SubmitSaysWhatIsWrongWithTheTokenOrTls) {
  FakeBroker::Options options;
  options.tokens = {{kPythonToken, "python"}};
  FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start(options));
  const std::string broker_flag = "--broker=" + broker->address();
  std::string all;
  EXPECT_EQ(RunPython("submit.py", {broker_flag}, {}, &all), 2) << all;
  EXPECT_THAT(all, HasSubstr("UNAUTHENTICATED: no token"));
  EXPECT_THAT(all, HasSubstr("the broker needs a token: pass --token_file"));

  const std::string empty = dir_.path() + "/empty.token";
  std::ofstream(empty) << "\n";
  EXPECT_EQ(RunPython("submit.py", {broker_flag, "--token_file=" + empty},
                      {absl::StrCat("FERRY_TOKEN=", kPythonToken)}, &all),
            2)
      << all;
  EXPECT_THAT(all,
              HasSubstr("--token_file: token file " + empty + " is empty"));
  EXPECT_EQ(RunPython("submit.py",
                      {broker_flag, "--tls_ca=" + pki_.ca,
                       "--tls_cert=" + pki_.client_cert},
                      {}, &all),
            2)
      << all;
  EXPECT_THAT(all, HasSubstr("--tls_cert needs --tls_key (or FERRY_TLS_KEY)"));
  EXPECT_EQ(RunPython("worker.py", {broker_flag, "--tls_ca=" + pki_.client_key},
                      {}, &all),
            2)
      << all;
  EXPECT_THAT(all, HasSubstr(pki_.client_key + " is not a PEM certificate"));
  EXPECT_THAT(broker->Authorizations(), SizeIs(1));
}

}  // namespace
}  // namespace ferry::testing
