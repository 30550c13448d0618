#include "worker/command_handler.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/clock.h"

extern char** environ;

namespace ferry {
namespace {

// A pipe the job's stop callback writes to, so the poll loop wakes at once.
// Shared with the callback, which may run after RunCommand returned.
struct StopPipe {
  int fds[2] = {-1, -1};
  StopPipe() {
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) fds[0] = fds[1] = -1;
  }
  ~StopPipe() {
    if (fds[0] >= 0) close(fds[0]);
    if (fds[1] >= 0) close(fds[1]);
  }
};

void SetNonBlocking(int fd) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// Parses "FERRY-PROGRESS <percent> <message>".
void MaybeProgress(absl::string_view line, JobContext& ctx) {
  if (!absl::ConsumePrefix(&line, "FERRY-PROGRESS ")) return;
  std::pair<absl::string_view, absl::string_view> parts =
      absl::StrSplit(line, absl::MaxSplits(' ', 1));
  uint32_t percent = 0;
  if (!absl::SimpleAtoi(parts.first, &percent)) return;
  ctx.ReportProgress(std::min<uint32_t>(percent, 100),
                     std::string(absl::StripAsciiWhitespace(parts.second)));
}

std::string Describe(int status) {
  if (WIFEXITED(status))
    return absl::StrCat("exit status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(status), " (",
                        strsignal(WTERMSIG(status)), ")");
  }
  return "ended abnormally";
}

}  // namespace

