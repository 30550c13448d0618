// End to end: the real `ferry` CLI against a real ferryd (one per suite, in a
// temporary directory), with the real ferry-worker where a job must run.
// Every command, its --json form, its exit codes and its error messages.
//
// Tests share the broker, so each works in its own queue, named after the
// test (Queue()).

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ferry/v1/jobs.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/time_util.h"
#include "tests/e2e/subprocess.h"
#include "tests/loopback_socket.h"
#include "tests/status_matchers.h"
#include "tests/store_test_util.h"

namespace ferry::testing {
namespace {

using ::testing::_;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::Pair;
using ::testing::SizeIs;
using ::testing::StartsWith;
using ::testing::UnorderedElementsAre;

constexpr absl::Duration kStartTimeout = absl::Seconds(30);
// Bounds one command; a healthy one takes milliseconds.
constexpr absl::Duration kCommandTimeout = absl::Seconds(30);
// Nothing listens on port 1 of loopback.
constexpr char kUnreachable[] = "127.0.0.1:1";

// How a `ferry` run ended.
struct CliRun {
  int code = -1;
  std::string out;  // stdout only
  std::string all;  // stdout and stderr, line by line
};

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

// Parses what `ferry --json` printed into the message it stands for; a
// failed test if it is not exactly that message as JSON.
template <typename Message>
Message ParseJson(absl::string_view json) {
  Message message;
  google::protobuf::util::Status status =
      google::protobuf::util::JsonStringToMessage(
          std::string(absl::StripAsciiWhitespace(json)), &message);
  EXPECT_TRUE(status.ok()) << status.ToString() << " in:\n" << json;
  return message;
}

std::vector<std::string> Ids(const v1::ListResponse& response) {
  std::vector<std::string> ids;
  for (const v1::Job& job : response.jobs()) ids.push_back(job.id());
  return ids;
}

// The non-empty lines of `text`.
std::vector<std::string> Lines(absl::string_view text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

// The cells of the table row whose first cell is `first`; empty if none.
std::vector<std::string> Row(absl::string_view table, absl::string_view first) {
  for (const std::string& line : Lines(table)) {
    std::vector<std::string> cells =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (!cells.empty() && cells[0] == first) return cells;
  }
  return {};
}

class FerryCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Only what a test passes on purpose may point ferry at a broker.
    unsetenv("FERRY_BROKER");
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
    CliRun run = Ferry(std::move(args), std::move(options));
    EXPECT_EQ(run.code, 0) << run.all;
    EXPECT_THAT(run.out, MatchesRegex("[0-9]+\n")) << run.all;
    return std::string(absl::StripTrailingAsciiWhitespace(run.out));
  }

  // The job as `ferry --json get` shows it.
  v1::Job GetJob(const std::string& id) {
    CliRun run = Ferry({"--json", "get", id});
    EXPECT_EQ(run.code, 0) << run.all;
    return ParseJson<v1::Job>(run.out);
  }

