// Shared by the comparison drivers in bench/compare/ (see README.md there).
//
// Each driver runs the workload of `ferry-bench --mode=e2e` against another
// queue: P producer connections submit N jobs (~100-byte payloads) in a
// closed loop (one request in flight per connection) while W worker
// connections take jobs one at a time, run a no-op handler and acknowledge
// completion. Throughput is N / (first submit -> last completion
// acknowledged). Every job carries its index in its payload, and the run
// fails unless each job was received exactly once.
//
// The connections are driven by a small epoll loop (one thread by default)
// instead of a thread per connection, so that the load generator spends as
// little CPU as it can on the two-core machines this runs on: every reply
// that arrives while the loop is busy is handled in the same wake-up.

#ifndef FERRY_BENCH_COMPARE_COMPARE_COMMON_H_
#define FERRY_BENCH_COMPARE_COMPARE_COMMON_H_

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace compare {

using Clock = std::chrono::steady_clock;

inline int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             Clock::now().time_since_epoch())
      .count();
}

[[noreturn]] inline void Die(const char* format, ...) {
  std::fprintf(stderr, "compare: FAILED: ");
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
  std::_Exit(1);
}

// --name=value flags. Unknown flags are an error.
class Flags {
 public:
  Flags(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg == "--help" || arg == "-h") {
        help_ = true;
        continue;
      }
      if (arg.rfind("--", 0) != 0) Die("unexpected argument %s", argv[i]);
      const size_t eq = arg.find('=');
      if (eq == std::string::npos) {
        values_[arg.substr(2)] = "true";
      } else {
        values_[arg.substr(2, eq - 2)] = arg.substr(eq + 1);
      }
    }
  }
  std::string Str(const std::string& name, const std::string& def) {
    known_.push_back(name);
    auto it = values_.find(name);
    return it == values_.end() ? def : it->second;
  }
  int64_t Int(const std::string& name, int64_t def) {
    const std::string value = Str(name, "");
    if (value.empty()) return def;
    char* end = nullptr;
    const long long parsed = std::strtoll(value.c_str(), &end, 10);
    if (*end != '\0')
      Die("--%s wants an integer, got %s", name.c_str(), value.c_str());
    return parsed;
  }
  bool help() const { return help_; }
  // Call after every Str/Int: rejects flags nobody asked for.
  void CheckAllKnown(const char* usage) {
    if (help_) {
      std::printf("%s", usage);
      std::exit(0);
    }
    for (const auto& [name, value] : values_) {
      if (std::find(known_.begin(), known_.end(), name) == known_.end()) {
        Die("unknown flag --%s\n%s", name.c_str(), usage);
      }
    }
  }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> known_;
  bool help_ = false;
};

// The flags every driver takes.
struct Options {
  std::string peer;
  std::string host;
  int port = 0;
  int producers = 8;
  int workers = 8;
  int64_t jobs = 10000;
  int payload_bytes = 100;
  int threads = 1;
  int64_t timeout_s = 600;
};

inline const char* kCommonUsage =
    "  --host=127.0.0.1 --port=PORT   the server\n"
    "  --producers=8 --workers=8      connections of each kind\n"
    "  --jobs=10000                   jobs per run\n"
    "  --payload_bytes=100            payload size\n"
    "  --threads=1                    event-loop threads in the driver\n"
    "  --timeout_s=600                fail when the run takes longer\n"
    "  --peer=NAME                    label for the JSON line\n";

inline Options ParseCommon(Flags& flags, const std::string& default_peer,
                           int default_port) {
  Options o;
  o.peer = flags.Str("peer", default_peer);
  o.host = flags.Str("host", "127.0.0.1");
  o.port = static_cast<int>(flags.Int("port", default_port));
  o.producers = static_cast<int>(flags.Int("producers", 8));
  o.workers = static_cast<int>(flags.Int("workers", 8));
  o.jobs = flags.Int("jobs", 10000);
  o.payload_bytes = static_cast<int>(flags.Int("payload_bytes", 100));
  o.threads = static_cast<int>(flags.Int("threads", 1));
  o.timeout_s = flags.Int("timeout_s", 600);
  if (o.producers < 1 || o.workers < 1 || o.jobs < 1 || o.threads < 1 ||
      o.payload_bytes < 16 || o.timeout_s < 1) {
    Die("--producers, --workers, --jobs, --threads, --timeout_s must be >= 1 "
        "and --payload_bytes >= 16");
  }
  return o;
}

