// The ferry CLI in process: RunCli (client/cli.h) with captured streams
// against a real FerryServer over loopback with a FakeClock. Every command,
// its --json form, its exit codes, its error messages and its help. The
// few things only the real binary shows (the environment, stdin, a real
// ferry-worker) are in e2e/ferry_cli_test.cc.

#include "client/cli.h"

#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <streambuf>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/broker_address.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/time_util.h"
#include "tests/cli_test_util.h"
#include "tests/loopback_socket.h"
#include "tests/proto_test_util.h"
#include "tests/server_fixture.h"
#include "tests/status_matchers.h"
#include "tests/test_worker.h"

namespace ferry::testing {
namespace {

using ::testing::_;
using ::testing::AllOf;
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

constexpr char kQueue[] = "cli";

// A stream a command writes on one thread while the test reads it, and
// waits for a text to appear in it, on another.
class SharedOutput {
 public:
  std::ostream& stream() { return stream_; }

  std::string Text() {
    absl::MutexLock lock(&buf_.mu);
    return buf_.text;
  }

  // Waits up to kEventTimeout for `part` to have been written; the text so
  // far, or nullopt if it was not.
  std::optional<std::string> Await(absl::string_view part) {
    absl::MutexLock lock(&buf_.mu);
    auto written = [&]() {
      buf_.mu.AssertReaderHeld();
      return absl::StrContains(buf_.text, part);
    };
    if (!buf_.mu.AwaitWithTimeout(absl::Condition(&written), kEventTimeout)) {
      return std::nullopt;
    }
    return buf_.text;
  }

 private:
  struct Buffer : std::streambuf {
    int overflow(int c) override {
      if (c == traits_type::eof()) return traits_type::not_eof(c);
      absl::MutexLock lock(&mu);
      text.push_back(static_cast<char>(c));
      return c;
    }
    std::streamsize xsputn(const char* s, std::streamsize n) override {
      absl::MutexLock lock(&mu);
      text.append(s, static_cast<size_t>(n));
      return n;
    }
    absl::Mutex mu;
    std::string text ABSL_GUARDED_BY(mu);
  };
  Buffer buf_;
  std::ostream stream_{&buf_};
};

// A `ferry` command running on its own thread.
class Background {
 public:
  Background(std::vector<std::string> args, std::string broker)
      : thread_([this, args = std::move(args), broker = std::move(broker)] {
          code_ = RunCli(args, broker, out_.stream(), err_.stream());
        }) {}
  ~Background() {
    if (thread_.joinable()) thread_.join();
  }

  SharedOutput& out() { return out_; }
  // Waits for the command to end.
  CliRun Join() {
    thread_.join();
    return CliRun{code_, out_.Text(), out_.Text() + err_.Text()};
  }

 private:
  SharedOutput out_;
  SharedOutput err_;
  int code_ = -1;
  std::thread thread_;
};

class CliTest : public ServerTest {
 protected:
  // Runs `ferry ARGS...` with `broker` as the default broker (as
  // $FERRY_BROKER would be).
  static CliRun RunAt(const std::string& broker,
                      const std::vector<std::string>& args) {
    std::ostringstream out;
    std::ostringstream err;
    CliRun run;
    run.code = RunCli(args, broker, out, err);
    run.out = out.str();
    run.all = out.str() + err.str();
    return run;
  }

  // Runs `ferry ARGS...` against the test's broker.
  CliRun Ferry(const std::vector<std::string>& args) {
    return RunAt(server().address(), args);
  }

  // Starts `ferry ARGS...` against the test's broker on another thread.
  std::unique_ptr<Background> Start(std::vector<std::string> args) {
    return std::make_unique<Background>(std::move(args), server().address());
  }

  // `ferry submit kQueue ARGS...` that must succeed; the new job's id.
  std::string MustSubmit(std::vector<std::string> args = {}) {
    args.insert(args.begin(), {"submit", kQueue});
    return SubmittedId(Ferry(args));
  }

  // The job as `ferry --json get` shows it.
  v1::Job GetJob(const std::string& id) {
    return JsonOf<v1::Job>(Ferry({"--json", "get", id}));
  }

  // `ferry --json list --queue kQueue ARGS...`, as a ListResponse.
  v1::ListResponse ListJson(std::vector<std::string> args = {}) {
    args.insert(args.begin(), {"--json", "list", "--queue", kQueue});
    return JsonOf<v1::ListResponse>(Ferry(args));
  }

  // Runs `wait_args` (a wait for a job nobody runs, with a 5s timeout) to
  // its timeout on the fake clock.
  CliRun RunWaitToItsTimeout(std::vector<std::string> wait_args) {
    Tick();
    std::unique_ptr<Background> command = Start(std::move(wait_args));
    AwaitWatcherWithDeadline(Now() + absl::Seconds(5));
    Advance(absl::Seconds(5));
    return command->Join();
  }

