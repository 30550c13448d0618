#ifndef FERRY_WORKER_COMMAND_IO_H_
#define FERRY_WORKER_COMMAND_IO_H_

// What goes into a command that RunCommand runs for a job, and what its
// end makes of what comes out: the environment, stdout kept up to a limit,
// progress lines and the tail of stderr, and the job's outcome. No process
// or file descriptor here (worker/command_handler.cc has those), so each
// piece is tested on its own. The classes are not thread-safe: one per run.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "ferry/v1/job.pb.h"
#include "worker/worker.h"

namespace ferry {

// The environment of `job`'s command: `inherited` (NULL-terminated, as
// `environ`) without its FERRY_JOB_ID, FERRY_QUEUE, FERRY_KIND and
// FERRY_ATTEMPT, then those four for `job`. Each entry is "NAME=VALUE".
std::vector<std::string> CommandEnvironment(const char* const* inherited,
                                            const v1::Job& job);

// Why exec failed with `error` (an errno), as the end of the line that
// begins "ferry-worker: cannot run COMMAND": a literal that ends in "\n".
// Async-signal-safe: the child calls it between fork and _exit.
const char* ExecFailureReason(int error);

// A stderr line "FERRY-PROGRESS <percent> <message>".
struct ProgressLine {
  uint32_t percent = 0;  // at most 100: more is clamped
  std::string message;   // without surrounding whitespace
};
// nullopt for any other line, or a percent that is not a number.
std::optional<ProgressLine> ParseProgressLine(absl::string_view line);

// A command's stdout: the first `max_bytes` are kept, the rest counted.
// `result_limit` (0: none) bounds the whole result, the note included: the
// broker's limit, which an output over it would fail the job by.
class CommandStdout {
 public:
  explicit CommandStdout(int64_t max_bytes, int64_t result_limit = 0)
      : max_bytes_(result_limit > 0 ? std::min(max_bytes, result_limit)
                                    : max_bytes),
        result_limit_(result_limit) {}

  void Append(absl::string_view data);
  // The output kept; when some was dropped, followed by a line that says
  // how much ("[ferry-worker: output truncated to KEPT of TOTAL bytes]"),
  // all of it within `result_limit`.
  std::string Take() &&;

 private:
  const int64_t max_bytes_;
  const int64_t result_limit_;
  std::string kept_;
  int64_t total_ = 0;
};

// A command's stderr: reports each complete progress line to the job as
// it arrives, and keeps the last `tail_bytes` for the error message.
// `ctx` is not owned and must outlive this.
class CommandStderr {
 public:
  CommandStderr(int64_t tail_bytes, JobContext* ctx)
      : tail_bytes_(tail_bytes), ctx_(ctx) {}

  void Append(absl::string_view data);
  // The last `tail_bytes` of stderr, without trailing whitespace.
  std::string Tail() const;

 private:
  // Lines longer than this are cut: a progress line never is.
  static constexpr size_t kMaxLine = 4096;

  const int64_t tail_bytes_;
  JobContext* const ctx_;
  std::string line_;  // the line being read
  // The end of stderr; trimmed to tail_bytes_ when twice as long, so that
  // a chatty command costs no copy per read.
  std::string tail_;
};

// The outcome of a command that ended with `wait_status` (as waitpid sets
// it): success with `output` if it exited 0 and the job was not `stopped`;
// otherwise a retryable failure that says how it ended (exit status 75:
// a retry it asked for), followed by `stderr_tail` if not empty.
JobOutcome CommandOutcome(int wait_status, bool stopped, std::string output,
                          absl::string_view stderr_tail);

}  // namespace ferry

#endif  // FERRY_WORKER_COMMAND_IO_H_
