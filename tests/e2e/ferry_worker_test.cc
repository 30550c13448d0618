// End to end: the real ferry-worker running shell commands for jobs of the
// real ferryd (on 127.0.0.1, a port the kernel picks, a database in a
// temporary directory), driven through the generated Jobs stub.
//
// Waits are for events with deadlines: a log line (WaitForLine), a job
// turning terminal (Jobs.Wait), a process exiting. Commands that must block
// until the test says so read a FIFO the test writes.
//
// This test process makes itself a child subreaper: the orphans of a job's
// command (a background `sleep` whose shell died) become its children, so
// that it can reap them and check with kill(-pgid, 0) that nothing of a
// job's process group survived, whatever init does with zombies.

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ferry/v1/jobs.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/grpc_status.h"
#include "proto/time_util.h"
#include "tests/e2e/subprocess.h"
#include "tests/loopback_socket.h"
#include "tests/poll.h"
#include "tests/process_group.h"
#include "tests/proto_test_util.h"
#include "tests/status_matchers.h"
#include "tests/store_test_util.h"
#include "tests/tls_certs.h"

namespace ferry::testing {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;

// Bounds for events that should come promptly; only a broken test waits
// this long.
constexpr absl::Duration kStartTimeout = absl::Seconds(30);
constexpr absl::Duration kEventTimeout = absl::Seconds(30);

std::unique_ptr<grpc::ClientContext> Context(
    absl::Duration timeout = absl::Seconds(10)) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

bool GroupGone(pid_t pgid) { return testing::GroupGone(pgid, kEventTimeout); }

class FerryWorkerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(BecomeSubreaper()) << std::strerror(errno);
  }

  void SetUp() override {
    // Retries without a backoff, so a re-run needs no waiting.
    absl::StatusOr<std::unique_ptr<Ferryd>> ferryd =
        Ferryd::Start(FERRYD_PATH, Path("ferry.db"), {"--initial_backoff=0s"});
    ASSERT_TRUE(ferryd.ok()) << ferryd.status();
    ferryd_ = *std::move(ferryd);
  }

  void TearDown() override {
    // Let commands blocked on a gate finish, and kill anything left.
    for (const std::string& fifo : fifos_) OpenGate(fifo, absl::ZeroDuration());
    KillGroups(groups_);
  }

  std::string Path(absl::string_view name) const {
    return absl::StrCat(dir_.path(), "/", name);
  }

  // ---- ferry-worker ----

  // Starts ferry-worker with `flags` (the broker is added) and waits until
  // it is connected.
  absl::StatusOr<std::unique_ptr<Subprocess>> StartWorker(
      std::vector<std::string> flags) {
    std::vector<std::string> argv = {FERRY_WORKER_PATH,
                                     "--broker=" + ferryd_->address()};
    argv.insert(argv.end(), flags.begin(), flags.end());
    absl::StatusOr<std::unique_ptr<Subprocess>> worker =
        Subprocess::Start(argv);
    if (!worker.ok()) return worker.status();
    absl::StatusOr<std::string> connected =
        (*worker)->WaitForLine("connected broker=", kStartTimeout);
    if (!connected.ok()) return connected.status();
    return worker;
  }

  // ferry-worker on queue "q" running `command` for every job.
  absl::StatusOr<std::unique_ptr<Subprocess>> StartWorker(
      const std::vector<std::string>& flags,
      const std::vector<std::string>& command) {
    std::vector<std::string> argv = {"--queues=q"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.push_back("--");
    argv.insert(argv.end(), command.begin(), command.end());
    return StartWorker(argv);
  }

  // SIGTERM, then the exit code (bounded).
  static absl::StatusOr<int> Terminate(Subprocess& worker) {
    worker.Signal(SIGTERM);
    return worker.Wait(kEventTimeout);
  }

  // ---- jobs ----

  absl::StatusOr<v1::Job> Submit(const v1::JobSpec& spec) {
    v1::SubmitRequest request;
    *request.mutable_job() = spec;
    v1::SubmitResponse response;
    grpc::Status status =
        ferryd_->jobs().Submit(Context().get(), request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response.job();
  }

  absl::StatusOr<v1::Job> Get(const std::string& id) {
    v1::GetRequest request;
    request.set_job_id(id);
    v1::GetResponse response;
    grpc::Status status =
        ferryd_->jobs().Get(Context().get(), request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response.job();
  }

  // The job once it is terminal; DEADLINE_EXCEEDED if it is not within
  // kEventTimeout.
  absl::StatusOr<v1::Job> WaitDone(const std::string& id) {
    v1::WaitRequest request;
    request.set_job_id(id);
    *request.mutable_timeout() = DurationProto(kEventTimeout);
    v1::WaitResponse response;
    grpc::Status status = ferryd_->jobs().Wait(
        Context(kEventTimeout + absl::Seconds(10)).get(), request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    if (!response.done()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "job ", id, " not done: ", response.job().ShortDebugString()));
    }
    return response.job();
  }

  // ---- gates and process groups ----

  // A FIFO that a command blocks on (`cat FIFO`) until OpenGate().
  std::string MakeGate(absl::string_view name) {
    const std::string path = Path(name);
    if (mkfifo(path.c_str(), 0600) != 0) {
      ADD_FAILURE() << "mkfifo " << path << ": " << std::strerror(errno);
    }
    fifos_.push_back(path);
    return path;
  }

  // Lets the command blocked on `fifo` go on: waits (up to `timeout`) for
  // it to open the FIFO, then writes a line. False if it never opened it.
  static bool OpenGate(const std::string& fifo,
                       absl::Duration timeout = kEventTimeout) {
    bool opened = false;
    bool failed = false;
    PollUntil(
        [&] {
          // Without a reader, a non-blocking open fails with ENXIO.
          const int fd = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
          if (fd >= 0) {
            (void)!write(fd, "go\n", 3);
            close(fd);
            opened = true;
          } else if (errno != ENXIO) {
            failed = true;
          }
          return opened || failed;
        },
        timeout, absl::Milliseconds(5));
    return opened;
  }

  // Shell code that publishes the shell's pid, which is its process group
  // (ferry-worker makes each command a group leader), in `file`.
  // `pgid` (0: none), remembered so that TearDown kills the group whatever
  // happens.
  pid_t Remember(pid_t pgid) {
    if (pgid > 0) groups_.push_back(pgid);
    return pgid;
  }
  // The pgid a PublishPgid() command wrote (0 if none), remembered.
  pid_t ReadPgid(const std::string& file) {
    return Remember(ReadPgidFile(file));
  }

  ScopedTempDir dir_;
  std::unique_ptr<Ferryd> ferryd_;
  std::vector<std::string> fifos_;
  std::vector<pid_t> groups_;
};

TEST_F(FerryWorkerTest, CommandStdoutBecomesTheJobResult) {
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> worker,
      StartWorker({}, Shell("printf '%s:' \"$FERRY_KIND\"; cat")));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit(Spec("q", "greet", "hello")));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job done, WaitDone(job.id()));
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.last_error();
  EXPECT_EQ(done.result(), "greet:hello");
  EXPECT_EQ(done.attempt(), 1u);
  FERRY_ASSERT_OK_AND_ASSIGN(int code, Terminate(*worker));
  EXPECT_EQ(code, 0) << worker->Output();
}