  // `ferry --json list ARGS...`, as a ListResponse.
  v1::ListResponse ListJson(std::vector<std::string> args) {
    args.insert(args.begin(), {"--json", "list"});
    CliRun run = Ferry(std::move(args));
    EXPECT_EQ(run.code, 0) << run.all;
    return ParseJson<v1::ListResponse>(run.out);
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

TEST_F(FerryCliTest, SubmitOptionsAreStoredOnTheJob) {
  const std::string id =
      MustSubmit({"--kind", "resize", "--payload", "{\"w\":640}",
                  "--content-type", "application/json", "--priority", "-5",
                  "--max-attempts", "2", "--timeout", "90s", "--lease-ttl",
                  "45s", "--label", "tenant=acme", "--label", "env=prod"});
  v1::Job job = GetJob(id);
  EXPECT_EQ(job.kind(), "resize");
  EXPECT_EQ(job.payload(), "{\"w\":640}");
  EXPECT_EQ(job.content_type(), "application/json");
  EXPECT_EQ(job.priority(), -5);
  EXPECT_EQ(job.retry().max_attempts(), 2u);
  EXPECT_EQ(FromProto(job.timeout()), absl::Seconds(90));
  EXPECT_EQ(FromProto(job.lease_ttl()), absl::Seconds(45));
  EXPECT_THAT(job.labels(), UnorderedElementsAre(Pair("tenant", "acme"),
                                                 Pair("env", "prod")));
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
}

TEST_F(FerryCliTest, SubmitWithDelayIsScheduledThatLongAfterItsCreation) {
  v1::Job job = GetJob(MustSubmit({"--delay", "1h"}));
  EXPECT_EQ(job.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(FromProto(job.run_at()) - FromProto(job.created_at()),
            absl::Hours(1));
}

TEST_F(FerryCliTest, SubmitWithAtIsScheduledForThatTime) {
  const absl::Time at =
      absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now() + absl::Hours(2)));
  const std::string text =
      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", at, absl::UTCTimeZone());
  v1::Job job = GetJob(MustSubmit({"--at", text}));
  EXPECT_EQ(job.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(FromProto(job.run_at()), at) << text;
}

TEST_F(FerryCliTest, SubmitReadsThePayloadFromAFileByteForByte) {
  ScopedTempDir dir;
  const std::string path = dir.path() + "/payload.bin";
  const std::string bytes("\x00\x01\x02 binary \xff\n", 13);
  {
    std::ofstream file(path, std::ios::binary);
    file << bytes;
  }
  const std::string id = MustSubmit({"--payload-file", path});
  EXPECT_EQ(GetJob(id).payload(), bytes);
  // The human form does not print bytes that are not text.
  CliRun get = Ferry({"get", id});
  EXPECT_EQ(get.code, 0) << get.all;
  EXPECT_THAT(get.out, HasSubstr("(13 bytes, not text; use --json)"));

  CliRun missing = Ferry({"submit", Queue(), "--payload-file", path + ".none"});
  EXPECT_EQ(missing.code, 2) << missing.all;
  EXPECT_THAT(missing.all,
              HasSubstr("cannot read " + path + ".none: No such file"));

  // A directory opens but cannot be read: a usage error, not a crash.
  CliRun directory = Ferry({"submit", Queue(), "--payload-file", dir.path()});
  EXPECT_EQ(directory.code, 2) << directory.all;
  EXPECT_THAT(directory.all,
              HasSubstr("cannot read " + dir.path() + ": Is a directory"));
}

TEST_F(FerryCliTest, SubmitReadsThePayloadFromStdinForPayloadFileDash) {
  const std::string id =
      MustSubmit({"--payload-file", "-"}, Stdin("line one\nline two\n"));
  EXPECT_EQ(GetJob(id).payload(), "line one\nline two\n");
}

TEST_F(FerryCliTest, SubmitWithAKnownIdempotencyKeyPrintsTheSameIdAndSaysSo) {
  CliRun first = Ferry({"submit", Queue(), "--idempotency-key", "order-42"});
  ASSERT_EQ(first.code, 0) << first.all;
  EXPECT_THAT(first.all, Not(HasSubstr("already exists")));
  CliRun again = Ferry({"submit", Queue(), "--idempotency-key", "order-42"});
  EXPECT_EQ(again.code, 0) << again.all;
  EXPECT_EQ(again.out, first.out);
  const std::string id(absl::StripTrailingAsciiWhitespace(first.out));
  EXPECT_THAT(again.all,
              HasSubstr(absl::StrCat(
                  "job ", id, " already exists with this idempotency key")));
  EXPECT_EQ(GetJob(id).idempotency_key(), "order-42");
  EXPECT_THAT(ListJson({"--queue", Queue()}).jobs(), SizeIs(1));
}

TEST_F(FerryCliTest, SubmitJsonPrintsTheSubmitResponse) {
  CliRun first = Ferry({"--json", "submit", Queue(), "--idempotency-key", "k"});
  ASSERT_EQ(first.code, 0) << first.all;
  auto created = ParseJson<v1::SubmitResponse>(first.out);
  EXPECT_TRUE(created.created());
  EXPECT_EQ(created.job().queue(), Queue());
  EXPECT_EQ(created.job().state(), v1::JOB_STATE_QUEUED);

  CliRun again = Ferry({"submit", Queue(), "--idempotency-key", "k", "--json"});
  ASSERT_EQ(again.code, 0) << again.all;
  auto existing = ParseJson<v1::SubmitResponse>(again.out);
  EXPECT_FALSE(existing.created());
  EXPECT_EQ(existing.job().id(), created.job().id());
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

  v1::ListResponse listed = ListJson({"--queue", Queue()});
  ASSERT_EQ(listed.jobs_size(), 1);
  const std::string id = listed.jobs(0).id();

  // The finished job, seen by every command that reads it.
  CliRun wait = Ferry({"wait", id, "--timeout", "10s"});
  EXPECT_EQ(wait.code, 0) << wait.all;
  EXPECT_EQ(wait.out, "HELLO FERRY\n");

  CliRun wait_json = Ferry({"--json", "wait", id});
  EXPECT_EQ(wait_json.code, 0) << wait_json.all;
  auto waited = ParseJson<v1::WaitResponse>(wait_json.out);
  EXPECT_TRUE(waited.done());
  EXPECT_EQ(waited.job().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(waited.job().result(), "HELLO FERRY\n");
  EXPECT_EQ(waited.job().worker_id(), "cli-upper");

  CliRun get = Ferry({"get", id});
  EXPECT_EQ(get.code, 0) << get.all;
  EXPECT_THAT(get.out, HasSubstr("SUCCEEDED"));
  EXPECT_THAT(get.out, HasSubstr("HELLO FERRY"));
  EXPECT_THAT(get.out, HasSubstr("cli-upper"));

  // Watching a finished job prints its state once and exits 0.
  CliRun watch = Ferry({"watch", id});
  EXPECT_EQ(watch.code, 0) << watch.all;
  EXPECT_THAT(Lines(watch.out),
              ElementsAre(HasSubstr(absl::StrCat("job ", id, " SUCCEEDED"))));
}

TEST_F(FerryCliTest, SubmitWaitOnAJobThatFailsExitsFiveWithTheError) {
  std::unique_ptr<Subprocess> worker = StartWorker(
      "cli-failing", {"/bin/sh", "-c", "echo disk full >&2; exit 3"});
  ASSERT_NE(worker, nullptr);
  CliRun run = Ferry({"submit", Queue(), "--max-attempts", "1", "--wait"});
  EXPECT_EQ(run.code, 5) << run.all;
  EXPECT_THAT(run.out, IsEmpty());
  EXPECT_THAT(run.all, HasSubstr("FAILED: exit status 3: disk full"));

  v1::ListResponse listed = ListJson({"--queue", Queue()});
  ASSERT_EQ(listed.jobs_size(), 1);
  CliRun wait = Ferry({"wait", listed.jobs(0).id()});
  EXPECT_EQ(wait.code, 5) << wait.all;
  EXPECT_THAT(wait.all, HasSubstr("disk full"));
}

TEST_F(FerryCliTest, SubmitWaitTimeoutOnAJobNobodyRunsExitsSix) {
  CliRun run = Ferry({"submit", Queue(), "--wait", "--wait-timeout", "100ms"});
  EXPECT_EQ(run.code, 6) << run.all;
  EXPECT_THAT(run.all, HasSubstr("is still QUEUED after the wait timeout"));
}

TEST_F(FerryCliTest, SubmitWithBadOptionsIsAUsageErrorAndSubmitsNothing) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--priority", "high"}, "--priority wants an integer"},
      {{"--priority"}, "--priority needs a value"},
      {{"--delay", "soon"}, "--delay wants a duration"},
      {{"--delay", "1m", "--at", "2030-01-01T00:00:00Z"},
       "give --delay or --at, not both"},
      {{"--at", "tomorrow"}, "--at wants RFC 3339"},
      {{"--max-attempts", "-1"}, "--max-attempts wants a positive integer"},
      {{"--max-attempts", "0"}, "--max-attempts wants a positive integer"},
      {{"--wait-timeout", "5m"}, "--wait-timeout goes with --wait"},
      {{"--timeout", "long"}, "--timeout wants a duration"},
      {{"--label", "novalue"}, "--label wants key=value"},
      {{"--payload", "a", "--payload-file", "-"},
       "give --payload or --payload-file, not both"},
      {{"--kind", "a", "--kind", "b"}, "--kind given twice"},
      {{"--wait=yes"}, "--wait takes no value"},
  };
  for (const auto& [args, message] : cases) {
    SCOPED_TRACE(absl::StrJoin(args, " "));
    std::vector<std::string> argv = {"submit", Queue()};
    argv.insert(argv.end(), args.begin(), args.end());
    CliRun run = Ferry(argv);
    EXPECT_EQ(run.code, 2) << run.all;
    EXPECT_THAT(run.all, HasSubstr(message));
    EXPECT_THAT(run.all, HasSubstr("Usage: ferry submit QUEUE"));
  }
  CliRun no_queue = Ferry({"submit"});
  EXPECT_EQ(no_queue.code, 2) << no_queue.all;
  EXPECT_THAT(no_queue.all, HasSubstr("expected one QUEUE"));
  EXPECT_THAT(ListJson({"--queue", Queue()}).jobs(), IsEmpty());
}

// ---------------------------------------------------------------- get

TEST_F(FerryCliTest, GetPrintsTheJobsFieldsForPeople) {
  const std::string id =
      MustSubmit({"--kind", "thumb", "--payload", "cat.png", "--label",
                  "tenant=acme", "--idempotency-key", "img-7"});
  CliRun run = Ferry({"get", id});
  EXPECT_EQ(run.code, 0) << run.all;
  EXPECT_THAT(Lines(run.out), Contains(MatchesRegex("id: +" + id)));
  for (const char* field :
       {"queue: ", "kind: ", "state: ", "attempt: ", "priority: ", "created: ",
        "run at: ", "labels: ", "idempotency key: ", "payload: "}) {
    EXPECT_THAT(run.out, HasSubstr(field));
  }
  EXPECT_THAT(run.out, HasSubstr(Queue()));
  EXPECT_THAT(run.out, HasSubstr("thumb"));
  EXPECT_THAT(run.out, HasSubstr("QUEUED"));
  EXPECT_THAT(run.out, HasSubstr("0 of 5"));
  EXPECT_THAT(run.out, HasSubstr("tenant=acme"));
  EXPECT_THAT(run.out, HasSubstr("img-7"));
  EXPECT_THAT(run.out, HasSubstr("cat.png"));
}

TEST_F(FerryCliTest, GetJsonPrintsTheWholeJobAsJson) {
  const std::string id = MustSubmit({"--payload", "p", "--label", "a=b"});
  // --json may come before or after the command.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--json", "get", id},
        std::vector<std::string>{"get", id, "--json"}}) {
    CliRun run = Ferry(args);
    EXPECT_EQ(run.code, 0) << run.all;
    v1::Job job = ParseJson<v1::Job>(run.out);
    EXPECT_EQ(job.id(), id);
    EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
    EXPECT_EQ(job.payload(), "p");
    EXPECT_THAT(job.labels(), ElementsAre(Pair("a", "b")));
    // Field names as in the proto, every scalar field present.
    EXPECT_THAT(run.out, HasSubstr("\"state\":\"JOB_STATE_QUEUED\""));
    EXPECT_THAT(run.out, HasSubstr("\"last_error\":\"\""));
  }
}

