// The pieces of a command's run that need no process: its environment,
// progress lines, stdout and stderr as they arrive in pieces, and the
// outcome its wait status makes. RunCommand with real commands is in
// command_handler_test.cc.

#include "worker/command_io.h"

#include <signal.h>

#include <cerrno>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "ferry/v1/job.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/worker.h"

namespace ferry::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::StartsWith;

v1::Job MakeJob() {
  v1::Job job;
  job.set_id("42");
  job.set_queue("images");
  job.set_kind("resize");
  job.set_attempt(2);
  return job;
}

// What waitpid sets for a command that exited with `code`, or that
// `signal` killed.
int Exited(int code) { return code << 8; }
int Killed(int signal) { return signal; }

// The progress a CommandStderr reported to `ctx`, as "PERCENT MESSAGE";
// "none" if it reported none.
std::string Progress(JobContext& ctx) {
  v1::Progress progress;
  if (!ctx.TakeProgress(&progress)) return "none";
  return std::to_string(progress.percent()) + " " + progress.message();
}

// ParseProgressLine(line) as "PERCENT MESSAGE"; "none" if not progress.
std::string Parse(absl::string_view line) {
  std::optional<ProgressLine> progress = ParseProgressLine(line);
  if (!progress) return "none";
  return std::to_string(progress->percent) + " " + progress->message;
}

// ---- environment ----

TEST(CommandEnvironment, JobFieldsReplaceInheritedOnesAndComeLast) {
  const char* inherited[] = {"PATH=/bin", "FERRY_JOB_ID=stale",
                             "FERRY_QUEUE_NOT=kept", "HOME=/root", nullptr};
  EXPECT_THAT(CommandEnvironment(inherited, MakeJob()),
              ElementsAre("PATH=/bin", "FERRY_QUEUE_NOT=kept", "HOME=/root",
                          "FERRY_ATTEMPT=2", "FERRY_JOB_ID=42",
                          "FERRY_KIND=resize", "FERRY_QUEUE=images"));
}

TEST(CommandEnvironment, EmptyInheritedEnvironmentHoldsOnlyTheJobFields) {
  const char* inherited[] = {nullptr};
  EXPECT_EQ(CommandEnvironment(inherited, MakeJob()).size(), 4u);
}

// ---- exec failures ----

TEST(ExecFailureReason, NamesTheLikelyCauseAndEndsTheLine) {
  EXPECT_THAT(ExecFailureReason(ENOENT), StartsWith(": no such file"));
  EXPECT_THAT(ExecFailureReason(EACCES), StartsWith(": permission denied"));
  EXPECT_THAT(ExecFailureReason(ENOEXEC), StartsWith(": not an executable"));
  EXPECT_STREQ(ExecFailureReason(E2BIG), "\n");
  for (int error : {ENOENT, ENOTDIR, EACCES, EPERM, ENOEXEC}) {
    EXPECT_THAT(ExecFailureReason(error), EndsWith("\n")) << error;
  }
}

// ---- progress ----

TEST(ParseProgressLine, ReadsPercentAndTheMessageWithoutSurroundingSpace) {
  EXPECT_EQ(Parse("FERRY-PROGRESS 55  half way there "), "55 half way there");
  EXPECT_EQ(Parse("FERRY-PROGRESS 7"), "7 ");
}

TEST(ParseProgressLine, PercentOverOneHundredIsClamped) {
  EXPECT_EQ(Parse("FERRY-PROGRESS 250 overachiever"), "100 overachiever");
}

TEST(ParseProgressLine, OtherLinesAreNotProgress) {
  for (const char* line :
       {"", "some other line", "FERRY-PROGRESS nope not a number",
        "FERRY-PROGRESS -5 negative", " FERRY-PROGRESS 5 indented",
        "FERRY-PROGRESS"}) {
    EXPECT_EQ(Parse(line), "none") << line;
  }
}

// ---- stdout ----

TEST(CommandStdout, OutputWithinTheLimitIsKeptWhole) {
  CommandStdout out(10);
  out.Append("01234");
  out.Append("56789");
  EXPECT_EQ(std::move(out).Take(), "0123456789");
}

TEST(CommandStdout, OutputOverTheLimitIsCutAndSaysHowMuchThereWas) {
  CommandStdout out(10);
  out.Append("0123456");
  out.Append("789abc");
  out.Append("def");
  EXPECT_EQ(std::move(out).Take(),
            "0123456789\n[ferry-worker: output truncated to 10 of 16 bytes]\n");
}

