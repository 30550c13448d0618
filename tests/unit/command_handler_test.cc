// RunCommand and ParseHandlersFile without a broker: each test builds a
// JobContext by hand and runs a real /bin/sh command for it.
//
// Checks that a process group is gone reap the group's dead orphans first:
// this test process makes itself a child subreaper, so a command's
// leftovers (a background `sleep` whose shell died) become its children
// rather than zombies of an init that may never reap them, which
// kill(-pgid, 0) would still find.

#include "worker/command_handler.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ferry/v1/job.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/poll.h"
#include "tests/process_group.h"
#include "tests/status_matchers.h"
#include "tests/store_test_util.h"
#include "tests/temp_dir.h"
#include "worker/worker.h"

namespace ferry::testing {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Pair;
using ::testing::StartsWith;

// Bounds every wait for an event that should come promptly (a process
// ending, a file appearing). Only a broken test waits this long.
constexpr absl::Duration kEventTimeout = absl::Seconds(10);

v1::Job MakeJob(std::string payload = "") {
  v1::Job job;
  job.set_id("42");
  job.set_queue("images");
  job.set_kind("resize");
  job.set_attempt(2);
  job.set_payload(std::move(payload));
  return job;
}

// Short enough that a test escalating to SIGKILL ends quickly.
CommandOptions FastKill() {
  CommandOptions options;
  options.kill_grace = absl::Milliseconds(200);
  return options;
}

// RunCommand on its own thread, so that the test can stop the job while it
// runs. The destructor never hangs: a command still running after
// kEventTimeout fails the test and its group is killed.
class AsyncCommand {
 public:
  AsyncCommand(std::vector<std::string> argv, CommandOptions options,
               JobContext& ctx)
      : thread_([this, argv = std::move(argv), options, &ctx] {
          outcome_ = RunCommand(argv, options, ctx);
          done_.Notify();
        }) {}
  ~AsyncCommand() { Join(); }

  // The outcome, once RunCommand returned within kEventTimeout.
  std::optional<JobOutcome> Await() {
    if (!done_.WaitForNotificationWithTimeout(kEventTimeout)) return {};
    Join();
    return outcome_;
  }

  // Lets the destructor kill `pgid` if the command outlives the test.
  void set_pgid(pid_t pgid) { pgid_ = pgid; }

 private:
  void Join() {
    if (!thread_.joinable()) return;
    if (!done_.WaitForNotificationWithTimeout(kEventTimeout)) {
      ADD_FAILURE() << "RunCommand did not return; killing group " << pgid_;
      if (pgid_ > 0) kill(-pgid_, SIGKILL);
    }
    thread_.join();
  }

  absl::Notification done_;
  JobOutcome outcome_;
  pid_t pgid_ = 0;
  std::thread thread_;
};

class CommandHandlerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(BecomeSubreaper()) << std::strerror(errno);
  }

  void TearDown() override {
    // Nothing a test started may outlive it, even when the test failed.
    KillGroups(groups_);
  }

  // A file name in this test's directory.
  std::string Path(absl::string_view name) const {
    return absl::StrCat(dir_.path(), "/", name);
  }

  // Shell code that publishes the shell's pid, which is also its process
  // group id (RunCommand makes the command a group leader), atomically.
  std::string PublishPgid() const { return testing::PublishPgid(Path("pgid")); }

  // Waits for the pgid PublishPgid() wrote; 0 if it never came.
  pid_t AwaitPgid() {
    const pid_t pgid = AwaitPgidFile(Path("pgid"), kEventTimeout);
    if (pgid == 0) {
      ADD_FAILURE() << "the command never wrote " << Path("pgid");
    } else {
      groups_.push_back(pgid);
    }
    return pgid;
  }

  // True once no process of group `pgid` exists (bounded).
  static bool GroupGone(pid_t pgid) {
    return testing::GroupGone(pgid, kEventTimeout);
  }

  ScopedTempDir dir_;
  std::vector<pid_t> groups_;
};

// ---- success, input and environment ----

TEST_F(CommandHandlerTest, ExitZeroIsSuccessWithStdoutAsTheOutput) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome = RunCommand(
      Shell("echo hello; echo 'not output' >&2; printf 'a\\0b'"), {}, ctx);
  EXPECT_TRUE(outcome.success) << outcome.error;
  EXPECT_EQ(outcome.output, std::string("hello\na\0b", 9));
}