TEST_F(FerryWorkerTest, ExitSeventyFiveRunsTheJobAgain) {
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> worker,
      StartWorker({}, Shell("if [ \"$FERRY_KIND\" = always ] || "
                            "[ \"$FERRY_ATTEMPT\" -lt 2 ]; then "
                            "echo \"busy on attempt $FERRY_ATTEMPT\" >&2; "
                            "exit 75; fi; "
                            "echo \"ok on attempt $FERRY_ATTEMPT\"")));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job flaky, Submit(Spec("q", "flaky")));
  v1::JobSpec always = Spec("q", "always");
  always.mutable_retry()->set_max_attempts(2);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job busy, Submit(always));

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job succeeded, WaitDone(flaky.id()));
  EXPECT_EQ(succeeded.state(), v1::JOB_STATE_SUCCEEDED)
      << succeeded.last_error();
  EXPECT_EQ(succeeded.attempt(), 2u);
  EXPECT_EQ(succeeded.result(), "ok on attempt 2\n");

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job failed, WaitDone(busy.id()));
  EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed.attempt(), 2u) << "retried until out of attempts";
  EXPECT_EQ(failed.last_error(),
            "exit status 75 (temporary failure, retry requested): "
            "busy on attempt 2");
  FERRY_ASSERT_OK_AND_ASSIGN(int code, Terminate(*worker));
  EXPECT_EQ(code, 0) << worker->Output();
}

