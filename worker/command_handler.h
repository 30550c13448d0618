#ifndef FERRY_WORKER_COMMAND_HANDLER_H_
#define FERRY_WORKER_COMMAND_HANDLER_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/worker.h"

namespace ferry {

// Exit status a command uses to ask for a retry (sysexits.h EX_TEMPFAIL).
inline constexpr int kExitTempFail = 75;

struct CommandOptions {
  // Most bytes of stdout kept as the result; the rest is dropped and the
  // result ends with a line saying so.
  int64_t max_output = 1 << 20;
  // Bytes of stderr kept for the error message (its tail).
  int64_t stderr_tail = 4096;
  // After SIGTERM (timeout, cancel, stop), how long before SIGKILL.
  absl::Duration kill_grace = absl::Seconds(10);
};

// Runs `argv` for a job: the payload on stdin; FERRY_JOB_ID, FERRY_QUEUE,
// FERRY_KIND and FERRY_ATTEMPT in the environment; in its own process
// group. Exit 0 is success with stdout as the output; 75 a retryable
// failure; anything else (or a signal) a failure with the tail of stderr,
// retryable (the job's attempts decide). Lines "FERRY-PROGRESS <percent>
// <message>" on stderr report progress. When the job is stopped (timeout,
// cancel, lease lost, worker stop) the whole group gets SIGTERM, then
// SIGKILL after the grace period; no process of the group outlives the job.
JobOutcome RunCommand(const std::vector<std::string>& argv,
                      const CommandOptions& options, JobContext& ctx);

// A --handlers file: one "KIND COMMAND [ARGS...]" per line, split on
// whitespace ("*" as KIND matches kinds without a line of their own;
// blank lines and lines starting with # are ignored). INVALID_ARGUMENT
// names the line that is wrong.
absl::StatusOr<std::map<std::string, std::vector<std::string>>>
ParseHandlersFile(absl::string_view text);

}  // namespace ferry

#endif  // FERRY_WORKER_COMMAND_HANDLER_H_