TEST_F(CommandHandlerTest, PayloadArrivesOnStdin) {
  // Larger than a pipe's buffer, so the payload is written in pieces while
  // the command reads.
  std::string payload;
  for (int i = 0; payload.size() < 300000; ++i) {
    absl::StrAppend(&payload, "line ", i, "\n");
  }
  JobContext ctx(MakeJob(payload), absl::InfiniteFuture());
  JobOutcome outcome = RunCommand({"cat"}, {}, ctx);
  EXPECT_TRUE(outcome.success) << outcome.error;
  EXPECT_EQ(outcome.output.size(), payload.size());
  EXPECT_TRUE(outcome.output == payload);
}

TEST_F(CommandHandlerTest, EmptyPayloadIsAnEmptyStdinNotAnOpenOne) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome = RunCommand({"cat"}, {}, ctx);
  EXPECT_TRUE(outcome.success) << outcome.error;
  EXPECT_THAT(outcome.output, IsEmpty());
}

// The payload cannot all be written to a command that exits without reading
// it. That must fail the write, not kill the caller with SIGPIPE: RunCommand
// is a library call, and a program using it need not ignore SIGPIPE (as
// ferry-worker does). Run in a child process so that a SIGPIPE fails this
// test instead of ending the whole suite.
TEST_F(CommandHandlerTest,
       CommandThatIgnoresALargePayloadDoesNotKillTheCaller) {
  EXPECT_EXIT(
      {
        signal(SIGPIPE, SIG_DFL);
        JobContext ctx(MakeJob(std::string(1 << 20, 'p')),
                       absl::InfiniteFuture());
        JobOutcome outcome = RunCommand(Shell("echo ignored"), {}, ctx);
        std::exit(outcome.success && outcome.output == "ignored\n" ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// A command that is done is done: RunCommand does not linger once the
// command exited and its output is read. (The bound is far above a healthy
// run, a few milliseconds; it catches a fixed wait after every command.)
TEST_F(CommandHandlerTest, QuickCommandReturnsAsSoonAsItExits) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  const absl::Time start = absl::Now();
  JobOutcome outcome = RunCommand({"true"}, {}, ctx);
  EXPECT_TRUE(outcome.success) << outcome.error;
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
}

TEST_F(CommandHandlerTest, JobFieldsAreInTheEnvironmentReplacingInheritedOnes) {
  ASSERT_EQ(setenv("FERRY_JOB_ID", "stale-from-the-worker", 1), 0);
  ASSERT_EQ(setenv("FERRY_COMMAND_TEST_MARKER", "inherited", 1), 0);
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome = RunCommand(
      Shell(
          "printf '%s|%s|%s|%s|%s' \"$FERRY_JOB_ID\" \"$FERRY_QUEUE\" "
          "\"$FERRY_KIND\" \"$FERRY_ATTEMPT\" \"$FERRY_COMMAND_TEST_MARKER\""),
      {}, ctx);
  unsetenv("FERRY_JOB_ID");
  unsetenv("FERRY_COMMAND_TEST_MARKER");
  EXPECT_TRUE(outcome.success) << outcome.error;
  EXPECT_EQ(outcome.output, "42|images|resize|2|inherited");
}

// ---- failures ----

TEST_F(CommandHandlerTest, ExitSeventyFiveIsARetryableFailure) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome =
      RunCommand(Shell("echo 'busy, later' >&2; exit 75"), {}, ctx);
  EXPECT_FALSE(outcome.success);
  EXPECT_TRUE(outcome.retryable);
  EXPECT_EQ(outcome.error,
            "exit status 75 (temporary failure, retry requested): busy, later");
}

TEST_F(CommandHandlerTest, OtherExitStatusIsAFailureWithTheTailOfStderr) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome =
      RunCommand(Shell("echo partial; echo 'checking disk' >&2; "
                       "echo 'disk on fire' >&2; exit 3"),
                 {}, ctx);
  EXPECT_FALSE(outcome.success);
  // The job's attempts decide whether it runs again.
  EXPECT_TRUE(outcome.retryable);
  EXPECT_EQ(outcome.error, "exit status 3: checking disk\ndisk on fire");
  EXPECT_THAT(outcome.output, IsEmpty());
}

TEST_F(CommandHandlerTest, OnlyTheTailOfALongStderrIsKept) {
  CommandOptions options;
  options.stderr_tail = 64;
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome =
      RunCommand(Shell("i=0; while [ $i -lt 2000 ]; do echo \"noise $i\" >&2; "
                       "i=$((i+1)); done; echo 'the last words' >&2; exit 1"),
                 options, ctx);
  EXPECT_FALSE(outcome.success);
  EXPECT_THAT(outcome.error, StartsWith("exit status 1: "));
  EXPECT_THAT(outcome.error, EndsWith("noise 1999\nthe last words"));
  EXPECT_LE(outcome.error.size(), std::string("exit status 1: ").size() + 64);
  EXPECT_THAT(outcome.error, Not(HasSubstr("noise 0\n")));
}

TEST_F(CommandHandlerTest, OutputOverTheLimitIsTruncatedAndSaysSo) {
  CommandOptions options;
  options.max_output = 10;
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome =
      RunCommand(Shell("printf 0123456789abcdef"), options, ctx);
  EXPECT_TRUE(outcome.success) << outcome.error;
  EXPECT_EQ(outcome.output,
            "0123456789\n[ferry-worker: output truncated to 10 of 16 bytes]\n");
}

TEST_F(CommandHandlerTest, OutputIsCutToTheBrokersLimitNoteIncluded) {
  // --max_output and the broker's limit equal (1 MiB each by default): a
  // result over the broker's limit would fail the job instead.
  CommandOptions options;
  options.max_output = 4096;
  JobContext ctx(MakeJob(), absl::InfiniteFuture(), /*max_output_bytes=*/4096);
  JobOutcome outcome =
      RunCommand(Shell("head -c 100000 /dev/zero | tr '\\0' x"), options, ctx);
  EXPECT_TRUE(outcome.success) << outcome.error;
  EXPECT_LE(outcome.output.size(), 4096u);
  EXPECT_THAT(outcome.output, EndsWith(" of 100000 bytes]\n"));
}

TEST_F(CommandHandlerTest, LargeOutputOverTheLimitIsReadToTheEndAndTruncated) {
  // The command must not block on a full pipe once the limit is reached.
  CommandOptions options;
  options.max_output = 1000;
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome =
      RunCommand(Shell("head -c 2000000 /dev/zero | tr '\\0' x"), options, ctx);
  EXPECT_TRUE(outcome.success) << outcome.error;
  EXPECT_EQ(outcome.output,
            std::string(1000, 'x') +
                "\n[ferry-worker: output truncated to 1000 of 2000000 "
                "bytes]\n");
}

TEST_F(CommandHandlerTest, OutputAtExactlyTheLimitIsNotMarked) {
  CommandOptions options;
  options.max_output = 10;
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome = RunCommand(Shell("printf 0123456789"), options, ctx);
  EXPECT_TRUE(outcome.success) << outcome.error;
  EXPECT_EQ(outcome.output, "0123456789");
}

TEST_F(CommandHandlerTest, MissingCommandFailsWithAClearMessage) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome =
      RunCommand({"/nonexistent/ferry-no-such-command", "arg"}, {}, ctx);
  EXPECT_FALSE(outcome.success);
  EXPECT_THAT(outcome.error, HasSubstr("exit status 127"));
  EXPECT_THAT(outcome.error,
              HasSubstr("cannot run /nonexistent/ferry-no-such-command: no "
                        "such file (check the path and $PATH)"));
}