TEST(CommandStdout, TheWholeResultStaysWithinTheBrokersLimitNoteIncluded) {
  // --max_output and the broker's limit both 1 MiB, as by default: the
  // note must not push the result over (the broker would fail the job).
  constexpr int64_t kLimit = 1 << 20;
  CommandStdout out(kLimit, kLimit);
  const std::string chunk(64 << 10, 'x');
  for (int i = 0; i < 32; ++i) out.Append(chunk);  // 2 MiB
  const std::string result = std::move(out).Take();
  EXPECT_LE(result.size(), static_cast<size_t>(kLimit));
  EXPECT_THAT(result, EndsWith(absl::StrCat(
                          "\n[ferry-worker: output truncated to ",
                          result.find('\n'), " of 2097152 bytes]\n")));
}

TEST(CommandStdout, TheBrokersLimitCutsEvenUnderMaxOutput) {
  CommandStdout out(/*max_bytes=*/1000, /*result_limit=*/100);
  out.Append(std::string(500, 'y'));
  const std::string result = std::move(out).Take();
  EXPECT_LE(result.size(), 100u);
  EXPECT_GE(result.size(), 98u) << "the note's number may shrink a digit";
  EXPECT_THAT(result, StartsWith("yyy"));
  EXPECT_THAT(result, EndsWith(" of 500 bytes]\n"));
}

TEST(CommandStdout, ZeroLimitKeepsNothingButTheNote) {
  CommandStdout out(0);
  out.Append("abc");
  EXPECT_EQ(std::move(out).Take(),
            "\n[ferry-worker: output truncated to 0 of 3 bytes]\n");
}

// ---- stderr ----

TEST(CommandStderr, ProgressLineSplitAcrossReadsIsReportedWhenItEnds) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  CommandStderr err(4096, &ctx);
  err.Append("FERRY-PROGRESS 4");
  err.Append("0 almost");
  EXPECT_EQ(Progress(ctx), "none");
  err.Append(" there\nmore");
  EXPECT_EQ(Progress(ctx), "40 almost there");
}

TEST(CommandStderr, LatestProgressLineWins) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  CommandStderr err(4096, &ctx);
  err.Append("FERRY-PROGRESS 10 a\nnoise\nFERRY-PROGRESS 20 b\n");
  EXPECT_EQ(Progress(ctx), "20 b");
}

TEST(CommandStderr, OverlongLineDoesNotHideTheNextProgressLine) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  CommandStderr err(4096, &ctx);
  err.Append(std::string(5000, 'x'));
  err.Append("\nFERRY-PROGRESS 30 next line\n");
  EXPECT_EQ(Progress(ctx), "30 next line");
}

TEST(CommandStderr, TailKeepsTheLastBytesWithoutTrailingSpace) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  CommandStderr err(10, &ctx);
  for (int i = 0; i < 10; ++i) err.Append("noise ");
  err.Append("the end\n\n");
  EXPECT_EQ(err.Tail(), " the end");
}

TEST(CommandStderr, ShortStderrIsKeptWhole) {
  JobContext ctx(MakeJob(), absl::InfiniteFuture());
  CommandStderr err(4096, &ctx);
  err.Append("it broke\n");
  EXPECT_EQ(err.Tail(), "it broke");
}

// ---- outcome ----

TEST(CommandOutcome, ExitZeroIsSuccessWithTheOutput) {
  JobOutcome outcome = CommandOutcome(Exited(0), false, "out", "warning");
  EXPECT_TRUE(outcome.success);
  EXPECT_EQ(outcome.output, "out");
}

TEST(CommandOutcome, ExitZeroAfterTheJobWasStoppedIsAFailure) {
  JobOutcome outcome = CommandOutcome(Exited(0), true, "out", "");
  EXPECT_FALSE(outcome.success);
  EXPECT_EQ(outcome.error, "exit status 0");
  EXPECT_TRUE(outcome.retryable);
}

TEST(CommandOutcome, ExitSeventyFiveSaysARetryWasAskedFor) {
  JobOutcome outcome = CommandOutcome(Exited(75), false, "", "busy");
  EXPECT_FALSE(outcome.success);
  EXPECT_EQ(outcome.error,
            "exit status 75 (temporary failure, retry requested): busy");
  EXPECT_TRUE(outcome.retryable);
}

TEST(CommandOutcome, FailureNamesTheExitStatusOrSignalAndTheStderrTail) {
  EXPECT_EQ(CommandOutcome(Exited(3), false, "out", "it broke").error,
            "exit status 3: it broke");
  EXPECT_EQ(CommandOutcome(Killed(SIGKILL), false, "", "").error,
            "killed by signal 9 (Killed)");
}

}  // namespace
}  // namespace ferry::testing