// ------------------------------------------------------------- wait, watch

TEST_F(FerryCliTest, WaitTimeoutOnAJobNobodyRunsExitsSix) {
  const std::string id = MustSubmit();
  CliRun run = Ferry({"wait", id, "--timeout", "100ms"});
  EXPECT_EQ(run.code, 6) << run.all;
  EXPECT_THAT(run.all, HasSubstr(absl::StrCat(
                           "job ", id, " is still QUEUED after the wait")));

  CliRun json = Ferry({"--json", "wait", id, "--timeout", "100ms"});
  EXPECT_EQ(json.code, 6) << json.all;
  auto waited = ParseJson<v1::WaitResponse>(json.out);
  EXPECT_FALSE(waited.done());
  EXPECT_EQ(waited.job().id(), id);
}

TEST_F(FerryCliTest, WaitOnACancelledJobExitsFive) {
  const std::string id = MustSubmit();
  ASSERT_EQ(Ferry({"cancel", id, "--reason", "changed plans"}).code, 0);
  CliRun run = Ferry({"wait", id});
  EXPECT_EQ(run.code, 5) << run.all;
  EXPECT_THAT(run.all, HasSubstr("CANCELLED: changed plans"));
}

TEST_F(FerryCliTest, WatchPrintsEachStateUntilTheJobIsTerminal) {
  const std::string id = MustSubmit();
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> watch,
      Subprocess::Start({FERRY_PATH, "--broker=" + address(), "watch", id}));
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::string queued,
      watch->WaitForLine(absl::StrCat("job ", id, " "), kCommandTimeout));
  EXPECT_THAT(queued, HasSubstr(" QUEUED attempt=0"));

  ASSERT_EQ(Ferry({"cancel", id, "--reason", "not needed"}).code, 0);
  FERRY_ASSERT_OK_AND_ASSIGN(std::string cancelled,
                             watch->WaitForLine("CANCELLED", kCommandTimeout));
  EXPECT_THAT(cancelled, HasSubstr(absl::StrCat("job ", id, " CANCELLED")));
  EXPECT_THAT(cancelled, HasSubstr("error=\"not needed\""));
  // A cancelled job ends the watch with the job-failed code.
  EXPECT_THAT(watch->Wait(kCommandTimeout), IsOkAndHolds(5));
  EXPECT_THAT(Lines(watch->Stdout()), ElementsAre(queued, cancelled));
}

