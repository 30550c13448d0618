// ferry-worker: runs a command for every job it takes from ferryd.
//
//   ferry-worker --broker=HOST:PORT --queues=Q1,Q2 --concurrency=N -- CMD ARGS
//   ferry-worker --queues=Q --handlers=/etc/ferry/handlers
//
// SIGTERM or SIGINT: take no more jobs, let running ones finish (up to
// --drain_timeout), then exit 0. A second one stops the running jobs at
// once (reported failed, retryable).

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/broker_address.h"
#include "base/daemon.h"
#include "base/log_format.h"
#include "base/read_file.h"
#include "proto/names.h"
#include "worker/command_handler.h"
#include "worker/worker.h"

ABSL_FLAG(std::string, broker, "",
          "ferryd's address, HOST:PORT. Default: $FERRY_BROKER, else "
          "127.0.0.1:7070.");
ABSL_FLAG(std::vector<std::string>, queues, {},
          "Comma-separated queues to take jobs from (required).");
ABSL_FLAG(int, concurrency, 1, "Jobs run at once.");
ABSL_FLAG(std::vector<std::string>, label, {},
          "Comma-separated key=value labels shown in 'ferry workers'.");
ABSL_FLAG(std::string, handlers, "",
          "File mapping job kinds to commands, one 'KIND COMMAND [ARGS...]' "
          "per line ('*' for any other kind). Instead of '-- COMMAND'.");
ABSL_FLAG(int64_t, max_output, 1 << 20,
          "Most bytes of a command's stdout kept as the job's result; more "
          "is cut and the result says so.");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "On SIGTERM, how long running jobs may finish before they are "
          "stopped and reported as failed (retryable). A second SIGTERM or "
          "SIGINT stops them at once.");
ABSL_FLAG(absl::Duration, kill_grace, absl::Seconds(10),
          "After SIGTERM to a job's processes (timeout, cancel, stop), how "
          "long before SIGKILL.");
ABSL_FLAG(std::string, worker_id, "",
          "This worker's id (default <hostname>-<pid>).");
ABSL_FLAG(std::string, log_level, "info",
          "trace, debug, info, warn, error or off. SPDLOG_LEVEL overrides.");

namespace ferry {
namespace {

int Usage(const std::string& message) {
  std::fprintf(stderr,
               "ferry-worker: %s\nRun 'ferry-worker --help' for usage.\n",
               message.c_str());
  return kExitUsage;
}

int Run(int argc, char** argv) {
  const std::vector<std::string> command = ParseDaemonFlags(
      argc, argv,
      "Runs a command for every job taken from ferryd.\n"
      "  ferry-worker --queues=Q1,Q2 [--concurrency=N] -- COMMAND [ARGS...]\n"
      "  ferry-worker --queues=Q --handlers=FILE\n"
      "The job's payload is the command's stdin; FERRY_JOB_ID, FERRY_QUEUE,\n"
      "FERRY_KIND and FERRY_ATTEMPT are in its environment. Exit 0: success,\n"
      "stdout is the result. Exit 75: retry. Other: failure (retried while\n"
      "attempts last) with the end of stderr as the error. A stderr line\n"
      "'FERRY-PROGRESS <percent> <message>' reports progress.",
      __FILE__);
  if (absl::Status s = ConfigureLogging(absl::GetFlag(FLAGS_log_level));
      !s.ok()) {
    return Usage(std::string(s.message()));
  }

  WorkerOptions options;
  options.broker = absl::GetFlag(FLAGS_broker);
  if (options.broker.empty()) options.broker = BrokerAddressFromEnv();
  options.queues = absl::GetFlag(FLAGS_queues);
  if (options.queues.empty()) return Usage("--queues is required");
  for (const std::string& queue : options.queues) {
    if (absl::Status s = ValidateName("queue", queue); !s.ok()) {
      return Usage(std::string(s.message()));
    }
  }
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  if (options.concurrency < 1 || options.concurrency > 10000) {
    return Usage("--concurrency must be between 1 and 10000");
  }
  for (const std::string& item : absl::GetFlag(FLAGS_label)) {
    absl::StatusOr<std::pair<std::string, std::string>> label =
        ParseLabelFlag(item);
    if (!label.ok()) return Usage(std::string(label.status().message()));
    options.labels.insert(*std::move(label));
  }
  options.worker_id = absl::GetFlag(FLAGS_worker_id);
  if (!options.worker_id.empty()) {
    if (absl::Status s = ValidateName("worker_id", options.worker_id);
        !s.ok()) {
      return Usage(std::string(s.message()));
    }
  }
  options.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);

  CommandOptions command_options;
  command_options.max_output = absl::GetFlag(FLAGS_max_output);
  command_options.kill_grace = absl::GetFlag(FLAGS_kill_grace);
  // A command that ignores SIGTERM returns only after the SIGKILL: wait for
  // it, so its "drain timeout" failure is still reported.
  options.stop_grace = command_options.kill_grace + absl::Seconds(5);
  if (command_options.max_output < 0) return Usage("--max_output must be >= 0");

  std::map<std::string, std::vector<std::string>> handlers;
  const std::string handlers_file = absl::GetFlag(FLAGS_handlers);
  if (!handlers_file.empty() && !command.empty()) {
    return Usage("give --handlers or '-- COMMAND', not both");
  }
  if (!handlers_file.empty()) {
    absl::StatusOr<std::string> text = ReadFileToString(handlers_file);
    if (!text.ok()) {
      return Usage(absl::StrCat("--handlers: ", text.status().message()));
    }
    absl::StatusOr<std::map<std::string, std::vector<std::string>>> parsed =
        ParseHandlersFile(*text);
    if (!parsed.ok()) {
      return Usage(
          absl::StrCat(handlers_file, ": ", parsed.status().message()));
    }
    handlers = *std::move(parsed);
  } else if (!command.empty()) {
    handlers["*"] = command;
  } else {
    return Usage("give the command to run after '--', or --handlers=FILE");
  }

  // Before any thread starts: the signals are taken by the SignalThread.
  const StopSignals signals;

  Worker worker(options);
  for (const auto& [kind, command_for_kind] : handlers) {
    // C++17 lambdas cannot capture structured bindings: copy first.
    std::vector<std::string> argv_for_kind = command_for_kind;
    Handler handler = [argv_for_kind, command_options](JobContext& ctx) {
      return RunCommand(argv_for_kind, command_options, ctx);
    };
    if (kind == "*") {
      worker.HandleDefault(handler);
    } else {
      worker.Handle(kind, handler);
    }
  }
  spdlog::info(
      "ferry-worker starting worker_id={} broker={} queues={} concurrency={}",
      worker.worker_id(), options.broker, absl::StrJoin(options.queues, ","),
      options.concurrency);
  absl::Status status;
  {
    // The first SIGTERM/SIGINT drains (--drain_timeout); a second stops
    // the running jobs at once.
    const SignalThread stopper(&signals, 2, [&worker](int received) {
      if (received == 1) {
        worker.Stop();
      } else {
        worker.StopNow();
      }
    });
    status = worker.Run();
  }
  if (!status.ok()) {
    spdlog::error("ferry-worker stopped status=\"{}\"", status.ToString());
    return kExitFailure;
  }
  spdlog::info("ferry-worker stopped");
  return 0;
}

}  // namespace
}  // namespace ferry

int main(int argc, char** argv) { return ferry::Run(argc, argv); }
