#include "worker/command_handler.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/clock.h"
#include "base/config_lines.h"
#include "worker/command_io.h"

extern char** environ;

namespace ferry {
namespace {

// Writing the payload to a command that exits without reading it raises
// SIGPIPE; keep it off this thread while it lives (and drop a pending one
// after) so the caller need not ignore SIGPIPE process-wide.
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock() {
    sigemptyset(&sigpipe_);
    sigaddset(&sigpipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigpipe_, &old_mask_);
  }
  ~ScopedSigpipeBlock() {
    const timespec zero = {0, 0};
    while (sigtimedwait(&sigpipe_, nullptr, &zero) == SIGPIPE) {
    }
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;

 private:
  sigset_t sigpipe_;
  sigset_t old_mask_;
};

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

void CloseIfOpen(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

// Pointers into `strings` ending with NULL, as execvpe wants them.
std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

// Reads what `fd` holds into `sink`; false once it is at its end or
// broken, true if it has nothing more for now.
template <typename Sink>
bool ReadSome(int fd, Sink&& sink) {
  char buffer[65536];
  const ssize_t n = read(fd, buffer, sizeof(buffer));
  if (n > 0) {
    sink(absl::string_view(buffer, static_cast<size_t>(n)));
    return true;
  }
  return n != 0 && errno == EAGAIN;
}

// One run of a command for a job: its process group, its pipes, and the
// loop that feeds stdin, reads stdout and stderr, and stops the group when
// the job is stopped. Start, then Supervise, then Outcome.
class CommandRun {
 public:
  CommandRun(const CommandOptions& options, JobContext& ctx)
      : options_(options),
        ctx_(ctx),
        clock_(SystemClock::Get()),
        stop_(std::make_shared<StopPipe>()),
        stdout_(options.max_output,
                static_cast<int64_t>(ctx.max_output_bytes())),
        stderr_(options.stderr_tail, &ctx) {}
  ~CommandRun() { CloseAll(); }
  CommandRun(const CommandRun&) = delete;
  CommandRun& operator=(const CommandRun&) = delete;

  // Starts `argv` (not empty) in a process group of its own, its stdin,
  // stdout and stderr on pipes. An error says which system call failed;
  // a command that cannot be executed starts, and fails with exit 127.
  absl::Status Start(const std::vector<std::string>& argv);
  // Returns once the command has exited and its output is read (or its
  // leftovers have had their moment to close the pipes).
  void Supervise();
  // What the run makes of the job. Once, after Supervise.
  JobOutcome Outcome() {
    return CommandOutcome(status_, ctx_.stopped(), std::move(stdout_).Take(),
                          stderr_.Tail());
  }

 private:
  [[noreturn]] void ExecChild(char* const* args, char* const* envp,
                              const std::string& cannot_run);
  // Notices that the command exited, and reaps it.
  void Reap();
  // SIGTERM to the group once the job is stopped; SIGKILL after the grace.
  void Escalate(absl::Time now);
  std::vector<pollfd> PollSet() const;
  int PollTimeoutMs(absl::Time now) const;
  void OnReady(int fd);
  void WriteStdin();
  void CloseAll();

  const CommandOptions& options_;
  JobContext& ctx_;
  const Clock* const clock_;
  const std::shared_ptr<StopPipe> stop_;

  // The command's stdin, stdout and stderr. Once it started only our
  // ends are open; in_[1] until the payload is written.
  int in_[2] = {-1, -1}, out_[2] = {-1, -1}, err_[2] = {-1, -1};
  int pidfd_ = -1;
  pid_t pid_ = -1;
  size_t written_ = 0;  // bytes of the payload
  CommandStdout stdout_;
  CommandStderr stderr_;
  bool out_open_ = true, err_open_ = true;
  bool exited_ = false;
  int status_ = 0;  // as waitpid sets it, once exited_
  bool terminating_ = false;
  absl::Time kill_at_ = absl::InfiniteFuture();
  absl::Time drain_until_ = absl::InfiniteFuture();
};

absl::Status CommandRun::Start(const std::vector<std::string>& argv) {
  if (pipe2(in_, O_CLOEXEC) != 0 || pipe2(out_, O_CLOEXEC) != 0 ||
      pipe2(err_, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  // Everything the child needs is built before fork: after it, only
  // async-signal-safe calls.
  std::vector<std::string> env = CommandEnvironment(environ, ctx_.job());
  std::vector<std::string> args_copy = argv;
  const std::vector<char*> envp = CStrings(env);
  const std::vector<char*> args = CStrings(args_copy);
  // Why exec failed is said in the child, where only write() is safe: the
  // message's start is made here, its end is a literal chosen by errno.
  const std::string cannot_run =
      absl::StrCat("ferry-worker: cannot run ", argv[0]);

  pid_ = fork();
  if (pid_ < 0) {
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid_ == 0) ExecChild(args.data(), envp.data(), cannot_run);
  setpgid(pid_, pid_);  // also here: no race with a kill of the group
  CloseIfOpen(in_[0]);
  CloseIfOpen(out_[1]);
  CloseIfOpen(err_[1]);
  SetNonBlocking(in_[1]);
  SetNonBlocking(out_[0]);
  SetNonBlocking(err_[0]);
  std::shared_ptr<StopPipe> stop = stop_;
  ctx_.OnStop([stop] { (void)!write(stop->fds[1], "x", 1); });
  pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
  if (ctx_.payload().empty()) CloseIfOpen(in_[1]);
  return absl::OkStatus();
}

void CommandRun::ExecChild(char* const* args, char* const* envp,
                           const std::string& cannot_run) {
  setpgid(0, 0);
  dup2(in_[0], 0);
  dup2(out_[1], 1);
  dup2(err_[1], 2);
  signal(SIGPIPE, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  execvpe(args[0], args, envp);
  const char* why = ExecFailureReason(errno);
  (void)!write(2, cannot_run.data(), cannot_run.size());
  (void)!write(2, why, strlen(why));
  _exit(127);
}

void CommandRun::Supervise() {
  while (out_open_ || err_open_ || !exited_) {
    Reap();
    const absl::Time now = clock_->Now();
    if (exited_ && (now >= drain_until_ || (!out_open_ && !err_open_))) break;
    Escalate(now);
    std::vector<pollfd> fds = PollSet();
    if (poll(fds.data(), fds.size(), PollTimeoutMs(now)) < 0 &&
        errno != EINTR) {
      break;
    }
    for (const pollfd& p : fds) {
      if (p.revents != 0) OnReady(p.fd);
    }
  }
  if (!exited_) {
    // The pipes closed first; the child is ending.
    kill(-pid_, SIGKILL);
    waitpid(pid_, &status_, 0);
  }
  CloseAll();
}

void CommandRun::Reap() {
  if (exited_) return;
  // Notice the exit without reaping: while the leader is a zombie its pid
  // (the group's id) cannot be reused, so signalling the group is safe.
  siginfo_t info = {};
  if (waitid(P_PID, pid_, &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
      info.si_pid != pid_) {
    return;
  }
  // Nothing of the job may outlive it: end whatever it left behind.
  kill(-pid_, SIGKILL);
  waitpid(pid_, &status_, 0);
  exited_ = true;
  // Leftovers holding our pipes get a moment to die and close them.
  drain_until_ = clock_->Now() + absl::Seconds(2);
}

void CommandRun::Escalate(absl::Time now) {
  if (exited_) return;
  if (!terminating_ && ctx_.stopped()) {
    terminating_ = true;
    kill(-pid_, SIGTERM);
    kill_at_ = now + options_.kill_grace;
  }
  if (terminating_ && now >= kill_at_) {
    kill(-pid_, SIGKILL);
    kill_at_ = absl::InfiniteFuture();
  }
}

std::vector<pollfd> CommandRun::PollSet() const {
  std::vector<pollfd> fds;
  if (out_open_) fds.push_back({out_[0], POLLIN, 0});
  if (err_open_) fds.push_back({err_[0], POLLIN, 0});
  if (in_[1] >= 0) fds.push_back({in_[1], POLLOUT, 0});
  if (!exited_ && pidfd_ >= 0) fds.push_back({pidfd_, POLLIN, 0});
  if (!terminating_ && stop_->fds[0] >= 0) {
    fds.push_back({stop_->fds[0], POLLIN, 0});
  }
  return fds;
}

int CommandRun::PollTimeoutMs(absl::Time now) const {
  absl::Time wake = std::min(kill_at_, drain_until_);
  // Without pidfd (old kernels) fall back to checking the child often.
  if (pidfd_ < 0 && !exited_) {
    wake = std::min(wake, now + absl::Milliseconds(50));
  }
  if (wake == absl::InfiniteFuture()) return -1;
  return static_cast<int>(
      std::max<int64_t>(0, absl::ToInt64Milliseconds(wake - now) + 1));
}

void CommandRun::OnReady(int fd) {
  if (fd == out_[0]) {
    out_open_ =
        ReadSome(fd, [this](absl::string_view data) { stdout_.Append(data); });
  } else if (fd == err_[0]) {
    err_open_ =
        ReadSome(fd, [this](absl::string_view data) { stderr_.Append(data); });
  } else if (fd == in_[1]) {
    WriteStdin();
  } else if (fd == stop_->fds[0]) {
    // Woken by a stop; Escalate handles it.
    char buffer[64];
    while (read(fd, buffer, sizeof(buffer)) > 0) {
    }
  }
}

void CommandRun::WriteStdin() {
  const std::string& payload = ctx_.payload();
  const ssize_t n =
      write(in_[1], payload.data() + written_, payload.size() - written_);
  if (n > 0) written_ += static_cast<size_t>(n);
  if ((n < 0 && errno != EAGAIN) || written_ == payload.size()) {
    CloseIfOpen(in_[1]);  // done, or the command stopped reading
  }
}

void CommandRun::CloseAll() {
  for (int* fd :
       {&in_[0], &in_[1], &out_[0], &out_[1], &err_[0], &err_[1], &pidfd_}) {
    CloseIfOpen(*fd);
  }
}

}  // namespace

JobOutcome RunCommand(const std::vector<std::string>& argv,
                      const CommandOptions& options, JobContext& ctx) {
  if (argv.empty()) return JobOutcome::Failure("no command to run", false);
  const ScopedSigpipeBlock no_sigpipe;
  CommandRun run(options, ctx);
  if (absl::Status started = run.Start(argv); !started.ok()) {
    return JobOutcome::Failure(std::string(started.message()));
  }
  run.Supervise();
  return run.Outcome();
}

absl::StatusOr<std::map<std::string, std::vector<std::string>>>
ParseHandlersFile(absl::string_view text) {
  std::map<std::string, std::vector<std::string>> handlers;
  for (const ConfigLine& config_line : ConfigLines(text)) {
    const int number = config_line.number;
    const absl::string_view line = config_line.text;
    const std::vector<absl::string_view>& words = config_line.words;
    if (words.size() < 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "handlers file line ", number,
          ": expected \"KIND COMMAND [ARGS...]\", got \"", line, "\""));
    }
    const std::string kind(words[0]);
    std::vector<std::string> argv(words.begin() + 1, words.end());
    if (!handlers.emplace(kind, std::move(argv)).second) {
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