TEST_F(FerryCliTest, WatchJsonPrintsOneWatchResponsePerLine) {
  const std::string id = MustSubmit();
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> watch,
      Subprocess::Start(
          {FERRY_PATH, "--broker=" + address(), "--json", "watch", id}));
  ASSERT_THAT(watch->WaitForLine("JOB_STATE_QUEUED", kCommandTimeout), IsOk());
  ASSERT_EQ(Ferry({"cancel", id}).code, 0);
  EXPECT_THAT(watch->Wait(kCommandTimeout), IsOkAndHolds(5));

  std::vector<v1::JobState> states;
  for (const std::string& line : Lines(watch->Stdout())) {
    auto update = ParseJson<v1::WatchResponse>(line);
    EXPECT_EQ(update.job().id(), id);
    states.push_back(update.job().state());
  }
  EXPECT_THAT(states,
              ElementsAre(v1::JOB_STATE_QUEUED, v1::JOB_STATE_CANCELLED));
}

// -------------------------------------------------------------------- list

TEST_F(FerryCliTest, ListFiltersByQueueStateKindAndLabel) {
  const std::string r1 =
      MustSubmit({"--kind", "resize", "--label", "tenant=acme"});
  const std::string r2 = MustSubmit({"--kind", "resize"});
  const std::string e1 =
      MustSubmit({"--kind", "email", "--label", "tenant=acme"});
  const std::string e2 = MustSubmit({"--kind", "email"});
  ASSERT_EQ(Ferry({"cancel", e2}).code, 0);

  // Newest first unless --oldest-first.
  EXPECT_THAT(Ids(ListJson({"--queue", Queue()})), ElementsAre(e2, e1, r2, r1));
  EXPECT_THAT(Ids(ListJson({"--queue", Queue(), "--oldest-first"})),
              ElementsAre(r1, r2, e1, e2));
  EXPECT_THAT(Ids(ListJson({"--queue", Queue(), "--state", "cancelled"})),
              ElementsAre(e2));
  EXPECT_THAT(Ids(ListJson({"--queue", Queue(), "--state", "QUEUED"})),
              ElementsAre(e1, r2, r1));
  EXPECT_THAT(Ids(ListJson({"--queue", Queue(), "--kind", "email"})),
              ElementsAre(e2, e1));
  EXPECT_THAT(Ids(ListJson({"--queue", Queue(), "--label", "tenant=acme"})),
              ElementsAre(e1, r1));
  EXPECT_THAT(Ids(ListJson({"--queue", Queue(), "--kind", "resize", "--label",
                            "tenant=acme"})),
              ElementsAre(r1));
  EXPECT_THAT(ListJson({"--queue", Queue(), "--kind", "nothing"}).jobs(),
              IsEmpty());

  // The table: a header, then one row per job.
  CliRun table = Ferry({"list", "--queue", Queue()});
  EXPECT_EQ(table.code, 0) << table.all;
  std::vector<std::string> lines = Lines(table.out);
  ASSERT_EQ(lines.size(), 5u) << table.out;
  EXPECT_THAT(lines[0], MatchesRegex("ID +QUEUE +KIND +STATE +ATTEMPT +CREATED "
                                     "+WORKER +LAST ERROR"));
  EXPECT_THAT(Row(table.out, e2),
              ElementsAre(e2, Queue(), "email", "CANCELLED", "0/5",
                          StartsWith("20"), "-", "cancelled"));
  EXPECT_THAT(Row(table.out, r1), ElementsAre(r1, Queue(), "resize", "QUEUED",
                                              "0/5", StartsWith("20"), "-"));
}

TEST_F(FerryCliTest, ListKeepsAMultiLineErrorOnTheJobsLine) {
  const std::string id = MustSubmit();
  ASSERT_EQ(Ferry({"cancel", id, "--reason", "first line\nsecond line\n"}).code,
            0);
  CliRun table = Ferry({"list", "--queue", Queue()});
  EXPECT_EQ(table.code, 0) << table.all;
  ASSERT_THAT(Lines(table.out), SizeIs(2)) << table.out;  // header, the job
  EXPECT_THAT(Lines(table.out)[1], HasSubstr("first line | second line"));
}