TEST_F(FerryWorkerTest, FailingCommandLeavesTheEndOfStderrAsLastError) {
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> worker,
      StartWorker({}, Shell("echo 'checking disk' >&2; "
                            "echo 'disk on fire' >&2; exit 3")));
  v1::JobSpec spec = Spec("q", "k");
  spec.mutable_retry()->set_max_attempts(1);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit(spec));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job done, WaitDone(job.id()));
  EXPECT_EQ(done.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(done.last_error(), "exit status 3: checking disk\ndisk on fire");
  FERRY_ASSERT_OK_AND_ASSIGN(int code, Terminate(*worker));
  EXPECT_EQ(code, 0) << worker->Output();
}

TEST_F(FerryWorkerTest, TimeoutKillsTheWholeProcessGroupAndFailsTheJob) {
  const std::string pgid_file = Path("pgid");
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> worker,
      StartWorker({"--kill_grace=1s"},
                  Shell("sleep 1000 & " + PublishPgid(pgid_file) +
                        "sleep 1000; wait")));
  v1::JobSpec spec = Spec("q", "slow");
  *spec.mutable_timeout() = DurationProto(absl::Seconds(1));
  spec.mutable_retry()->set_max_attempts(1);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit(spec));

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job done, WaitDone(job.id()));
  const pid_t pgid = ReadPgid(pgid_file);
  EXPECT_EQ(done.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(done.last_error(), HasSubstr("timed out"));
  ASSERT_GT(pgid, 0) << "the command never published its process group";
  EXPECT_TRUE(GroupGone(pgid)) << "a process of the job's group survived";
  FERRY_ASSERT_OK_AND_ASSIGN(int code, Terminate(*worker));
  EXPECT_EQ(code, 0) << worker->Output();
}

TEST_F(FerryWorkerTest, SigtermLetsTheRunningJobFinishThenExitsZero) {
  const std::string gate = MakeGate("gate");
  const std::string pgid_file = Path("pgid");
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> worker,
      StartWorker({}, Shell(PublishPgid(pgid_file) + "cat " + gate +
                            " >/dev/null; echo finished")));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit(Spec("q", "k")));
  ASSERT_THAT(
      worker->WaitForLine("job started job_id=" + job.id(), kEventTimeout),
      IsOk());

  worker->Signal(SIGTERM);
  ASSERT_THAT(worker->WaitForLine("worker stopping", kEventTimeout), IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job running, Get(job.id()));
  EXPECT_EQ(running.state(), v1::JOB_STATE_RUNNING);

  const bool opened = OpenGate(gate);
  ReadPgid(pgid_file);  // for TearDown, should the worker not finish it
  ASSERT_TRUE(opened) << "the command never opened " << gate;
  FERRY_ASSERT_OK_AND_ASSIGN(int code, worker->Wait(kEventTimeout));
  EXPECT_EQ(code, 0) << worker->Output();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job done, Get(job.id()));
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.last_error();
  EXPECT_EQ(done.result(), "finished\n");
  EXPECT_EQ(done.attempt(), 1u);
}

TEST_F(FerryWorkerTest, SecondSignalStopsTheRunningJobAtOnce) {
  const std::string gate = MakeGate("gate");
  const std::string pgid_file = Path("pgid");
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subprocess> worker,
                             StartWorker({"--drain_timeout=1h"},
                                         Shell(PublishPgid(pgid_file) + "cat " +
                                               gate + " >/dev/null")));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit(Spec("q", "k")));
  const pid_t pgid = Remember(AwaitPgidFile(pgid_file, kEventTimeout));
  ASSERT_GT(pgid, 0) << "the command never started";

  worker->Signal(SIGTERM);
  ASSERT_THAT(worker->WaitForLine("worker stopping", kEventTimeout), IsOk());
  worker->Signal(SIGINT);  // no waiting out the hour
  FERRY_ASSERT_OK_AND_ASSIGN(int code, worker->Wait(kEventTimeout));
  EXPECT_EQ(code, 0) << worker->Output();
  EXPECT_TRUE(GroupGone(pgid)) << "the command outlived the worker";
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job stopped, Get(job.id()));
  // Failed, retryable (and retried at once: this broker has no backoff).
  EXPECT_THAT(stopped.state(),
              AnyOf(v1::JOB_STATE_SCHEDULED, v1::JOB_STATE_QUEUED));
  EXPECT_EQ(stopped.attempt(), 1u);
  EXPECT_THAT(stopped.last_error(), HasSubstr("drain timeout"));
}

