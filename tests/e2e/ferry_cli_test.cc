// End to end: the real `ferry` binary against a real ferryd (one per suite,
// in a temporary directory), with the real ferry-worker where a job must
// run. Only what needs the binary: a round trip through a real worker,
// stdin, $FERRY_BROKER, exit codes and the could-not-connect message. Every
// command's behaviour is tested in process (integration/cli_test.cc).
//
// Tests share the broker, so each works in its own queue, named after the
// test (Queue()).

#include <signal.h>
#include <stdlib.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ferry/v1/jobs.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cli_test_util.h"
#include "tests/e2e/subprocess.h"
#include "tests/status_matchers.h"
#include "tests/store_test_util.h"

namespace ferry::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr absl::Duration kStartTimeout = absl::Seconds(30);
// Bounds one command; a healthy one takes milliseconds.
constexpr absl::Duration kCommandTimeout = absl::Seconds(30);
// Nothing listens on port 1 of loopback.
constexpr char kUnreachable[] = "127.0.0.1:1";

Subprocess::Options Stdin(std::string data) {
  Subprocess::Options options;
  options.stdin_data = std::move(data);
  return options;
}

Subprocess::Options Env(std::string entry) {
  Subprocess::Options options;
  options.env.push_back(std::move(entry));
  return options;
}

class FerryCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Only what a test passes on purpose may point ferry at a broker, or
    // give it TLS settings or a token.
    for (const char* name :
         {"FERRY_BROKER", "FERRY_TLS_CA", "FERRY_TLS_CERT", "FERRY_TLS_KEY",
          "FERRY_TLS_SERVER_NAME", "FERRY_TOKEN", "FERRY_TOKEN_FILE"}) {
      unsetenv(name);
    }
    dir_ = new ScopedTempDir();
    absl::StatusOr<std::unique_ptr<Subprocess>> process = StartFerryd(
        FERRYD_PATH, {"--db=" + dir_->path() + "/ferry.db"}, address_);
    if (!process.ok()) {
      *startup_error_ = process.status().ToString();
      return;
    }
    ferryd_ = process->release();
  }

  static void TearDownTestSuite() {
    if (ferryd_ != nullptr) {
      ferryd_->Signal(SIGTERM);
      (void)ferryd_->Wait(kStartTimeout);
      delete ferryd_;
      ferryd_ = nullptr;
    }
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    ASSERT_FALSE(address_->empty())
        << "ferryd did not start: " << *startup_error_;
  }

  const std::string& address() const { return *address_; }

  // This test's queue: its name, a valid queue name no other test uses.
  static std::string Queue() {
    return ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }

  // Runs `ferry ARGS...` exactly as given.
  static CliRun FerryAsIs(std::vector<std::string> args,
                          Subprocess::Options options = {}) {
    std::vector<std::string> argv = {FERRY_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    CliRun run;
    absl::StatusOr<int> code = RunCommand(argv, std::move(options),
                                          kCommandTimeout, &run.out, &run.all);
    EXPECT_THAT(code, IsOk()) << absl::StrJoin(argv, " ");
    run.code = code.ok() ? *code : -1;
    return run;
  }

  // Runs `ferry --broker=ADDRESS ARGS...` against the suite's ferryd.
  CliRun Ferry(std::vector<std::string> args,
               Subprocess::Options options = {}) {
    args.insert(args.begin(), "--broker=" + address());
    return FerryAsIs(std::move(args), std::move(options));
  }

  // `ferry submit QUEUE ARGS...` that must succeed; the new job's id.
  std::string MustSubmit(std::vector<std::string> args = {},
                         Subprocess::Options options = {}) {
    args.insert(args.begin(), {"submit", Queue()});
    return SubmittedId(Ferry(std::move(args), std::move(options)));
  }

  // The job as `ferry --json get` shows it.
  v1::Job GetJob(const std::string& id) {
    return JsonOf<v1::Job>(Ferry({"--json", "get", id}));
  }

  // `ferry --json list ARGS...`, as a ListResponse.
  v1::ListResponse ListJson(std::vector<std::string> args) {
    args.insert(args.begin(), {"--json", "list"});
    return JsonOf<v1::ListResponse>(Ferry(std::move(args)));
  }

  // A ferry-worker taking jobs from Queue() and running `command` for each,
  // once it is connected to the broker.
  std::unique_ptr<Subprocess> StartWorker(const std::string& worker_id,
                                          std::vector<std::string> command) {
    std::vector<std::string> argv = {FERRY_WORKER_PATH, "--broker=" + address(),
                                     "--queues=" + Queue(),
                                     "--worker_id=" + worker_id, "--"};
    argv.insert(argv.end(), command.begin(), command.end());
    absl::StatusOr<std::unique_ptr<Subprocess>> worker =
        Subprocess::Start(argv);
    EXPECT_THAT(worker, IsOk());
    if (!worker.ok()) return nullptr;
    EXPECT_THAT((*worker)->WaitForLine("connected broker=", kStartTimeout),
                IsOk());
    return *std::move(worker);
  }

 private:
  static ScopedTempDir* dir_;
  static Subprocess* ferryd_;
  static std::string* const address_;
  static std::string* const startup_error_;
};