TEST_F(FerryCliTest, ListLimitShowsTheNewestAndAllShowsEveryJob) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(MustSubmit());

  EXPECT_THAT(Ids(ListJson({"--queue", Queue(), "--limit", "2"})),
              ElementsAre(ids[4], ids[3]));
  EXPECT_THAT(
      Ids(ListJson({"--queue", Queue(), "--limit", "2", "--oldest-first"})),
      ElementsAre(ids[0], ids[1]));
  EXPECT_THAT(Ids(ListJson({"--queue", Queue(), "--all", "--oldest-first"})),
              ElementsAreArray(ids));
  EXPECT_THAT(ListJson({"--queue", Queue(), "--limit", "2", "--all"}).jobs(),
              SizeIs(5));

  // People are told there is more.
  CliRun limited = Ferry({"list", "--queue", Queue(), "--limit", "2"});
  EXPECT_EQ(limited.code, 0) << limited.all;
  EXPECT_EQ(Lines(limited.out).size(), 3u) << limited.out;
  EXPECT_THAT(limited.all,
              HasSubstr("(more jobs: raise --limit or use --all)"));
  CliRun all = Ferry({"list", "--queue", Queue(), "--all"});
  EXPECT_EQ(all.code, 0) << all.all;
  EXPECT_EQ(Lines(all.out).size(), 6u) << all.out;
  EXPECT_THAT(all.all, Not(HasSubstr("more jobs")));
  // A limit that takes exactly every job leaves nothing more to tell.
  CliRun exact = Ferry({"list", "--queue", Queue(), "--limit", "5"});
  EXPECT_EQ(Lines(exact.out).size(), 6u) << exact.out;
  EXPECT_THAT(exact.all, Not(HasSubstr("more jobs")));
}

TEST_F(FerryCliTest, ListWithoutLimitShowsTwentyJobs) {
  // Set up through the API: 25 submits by the CLI would only be slower.
  auto jobs = v1::Jobs::NewStub(
      grpc::CreateChannel(address(), grpc::InsecureChannelCredentials()));
  v1::SubmitBatchRequest request;
  for (int i = 0; i < 25; ++i) {
    v1::JobSpec* spec = request.add_jobs();
    spec->set_queue(Queue());
    spec->set_kind("k");
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kCommandTimeout));
  v1::SubmitBatchResponse response;
  ASSERT_TRUE(jobs->SubmitBatch(&ctx, request, &response).ok());

  EXPECT_THAT(ListJson({"--queue", Queue()}).jobs(), SizeIs(20));
  EXPECT_THAT(ListJson({"--queue", Queue(), "--all"}).jobs(), SizeIs(25));
  EXPECT_THAT(ListJson({"--queue", Queue(), "--limit", "1000"}).jobs(),
              SizeIs(25));
}

TEST_F(FerryCliTest, ListWithBadFiltersIsAUsageError) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--state", "sleeping"},
        std::vector<std::string>{"--state", "unspecified"},
        std::vector<std::string>{"--limit", "0"},
        std::vector<std::string>{"--limit", "many"},
        std::vector<std::string>{"--label", "=v"},
        std::vector<std::string>{"extra"}}) {
    SCOPED_TRACE(absl::StrJoin(args, " "));
    std::vector<std::string> argv = {"list"};
    argv.insert(argv.end(), args.begin(), args.end());
    CliRun run = Ferry(argv);
    EXPECT_EQ(run.code, 2) << run.all;
    EXPECT_THAT(run.all, HasSubstr("Usage: ferry list"));
  }
  CliRun bad_queue = Ferry({"list", "--queue", "no such queue"});
  EXPECT_EQ(bad_queue.code, 2) << bad_queue.all;
  EXPECT_THAT(bad_queue.all, HasSubstr("is invalid"));
}

// ------------------------------------------------------------ cancel, retry

TEST_F(FerryCliTest, CancelAndRetryMoveTheJobAndSayWhereItIs) {
  const std::string id = MustSubmit();
  CliRun cancel = Ferry({"cancel", id, "--reason", "customer left"});
  EXPECT_EQ(cancel.code, 0) << cancel.all;
  EXPECT_EQ(cancel.out, absl::StrCat("job ", id, " CANCELLED\n"));
  v1::Job cancelled = GetJob(id);
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(cancelled.last_error(), HasSubstr("customer left"));

  // Cancelling again is refused by the broker: exit 1 with its message.
  CliRun again = Ferry({"cancel", id});
  EXPECT_EQ(again.code, 1) << again.all;
  EXPECT_THAT(again.all, HasSubstr(absl::StrCat("ferry: job ", id, " is ")));

  CliRun retry = Ferry({"retry", id});
  EXPECT_EQ(retry.code, 0) << retry.all;
  EXPECT_EQ(retry.out, absl::StrCat("job ", id, " QUEUED\n"));
  EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_QUEUED);

  // A queued job cannot be retried.
  CliRun retry_again = Ferry({"retry", id});
  EXPECT_EQ(retry_again.code, 1) << retry_again.all;
  EXPECT_THAT(retry_again.all, HasSubstr("ferry: job " + id));
}