  // Runs `command` while a test worker takes the one job of kQueue and
  // answers it with `answer`.
  CliRun RunWhileAWorkerAnswers(
      std::vector<std::string> command, const std::string& worker_id,
      const std::function<void(TestWorker&, const std::string&)>& answer) {
    std::unique_ptr<Background> running = Start(std::move(command));
    std::unique_ptr<TestWorker> worker = Connect(worker_id, kQueue, 1);
    std::optional<v1::Assignment> a = worker->ExpectAssignment();
    if (a.has_value()) {
      answer(*worker, a->lease_token());
      EXPECT_TRUE(worker->ExpectResultAck().has_value());
    }
    return running->Join();
  }
};

// ------------------------------------------------------------------ submit

TEST_F(CliTest, SubmitPrintsTheNewJobsIdAndItIsQueued) {
  const std::string id = MustSubmit({"--payload", "hello"});
  v1::Job job = GetJob(id);
  EXPECT_EQ(job.id(), id);
  EXPECT_EQ(job.queue(), kQueue);
  EXPECT_EQ(job.kind(), "default");
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.payload(), "hello");
}

TEST_F(CliTest, SubmitOptionsAreStoredOnTheJob) {
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

TEST_F(CliTest, SubmitWithDelayIsScheduledThatLongAfterItsCreation) {
  v1::Job job = GetJob(MustSubmit({"--delay", "1h"}));
  EXPECT_EQ(job.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(FromProto(job.run_at()) - FromProto(job.created_at()),
            absl::Hours(1));
}

TEST_F(CliTest, SubmitWithAtIsScheduledForThatTime) {
  const absl::Time at = Now() + absl::Hours(2);
  const std::string text =
      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", at, absl::UTCTimeZone());
  v1::Job job = GetJob(MustSubmit({"--at", text}));
  EXPECT_EQ(job.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(FromProto(job.run_at()), at) << text;
}

TEST_F(CliTest, SubmitReadsThePayloadFromAFileByteForByte) {
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

  EXPECT_THAT(Ferry({"submit", kQueue, "--payload-file", path + ".none"}),
              ExitsWith(2, "cannot read " + path + ".none: No such file"));

  // A directory opens but cannot be read: a usage error, not a crash.
  EXPECT_THAT(Ferry({"submit", kQueue, "--payload-file", dir.path()}),
              ExitsWith(2, "cannot read " + dir.path() + ": Is a directory"));
}

TEST_F(CliTest, SubmitWithAKnownIdempotencyKeyPrintsTheSameIdAndSaysSo) {
  CliRun first = Ferry({"submit", kQueue, "--idempotency-key", "order-42"});
  ASSERT_EQ(first.code, 0) << first.all;
  EXPECT_THAT(first.all, Not(HasSubstr("already exists")));
  CliRun again = Ferry({"submit", kQueue, "--idempotency-key", "order-42"});
  EXPECT_EQ(again.code, 0) << again.all;
  EXPECT_EQ(again.out, first.out);
  const std::string id(absl::StripTrailingAsciiWhitespace(first.out));
  EXPECT_THAT(again.all,
              HasSubstr(absl::StrCat(
                  "job ", id, " already exists with this idempotency key")));
  EXPECT_EQ(GetJob(id).idempotency_key(), "order-42");
  EXPECT_THAT(ListJson().jobs(), SizeIs(1));
}

TEST_F(CliTest, SubmitJsonPrintsTheSubmitResponse) {
  CliRun first = Ferry({"--json", "submit", kQueue, "--idempotency-key", "k"});
  ASSERT_EQ(first.code, 0) << first.all;
  auto created = ParseJson<v1::SubmitResponse>(first.out);
  EXPECT_TRUE(created.created());
  EXPECT_EQ(created.job().queue(), kQueue);
  EXPECT_EQ(created.job().state(), v1::JOB_STATE_QUEUED);

  CliRun again = Ferry({"submit", kQueue, "--idempotency-key", "k", "--json"});
  ASSERT_EQ(again.code, 0) << again.all;
  auto existing = ParseJson<v1::SubmitResponse>(again.out);
  EXPECT_FALSE(existing.created());
  EXPECT_EQ(existing.job().id(), created.job().id());
}

TEST_F(CliTest, SubmitWaitPrintsTheResultAndEveryCommandSeesTheFinishedJob) {
  CliRun run = RunWhileAWorkerAnswers(
      {"submit", kQueue, "--payload", "hello ferry\n", "--wait"}, "cli-upper",
      [](TestWorker& worker, const std::string& token) {
        worker.Succeed(token, "HELLO FERRY\n");
      });
  EXPECT_EQ(run.code, 0) << run.all;
  EXPECT_EQ(run.out, "HELLO FERRY\n");
  EXPECT_THAT(run.all, HasSubstr("submitted, waiting"));

  v1::ListResponse listed = ListJson();
  ASSERT_EQ(listed.jobs_size(), 1);
  const std::string id = listed.jobs(0).id();

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

TEST_F(CliTest, SubmitWaitOnAJobThatFailsExitsFiveWithTheError) {
  CliRun run = RunWhileAWorkerAnswers(
      {"submit", kQueue, "--max-attempts", "1", "--wait"}, "cli-failing",
      [](TestWorker& worker, const std::string& token) {
        worker.Fail(token, "exit status 3: disk full", /*retryable=*/true);
      });
  EXPECT_EQ(run.code, 5) << run.all;
  EXPECT_THAT(run.out, IsEmpty());
  EXPECT_THAT(run.all, HasSubstr("FAILED: exit status 3: disk full"));

  v1::ListResponse listed = ListJson();
  ASSERT_EQ(listed.jobs_size(), 1);
  EXPECT_THAT(Ferry({"wait", listed.jobs(0).id()}), ExitsWith(5, "disk full"));
}

TEST_F(CliTest, SubmitWaitTimeoutOnAJobNobodyRunsExitsSix) {
  CliRun run =
      RunWaitToItsTimeout({"submit", kQueue, "--wait", "--wait-timeout", "5s"});
  EXPECT_EQ(run.code, 6) << run.all;
  EXPECT_THAT(run.all, HasSubstr("is still QUEUED after the wait timeout"));
}

TEST_F(CliTest, SubmitWithBadOptionsIsAUsageErrorAndSubmitsNothing) {
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
      {{"--kin", "a"}, "unknown option --kin"},  // no prefix matches
  };
  for (const auto& [args, message] : cases) {
    SCOPED_TRACE(absl::StrJoin(args, " "));
    std::vector<std::string> argv = {"submit", kQueue};
    argv.insert(argv.end(), args.begin(), args.end());
    CliRun run = Ferry(argv);
    EXPECT_EQ(run.code, 2) << run.all;
    EXPECT_THAT(run.all, HasSubstr(message));
    EXPECT_THAT(run.all, HasSubstr("Usage: ferry submit QUEUE"));
    EXPECT_THAT(run.out, IsEmpty());
  }
  EXPECT_THAT(Ferry({"submit"}), ExitsWith(2, "expected one QUEUE"));
  EXPECT_THAT(ListJson().jobs(), IsEmpty());
}

// ---------------------------------------------------------------- get

TEST_F(CliTest, GetPrintsTheJobsFieldsForPeople) {
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
  EXPECT_THAT(run.out, HasSubstr(kQueue));
  EXPECT_THAT(run.out, HasSubstr("thumb"));
  EXPECT_THAT(run.out, HasSubstr("QUEUED"));
  EXPECT_THAT(run.out, HasSubstr("0 of 5"));
  EXPECT_THAT(run.out, HasSubstr("tenant=acme"));
  EXPECT_THAT(run.out, HasSubstr("img-7"));
  EXPECT_THAT(run.out, HasSubstr("cat.png"));
}

TEST_F(CliTest, GetJsonPrintsTheWholeJobAsJson) {
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

TEST_F(CliTest, WaitTimeoutOnAJobNobodyRunsExitsSix) {
  const std::string id = MustSubmit();
  CliRun run = RunWaitToItsTimeout({"wait", id, "--timeout", "5s"});
  EXPECT_EQ(run.code, 6) << run.all;
  EXPECT_THAT(run.all, HasSubstr(absl::StrCat(
                           "job ", id, " is still QUEUED after the wait")));

  CliRun json = RunWaitToItsTimeout({"--json", "wait", id, "--timeout", "5s"});
  EXPECT_EQ(json.code, 6) << json.all;
  auto waited = ParseJson<v1::WaitResponse>(json.out);
  EXPECT_FALSE(waited.done());
  EXPECT_EQ(waited.job().id(), id);
}

TEST_F(CliTest, WaitOnACancelledJobExitsFive) {
  const std::string id = MustSubmit();
  ASSERT_EQ(Ferry({"cancel", id, "--reason", "changed plans"}).code, 0);
  EXPECT_THAT(Ferry({"wait", id}), ExitsWith(5, "CANCELLED: changed plans"));
}

TEST_F(CliTest, WatchPrintsEachStateUntilTheJobIsTerminal) {
  const std::string id = MustSubmit();
  std::unique_ptr<Background> watch = Start({"watch", id});
  ASSERT_TRUE(watch->out().Await(" QUEUED attempt=0\n"));

  ASSERT_EQ(Ferry({"cancel", id, "--reason", "not needed"}).code, 0);
  // A cancelled job ends the watch with the job-failed code.
  CliRun run = watch->Join();
  EXPECT_EQ(run.code, 5) << run.all;
  EXPECT_THAT(
      Lines(run.out),
      ElementsAre(HasSubstr(absl::StrCat("job ", id, " QUEUED")),
                  AllOf(HasSubstr(absl::StrCat("job ", id, " CANCELLED")),
                        HasSubstr("error=\"not needed\""))));
}

TEST_F(CliTest, WatchJsonPrintsOneWatchResponsePerLine) {
  const std::string id = MustSubmit();
  std::unique_ptr<Background> watch = Start({"--json", "watch", id});
  ASSERT_TRUE(watch->out().Await("JOB_STATE_QUEUED"));
  ASSERT_EQ(Ferry({"cancel", id}).code, 0);
  CliRun run = watch->Join();
  EXPECT_EQ(run.code, 5) << run.all;

  std::vector<v1::JobState> states;
  for (const std::string& line : Lines(run.out)) {
    auto update = ParseJson<v1::WatchResponse>(line);
    EXPECT_EQ(update.job().id(), id);
    states.push_back(update.job().state());
  }
  EXPECT_THAT(states,
              ElementsAre(v1::JOB_STATE_QUEUED, v1::JOB_STATE_CANCELLED));
}

// -------------------------------------------------------------------- list

TEST_F(CliTest, ListFiltersByQueueStateKindAndLabel) {
  const std::string r1 =
      MustSubmit({"--kind", "resize", "--label", "tenant=acme"});
  const std::string r2 = MustSubmit({"--kind", "resize"});
  const std::string e1 =
      MustSubmit({"--kind", "email", "--label", "tenant=acme"});
  const std::string e2 = MustSubmit({"--kind", "email"});
  ASSERT_EQ(Ferry({"cancel", e2}).code, 0);
  ASSERT_THAT(Submit("other", "email", ""), IsOk());

  // Newest first unless --oldest-first.
  EXPECT_THAT(Ids(ListJson()), ElementsAre(e2, e1, r2, r1));
  EXPECT_THAT(Ids(ListJson({"--oldest-first"})), ElementsAre(r1, r2, e1, e2));
  EXPECT_THAT(Ids(ListJson({"--state", "cancelled"})), ElementsAre(e2));
  EXPECT_THAT(Ids(ListJson({"--state", "QUEUED"})), ElementsAre(e1, r2, r1));
  EXPECT_THAT(Ids(ListJson({"--kind", "email"})), ElementsAre(e2, e1));
  EXPECT_THAT(Ids(ListJson({"--label", "tenant=acme"})), ElementsAre(e1, r1));
  EXPECT_THAT(Ids(ListJson({"--kind", "resize", "--label", "tenant=acme"})),
              ElementsAre(r1));
  EXPECT_THAT(ListJson({"--kind", "nothing"}).jobs(), IsEmpty());

  // The table: a header, then one row per job.
  CliRun table = Ferry({"list", "--queue", kQueue});
  EXPECT_EQ(table.code, 0) << table.all;
  std::vector<std::string> lines = Lines(table.out);
  ASSERT_EQ(lines.size(), 5u) << table.out;
  EXPECT_THAT(lines[0], MatchesRegex("ID +QUEUE +KIND +STATE +ATTEMPT +CREATED "
                                     "+WORKER +LAST ERROR"));
  EXPECT_THAT(Row(table.out, e2),
              ElementsAre(e2, kQueue, "email", "CANCELLED", "0/5",
                          StartsWith("20"), "-", "cancelled"));
  EXPECT_THAT(Row(table.out, r1), ElementsAre(r1, kQueue, "resize", "QUEUED",
                                              "0/5", StartsWith("20"), "-"));
}

TEST_F(CliTest, ListKeepsAMultiLineErrorOnTheJobsLine) {
  const std::string id = MustSubmit();
  ASSERT_EQ(Ferry({"cancel", id, "--reason", "first line\nsecond line\n"}).code,
            0);
  CliRun table = Ferry({"list", "--queue", kQueue});
  EXPECT_EQ(table.code, 0) << table.all;
  ASSERT_THAT(Lines(table.out), SizeIs(2)) << table.out;  // header, the job
  EXPECT_THAT(Lines(table.out)[1], HasSubstr("first line | second line"));
}

TEST_F(CliTest, ListLimitShowsTheNewestAndAllShowsEveryJob) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(MustSubmit());

  EXPECT_THAT(Ids(ListJson({"--limit", "2"})), ElementsAre(ids[4], ids[3]));
  EXPECT_THAT(Ids(ListJson({"--limit", "2", "--oldest-first"})),
              ElementsAre(ids[0], ids[1]));
  EXPECT_THAT(Ids(ListJson({"--all", "--oldest-first"})),
              ElementsAreArray(ids));
  EXPECT_THAT(ListJson({"--limit", "2", "--all"}).jobs(), SizeIs(5));

  // People are told there is more.
  CliRun limited = Ferry({"list", "--queue", kQueue, "--limit", "2"});
  EXPECT_EQ(limited.code, 0) << limited.all;
  EXPECT_EQ(Lines(limited.out).size(), 3u) << limited.out;
  EXPECT_THAT(limited.all,
              HasSubstr("(more jobs: raise --limit or use --all)"));
  CliRun all = Ferry({"list", "--queue", kQueue, "--all"});
  EXPECT_EQ(all.code, 0) << all.all;
  EXPECT_EQ(Lines(all.out).size(), 6u) << all.out;
  EXPECT_THAT(all.all, Not(HasSubstr("more jobs")));
  // A limit that takes exactly every job leaves nothing more to tell.
  CliRun exact = Ferry({"list", "--queue", kQueue, "--limit", "5"});
  EXPECT_EQ(Lines(exact.out).size(), 6u) << exact.out;
  EXPECT_THAT(exact.all, Not(HasSubstr("more jobs")));
}

TEST_F(CliTest, ListWithoutLimitShowsTwentyJobs) {
  // Set up through the API: 25 submits by the CLI would only be slower.
  ASSERT_THAT(SubmitBatch(std::vector<v1::JobSpec>(25, Spec(kQueue, "k"))),
              IsOk());
  EXPECT_THAT(ListJson().jobs(), SizeIs(20));
  EXPECT_THAT(ListJson({"--all"}).jobs(), SizeIs(25));
  EXPECT_THAT(ListJson({"--limit", "1000"}).jobs(), SizeIs(25));
}

TEST_F(CliTest, ListWithBadFiltersIsAUsageError) {
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
    EXPECT_THAT(Ferry(argv), ExitsWith(2, "Usage: ferry list"));
  }
  EXPECT_THAT(Ferry({"list", "--queue", "no such queue"}),
              ExitsWith(2, "is invalid"));
}

// ------------------------------------------------------------ cancel, retry

TEST_F(CliTest, CancelAndRetryMoveTheJobAndSayWhereItIs) {
  const std::string id = MustSubmit();
  CliRun cancel = Ferry({"cancel", id, "--reason", "customer left"});
  EXPECT_EQ(cancel.code, 0) << cancel.all;
  EXPECT_EQ(cancel.out, absl::StrCat("job ", id, " CANCELLED\n"));
  v1::Job cancelled = GetJob(id);
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(cancelled.last_error(), HasSubstr("customer left"));

  // Cancelling again is refused by the broker: exit 1 with its message.
  EXPECT_THAT(Ferry({"cancel", id}),
              ExitsWith(1, absl::StrCat("ferry: job ", id, " is ")));

  CliRun retry = Ferry({"retry", id});
  EXPECT_EQ(retry.code, 0) << retry.all;
  EXPECT_EQ(retry.out, absl::StrCat("job ", id, " QUEUED\n"));
  EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_QUEUED);

  // A queued job cannot be retried.
  EXPECT_THAT(Ferry({"retry", id}), ExitsWith(1, "ferry: job " + id));
}

TEST_F(CliTest, CancelAndRetryJsonPrintTheJob) {
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

TEST_F(CliTest, QueuesShowsCountsPerStateAndWhetherPaused) {
  MustSubmit();
  MustSubmit();
  ASSERT_EQ(Ferry({"cancel", MustSubmit()}).code, 0);
  MustSubmit({"--delay", "1h"});

  CliRun queues = Ferry({"queues"});
  EXPECT_EQ(queues.code, 0) << queues.all;
  ASSERT_THAT(Lines(queues.out), Not(IsEmpty())) << queues.all;
  EXPECT_THAT(Lines(queues.out)[0],
              MatchesRegex("QUEUE +SCHEDULED +QUEUED +RUNNING +SUCCEEDED "
                           "+FAILED +CANCELLED +OLDEST"));
  EXPECT_THAT(Row(queues.out, kQueue),
              ElementsAre(kQueue, "1", "2", "0", "0", "0", "1", _));

  CliRun pause = Ferry({"pause", kQueue});
  EXPECT_EQ(pause.code, 0) << pause.all;
  EXPECT_EQ(pause.out, absl::StrCat("queue ", kQueue, " paused\n"));
  CliRun paused = Ferry({"queues"});
  EXPECT_THAT(Row(paused.out, kQueue),
              ElementsAre(kQueue, "(paused)", "1", "2", "0", "0", "0", "1", _));

  CliRun paused_json = Ferry({"--json", "queues"});
  EXPECT_EQ(paused_json.code, 0) << paused_json.all;
  const auto stats = ParseJson<v1::QueueStatsResponse>(paused_json.out);
  ASSERT_EQ(stats.queues_size(), 1) << paused_json.out;
  EXPECT_EQ(stats.queues(0).name(), kQueue);
  EXPECT_TRUE(stats.queues(0).paused());
  EXPECT_THAT(Counts(stats.queues(0)), ElementsAre(1, 2, 0, 0, 0, 1));

  CliRun resume = Ferry({"resume", kQueue});
  EXPECT_EQ(resume.code, 0) << resume.all;
  EXPECT_EQ(resume.out, absl::StrCat("queue ", kQueue, " resumed\n"));
  EXPECT_THAT(Row(Ferry({"queues"}).out, kQueue),
              ElementsAre(kQueue, "1", "2", "0", "0", "0", "1", _));
}

TEST_F(CliTest, PauseAndResumeJsonPrintAnEmptyObject) {
  CliRun pause = Ferry({"--json", "pause", kQueue});
  EXPECT_EQ(pause.code, 0) << pause.all;
  EXPECT_EQ(pause.out, "{}\n");
  CliRun resume = Ferry({"--json", "resume", kQueue});
  EXPECT_EQ(resume.code, 0) << resume.all;
  EXPECT_EQ(resume.out, "{}\n");
  EXPECT_THAT(Ferry({"pause", "bad queue"}),
              ExitsWith(2, "queue \"bad queue\" is invalid"));
}

TEST_F(CliTest, PurgeDeletesTheJobsOfOneStateAndSaysHowMany) {
  const std::string a = MustSubmit();
  const std::string b = MustSubmit();
  const std::string cancelled = MustSubmit();
  ASSERT_EQ(Ferry({"cancel", cancelled}).code, 0);

  CliRun purge = Ferry({"purge", kQueue, "--state", "queued"});
  EXPECT_EQ(purge.code, 0) << purge.all;
  EXPECT_EQ(purge.out,
            absl::StrCat("purged 2 QUEUED jobs from ", kQueue, "\n"));
  EXPECT_EQ(Ferry({"get", a}).code, 3);
  EXPECT_EQ(Ferry({"get", b}).code, 3);
  EXPECT_EQ(GetJob(cancelled).state(), v1::JOB_STATE_CANCELLED);

  CliRun json = Ferry({"--json", "purge", kQueue, "--state", "cancelled"});
  EXPECT_EQ(json.code, 0) << json.all;
  EXPECT_EQ(ParseJson<v1::PurgeQueueResponse>(json.out).purged(), 1u);
  EXPECT_THAT(ListJson().jobs(), IsEmpty());
}

TEST_F(CliTest, PurgeNeedsAStateThatIsNotRunning) {
  EXPECT_THAT(Ferry({"purge", kQueue}), ExitsWith(2, "--state is required"));
  EXPECT_THAT(Ferry({"purge", kQueue, "--state", "gone"}),
              ExitsWith(2, "unknown state gone"));
  // The broker refuses RUNNING: cancel those instead.
  CliRun running = Ferry({"purge", kQueue, "--state", "running"});
  EXPECT_EQ(running.code, 1) << running.all;
  EXPECT_THAT(running.all, StartsWith("ferry: "));
}

TEST_F(CliTest, WorkersShowsAConnectedWorker) {
  std::unique_ptr<TestWorker> worker = Connect("cli-listed-worker", kQueue, 1);
  ASSERT_TRUE(worker->Sync());

  CliRun table = Ferry({"workers"});
  EXPECT_EQ(table.code, 0) << table.all;
  ASSERT_THAT(Lines(table.out), Not(IsEmpty())) << table.all;
  EXPECT_THAT(Lines(table.out)[0],
              MatchesRegex("WORKER +HOST +QUEUES +CREDITS +LEASES +CONNECTED "
                           "+LAST SEEN +PEER"));
  EXPECT_THAT(
      Row(table.out, "cli-listed-worker"),
      ElementsAre("cli-listed-worker", "test-host", kQueue, "1", "0",
                  StartsWith("20"), StartsWith("20"), HasSubstr("127.0.0.1")));

  CliRun json = Ferry({"--json", "workers"});
  EXPECT_EQ(json.code, 0) << json.all;
  const auto workers = ParseJson<v1::ListWorkersResponse>(json.out);
  ASSERT_EQ(workers.workers_size(), 1) << json.out;
  EXPECT_EQ(workers.workers(0).worker_id(), "cli-listed-worker");
  EXPECT_THAT(workers.workers(0).queues(), ElementsAre(kQueue));
  EXPECT_EQ(workers.workers(0).pid(), 4242u);
  EXPECT_EQ(workers.workers(0).version(), "test");
}

// ------------------------------------------------------------------ errors

TEST_F(CliTest, UnknownJobIdExitsThreeWithNotFound) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"get", "987654321"},
        std::vector<std::string>{"wait", "987654321"},
        std::vector<std::string>{"watch", "987654321"},
        std::vector<std::string>{"cancel", "987654321"},
        std::vector<std::string>{"retry", "987654321"},
        std::vector<std::string>{"--json", "get", "987654321"}}) {
    SCOPED_TRACE(absl::StrJoin(args, " "));
    CliRun run = Ferry(args);
    EXPECT_EQ(run.code, 3) << run.all;
    EXPECT_THAT(run.all, HasSubstr("ferry: job 987654321 not found"));
    EXPECT_THAT(run.out, IsEmpty());
  }
}