TEST_F(CommandHandlerTest, CommandThatIsNotExecutableSaysPermissionDenied) {
  ScopedTempDir dir;
  const std::string script = dir.path() + "/not-executable.sh";
  std::ofstream(script) << "#!/bin/sh\necho hi\n";  // mode 0644: no x bit
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome = RunCommand({script}, {}, ctx);
  EXPECT_FALSE(outcome.success);
  EXPECT_THAT(outcome.error, HasSubstr("permission denied"));
}

TEST_F(CommandHandlerTest, CommandNotOnThePathFailsWithAClearMessage) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome = RunCommand({"ferry-no-such-command-on-path"}, {}, ctx);
  EXPECT_FALSE(outcome.success);
  EXPECT_THAT(outcome.error,
              HasSubstr("cannot run ferry-no-such-command-on-path"));
}

TEST_F(CommandHandlerTest, EmptyCommandIsAFinalFailure) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome = RunCommand({}, {}, ctx);
  EXPECT_FALSE(outcome.success);
  EXPECT_FALSE(outcome.retryable);
  EXPECT_EQ(outcome.error, "no command to run");
}

// ---- progress ----

TEST_F(CommandHandlerTest, ProgressLinesOnStderrReportTheLatestProgress) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome =
      RunCommand(Shell("echo 'FERRY-PROGRESS 10 starting' >&2; "
                       "echo 'FERRY-PROGRESS 55 half way there ' >&2; "
                       "echo 'FERRY-PROGRESS nope not a number' >&2; "
                       "echo 'some other line' >&2"),
                 {}, ctx);
  EXPECT_TRUE(outcome.success) << outcome.error;
  v1::Progress progress;
  ASSERT_TRUE(ctx.TakeProgress(&progress));
  EXPECT_EQ(progress.percent(), 55u);
  EXPECT_EQ(progress.message(), "half way there");
  EXPECT_FALSE(ctx.TakeProgress(&progress)) << "taken once";
}