TEST_F(FerryWorkerTest, IdleWorkerLetsABrokerShuttingDownGoBeforeItsGrace) {
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Ferryd> patient,
                             Ferryd::Start(FERRYD_PATH, Path("patient.db"),
                                           {"--shutdown_grace=120s"}));
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> worker,
      Subprocess::Start({FERRY_WORKER_PATH, "--broker=" + patient->address(),
                         "--queues=q", "--", "true"}));
  ASSERT_THAT(worker->WaitForLine("connected broker=", kStartTimeout), IsOk());

  patient->process().Signal(SIGTERM);
  // The worker has nothing to report, so it ends its stream on Drain;
  // otherwise ferryd would wait out its 120 s grace for it.
  EXPECT_THAT(patient->process().Wait(kEventTimeout), IsOkAndHolds(0));
  EXPECT_THAT(Terminate(*worker), IsOkAndHolds(0));
}

TEST_F(FerryWorkerTest, HandlersFileMapsEachKindToItsCommand) {
  const std::string handlers = Path("handlers");
  {
    std::ofstream out(handlers);
    out << "# kind  command\n"
           "upper   tr a-z A-Z\n"
           "\n"
           "count   wc -c\n"
           "*       printenv FERRY_KIND\n";
  }
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> worker,
      StartWorker({"--queues=q", "--handlers=" + handlers}));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job upper,
                             Submit(Spec("q", "upper", "shout")));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job count,
                             Submit(Spec("q", "count", "12345")));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job other, Submit(Spec("q", "mystery")));

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job upper_done, WaitDone(upper.id()));
  EXPECT_EQ(upper_done.result(), "SHOUT");
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job count_done, WaitDone(count.id()));
  EXPECT_EQ(count_done.result(), "5\n");
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job other_done, WaitDone(other.id()));
  EXPECT_EQ(other_done.result(), "mystery\n");
  FERRY_ASSERT_OK_AND_ASSIGN(int code, Terminate(*worker));
  EXPECT_EQ(code, 0) << worker->Output();
}

TEST_F(FerryWorkerTest, SeveralWorkersOnOneQueueRunEveryJobExactlyOnce) {
  const std::string ran = Path("ran");
  const std::vector<std::string> command =
      Shell("echo \"$FERRY_JOB_ID\" >> " + ran + "; echo \"$FERRY_ATTEMPT\"");
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int i = 1; i <= 3; ++i) {
    FERRY_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<Subprocess> worker,
        StartWorker({"--concurrency=2", absl::StrCat("--worker_id=w", i)},
                    command));
    workers.push_back(std::move(worker));
  }

  v1::SubmitBatchRequest batch;
  for (int i = 0; i < 60; ++i) {
    *batch.add_jobs() = Spec("q", "k", absl::StrCat("job ", i));
  }
  v1::SubmitBatchResponse submitted;
  ASSERT_TRUE(
      ferryd_->jobs().SubmitBatch(Context().get(), batch, &submitted).ok());
  ASSERT_EQ(submitted.results_size(), 60);

  std::set<std::string> ids;
  std::map<std::string, int> per_worker;
  for (const v1::SubmitResponse& result : submitted.results()) {
    const std::string& id = result.job().id();
    ids.insert(id);
    FERRY_ASSERT_OK_AND_ASSIGN(v1::Job done, WaitDone(id));
    EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.last_error();
    EXPECT_EQ(done.attempt(), 1u) << "job " << id;
    EXPECT_EQ(done.result(), "1\n") << "job " << id;
    ++per_worker[done.worker_id()];
  }
  ASSERT_EQ(ids.size(), 60u);

  std::map<std::string, int> runs;
  for (absl::string_view line :
       absl::StrSplit(ReadFile(ran), '\n', absl::SkipEmpty())) {
    ++runs[std::string(line)];
  }
  EXPECT_EQ(runs.size(), 60u);
  for (const auto& [id, count] : runs) {
    EXPECT_EQ(count, 1) << "job " << id << " ran " << count << " times";
    EXPECT_TRUE(ids.count(id)) << "unknown job " << id << " ran";
  }
  for (const auto& [worker_id, count] : per_worker) {
    EXPECT_TRUE(worker_id == "w1" || worker_id == "w2" || worker_id == "w3")
        << worker_id;
  }

  for (std::unique_ptr<Subprocess>& worker : workers) {
    FERRY_ASSERT_OK_AND_ASSIGN(int code, Terminate(*worker));
    EXPECT_EQ(code, 0) << worker->Output();
  }
}