TEST_F(FerryCliTest, CancelAndRetryJsonPrintTheJob) {
  const std::string id = MustSubmit();
  CliRun cancel = Ferry({"--json", "cancel", id});
  EXPECT_EQ(cancel.code, 0) << cancel.all;
  v1::Job cancelled = ParseJson<v1::Job>(cancel.out);
  EXPECT_EQ(cancelled.id(), id);
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);

  CliRun retry = Ferry({"--json", "retry", id});
  EXPECT_EQ(retry.code, 0) << retry.all;
  EXPECT_EQ(ParseJson<v1::Job>(retry.out).state(), v1::JOB_STATE_QUEUED);
}

// ------------------------------------------------------------------ queues

TEST_F(FerryCliTest, QueuesShowsCountsPerStateAndWhetherPaused) {
  MustSubmit();
  MustSubmit();
  ASSERT_EQ(Ferry({"cancel", MustSubmit()}).code, 0);
  MustSubmit({"--delay", "1h"});

  CliRun queues = Ferry({"queues"});
  EXPECT_EQ(queues.code, 0) << queues.all;
  EXPECT_THAT(Lines(queues.out)[0],
              MatchesRegex("QUEUE +SCHEDULED +QUEUED +RUNNING +SUCCEEDED "
                           "+FAILED +CANCELLED +OLDEST"));
  EXPECT_THAT(Row(queues.out, Queue()),
              ElementsAre(Queue(), "1", "2", "0", "0", "0", "1", _));

  CliRun pause = Ferry({"pause", Queue()});
  EXPECT_EQ(pause.code, 0) << pause.all;
  EXPECT_EQ(pause.out, absl::StrCat("queue ", Queue(), " paused\n"));
  CliRun paused = Ferry({"queues"});
  EXPECT_THAT(
      Row(paused.out, Queue()),
      ElementsAre(Queue(), "(paused)", "1", "2", "0", "0", "0", "1", _));

  CliRun paused_json = Ferry({"--json", "queues"});
  EXPECT_EQ(paused_json.code, 0) << paused_json.all;
  bool found = false;
  const auto stats = ParseJson<v1::QueueStatsResponse>(paused_json.out);
  for (const v1::QueueInfo& q : stats.queues()) {
    if (q.name() != Queue()) continue;
    found = true;
    EXPECT_TRUE(q.paused());
    EXPECT_EQ(q.scheduled(), 1u);
    EXPECT_EQ(q.queued(), 2u);
    EXPECT_EQ(q.cancelled(), 1u);
  }
  EXPECT_TRUE(found) << paused_json.out;

  CliRun resume = Ferry({"resume", Queue()});
  EXPECT_EQ(resume.code, 0) << resume.all;
  EXPECT_EQ(resume.out, absl::StrCat("queue ", Queue(), " resumed\n"));
  EXPECT_THAT(Row(Ferry({"queues"}).out, Queue()),
              ElementsAre(Queue(), "1", "2", "0", "0", "0", "1", _));
}

TEST_F(FerryCliTest, PauseAndResumeJsonPrintAnEmptyObject) {
  CliRun pause = Ferry({"--json", "pause", Queue()});
  EXPECT_EQ(pause.code, 0) << pause.all;
  EXPECT_EQ(pause.out, "{}\n");
  CliRun resume = Ferry({"--json", "resume", Queue()});
  EXPECT_EQ(resume.code, 0) << resume.all;
  EXPECT_EQ(resume.out, "{}\n");
  CliRun bad = Ferry({"pause", "bad queue"});
  EXPECT_EQ(bad.code, 2) << bad.all;
  EXPECT_THAT(bad.all, HasSubstr("queue \"bad queue\" is invalid"));
}

TEST_F(FerryCliTest, PurgeDeletesTheJobsOfOneStateAndSaysHowMany) {
  const std::string a = MustSubmit();
  const std::string b = MustSubmit();
  const std::string cancelled = MustSubmit();
  ASSERT_EQ(Ferry({"cancel", cancelled}).code, 0);

  CliRun purge = Ferry({"purge", Queue(), "--state", "queued"});
  EXPECT_EQ(purge.code, 0) << purge.all;
  EXPECT_EQ(purge.out,
            absl::StrCat("purged 2 QUEUED jobs from ", Queue(), "\n"));
  EXPECT_EQ(Ferry({"get", a}).code, 3);
  EXPECT_EQ(Ferry({"get", b}).code, 3);
  EXPECT_EQ(GetJob(cancelled).state(), v1::JOB_STATE_CANCELLED);

  CliRun json = Ferry({"--json", "purge", Queue(), "--state", "cancelled"});
  EXPECT_EQ(json.code, 0) << json.all;
  EXPECT_EQ(ParseJson<v1::PurgeQueueResponse>(json.out).purged(), 1u);
  EXPECT_THAT(ListJson({"--queue", Queue()}).jobs(), IsEmpty());
}

TEST_F(FerryCliTest, PurgeNeedsAStateThatIsNotRunning) {
  CliRun no_state = Ferry({"purge", Queue()});
  EXPECT_EQ(no_state.code, 2) << no_state.all;
  EXPECT_THAT(no_state.all, HasSubstr("--state is required"));
  CliRun bad_state = Ferry({"purge", Queue(), "--state", "gone"});
  EXPECT_EQ(bad_state.code, 2) << bad_state.all;
  EXPECT_THAT(bad_state.all, HasSubstr("unknown state gone"));
  // The broker refuses RUNNING: cancel those instead.
  CliRun running = Ferry({"purge", Queue(), "--state", "running"});
  EXPECT_EQ(running.code, 1) << running.all;
  EXPECT_THAT(running.all, StartsWith("ferry: "));
}