TEST_F(CommandHandlerTest, ProgressOverOneHundredIsClamped) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  JobOutcome outcome =
      RunCommand(Shell("echo 'FERRY-PROGRESS 250 overachiever' >&2"), {}, ctx);
  EXPECT_TRUE(outcome.success) << outcome.error;
  v1::Progress progress;
  ASSERT_TRUE(ctx.TakeProgress(&progress));
  EXPECT_EQ(progress.percent(), 100u);
  EXPECT_EQ(progress.message(), "overachiever");
}

TEST_F(CommandHandlerTest, ProgressIsReportedWhileTheCommandStillRuns) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  AsyncCommand command(
      Shell(PublishPgid() + "echo 'FERRY-PROGRESS 40 halfway' >&2; " +
            "exec sleep 1000"),
      FastKill(), ctx);
  const pid_t pgid = AwaitPgid();
  ASSERT_GT(pgid, 0);
  command.set_pgid(pgid);
  v1::Progress progress;
  ASSERT_TRUE(
      PollUntil([&] { return ctx.TakeProgress(&progress); }, kEventTimeout))
      << "no progress while the command ran";
  EXPECT_EQ(progress.percent(), 40u);
  EXPECT_EQ(progress.message(), "halfway");
  ctx.Stop(StopReason::kCancelled);
  ASSERT_TRUE(command.Await().has_value());
}

// ---- stopping and process groups ----

TEST_F(CommandHandlerTest, StopKillsTheWholeProcessGroup) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  AsyncCommand command(
      Shell("sleep 1000 & " + PublishPgid() + "sleep 1000; wait"), FastKill(),
      ctx);
  const pid_t pgid = AwaitPgid();
  ASSERT_GT(pgid, 0);
  command.set_pgid(pgid);
  ASSERT_EQ(kill(-pgid, 0), 0) << "the command's group should be alive";

  ctx.Stop(StopReason::kTimeout);
  std::optional<JobOutcome> outcome = command.Await();
  ASSERT_TRUE(outcome.has_value()) << "RunCommand did not return after Stop";
  EXPECT_FALSE(outcome->success);
  EXPECT_TRUE(outcome->retryable);
  EXPECT_THAT(outcome->error, HasSubstr("killed by signal 15"));
  EXPECT_TRUE(GroupGone(pgid)) << "a process of group " << pgid << " survived";
}

TEST_F(CommandHandlerTest, CommandIgnoringSigtermIsKilledAfterTheGrace) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  // Ignored dispositions survive exec: the sleeps ignore SIGTERM too.
  AsyncCommand command(
      Shell("trap '' TERM; sleep 1000 & " + PublishPgid() + "sleep 1000; wait"),
      FastKill(), ctx);
  const pid_t pgid = AwaitPgid();
  ASSERT_GT(pgid, 0);
  command.set_pgid(pgid);

  const absl::Time stopped_at = absl::Now();
  ctx.Stop(StopReason::kShutdown);
  std::optional<JobOutcome> outcome = command.Await();
  ASSERT_TRUE(outcome.has_value()) << "RunCommand did not return after Stop";
  EXPECT_FALSE(outcome->success);
  EXPECT_THAT(outcome->error, HasSubstr("killed by signal 9"));
  // SIGKILL came only after the grace period given to SIGTERM.
  EXPECT_GE(absl::Now() - stopped_at, FastKill().kill_grace);
  EXPECT_TRUE(GroupGone(pgid)) << "a process of group " << pgid << " survived";
}

