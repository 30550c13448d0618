#include "tests/e2e/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

extern char** environ;

namespace ferry::testing {

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(
    std::vector<std::string> argv, Options options) {
  int out_pipe[2], err_pipe[2], in_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0 ||
      pipe2(in_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  for (const std::string& e : options.env) env_strings.push_back(e);
  std::vector<char*> env;
  for (std::string& e : env_strings) env.push_back(e.data());
  env.push_back(nullptr);
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);

  pid_t pid = fork();
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    if (!options.cwd.empty() && chdir(options.cwd.c_str()) != 0) _exit(126);
    execve(args[0], args.data(), env.data());
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (!options.stdin_data.empty()) {
    const std::string& data = options.stdin_data;
    size_t written = 0;
    while (written < data.size()) {
      ssize_t n =
          write(in_pipe[1], data.data() + written, data.size() - written);
      if (n <= 0) break;
      written += static_cast<size_t>(n);
    }
  }
  close(in_pipe[1]);
  std::unique_ptr<Subprocess> process(new Subprocess());
  process->pid_ = pid;
  Subprocess* raw = process.get();
  process->stdout_reader_ =
      std::thread([raw, fd = out_pipe[0]] { raw->ReadLoop(fd, true); });
  process->stderr_reader_ =
      std::thread([raw, fd = err_pipe[0]] { raw->ReadLoop(fd, false); });
  return process;
}

Subprocess::~Subprocess() {
  bool running;
  {
    absl::MutexLock lock(&mu_);
    running = !exit_code_.has_value();
  }
  if (running && pid_ > 0) {
    kill(pid_, SIGKILL);
    (void)Wait(absl::Seconds(30));
  }
  if (stdout_reader_.joinable()) stdout_reader_.join();
  if (stderr_reader_.joinable()) stderr_reader_.join();
}

void Subprocess::ReadLoop(int fd, bool is_stdout) {
  std::string partial;
  char buffer[4096];
  while (true) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    absl::MutexLock lock(&mu_);
    if (is_stdout) stdout_.append(buffer, static_cast<size_t>(n));
    partial.append(buffer, static_cast<size_t>(n));
    size_t newline;
    while ((newline = partial.find('\n')) != std::string::npos) {
      lines_.push_back(partial.substr(0, newline));
      partial.erase(0, newline + 1);
    }
  }
  close(fd);
  absl::MutexLock lock(&mu_);
  if (!partial.empty()) lines_.push_back(partial);
  --open_streams_;
}

void Subprocess::Signal(int signal) {
  if (pid_ > 0) kill(pid_, signal);
}

absl::StatusOr<int> Subprocess::Wait(absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    if (exit_code_) return *exit_code_;
  }
  // Poll waitpid with WNOHANG against a deadline: the child's exit is the
  // event; there is no portable way to wait for it with a timeout.
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      int code =
          WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      absl::MutexLock lock(&mu_);
      exit_code_ = code;
      return code;
    }
    if (r < 0 && errno != EINTR) {
      return absl::InternalError(
          absl::StrCat("waitpid: ", std::strerror(errno)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("process ", pid_, " still running"));
    }
    // Wake on reader activity (output often precedes exit) or every 10ms.
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(
                             +[](int* n) { return *n == 0; }, &open_streams_),
                         absl::Milliseconds(10));
  }
}

absl::StatusOr<std::string> Subprocess::WaitForLine(absl::string_view needle,
                                                    absl::Duration timeout,
                                                    int nth) {
  size_t checked = 0;
  int matches = 0;
  std::string found;
  auto seen =
      [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {  // runs under mu_ (Await holds it)
        // Await may evaluate this again after it returned true.
        if (!found.empty()) return true;
        for (; checked < lines_.size(); ++checked) {
          if (absl::StrContains(lines_[checked], needle) && ++matches == nth) {
            found = lines_[checked];
            return true;
          }
        }
        return open_streams_ == 0;  // no more output will come
      };
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&seen), timeout);
  if (!found.empty()) return found;
  return absl::DeadlineExceededError(
      absl::StrCat("no line ", nth, " containing \"", needle, "\" in output:\n",
                   absl::StrJoin(lines_, "\n")));
}

std::string Subprocess::Output() {
  absl::MutexLock lock(&mu_);
  return absl::StrJoin(lines_, "\n");
}

std::string Subprocess::Stdout() {
  absl::MutexLock lock(&mu_);
  return stdout_;
}

absl::StatusOr<std::unique_ptr<Subprocess>> StartFerryd(
    const std::string& ferryd_path, std::vector<std::string> flags,
    std::string* address) {
  std::vector<std::string> argv = {ferryd_path};
  const bool has_listen =
      std::any_of(flags.begin(), flags.end(), [](const std::string& flag) {
        return absl::StartsWith(flag, "--listen=");
      });
  if (!has_listen) argv.push_back("--listen=127.0.0.1:0");
  argv.insert(argv.end(), flags.begin(), flags.end());
  absl::StatusOr<std::unique_ptr<Subprocess>> ferryd = Subprocess::Start(argv);
  if (!ferryd.ok()) return ferryd.status();
  absl::StatusOr<std::string> line =
      (*ferryd)->WaitForLine("listening address=", absl::Seconds(30));
  if (!line.ok()) return line.status();
  *address = line->substr(line->find("address=") + 8);
  return ferryd;
}

absl::StatusOr<std::unique_ptr<Ferryd>> Ferryd::Start(
    const std::string& ferryd_path, const std::string& db,
    std::vector<std::string> extra_flags) {
  std::vector<std::string> flags = {"--db=" + db};
  flags.insert(flags.end(), extra_flags.begin(), extra_flags.end());
  auto ferryd = std::unique_ptr<Ferryd>(new Ferryd());
  absl::StatusOr<std::unique_ptr<Subprocess>> process =
      StartFerryd(ferryd_path, flags, &ferryd->address_);
  if (!process.ok()) return process.status();
  ferryd->process_ = *std::move(process);
  ferryd->jobs_ = v1::Jobs::NewStub(grpc::CreateChannel(
      ferryd->address_, grpc::InsecureChannelCredentials()));
  return ferryd;
}

absl::StatusOr<int> RunCommand(std::vector<std::string> argv,
                               Subprocess::Options options,
                               absl::Duration timeout, std::string* out,
                               std::string* all) {
  absl::StatusOr<std::unique_ptr<Subprocess>> process =
      Subprocess::Start(std::move(argv), std::move(options));
  if (!process.ok()) return process.status();
  absl::StatusOr<int> code = (*process)->Wait(timeout);
  // Let the readers reach EOF so the output is complete.
  (*process)->WaitForLine("\x01never\x01", absl::Seconds(5)).IgnoreError();
  if (out != nullptr) *out = (*process)->Stdout();
  if (all != nullptr) *all = (*process)->Output();
  return code;
}

}  // namespace ferry::testing