JobOutcome RunCommand(const std::vector<std::string>& argv,
                      const CommandOptions& options, JobContext& ctx) {
  if (argv.empty()) return JobOutcome::Failure("no command to run", false);
  const Clock* clock = SystemClock::Get();
  // Writing the payload to a command that exits without reading it raises
  // SIGPIPE; keep it off this thread (and drop a pending one after) so the
  // caller need not ignore SIGPIPE process-wide.
  sigset_t sigpipe, old_mask;
  sigemptyset(&sigpipe);
  sigaddset(&sigpipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &sigpipe, &old_mask);
  struct RestoreMask {
    sigset_t* pipe_set;
    sigset_t* old;
    ~RestoreMask() {
      const timespec zero = {0, 0};
      while (sigtimedwait(pipe_set, nullptr, &zero) == SIGPIPE) {
      }
      pthread_sigmask(SIG_SETMASK, old, nullptr);
    }
  } restore{&sigpipe, &old_mask};
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 ||
      pipe2(err, O_CLOEXEC) != 0) {
    const int error = errno;
    for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]}) {
      if (fd >= 0) close(fd);  // the pipes made before the one that failed
    }
    return JobOutcome::Failure(absl::StrCat("pipe: ", std::strerror(error)));
  }
  auto stop = std::make_shared<StopPipe>();

  // Everything the child needs is built before fork: after it, only
  // async-signal-safe calls.
  std::vector<std::string> env_strings;
  const std::map<std::string, std::string> job_env = {
      {"FERRY_JOB_ID", ctx.id()},
      {"FERRY_QUEUE", ctx.job().queue()},
      {"FERRY_KIND", ctx.kind()},
      {"FERRY_ATTEMPT", absl::StrCat(ctx.attempt())}};
  for (char** e = environ; *e != nullptr; ++e) {
    absl::string_view entry(*e);
    bool replaced = false;
    for (const auto& [name, value] : job_env) {
      if (absl::StartsWith(entry, name + "=")) replaced = true;
    }
    if (!replaced) env_strings.emplace_back(entry);
  }
  for (const auto& [name, value] : job_env) {
    env_strings.push_back(absl::StrCat(name, "=", value));
  }
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args_copy = argv;
  std::vector<char*> args;
  for (std::string& a : args_copy) args.push_back(a.data());
  args.push_back(nullptr);
  // Why exec failed is said in the child, where only write() is safe: the
  // message's start is made here, its end is a literal chosen by errno.
  const std::string cannot_run =
      absl::StrCat("ferry-worker: cannot run ", argv[0]);

  const pid_t pid = fork();
  if (pid < 0) {
    for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]}) close(fd);
    return JobOutcome::Failure(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    setpgid(0, 0);
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvpe(args[0], args.data(), envp.data());
    const char* why =
        errno == ENOENT || errno == ENOTDIR
            ? ": no such file (check the path and $PATH)\n"
        : errno == EACCES || errno == EPERM
            ? ": permission denied (is it executable, and its directory "
              "searchable?)\n"
        : errno == ENOEXEC
            ? ": not an executable this system runs (a script without its #! "
              "line?)\n"
            : "\n";
    (void)!write(2, cannot_run.data(), cannot_run.size());
    (void)!write(2, why, strlen(why));
    _exit(127);
  }
  setpgid(pid, pid);  // also here: no race with the kill below
  close(in[0]);
  close(out[1]);
  close(err[1]);
  SetNonBlocking(in[1]);
  SetNonBlocking(out[0]);
  SetNonBlocking(err[0]);
  ctx.OnStop([stop] { (void)!write(stop->fds[1], "x", 1); });
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));

  const std::string& payload = ctx.payload();
  size_t written = 0;
  int stdin_fd = in[1];
  if (payload.empty()) {
    close(stdin_fd);
    stdin_fd = -1;
  }
  std::string output;
  int64_t output_total = 0;
  std::string err_tail;
  std::string err_line;
  bool out_open = true, err_open = true;
  bool exited = false;
  int status = 0;
  bool terminating = false;
  absl::Time kill_at = absl::InfiniteFuture();
  absl::Time drain_until = absl::InfiniteFuture();

  auto reap = [&]() {
    if (exited) return;
    // Notice the exit without reaping: while the leader is a zombie its pid
    // (the group's id) cannot be reused, so signalling the group is safe.
    siginfo_t info = {};
    if (waitid(P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
        info.si_pid != pid) {
      return;
    }
    // Nothing of the job may outlive it: end whatever it left behind.
    kill(-pid, SIGKILL);
    waitpid(pid, &status, 0);
    exited = true;
    // Leftovers holding our pipes get a moment to die and close them.
    drain_until = clock->Now() + absl::Seconds(2);
  };

  while (out_open || err_open || !exited) {
    reap();
    const absl::Time now = clock->Now();
    if (exited && (now >= drain_until || (!out_open && !err_open))) break;
    if (!terminating && !exited && ctx.stopped()) {
      terminating = true;
      kill(-pid, SIGTERM);
      kill_at = now + options.kill_grace;
    }
    if (terminating && !exited && now >= kill_at) {
      kill(-pid, SIGKILL);
      kill_at = absl::InfiniteFuture();
    }
    std::vector<pollfd> fds;
    if (out_open) fds.push_back({out[0], POLLIN, 0});
    if (err_open) fds.push_back({err[0], POLLIN, 0});
    if (stdin_fd >= 0) fds.push_back({stdin_fd, POLLOUT, 0});
    if (!exited && pidfd >= 0) fds.push_back({pidfd, POLLIN, 0});
    if (!terminating && stop->fds[0] >= 0)
      fds.push_back({stop->fds[0], POLLIN, 0});
    absl::Time wake = std::min(kill_at, drain_until);
    // Without pidfd (old kernels) fall back to checking the child often.
    if (pidfd < 0 && !exited)
      wake = std::min(wake, now + absl::Milliseconds(50));
    const int timeout_ms =
        wake == absl::InfiniteFuture()
            ? -1
            : static_cast<int>(std::max<int64_t>(
                  0, absl::ToInt64Milliseconds(wake - now) + 1));
    if (poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) break;
    for (const pollfd& p : fds) {
      if (p.revents == 0) continue;
      char buffer[65536];
      if (p.fd == out[0]) {
        ssize_t n = read(out[0], buffer, sizeof(buffer));
        if (n > 0) {
          output_total += n;
          const int64_t room =
              options.max_output - static_cast<int64_t>(output.size());
          if (room > 0) output.append(buffer, std::min<int64_t>(n, room));
        } else if (n == 0 || errno != EAGAIN) {
          out_open = false;
        }
      } else if (p.fd == err[0]) {
        ssize_t n = read(err[0], buffer, sizeof(buffer));
        if (n > 0) {
          for (ssize_t i = 0; i < n; ++i) {
            if (buffer[i] == '\n') {
              MaybeProgress(err_line, ctx);
              err_line.clear();
            } else if (err_line.size() < 4096) {
              err_line.push_back(buffer[i]);
            }
          }
          err_tail.append(buffer, n);
          if (static_cast<int64_t>(err_tail.size()) > 2 * options.stderr_tail) {
            err_tail.erase(0, err_tail.size() - options.stderr_tail);
          }
        } else if (n == 0 || errno != EAGAIN) {
          err_open = false;
        }
      } else if (p.fd == stdin_fd) {
        ssize_t n =
            write(stdin_fd, payload.data() + written, payload.size() - written);
        if (n > 0) written += static_cast<size_t>(n);
        if ((n < 0 && errno != EAGAIN) || written == payload.size()) {
          close(stdin_fd);  // done, or the command stopped reading
          stdin_fd = -1;
        }
      } else if (p.fd == stop->fds[0]) {
        // Woken by a stop; handled at the top of the loop.
        while (read(stop->fds[0], buffer, sizeof(buffer)) > 0) {
        }
      }
    }
  }
  if (!exited) {
    // The pipes closed first; the child is ending.
    kill(-pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  if (stdin_fd >= 0) close(stdin_fd);
  close(out[0]);
  close(err[0]);
  if (pidfd >= 0) close(pidfd);

  if (static_cast<int64_t>(err_tail.size()) > options.stderr_tail) {
    err_tail.erase(0, err_tail.size() - options.stderr_tail);
  }
  std::string tail(absl::StripTrailingAsciiWhitespace(err_tail));
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !ctx.stopped()) {
    if (output_total > options.max_output) {
      absl::StrAppend(&output, "\n[ferry-worker: output truncated to ",
                      options.max_output, " of ", output_total, " bytes]\n");
    }
    return JobOutcome::Success(std::move(output));
  }
  std::string message = Describe(status);
  if (WIFEXITED(status) && WEXITSTATUS(status) == kExitTempFail) {
    message = "exit status 75 (temporary failure, retry requested)";
  }
  if (!tail.empty()) absl::StrAppend(&message, ": ", tail);
  return JobOutcome::Failure(std::move(message), /*retryable=*/true);
}

absl::StatusOr<std::map<std::string, std::vector<std::string>>>
ParseHandlersFile(absl::string_view text) {
  std::map<std::string, std::vector<std::string>> handlers;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> words =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (words.size() < 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "handlers file line ", number,
          ": expected \"KIND COMMAND [ARGS...]\", got \"", line, "\""));
    }
    std::string kind = words[0];
    words.erase(words.begin());
    if (!handlers.emplace(kind, std::move(words)).second) {
      return absl::InvalidArgumentError(absl::StrCat("handlers file line ",
                                                     number, ": kind \"", kind,
                                                     "\" is mapped twice"));
    }
  }
  if (handlers.empty()) {
    return absl::InvalidArgumentError("handlers file maps no kind");
  }
  return handlers;
}

}  // namespace ferry
