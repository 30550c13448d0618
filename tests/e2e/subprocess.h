#ifndef FERRY_TESTS_E2E_SUBPROCESS_H_
#define FERRY_TESTS_E2E_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ferry/v1/jobs.grpc.pb.h"

namespace ferry::testing {

// A child process for end-to-end tests: the real ferryd, ferry-worker or
// ferry. Its stdout and stderr are read by a thread into lines that tests
// wait on (an event with a deadline, never a sleep). The destructor kills
// the process (SIGKILL) if it still runs.
class Subprocess {
 public:
  struct Options {
    std::vector<std::string> env;  // extra "NAME=value" entries
    std::string stdin_data;        // written to stdin, then closed
    std::string cwd;               // empty: inherit
  };

  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(
      std::vector<std::string> argv, Options options);
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(
      std::vector<std::string> argv) {
    return Start(std::move(argv), Options());
  }
  ~Subprocess();

  pid_t pid() const { return pid_; }
  void Signal(int signal);

  // Waits for the process to exit; its exit code, 128+N if killed by
  // signal N, or DEADLINE_EXCEEDED.
  absl::StatusOr<int> Wait(absl::Duration timeout);

  // Waits for the `nth` (1-based) output line containing `needle`;
  // returns that line.
  absl::StatusOr<std::string> WaitForLine(absl::string_view needle,
                                          absl::Duration timeout, int nth = 1);
  // Everything printed so far (stdout and stderr interleaved by line).
  std::string Output();
  // Only what went to stdout.
  std::string Stdout();

 private:
  Subprocess() = default;
  void ReadLoop(int fd, bool is_stdout);

  pid_t pid_ = -1;
  std::thread stdout_reader_;
  std::thread stderr_reader_;
  absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
  std::string stdout_ ABSL_GUARDED_BY(mu_);
  int open_streams_ ABSL_GUARDED_BY(mu_) = 2;
  std::optional<int> exit_code_ ABSL_GUARDED_BY(mu_);
};

// Starts the real ferryd at `ferryd_path` with `flags` (give at least
// --db; --listen=127.0.0.1:0 is added unless a --listen is given) and
// waits for its "listening address=" line; `address` gets the host:port.
absl::StatusOr<std::unique_ptr<Subprocess>> StartFerryd(
    const std::string& ferryd_path, std::vector<std::string> flags,
    std::string* address);

// A running ferryd (started as StartFerryd does) and a Jobs stub to it.
class Ferryd {
 public:
  static absl::StatusOr<std::unique_ptr<Ferryd>> Start(
      const std::string& ferryd_path, const std::string& db,
      std::vector<std::string> extra_flags = {});

  Subprocess& process() { return *process_; }
  v1::Jobs::Stub& jobs() { return *jobs_; }
  const std::string& address() const { return address_; }

 private:
  Ferryd() = default;
  std::unique_ptr<Subprocess> process_;
  std::string address_;
  std::unique_ptr<v1::Jobs::Stub> jobs_;
};

// Runs a command to completion (bounded by `timeout`); returns its exit
// code and fills `output` with what it printed.
absl::StatusOr<int> RunCommand(std::vector<std::string> argv,
                               Subprocess::Options options,
                               absl::Duration timeout, std::string* out,
                               std::string* all = nullptr);

}  // namespace ferry::testing

#endif  // FERRY_TESTS_E2E_SUBPROCESS_H_