TEST_F(FerryWorkerTest, UsageErrorsExitTwoWithAMessage) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::string bad_handlers = Path("bad_handlers");
  {
    std::ofstream out(bad_handlers);
    out << "upper tr a-z A-Z\nlonely\n";
  }
  const std::vector<Case> cases = {
      {{"--", "cat"}, "--queues is required"},
      {{"--queues=q"}, "give the command to run"},
      {{"--queues=q", "--concurrency=0", "--", "cat"},
       "--concurrency must be between"},
      {{"--queues=bad queue!", "--", "cat"}, "queue"},
      {{"--queues=q", "--label=novalue", "--", "cat"},
       "--label wants key=value, got \"novalue\""},
      {{"--queues=q", "--handlers=" + bad_handlers}, "line 2"},
      {{"--queues=q", "--handlers=" + bad_handlers, "--", "cat"}, "not both"},
      {{"--queues=q", "--handlers=" + dir_.path()},
       "--handlers: cannot read " + dir_.path() + ": Is a directory"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {FERRY_WORKER_PATH,
                                     "--broker=" + ferryd_->address()};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    std::string all;
    FERRY_ASSERT_OK_AND_ASSIGN(
        int code, RunCommand(argv, {}, kEventTimeout, nullptr, &all));
    EXPECT_EQ(code, 2) << absl::StrJoin(c.args, " ") << "\n" << all;
    EXPECT_THAT(all, HasSubstr(c.message)) << absl::StrJoin(c.args, " ");
  }
}