// The payload of job `index`: "job 0000001234 " padded with 'x' to `bytes`.
inline std::string MakePayload(int64_t index, int bytes) {
  char head[32];
  const int n = std::snprintf(head, sizeof(head), "job %010lld ",
                              static_cast<long long>(index));
  std::string payload(head, n);
  payload.resize(std::max<size_t>(bytes, payload.size()), 'x');
  return payload;
}

// The index in a payload made by MakePayload, or -1.
inline int64_t ParsePayload(const char* data, size_t len) {
  if (len < 15 || std::memcmp(data, "job ", 4) != 0) return -1;
  int64_t index = 0;
  for (int i = 4; i < 14; ++i) {
    if (data[i] < '0' || data[i] > '9') return -1;
    index = index * 10 + (data[i] - '0');
  }
  return index;
}

// Hands out job indexes to producers and checks that workers receive each
// job exactly once. Shared by all loop threads.
class Ledger {
 public:
  explicit Ledger(int64_t jobs)
      : jobs_(jobs), seen_(new std::atomic<uint8_t>[jobs]) {
    for (int64_t i = 0; i < jobs; ++i)
      seen_[i].store(0, std::memory_order_relaxed);
  }
  int64_t jobs() const { return jobs_; }

  // The next job a producer should submit, or -1 when all are taken.
  int64_t Claim() {
    const int64_t index = next_.fetch_add(1, std::memory_order_relaxed);
    return index < jobs_ ? index : -1;
  }
  void Submitted() { submitted_.fetch_add(1, std::memory_order_relaxed); }

  // A worker received job `index`. Fails the run on a duplicate or a job
  // that was never submitted.
  void Received(int64_t index, const char* peer) {
    if (index < 0 || index >= jobs_)
      Die("%s: a worker received an unknown job (%lld)", peer,
          static_cast<long long>(index));
    if (seen_[index].fetch_add(1, std::memory_order_relaxed) != 0) {
      Die("%s: job %lld received twice", peer, static_cast<long long>(index));
    }
  }

  // A worker's completion of a job was acknowledged by the server.
  void Completed() {
    const int64_t now = NowUs();
    int64_t last = last_completion_us_.load(std::memory_order_relaxed);
    while (now > last &&
           !last_completion_us_.compare_exchange_weak(last, now)) {
    }
    if (completed_.fetch_add(1, std::memory_order_acq_rel) + 1 == jobs_) {
      done_.store(true, std::memory_order_release);
    }
  }

  bool done() const { return done_.load(std::memory_order_acquire); }
  int64_t completed() const { return completed_.load(); }
  int64_t submitted() const { return submitted_.load(); }
  int64_t last_completion_us() const { return last_completion_us_.load(); }

  // Empty when every job was submitted and received exactly once.
  std::string Check() const {
    if (submitted_.load() != jobs_) {
      return std::to_string(submitted_.load()) + " of " +
             std::to_string(jobs_) +
             " jobs acknowledged by the server on submit";
    }
    int64_t missing = 0, twice = 0;
    for (int64_t i = 0; i < jobs_; ++i) {
      const int n = seen_[i].load();
      missing += n == 0;
      twice += n > 1;
    }
    if (missing > 0 || twice > 0) {
      return std::to_string(missing) + " jobs never received, " +
             std::to_string(twice) + " received more than once";
    }
    if (completed_.load() != jobs_) {
      return std::to_string(completed_.load()) + " completions acknowledged, " +
             std::to_string(jobs_) + " expected";
    }
    return "";
  }

 private:
  const int64_t jobs_;
  std::unique_ptr<std::atomic<uint8_t>[]> seen_;
  std::atomic<int64_t> next_{0};
  std::atomic<int64_t> submitted_{0};
  std::atomic<int64_t> completed_{0};
  std::atomic<int64_t> last_completion_us_{0};
  std::atomic<bool> done_{false};
};

class Loop;