TEST_F(CliTest, MalformedJobIdExitsTwoWithTheBrokersMessage) {
  for (const std::string command : {"get", "wait", "watch", "cancel"}) {
    SCOPED_TRACE(command);
    EXPECT_THAT(Ferry({command, "12abc"}),
                ExitsWith(2,
                          "job_id must be a positive integer as returned by "
                          "Submit, got \"12abc\""));
  }
  EXPECT_THAT(Ferry({"get"}), ExitsWith(2, "expected one ID"));
  EXPECT_THAT(Ferry({"get", "1", "2"}), ExitsWith(2, "expected one ID"));
  EXPECT_THAT(Ferry({"queues", "q"}),
              ExitsWith(2, "ferry queues: takes no arguments"));
}

TEST_F(CliTest, InvalidQueueNameExitsTwoWithTheBrokersMessage) {
  CliRun run = Ferry({"submit", "bad/queue"});
  EXPECT_EQ(run.code, 2) << run.all;
  EXPECT_THAT(run.all,
              HasSubstr("ferry: queue \"bad/queue\" is invalid: use 1-128 "
                        "characters"));
  EXPECT_THAT(run.out, IsEmpty());
}

TEST_F(CliTest, UnavailableFromTheBrokerItselfDoesNotAskIfItRuns) {
  // A broker shut down under a watch answers UNAVAILABLE itself, which is
  // not "unreachable".
  const std::string id = MustSubmit();
  std::unique_ptr<Background> watch = Start({"watch", id});
  ASSERT_TRUE(watch->out().Await(" QUEUED "));
  Restart();
  CliRun run = watch->Join();
  EXPECT_EQ(run.code, 4) << run.all;
  EXPECT_THAT(run.all, HasSubstr("the broker is shutting down"));
  EXPECT_THAT(run.all, Not(HasSubstr("is ferryd running there?")));
}