TEST_F(FerryWorkerTest, BadTlsOrTokenSettingsExitTwoWithAMessage) {
  FERRY_ASSERT_OK_AND_ASSIGN(TestPki pki, MakeTestPki(dir_.path()));
  const std::string secret = "ferry_e2eSecretThatMustNeverBePrinted0123456";
  const std::string empty_token = Path("empty.token");
  std::ofstream(empty_token) << "\n";
  struct Case {
    std::vector<std::string> args;
    std::vector<std::string> env;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--tls_ca=" + pki.ca, "--tls_cert=" + pki.client_cert},
       {},
       "--tls_cert needs --tls_key (or FERRY_TLS_KEY)"},
      {{"--tls_cert=" + pki.client_cert, "--tls_key=" + pki.client_key},
       {},
       "--tls_cert needs --tls_ca (or FERRY_TLS_CA)"},
      {{"--tls_ca=" + Path("missing.crt")},
       {},
       "--tls_ca: cannot read " + Path("missing.crt")},
      {{},
       {"FERRY_TLS_CA=" + pki.server_key},
       pki.server_key + " is not a PEM certificate"},
      {{"--tls_ca=" + pki.ca, "--tls_cert=" + pki.expired_client_cert,
        "--tls_key=" + pki.expired_client_key},
       {},
       "client certificate " + pki.expired_client_cert + " has expired (on "},
      {{"--tls_ca=" + pki.ca, "--tls_cert=" + pki.client_cert,
        "--tls_key=" + pki.server_key},
       {},
       "key " + pki.server_key + " does not match certificate " +
           pki.client_cert},
      {{"--token_file=" + empty_token},
       {},
       "--token_file: token file " + empty_token + " is empty"},
      {{},
       {"FERRY_TOKEN_FILE=" + Path("missing")},
       "FERRY_TOKEN_FILE: cannot read"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {
        FERRY_WORKER_PATH, "--broker=" + ferryd_->address(), "--queues=q"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    argv.insert(argv.end(), {"--", "cat"});
    Subprocess::Options options;
    options.env = c.env;
    // A token that must not show in any message (FERRY_TOKEN_FILE, tried
    // last, comes alone).
    if (c.env.empty() || !absl::StartsWith(c.env[0], "FERRY_TOKEN_FILE=")) {
      options.env.push_back("FERRY_TOKEN=" + secret);
    }
    std::string all;
    FERRY_ASSERT_OK_AND_ASSIGN(
        int code, RunCommand(argv, options, kEventTimeout, nullptr, &all));
    EXPECT_EQ(code, 2) << absl::StrJoin(c.args, " ") << "\n" << all;
    EXPECT_THAT(all, HasSubstr("ferry-worker: " + c.message)) << all;
    EXPECT_THAT(all, Not(HasSubstr(secret)));
  }
}

TEST_F(FerryWorkerTest, TokenFromTheEnvironmentIsUsedButNeverLogged) {
  const std::string secret = "ferry_e2eSecretThatMustNeverBePrinted0123456";
  Subprocess::Options options;
  options.env = {"FERRY_TOKEN=" + secret, "SPDLOG_LEVEL=trace"};
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> worker,
      Subprocess::Start({FERRY_WORKER_PATH, "--broker=" + ferryd_->address(),
                         "--queues=q", "--", "cat"},
                        options));
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::string started,
      worker->WaitForLine("ferry-worker starting", kStartTimeout));
  EXPECT_THAT(started, HasSubstr("tls=false token=true"));
  ASSERT_THAT(worker->WaitForLine("connected broker=", kStartTimeout), IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(int code, Terminate(*worker));
  EXPECT_EQ(code, 0) << worker->Output();
  EXPECT_THAT(worker->Output(), Not(HasSubstr(secret)));
}

TEST_F(FerryWorkerTest, HelpListsTheFlags) {
  std::string all;
  FERRY_ASSERT_OK_AND_ASSIGN(
      int code, RunCommand({FERRY_WORKER_PATH, "--help"}, {}, kEventTimeout,
                           nullptr, &all));
  EXPECT_NE(code, 0) << all;  // Abseil's --help exits 1
  EXPECT_THAT(all, HasSubstr("Runs a command for every job"));
  for (const char* flag :
       {"--queues", "--concurrency", "--broker", "--handlers",
        "--drain_timeout", "--tls_ca", "--tls_cert", "--tls_key",
        "--tls_server_name", "--token_file", "FERRY_TOKEN_FILE"}) {
    EXPECT_THAT(all, HasSubstr(flag)) << all;
  }
  EXPECT_THAT(all, Not(HasSubstr("No flags matched")));
}

TEST_F(FerryWorkerTest, UnreachableBrokerIsRetriedUntilSigterm) {
  // A port that is bound but not listening refuses every connection, and
  // nobody else can take it while this socket holds it.
  LoopbackSocket refusing(LoopbackSocket::Mode::kRefusing);
  ASSERT_FALSE(refusing.address().empty()) << refusing.error();
  const std::string& broker = refusing.address();

  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> worker,
      Subprocess::Start({FERRY_WORKER_PATH, "--broker=" + broker, "--queues=q",
                         "--", "cat"}));
  ASSERT_THAT(worker->WaitForLine("broker connection lost", kEventTimeout),
              IsOk());
  // It keeps trying: a second attempt fails the same way.
  EXPECT_THAT(worker->WaitForLine("broker connection lost", kEventTimeout,
                                  /*nth=*/2),
              IsOk());
  EXPECT_THAT(worker->Wait(absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded))
      << "ferry-worker gave up on an unreachable broker";

  FERRY_ASSERT_OK_AND_ASSIGN(int code, Terminate(*worker));
  EXPECT_EQ(code, 0) << worker->Output();
  EXPECT_THAT(worker->Output(), HasSubstr("ferry-worker stopped"));
}

}  // namespace
}  // namespace ferry::testing