ScopedTempDir* FerryCliTest::dir_ = nullptr;
Subprocess* FerryCliTest::ferryd_ = nullptr;
std::string* const FerryCliTest::address_ = new std::string();
std::string* const FerryCliTest::startup_error_ = new std::string();

// ------------------------------------------------------------------ submit

TEST_F(FerryCliTest, SubmitPrintsTheNewJobsIdAndItIsQueued) {
  const std::string id = MustSubmit({"--payload", "hello"});
  v1::Job job = GetJob(id);
  EXPECT_EQ(job.id(), id);
  EXPECT_EQ(job.queue(), Queue());
  EXPECT_EQ(job.kind(), "default");
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.payload(), "hello");
}

TEST_F(FerryCliTest, SubmitReadsThePayloadFromStdinForPayloadFileDash) {
  const std::string id =
      MustSubmit({"--payload-file", "-"}, Stdin("line one\nline two\n"));
  EXPECT_EQ(GetJob(id).payload(), "line one\nline two\n");
}

TEST_F(FerryCliTest, SubmitWaitPrintsTheResultOfTheJobAWorkerRan) {
  std::unique_ptr<Subprocess> worker =
      StartWorker("cli-upper", {"/bin/sh", "-c", "tr a-z A-Z"});
  ASSERT_NE(worker, nullptr);
  CliRun run = Ferry({"submit", Queue(), "--payload-file", "-", "--wait"},
                     Stdin("hello ferry\n"));
  EXPECT_EQ(run.code, 0) << run.all;
  EXPECT_EQ(run.out, "HELLO FERRY\n");
  EXPECT_THAT(run.all, HasSubstr("submitted, waiting"));

  // The worker that ran it; what wait, get and watch show of it is tested
  // in process (integration/cli_test.cc).
  v1::ListResponse listed = ListJson({"--queue", Queue()});
  ASSERT_EQ(listed.jobs_size(), 1);
  EXPECT_EQ(listed.jobs(0).worker_id(), "cli-upper");
}

TEST_F(FerryCliTest, UnknownJobIdExitsThreeWithNotFound) {
  const std::string unknown = "987654321";
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"get", unknown},
        std::vector<std::string>{"wait", unknown},
        std::vector<std::string>{"watch", unknown},
        std::vector<std::string>{"cancel", unknown},
        std::vector<std::string>{"retry", unknown},
        std::vector<std::string>{"--json", "get", unknown}}) {
    SCOPED_TRACE(absl::StrJoin(args, " "));
    CliRun run = Ferry(args);
    EXPECT_EQ(run.code, 3) << run.all;
    EXPECT_THAT(run.all, HasSubstr("ferry: job 987654321 not found"));
    EXPECT_THAT(run.out, IsEmpty());
  }
}

TEST_F(FerryCliTest, UnreachableBrokerExitsFourNamingItsAddress) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"get", "1"},
        std::vector<std::string>{"submit", "q"},
        std::vector<std::string>{"queues"},
        std::vector<std::string>{"watch", "1"}}) {
    SCOPED_TRACE(absl::StrJoin(args, " "));
    std::vector<std::string> argv = {"--broker", kUnreachable, "--call-timeout",
                                     "5s"};
    argv.insert(argv.end(), args.begin(), args.end());
    CliRun run = FerryAsIs(argv);
    EXPECT_EQ(run.code, 4) << run.all;
    EXPECT_THAT(run.all, HasSubstr(absl::StrCat("broker ", kUnreachable)));
    EXPECT_THAT(run.all, HasSubstr("is ferryd running there?"));
  }
}