// One connection driven by a Loop.
class Conn {
 public:
  virtual ~Conn() = default;
  // Called once in the loop thread when the run starts: send the first
  // request.
  virtual void Start() = 0;
  // epoll events for fd().
  virtual void OnEvents(uint32_t events) = 0;
  // A timer set with Loop::After fired.
  virtual void OnTimer() {}
  virtual int fd() const = 0;

  Loop* loop = nullptr;
};

// A single-threaded epoll loop with timers.
class Loop {
 public:
  Loop() : epfd_(epoll_create1(EPOLL_CLOEXEC)) {
    if (epfd_ < 0) Die("epoll_create1: %s", std::strerror(errno));
  }
  ~Loop() { close(epfd_); }

  void Add(Conn* conn) {
    conn->loop = this;
    conns_.push_back(conn);
  }
  // Sets the events watched on conn's fd (EPOLLIN and/or EPOLLOUT).
  void Watch(Conn* conn, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = conn;
    if (epoll_ctl(epfd_, EPOLL_CTL_MOD, conn->fd(), &ev) != 0 &&
        (errno != ENOENT ||
         epoll_ctl(epfd_, EPOLL_CTL_ADD, conn->fd(), &ev) != 0)) {
      Die("epoll_ctl: %s", std::strerror(errno));
    }
  }
  // conn->OnTimer() after `us` microseconds.
  void After(int64_t us, Conn* conn) { timers_.push({NowUs() + us, conn}); }

  // Runs until the ledger is done or `deadline_us` passes (returns false).
  bool Run(const Ledger& ledger, int64_t deadline_us) {
    for (Conn* conn : conns_) Watch(conn, EPOLLIN);
    for (Conn* conn : conns_) conn->Start();
    epoll_event events[64];
    while (!ledger.done()) {
      const int64_t now = NowUs();
      if (now > deadline_us) return false;
      while (!timers_.empty() && timers_.top().first <= now) {
        Conn* conn = timers_.top().second;
        timers_.pop();
        conn->OnTimer();
      }
      int64_t wait_us = 50000;  // re-check done/deadline at least this often
      if (!timers_.empty())
        wait_us = std::min(wait_us, timers_.top().first - now);
      const int timeout_ms =
          static_cast<int>(std::max<int64_t>(0, (wait_us + 999) / 1000));
      const int n = epoll_wait(epfd_, events, 64, timeout_ms);
      if (n < 0) {
        if (errno == EINTR) continue;
        Die("epoll_wait: %s", std::strerror(errno));
      }
      for (int i = 0; i < n; ++i) {
        static_cast<Conn*>(events[i].data.ptr)->OnEvents(events[i].events);
      }
    }
    return true;
  }

 private:
  using Timer = std::pair<int64_t, Conn*>;
  int epfd_;
  std::vector<Conn*> conns_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
};

// A TCP connection to host:port (blocking; TCP_NODELAY).
inline int Dial(const std::string& host, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) Die("socket: %s", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1)
    Die("bad --host %s", host.c_str());
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Die("connect %s:%d: %s", host.c_str(), port, std::strerror(errno));
  }
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

inline void SetNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    Die("fcntl: %s", std::strerror(errno));
  }
}

// On a blocking socket: writes `request`, then reads until `done(reply)`.
inline std::string Roundtrip(
    int fd, const std::string& request,
    const std::function<bool(const std::string&)>& done) {
  size_t off = 0;
  while (off < request.size()) {
    const ssize_t n = write(fd, request.data() + off, request.size() - off);
    if (n <= 0) Die("write: %s", std::strerror(errno));
    off += static_cast<size_t>(n);
  }
  std::string reply;
  while (!done(reply)) {
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0)
      Die("read: %s", n == 0 ? "connection closed" : std::strerror(errno));
    reply.append(buf, static_cast<size_t>(n));
  }
  return reply;
}

// A non-blocking byte-stream connection: buffered writes, and reads handed
// to Parse() until it can make no progress.
class StreamConn : public Conn {
 public:
  explicit StreamConn(int fd) : fd_(fd) { SetNonBlocking(fd_); }
  ~StreamConn() override { close(fd_); }
  int fd() const override { return fd_; }