TEST_F(FerryCliTest, WorkersShowsAConnectedFerryWorker) {
  std::unique_ptr<Subprocess> worker =
      StartWorker("cli-listed-worker", {"/bin/cat"});
  ASSERT_NE(worker, nullptr);

  CliRun table = Ferry({"workers"});
  EXPECT_EQ(table.code, 0) << table.all;
  EXPECT_THAT(Lines(table.out)[0],
              MatchesRegex("WORKER +HOST +QUEUES +CREDITS +LEASES +CONNECTED "
                           "+LAST SEEN +PEER"));
  EXPECT_THAT(
      Row(table.out, "cli-listed-worker"),
      ElementsAre("cli-listed-worker", _, Queue(), "1", "0", StartsWith("20"),
                  StartsWith("20"), HasSubstr("127.0.0.1")));

  CliRun json = Ferry({"--json", "workers"});
  EXPECT_EQ(json.code, 0) << json.all;
  bool found = false;
  const auto workers = ParseJson<v1::ListWorkersResponse>(json.out);
  for (const v1::WorkerInfo& w : workers.workers()) {
    if (w.worker_id() != "cli-listed-worker") continue;
    found = true;
    EXPECT_THAT(w.queues(), ElementsAre(Queue()));
    EXPECT_EQ(w.pid(), static_cast<uint32_t>(worker->pid()));
    EXPECT_THAT(w.version(), StartsWith("ferry-worker/"));
  }
  EXPECT_TRUE(found) << json.out;
}

// ------------------------------------------------------------------ errors

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

TEST_F(FerryCliTest, MalformedJobIdExitsTwoWithTheBrokersMessage) {
  for (const std::string command : {"get", "wait", "watch", "cancel"}) {
    SCOPED_TRACE(command);
    CliRun run = Ferry({command, "12abc"});
    EXPECT_EQ(run.code, 2) << run.all;
    EXPECT_THAT(run.all,
                HasSubstr("job_id must be a positive integer as returned by "
                          "Submit, got \"12abc\""));
  }
  CliRun no_id = Ferry({"get"});
  EXPECT_EQ(no_id.code, 2) << no_id.all;
  EXPECT_THAT(no_id.all, HasSubstr("expected one ID"));
}

TEST_F(FerryCliTest, InvalidQueueNameExitsTwoWithTheBrokersMessage) {
  CliRun run = Ferry({"submit", "bad/queue"});
  EXPECT_EQ(run.code, 2) << run.all;
  EXPECT_THAT(run.all,
              HasSubstr("ferry: queue \"bad/queue\" is invalid: use 1-128 "
                        "characters"));
  EXPECT_THAT(run.out, IsEmpty());
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

TEST_F(FerryCliTest, UnavailableFromTheBrokerItselfDoesNotAskIfItRuns) {
  // A broker of its own, shut down under a watch: it answers UNAVAILABLE
  // itself, which is not "unreachable".
  ScopedTempDir dir;
  std::string address;
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> broker,
      StartFerryd(FERRYD_PATH, {"--db=" + dir.path() + "/ferry.db"}, &address));
  CliRun submitted = FerryAsIs({"--broker", address, "submit", "q"});
  ASSERT_EQ(submitted.code, 0) << submitted.all;
  const std::string id(absl::StripTrailingAsciiWhitespace(submitted.out));
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> watch,
      Subprocess::Start({FERRY_PATH, "--broker=" + address, "watch", id}));
  ASSERT_THAT(watch->WaitForLine(" QUEUED ", kCommandTimeout), IsOk());

  broker->Signal(SIGTERM);
  EXPECT_THAT(watch->Wait(kCommandTimeout), IsOkAndHolds(4));
  (void)watch->WaitForLine("\x01never\x01", absl::Seconds(5));  // EOF
  EXPECT_THAT(watch->Output(), HasSubstr("the broker is shutting down"));
  EXPECT_THAT(watch->Output(), Not(HasSubstr("is ferryd running there?")));
  EXPECT_THAT(broker->Wait(kCommandTimeout), IsOkAndHolds(0));
}

TEST_F(FerryCliTest, CallThatTimesOutSaysItMayHaveHappened) {
  // A port that takes connections and never answers: the call can only
  // run out of time.
  LoopbackSocket silent(LoopbackSocket::Mode::kSilent);
  ASSERT_FALSE(silent.address().empty()) << silent.error();
  const std::string& broker = silent.address();

  CliRun run =
      FerryAsIs({"--broker", broker, "--call-timeout", "300ms", "queues"});
  EXPECT_EQ(run.code, 4) << run.all;
  EXPECT_THAT(run.all, HasSubstr("Deadline Exceeded"));
  EXPECT_THAT(run.all, HasSubstr("may still have been carried out"));
  EXPECT_THAT(run.all, Not(HasSubstr("is ferryd running there?")));
}

TEST_F(FerryCliTest, FerryBrokerEnvironmentVariableChoosesTheBroker) {
  CliRun submitted = FerryAsIs({"submit", Queue(), "--payload", "via env"},
                               Env("FERRY_BROKER=" + address()));
  ASSERT_EQ(submitted.code, 0) << submitted.all;
  const std::string id(absl::StripTrailingAsciiWhitespace(submitted.out));
  v1::Job job = GetJob(id);
  EXPECT_EQ(job.queue(), Queue());
  EXPECT_EQ(job.payload(), "via env");

  CliRun unreachable =
      FerryAsIs({"queues"}, Env(absl::StrCat("FERRY_BROKER=", kUnreachable)));
  EXPECT_EQ(unreachable.code, 4) << unreachable.all;
  EXPECT_THAT(unreachable.all, HasSubstr(kUnreachable));

  // --broker wins over the environment.
  CliRun flag = FerryAsIs({"--broker", address(), "get", id},
                          Env(absl::StrCat("FERRY_BROKER=", kUnreachable)));
  EXPECT_EQ(flag.code, 0) << flag.all;
}