TEST_F(CliTest, CallThatTimesOutSaysItMayHaveHappened) {
  // A port that takes connections and never answers: the call can only
  // run out of time.
  LoopbackSocket silent(LoopbackSocket::Mode::kSilent);
  ASSERT_FALSE(silent.address().empty()) << silent.error();

  CliRun run = RunAt(silent.address(), {"--call-timeout", "300ms", "queues"});
  EXPECT_EQ(run.code, 4) << run.all;
  EXPECT_THAT(run.all, HasSubstr("Deadline Exceeded"));
  EXPECT_THAT(run.all, HasSubstr("may still have been carried out"));
  EXPECT_THAT(run.all, Not(HasSubstr("is ferryd running there?")));
}

TEST_F(CliTest, BrokerOptionWinsOverTheDefaultBroker) {
  LoopbackSocket refusing(LoopbackSocket::Mode::kRefusing);
  ASSERT_FALSE(refusing.address().empty()) << refusing.error();
  const std::string id = MustSubmit();
  CliRun before =
      RunAt(refusing.address(), {"--broker", server().address(), "get", id});
  EXPECT_EQ(before.code, 0) << before.all;
  CliRun after =
      RunAt(refusing.address(), {"get", id, "--broker=" + server().address()});
  EXPECT_EQ(after.code, 0) << after.all;
}

