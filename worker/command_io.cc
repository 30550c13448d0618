#include "worker/command_io.h"

#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "worker/command_handler.h"

namespace ferry {
namespace {

std::string DescribeEnd(int wait_status) {
  if (WIFEXITED(wait_status)) {
    return absl::StrCat("exit status ", WEXITSTATUS(wait_status));
  }
  if (WIFSIGNALED(wait_status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(wait_status), " (",
                        strsignal(WTERMSIG(wait_status)), ")");
  }
  return "ended abnormally";
}

}  // namespace

std::vector<std::string> CommandEnvironment(const char* const* inherited,
                                            const v1::Job& job) {
  const std::map<std::string, std::string> job_env = {
      {"FERRY_JOB_ID", job.id()},
      {"FERRY_QUEUE", job.queue()},
      {"FERRY_KIND", job.kind()},
      {"FERRY_ATTEMPT", absl::StrCat(job.attempt())}};
  std::vector<std::string> env;
  for (const char* const* e = inherited; *e != nullptr; ++e) {
    const absl::string_view entry(*e);
    const bool replaced =
        std::any_of(job_env.begin(), job_env.end(), [entry](const auto& var) {
          return absl::StartsWith(entry, absl::StrCat(var.first, "="));
        });
    if (!replaced) env.emplace_back(entry);
  }
  for (const auto& [name, value] : job_env) {
    env.push_back(absl::StrCat(name, "=", value));
  }
  return env;
}

const char* ExecFailureReason(int error) {
  switch (error) {
    case ENOENT:
    case ENOTDIR:
      return ": no such file (check the path and $PATH)\n";
    case EACCES:
    case EPERM:
      return ": permission denied (is it executable, and its directory "
             "searchable?)\n";
    case ENOEXEC:
      return ": not an executable this system runs (a script without its #! "
             "line?)\n";
    default:
      return "\n";
  }
}

std::optional<ProgressLine> ParseProgressLine(absl::string_view line) {
  if (!absl::ConsumePrefix(&line, "FERRY-PROGRESS ")) return std::nullopt;
  std::pair<absl::string_view, absl::string_view> parts =
      absl::StrSplit(line, absl::MaxSplits(' ', 1));
  uint32_t percent = 0;
  if (!absl::SimpleAtoi(parts.first, &percent)) return std::nullopt;
  return ProgressLine{std::min<uint32_t>(percent, 100),
                      std::string(absl::StripAsciiWhitespace(parts.second))};
}

void CommandStdout::Append(absl::string_view data) {
  total_ += static_cast<int64_t>(data.size());
  const int64_t room = max_bytes_ - static_cast<int64_t>(kept_.size());
  if (room > 0) {
    kept_.append(data.data(),
                 std::min<int64_t>(static_cast<int64_t>(data.size()), room));
  }
}

std::string CommandStdout::Take() && {
  if (total_ <= static_cast<int64_t>(kept_.size())) return std::move(kept_);
  auto note = [this] {
    return absl::StrCat("\n[ferry-worker: output truncated to ", kept_.size(),
                        " of ", total_, " bytes]\n");
  };
  if (result_limit_ > 0) {
    // Make room for the note (whose number only shrinks with kept_).
    const int64_t room = result_limit_ - static_cast<int64_t>(note().size());
    if (static_cast<int64_t>(kept_.size()) > room) {
      kept_.resize(static_cast<size_t>(std::max<int64_t>(room, 0)));
    }
  }
  kept_ += note();
  if (result_limit_ > 0 && static_cast<int64_t>(kept_.size()) > result_limit_) {
    kept_.resize(static_cast<size_t>(result_limit_));  // a tiny limit
  }
  return std::move(kept_);
}

void CommandStderr::Append(absl::string_view data) {
  for (char c : data) {
    if (c == '\n') {
      if (std::optional<ProgressLine> progress = ParseProgressLine(line_)) {
        ctx_->ReportProgress(progress->percent, std::move(progress->message));
      }
      line_.clear();
    } else if (line_.size() < kMaxLine) {
      line_.push_back(c);
    }
  }
  tail_.append(data.data(), data.size());
  if (static_cast<int64_t>(tail_.size()) > 2 * tail_bytes_) {
    tail_.erase(0, tail_.size() - tail_bytes_);
  }
}

std::string CommandStderr::Tail() const {
  absl::string_view tail = tail_;
  if (static_cast<int64_t>(tail.size()) > tail_bytes_) {
    tail.remove_prefix(tail.size() - tail_bytes_);
  }
  return std::string(absl::StripTrailingAsciiWhitespace(tail));
}

JobOutcome CommandOutcome(int wait_status, bool stopped, std::string output,
                          absl::string_view stderr_tail) {
  const bool exited = WIFEXITED(wait_status);
  if (exited && WEXITSTATUS(wait_status) == 0 && !stopped) {
    return JobOutcome::Success(std::move(output));
  }
  std::string message =
      exited && WEXITSTATUS(wait_status) == kExitTempFail
          ? "exit status 75 (temporary failure, retry requested)"
          : DescribeEnd(wait_status);
  if (!stderr_tail.empty()) absl::StrAppend(&message, ": ", stderr_tail);
  return JobOutcome::Failure(std::move(message), /*retryable=*/true);
}

}  // namespace ferry