TEST_F(FerryCliTest, FerryBrokerEnvironmentVariableChoosesTheBroker) {
  CliRun submitted = FerryAsIs({"submit", Queue(), "--payload", "via env"},
                               Env("FERRY_BROKER=" + address()));
  ASSERT_EQ(submitted.code, 0) << submitted.all;
  const std::string id(absl::StripTrailingAsciiWhitespace(submitted.out));
  v1::Job job = GetJob(id);
  EXPECT_EQ(job.queue(), Queue());
  EXPECT_EQ(job.payload(), "via env");

  EXPECT_THAT(
      FerryAsIs({"queues"}, Env(absl::StrCat("FERRY_BROKER=", kUnreachable))),
      ExitsWith(4, kUnreachable));

  // --broker wins over the environment.
  CliRun flag = FerryAsIs({"--broker", address(), "get", id},
                          Env(absl::StrCat("FERRY_BROKER=", kUnreachable)));
  EXPECT_EQ(flag.code, 0) << flag.all;
}

TEST_F(FerryCliTest, TlsAndTokenVariablesAreRead) {
  // The broker does not check tokens here: a token reaches it unharmed.
  const std::string secret = "ferry_e2eCliSecretNeverPrinted0123456789abcd";
  const std::string id =
      MustSubmit({"--payload", "with a token"}, Env("FERRY_TOKEN=" + secret));
  EXPECT_EQ(GetJob(id).payload(), "with a token");
  // Each variable is read: a bad one stops ferry before any call.
  const std::string missing = "/nonexistent/ferry-test-file";
  for (const char* name : {"FERRY_TLS_CA", "FERRY_TOKEN_FILE"}) {
    CliRun run = Ferry({"queues"}, Env(absl::StrCat(name, "=", missing)));
    EXPECT_EQ(run.code, 2) << run.all;
    EXPECT_THAT(run.all, HasSubstr(absl::StrCat("ferry: ", name,
                                                ": cannot read ", missing)));
  }
  EXPECT_THAT(
      Ferry({"queues"}, Env("FERRY_TLS_CERT=" + missing)),
      ExitsWith(2, "FERRY_TLS_CERT needs --tls_key (or FERRY_TLS_KEY)"));
  EXPECT_THAT(Ferry({"queues"}, Env("FERRY_TLS_SERVER_NAME=broker.test")),
              ExitsWith(2, "FERRY_TLS_SERVER_NAME needs --tls_ca"));
  CliRun with_token =
      Ferry({"--tls_ca", missing, "queues"}, Env("FERRY_TOKEN=" + secret));
  EXPECT_EQ(with_token.code, 2) << with_token.all;
  EXPECT_THAT(with_token.all, Not(HasSubstr(secret)));
}

TEST_F(FerryCliTest, UnknownCommandExitsTwoWithTheUsage) {
  CliRun run = FerryAsIs({"frobnicate"});
  EXPECT_EQ(run.code, 2) << run.all;
  EXPECT_THAT(run.all, HasSubstr("ferry: unknown command \"frobnicate\""));
  EXPECT_THAT(run.all, HasSubstr("Usage: ferry"));
  EXPECT_THAT(run.out, IsEmpty());

  EXPECT_THAT(FerryAsIs({}), ExitsWith(2, "Usage: ferry"));

  EXPECT_THAT(FerryAsIs({"--verbose", "queues"}),
              ExitsWith(2, "unknown global option --verbose"));
  CliRun prefix = FerryAsIs({"--brokers=x", "queues"});  // not --broker
  EXPECT_EQ(prefix.code, 2) << prefix.all;
  EXPECT_THAT(prefix.all, HasSubstr("unknown global option --brokers=x"));
  EXPECT_THAT(FerryAsIs({"--call-timeout", "inf", "queues"}),
              ExitsWith(2, "--call-timeout wants a duration"));

  EXPECT_THAT(FerryAsIs({"help", "frobnicate"}),
              ExitsWith(2, "unknown command frobnicate"));
}

}  // namespace
}  // namespace ferry::testing