  void OnEvents(uint32_t events) override {
    if (events & EPOLLOUT) Flush();
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
      char buf[65536];
      const ssize_t n = read(fd_, buf, sizeof(buf));
      if (n == 0) Die("%s: the server closed the connection", name());
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        Die("%s: read: %s", name(), std::strerror(errno));
      }
      in_.append(buf, static_cast<size_t>(n));
      size_t used = 0;
      while (used < in_.size()) {
        const size_t consumed = Parse(in_.data() + used, in_.size() - used);
        if (consumed == 0) break;
        used += consumed;
      }
      in_.erase(0, used);
    }
  }

 protected:
  // Parses one reply at `data`; returns the bytes it used, or 0 when the
  // reply is not complete yet.
  virtual size_t Parse(const char* data, size_t len) = 0;
  virtual const char* name() const = 0;

  void Send(const char* data, size_t len) {
    if (out_.empty()) {
      const ssize_t n = write(fd_, data, len);
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        Die("%s: write: %s", name(), std::strerror(errno));
      }
      const size_t written = n > 0 ? static_cast<size_t>(n) : 0;
      if (written == len) return;
      out_.append(data + written, len - written);
      loop->Watch(this, EPOLLIN | EPOLLOUT);
      return;
    }
    out_.append(data, len);
  }
  void Send(const std::string& s) { Send(s.data(), s.size()); }

  // Blocking request/response before the run starts (setup commands).
  std::string BlockingCall(
      const std::string& request,
      const std::function<bool(const std::string&)>& done) {
    const int flags = fcntl(fd_, F_GETFL);
    fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
    std::string reply = Roundtrip(fd_, request, done);
    fcntl(fd_, F_SETFL, flags);
    return reply;
  }

 private:
  void Flush() {
    while (!out_.empty()) {
      const ssize_t n = write(fd_, out_.data(), out_.size());
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        Die("%s: write: %s", name(), std::strerror(errno));
      }
      out_.erase(0, static_cast<size_t>(n));
    }
    loop->Watch(this, EPOLLIN);
  }

  int fd_;
  std::string in_;
  std::string out_;
};

// Runs the connections on `threads` loops (round robin), measures, checks
// the ledger and prints the JSON line. `extra` is appended to the JSON
// object (",\"name\":value..."), computed after the run.
inline int RunAndReport(const Options& o, Ledger& ledger,
                        std::vector<std::unique_ptr<Conn>>& conns,
                        const std::function<std::string()>& extra) {
  std::vector<std::unique_ptr<Loop>> loops;
  for (int i = 0; i < o.threads; ++i) loops.push_back(std::make_unique<Loop>());
  for (size_t i = 0; i < conns.size(); ++i)
    loops[i % loops.size()]->Add(conns[i].get());

  const int64_t start_us = NowUs();
  const int64_t deadline_us = start_us + o.timeout_s * 1000000;
  std::atomic<bool> timed_out{false};
  std::vector<std::thread> threads;
  for (size_t i = 1; i < loops.size(); ++i) {
    threads.emplace_back([&, i] {
      if (!loops[i]->Run(ledger, deadline_us)) timed_out = true;
    });
  }
  if (!loops[0]->Run(ledger, deadline_us)) timed_out = true;
  for (std::thread& t : threads) t.join();
  if (timed_out) {
    Die("%s: timed out after %llds: %lld submitted, %lld completed",
        o.peer.c_str(), static_cast<long long>(o.timeout_s),
        static_cast<long long>(ledger.submitted()),
        static_cast<long long>(ledger.completed()));
  }
  const std::string error = ledger.Check();
  if (!error.empty()) Die("%s: %s", o.peer.c_str(), error.c_str());

  const double seconds = (ledger.last_completion_us() - start_us) / 1e6;
  std::printf(
      "{\"peer\":\"%s\",\"mode\":\"e2e\",\"jobs\":%lld,\"seconds\":%.3f,\"jobs_"
      "per_s\":%.0f,"
      "\"producers\":%d,\"workers\":%d,\"batch\":1,\"payload_bytes\":%d,"
      "\"driver_threads\":%d%s}\n",
      o.peer.c_str(), static_cast<long long>(o.jobs), seconds, o.jobs / seconds,
      o.producers, o.workers, o.payload_bytes, o.threads,
      extra ? extra().c_str() : "");
  std::fflush(stdout);
  return 0;
}

}  // namespace compare

#endif  // FERRY_BENCH_COMPARE_COMPARE_COMMON_H_