TEST_F(FerryCliTest, UnknownCommandExitsTwoWithTheUsage) {
  CliRun run = FerryAsIs({"frobnicate"});
  EXPECT_EQ(run.code, 2) << run.all;
  EXPECT_THAT(run.all, HasSubstr("ferry: unknown command \"frobnicate\""));
  EXPECT_THAT(run.all, HasSubstr("Usage: ferry"));
  EXPECT_THAT(run.out, IsEmpty());

  CliRun nothing = FerryAsIs({});
  EXPECT_EQ(nothing.code, 2) << nothing.all;
  EXPECT_THAT(nothing.all, HasSubstr("Usage: ferry"));

  CliRun global = FerryAsIs({"--verbose", "queues"});
  EXPECT_EQ(global.code, 2) << global.all;
  EXPECT_THAT(global.all, HasSubstr("unknown global option --verbose"));
  CliRun prefix = FerryAsIs({"--brokers=x", "queues"});  // not --broker
  EXPECT_EQ(prefix.code, 2) << prefix.all;
  EXPECT_THAT(prefix.all, HasSubstr("unknown global option --brokers=x"));
  CliRun forever = FerryAsIs({"--call-timeout", "inf", "queues"});
  EXPECT_EQ(forever.code, 2) << forever.all;
  EXPECT_THAT(forever.all, HasSubstr("--call-timeout wants a duration"));

  CliRun help_for_nothing = FerryAsIs({"help", "frobnicate"});
  EXPECT_EQ(help_for_nothing.code, 2) << help_for_nothing.all;
  EXPECT_THAT(help_for_nothing.all, HasSubstr("unknown command frobnicate"));
}

TEST_F(FerryCliTest, GlobalOptionsMayFollowTheCommand) {
  CliRun run = FerryAsIs(
      {"queues", "--broker", address(), "--call-timeout", "5s", "--json"});
  EXPECT_EQ(run.code, 0) << run.all;
  EXPECT_THAT(run.out, StartsWith("{"));
  CliRun empty = FerryAsIs({"queues", "--broker="});
  EXPECT_EQ(empty.code, 2) << empty.all;
  EXPECT_THAT(empty.all, HasSubstr("--broker wants HOST:PORT"));
}

TEST_F(FerryCliTest, UnknownOptionExitsTwoWithTheCommandsUsage) {
  CliRun run = Ferry({"get", "1", "--bogus"});
  EXPECT_EQ(run.code, 2) << run.all;
  EXPECT_THAT(run.all, HasSubstr("ferry get: unknown option --bogus"));
  EXPECT_THAT(run.all, HasSubstr("Usage: ferry get ID"));
  EXPECT_THAT(run.out, IsEmpty());
}

TEST_F(FerryCliTest, HelpPrintsTheUsageOfEveryCommandAndExitsZero) {
  const std::vector<std::string> commands = {
      "submit", "get",    "wait",  "watch",  "list",  "cancel",
      "retry",  "queues", "pause", "resume", "purge", "workers"};
  CliRun help = FerryAsIs({"help"});
  EXPECT_EQ(help.code, 0) << help.all;
  EXPECT_THAT(help.out,
              StartsWith("Usage: ferry [--broker HOST:PORT] [--json]"));
  for (const std::string& command : commands) {
    EXPECT_THAT(help.out, HasSubstr("\n  " + command + " ")) << command;
  }
  EXPECT_THAT(help.out, HasSubstr("Exit codes: 0 ok"));
  EXPECT_THAT(help.out, HasSubstr("FERRY_BROKER"));
  CliRun dash_help = FerryAsIs({"--help"});
  EXPECT_EQ(dash_help.code, 0) << dash_help.all;
  EXPECT_EQ(dash_help.out, help.out);

  // Each command's own usage has examples; both ways of asking agree.
  for (const std::string& command : commands) {
    SCOPED_TRACE(command);
    CliRun own = FerryAsIs({"help", command});
    EXPECT_EQ(own.code, 0) << own.all;
    EXPECT_THAT(own.out, StartsWith("Usage: ferry " + command));
    EXPECT_THAT(own.out, HasSubstr("Example"));
    EXPECT_THAT(own.out, HasSubstr("\n  ferry " + command));
    CliRun flag = FerryAsIs({command, "--help"});
    EXPECT_EQ(flag.code, 0) << flag.all;
    EXPECT_EQ(flag.out, own.out);
    CliRun dash_h = FerryAsIs({command, "-h"});  // not a job id or queue
    EXPECT_EQ(dash_h.code, 0) << dash_h.all;
    EXPECT_EQ(dash_h.out, own.out);
  }
  CliRun submit = FerryAsIs({"help", "submit"});
  for (const char* option :
       {"--kind", "--payload", "--payload-file", "--priority", "--delay",
        "--at", "--max-attempts", "--timeout", "--lease-ttl",
        "--idempotency-key", "--label", "--wait", "--wait-timeout"}) {
    EXPECT_THAT(submit.out, HasSubstr(absl::StrCat("  ", option, " ")))
        << option;
  }
  EXPECT_THAT(submit.out, HasSubstr("Examples:\n  ferry submit "));
}

}  // namespace
}  // namespace ferry::testing