TEST_F(CommandHandlerTest, JobStoppedBeforeTheCommandStartsEndsAtOnce) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  ctx.Stop(StopReason::kCancelled);
  AsyncCommand command(Shell("exec sleep 1000"), FastKill(), ctx);
  std::optional<JobOutcome> outcome = command.Await();
  ASSERT_TRUE(outcome.has_value()) << "RunCommand ran a stopped job";
  EXPECT_FALSE(outcome->success);
  // Ended by the first SIGTERM, not by the SIGKILL after the grace period.
  EXPECT_THAT(outcome->error, HasSubstr("killed by signal 15"));
}

TEST_F(CommandHandlerTest, SuccessfulCommandLeavesNoBackgroundProcessBehind) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  // One leftover keeps the output pipe open, one does not.
  JobOutcome outcome =
      RunCommand(Shell(PublishPgid() +
                       "sleep 1000 & sleep 1000 >/dev/null 2>&1 </dev/null & "
                       "echo done"),
                 {}, ctx);
  const pid_t pgid = AwaitPgid();
  ASSERT_GT(pgid, 0);
  EXPECT_TRUE(outcome.success) << outcome.error;
  EXPECT_EQ(outcome.output, "done\n");
  EXPECT_TRUE(GroupGone(pgid)) << "a process of group " << pgid << " survived";
}

TEST_F(CommandHandlerTest, SuccessAfterTheJobWasStoppedIsNotASuccess) {
  // A command that exits 0 on SIGTERM: the job was stopped, so its result
  // must not count as a success.
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  AsyncCommand command(Shell("trap 'echo bye; exit 0' TERM; " + PublishPgid() +
                             "while :; do sleep 0.05; done"),
                       FastKill(), ctx);
  const pid_t pgid = AwaitPgid();
  ASSERT_GT(pgid, 0);
  command.set_pgid(pgid);
  ctx.Stop(StopReason::kCancelled);
  std::optional<JobOutcome> outcome = command.Await();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_FALSE(outcome->success);
  EXPECT_TRUE(GroupGone(pgid));
}

// ---- the --handlers file ----

TEST(ParseHandlersFile, MapsKindsToCommandsIgnoringCommentsAndBlankLines) {
  absl::StatusOr<std::map<std::string, std::vector<std::string>>> handlers =
      ParseHandlersFile(
          "# kinds and their commands\n"
          "\n"
          "resize   /usr/bin/convert -resize 50%\n"
          "   # indented comment\n"
          "\temail\t/opt/send-mail  --fast \r\n"
          "* /bin/cat\n");
  ASSERT_THAT(handlers, IsOk());
  EXPECT_THAT(
      *handlers,
      ElementsAre(
          Pair("*", ElementsAre("/bin/cat")),
          Pair("email", ElementsAre("/opt/send-mail", "--fast")),
          Pair("resize", ElementsAre("/usr/bin/convert", "-resize", "50%"))));
}

TEST(ParseHandlersFile, LineWithoutACommandIsAnErrorNamingTheLine) {
  EXPECT_THAT(ParseHandlersFile("# header\nresize /bin/convert\nemail\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("line 3"), HasSubstr("email"))));
}

TEST(ParseHandlersFile, KindMappedTwiceIsAnErrorNamingTheLineAndKind) {
  EXPECT_THAT(ParseHandlersFile("resize /bin/a\n\n# again\nresize /bin/b\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("line 4"), HasSubstr("\"resize\""),
                             HasSubstr("twice"))));
  EXPECT_THAT(
      ParseHandlersFile("* /bin/a\n* /bin/b\n"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 2")));
}

TEST(ParseHandlersFile, FileWithNoMappingIsAnError) {
  EXPECT_THAT(
      ParseHandlersFile(""),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("maps no kind")));
  EXPECT_THAT(
      ParseHandlersFile("# only a comment\n\n   \n"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("maps no kind")));
}

}  // namespace
}  // namespace ferry::testing