TEST_F(CliTest, UnknownCommandOrGlobalOptionExitsTwoWithTheUsage) {
  CliRun run = Ferry({"frobnicate"});
  EXPECT_EQ(run.code, 2) << run.all;
  EXPECT_THAT(run.all, HasSubstr("ferry: unknown command \"frobnicate\""));
  EXPECT_THAT(run.all, HasSubstr("Usage: ferry"));
  EXPECT_THAT(run.out, IsEmpty());

  CliRun nothing = Ferry({});
  EXPECT_EQ(nothing.code, 2) << nothing.all;
  EXPECT_THAT(nothing.all, HasSubstr("Usage: ferry"));
  EXPECT_THAT(nothing.out, IsEmpty());

  EXPECT_THAT(Ferry({"--verbose", "queues"}),
              ExitsWith(2, "unknown global option --verbose"));
  CliRun prefix = Ferry({"--brokers=x", "queues"});  // not --broker
  EXPECT_EQ(prefix.code, 2) << prefix.all;
  EXPECT_THAT(prefix.all, HasSubstr("unknown global option --brokers=x"));
  EXPECT_THAT(Ferry({"--call-timeout", "inf", "queues"}),
              ExitsWith(2, "--call-timeout wants a duration"));
  EXPECT_THAT(Ferry({"queues", "--call-timeout=0s"}),
              ExitsWith(2, "ferry: --call-timeout wants a duration"));

  EXPECT_THAT(Ferry({"help", "frobnicate"}),
              ExitsWith(2, "unknown command frobnicate"));
}

