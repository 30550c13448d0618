#ifndef FERRY_BASE_DAEMON_H_
#define FERRY_BASE_DAEMON_H_

// The start-up every Ferry daemon (ferryd, ferry-worker) repeats: its
// --help text, flag parsing, logging, exit codes, and SIGTERM/SIGINT taken
// by a thread of its own. Link absl::flags_parse and absl::flags_usage.

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "base/flags_usage.h"
#include "base/log_format.h"
#include "base/status_macros.h"

namespace ferry {

// Exit codes: a bad flag or argument (nothing was started), and a failure
// after start.
inline constexpr int kExitUsage = 2;
inline constexpr int kExitFailure = 1;

// Sets the --help text (see SetUsage; pass __FILE__ as `main_file`),
// parses the flags (--help and unknown flags exit as Abseil decides), and
// sets up logging at the parsed `log_level` (see ConfigureLogging).
// Returns the positional arguments, without the program name;
// INVALID_ARGUMENT for a log level that does not exist.
inline absl::StatusOr<std::vector<std::string>> InitDaemon(
    int argc, char** argv, absl::string_view usage, const char* main_file,
    const absl::Flag<std::string>& log_level) {
  SetUsage(usage, main_file);
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  // Debian builds Abseil with lock-order (deadlock) detection on; it costs
  // a graph update on every lock. Tests keep it; production does not.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  FERRY_RETURN_IF_ERROR(ConfigureLogging(absl::GetFlag(log_level)));
  return std::vector<std::string>(rest.begin() + 1, rest.end());
}

// Raises the soft limit on open files to the hard limit (systemd's
// LimitNOFILE, or the shell's ulimit -Hn): every connection is a file, and
// a soft limit of 1024 is reached by a few hundred idle clients. Returns
// the soft limit now in force.
inline uint64_t RaiseOpenFilesLimit() {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    struct rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return static_cast<uint64_t>(limit.rlim_cur);
}

// SIGTERM and SIGINT, the signals that stop a daemon. The constructor
// blocks them in the calling thread, and so in every thread it starts
// later: they are taken by Wait() or a SignalThread, never delivered to
// one of gRPC's threads. It also ignores SIGPIPE (a peer that went away
// is an error to handle, not a reason to die). Construct once, in main(),
// before any thread starts. Wait() may be called from any thread.
class StopSignals {
 public:
  // With `reload`, SIGHUP is taken too, and Wait() returns it: the
  // daemon's "re-read your files".
  explicit StopSignals(bool reload = false) {
    sigemptyset(&set_);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    if (reload) sigaddset(&set_, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    signal(SIGPIPE, SIG_IGN);
  }

  // Blocks until SIGTERM or SIGINT (or SIGHUP, see above) arrives; logs it
  // ("received signal=Terminated") and returns its number.
  int Wait() const {
    int number = 0;
    while (sigwait(&set_, &number) != 0) {
    }
    LogReceived(number);
    return number;
  }

 private:
  friend class SignalThread;
  static void LogReceived(int number) {
    spdlog::info("received signal={}", strsignal(number));
  }

  sigset_t set_;
};

// Takes up to `max_signals` stop signals on a thread of its own and calls
// `on_signal(n)` (there, after logging it) for the n-th, from 1. The
// destructor ends the thread, which takes no signal after that; signals
// that come later stay blocked and pending. `signals` must outlive it.
class SignalThread {
 public:
  SignalThread(const StopSignals* signals, int max_signals,
               std::function<void(int)> on_signal)
      : thread_([this, signals, max_signals, on_signal = std::move(on_signal)] {
          for (int received = 0; received < max_signals;) {
            int number = 0;
            if (sigwait(&signals->set_, &number) != 0) continue;
            if (done_.load()) return;
            StopSignals::LogReceived(number);
            on_signal(++received);
          }
        }) {}
  ~SignalThread() {
    // Wake the thread, which may still wait for a signal: its sigwait
    // takes this SIGTERM, aimed at it alone, and done_ says it is ours.
    done_.store(true);
    pthread_kill(thread_.native_handle(), SIGTERM);
    thread_.join();
  }
  SignalThread(const SignalThread&) = delete;
  SignalThread& operator=(const SignalThread&) = delete;

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;  // last: starts once done_ exists
};

}  // namespace ferry

#endif  // FERRY_BASE_DAEMON_H_
