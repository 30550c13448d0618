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
#include "base/status_macros.h"
#include "client/connect_flags.h"
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
          "is cut and the result says so. Never more than the broker "
          "stores (its --max_payload_bytes), the note included.");
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

using Handlers = std::map<std::string, std::vector<std::string>>;

constexpr char kUsage[] =
    "Runs a command for every job taken from ferryd.\n"
    "  ferry-worker --queues=Q1,Q2 [--concurrency=N] -- COMMAND [ARGS...]\n"
    "  ferry-worker --queues=Q --handlers=FILE\n"
    "The job's payload is the command's stdin; FERRY_JOB_ID, FERRY_QUEUE,\n"
    "FERRY_KIND and FERRY_ATTEMPT are in its environment. Exit 0: success,\n"
    "stdout is the result. Exit 75: retry. Other: failure (retried while\n"
    "attempts last) with the end of stderr as the error. A stderr line\n"
    "'FERRY-PROGRESS <percent> <message>' reports progress.\n"
    "TLS: --tls_ca (and --tls_cert/--tls_key for mutual TLS); token:\n"
    "--token_file, else $FERRY_TOKEN, else the file $FERRY_TOKEN_FILE.";

int Usage(absl::string_view message) {
  std::fprintf(stderr,
               "ferry-worker: %s\nRun 'ferry-worker --help' for usage.\n",
               std::string(message).c_str());
  return kExitUsage;
}

// The worker's options from the flags. INVALID_ARGUMENT says which is wrong.
absl::Status WorkerOptionsFromFlags(WorkerOptions& options) {
  options.broker = absl::GetFlag(FLAGS_broker);
  if (options.broker.empty()) options.broker = BrokerAddressFromEnv();
  options.queues = absl::GetFlag(FLAGS_queues);
  if (options.queues.empty()) {
    return absl::InvalidArgumentError("--queues is required");
  }
  for (const std::string& queue : options.queues) {
    FERRY_RETURN_IF_ERROR(ValidateName("queue", queue));
  }
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  if (options.concurrency < 1 || options.concurrency > 10000) {
    return absl::InvalidArgumentError(
        "--concurrency must be between 1 and 10000");
  }
  for (const std::string& item : absl::GetFlag(FLAGS_label)) {
    FERRY_ASSIGN_OR_RETURN(auto label, ParseLabelFlag(item));
    options.labels.insert(std::move(label));
  }
  options.worker_id = absl::GetFlag(FLAGS_worker_id);
  if (!options.worker_id.empty()) {
    FERRY_RETURN_IF_ERROR(ValidateName("worker_id", options.worker_id));
  }
  options.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  FERRY_ASSIGN_OR_RETURN(options.connect, ConnectOptionsFromFlags());
  return absl::OkStatus();
}

// The commands' options from the flags; sets the worker's stop_grace,
// which follows from them.
absl::Status CommandOptionsFromFlags(CommandOptions& command_options,
                                     WorkerOptions& options) {
  command_options.max_output = absl::GetFlag(FLAGS_max_output);
  command_options.kill_grace = absl::GetFlag(FLAGS_kill_grace);
  // A command that ignores SIGTERM returns only after the SIGKILL: wait for
  // it, so its "drain timeout" failure is still reported.
  options.stop_grace = command_options.kill_grace + absl::Seconds(5);
  if (command_options.max_output < 0) {
    return absl::InvalidArgumentError("--max_output must be >= 0");
  }
  return absl::OkStatus();
}

// The command of each kind: from --handlers, or `command` (the arguments
// after '--') for every kind.
absl::StatusOr<Handlers> HandlersFromFlags(
    const std::vector<std::string>& command) {
  const std::string handlers_file = absl::GetFlag(FLAGS_handlers);
  if (!handlers_file.empty() && !command.empty()) {
    return absl::InvalidArgumentError(
        "give --handlers or '-- COMMAND', not both");
  }
  if (handlers_file.empty()) {
    if (command.empty()) {
      return absl::InvalidArgumentError(
          "give the command to run after '--', or --handlers=FILE");
    }
    return Handlers{{"*", command}};
  }
  absl::StatusOr<std::string> text = ReadFileToString(handlers_file);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--handlers: ", text.status().message()));
  }
  absl::StatusOr<Handlers> handlers = ParseHandlersFile(*text);
  if (!handlers.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(handlers_file, ": ", handlers.status().message()));
  }
  return handlers;
}

void AddHandlers(const Handlers& handlers,
                 const CommandOptions& command_options, Worker& worker) {
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
}

// Runs `worker` until a signal stops it: the first SIGTERM/SIGINT drains
// (--drain_timeout), a second stops the running jobs at once.
absl::Status RunUntilStopped(const StopSignals& signals, Worker& worker) {
  const SignalThread stopper(&signals, 2, [&worker](int received) {
    if (received == 1) {
      worker.Stop();
    } else {
      worker.StopNow();
    }
  });
  return worker.Run();
}

int Run(int argc, char** argv) {
  const absl::StatusOr<std::vector<std::string>> command =
      InitDaemon(argc, argv, kUsage, __FILE__, FLAGS_log_level);
  if (!command.ok()) return Usage(command.status().message());
  WorkerOptions options;
  CommandOptions command_options;
  if (absl::Status s = WorkerOptionsFromFlags(options); !s.ok()) {
    return Usage(s.message());
  }
  if (absl::Status s = CommandOptionsFromFlags(command_options, options);
      !s.ok()) {
    return Usage(s.message());
  }
  absl::StatusOr<Handlers> handlers = HandlersFromFlags(*command);
  if (!handlers.ok()) return Usage(handlers.status().message());

  // Before any thread starts: the signals are taken by RunUntilStopped.
  const StopSignals signals;
  Worker worker(options);
  AddHandlers(*handlers, command_options, worker);
  // Whether there is a token, never the token.
  spdlog::info(
      "ferry-worker starting worker_id={} broker={} queues={} concurrency={} "
      "tls={} token={}",
      worker.worker_id(), options.broker, absl::StrJoin(options.queues, ","),
      options.concurrency, options.connect.tls(), options.connect.has_token());
  if (absl::Status status = RunUntilStopped(signals, worker); !status.ok()) {
    spdlog::error("ferry-worker stopped status=\"{}\"", status.ToString());
    return kExitFailure;
  }
  spdlog::info("ferry-worker stopped");
  return 0;
}

}  // namespace
}  // namespace ferry

int main(int argc, char** argv) { return ferry::Run(argc, argv); }