TEST_F(CliTest, GlobalOptionsMayFollowTheCommand) {
  CliRun run =
      RunAt(kDefaultBrokerAddress, {"queues", "--broker", server().address(),
                                    "--call-timeout", "5s", "--json"});
  EXPECT_EQ(run.code, 0) << run.all;
  EXPECT_THAT(run.out, StartsWith("{"));
  EXPECT_THAT(Ferry({"queues", "--broker="}),
              ExitsWith(2, "--broker wants HOST:PORT"));
}

TEST_F(CliTest, UnknownOptionExitsTwoWithTheCommandsUsage) {
  CliRun run = Ferry({"get", "1", "--bogus"});
  EXPECT_EQ(run.code, 2) << run.all;
  EXPECT_THAT(run.all, HasSubstr("ferry get: unknown option --bogus"));
  EXPECT_THAT(run.all, HasSubstr("Usage: ferry get ID"));
  EXPECT_THAT(run.out, IsEmpty());
}

TEST_F(CliTest, DoubleDashEndsTheOptions) {
  EXPECT_THAT(Ferry({"get", "--", "--json"}),
              ExitsWith(2, "job_id must be a positive integer"));
}

TEST_F(CliTest, HelpPrintsTheUsageOfEveryCommandAndExitsZero) {
  const std::vector<std::string> commands = {
      "submit", "get",    "wait",  "watch",  "list",  "cancel",
      "retry",  "queues", "pause", "resume", "purge", "workers"};
  CliRun help = Ferry({"help"});
  EXPECT_EQ(help.code, 0) << help.all;
  EXPECT_THAT(help.out,
              StartsWith("Usage: ferry [--broker HOST:PORT] [--json]"));
  for (const std::string& command : commands) {
    EXPECT_THAT(help.out, HasSubstr("\n  " + command + " ")) << command;
  }
  EXPECT_THAT(help.out, HasSubstr("Exit codes: 0 ok"));
  EXPECT_THAT(help.out, HasSubstr("FERRY_BROKER"));
  for (const char* flag : {"--help", "-h"}) {
    CliRun dash_help = Ferry({flag});
    EXPECT_EQ(dash_help.code, 0) << dash_help.all;
    EXPECT_EQ(dash_help.out, help.out);
  }

  // Each command's own usage has examples; every way of asking agrees.
  for (const std::string& command : commands) {
    SCOPED_TRACE(command);
    CliRun own = Ferry({"help", command});
    EXPECT_EQ(own.code, 0) << own.all;
    EXPECT_THAT(own.out, StartsWith("Usage: ferry " + command));
    EXPECT_THAT(own.out, HasSubstr("Example"));
    EXPECT_THAT(own.out, HasSubstr("\n  ferry " + command));
    CliRun flag = Ferry({command, "--help"});
    EXPECT_EQ(flag.code, 0) << flag.all;
    EXPECT_EQ(flag.out, own.out);
    CliRun dash_h = Ferry({command, "-h"});  // not a job id or queue
    EXPECT_EQ(dash_h.code, 0) << dash_h.all;
    EXPECT_EQ(dash_h.out, own.out);
  }
  CliRun submit = Ferry({"help", "submit"});
  for (const char* option :
       {"--kind", "--payload", "--payload-file", "--priority", "--delay",
        "--at", "--max-attempts", "--timeout", "--lease-ttl",
        "--idempotency-key", "--label", "--wait", "--wait-timeout"}) {
    EXPECT_THAT(submit.out, HasSubstr(absl::StrCat("  ", option, " ")))
        << option;
  }
  EXPECT_THAT(submit.out, HasSubstr("Examples:\n  ferry submit "));
  // The option lines line up (the text of each starts in one column).
  EXPECT_THAT(submit.out, HasSubstr("\n  --kind K               job kind"));
  EXPECT_THAT(submit.out,
              HasSubstr("\n  --wait                 wait for the outcome"));
}

}  // namespace
}  // namespace ferry::testing
