#ifndef FERRY_WORKER_WORKER_H_
#define FERRY_WORKER_WORKER_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/broker_address.h"
#include "base/clock.h"
#include "client/connect.h"
#include "ferry/v1/workers.grpc.pb.h"
#include "grpcpp/channel.h"

namespace ferry {

// What a handler returns.
struct JobOutcome {
  bool success = true;
  std::string output;  // stored as the job's result
  std::string error;   // failures
  // False makes the failure final (FAILED) whatever attempts remain.
  bool retryable = true;

  static JobOutcome Success(std::string output = "") {
    return JobOutcome{true, std::move(output), "", true};
  }
  static JobOutcome Failure(std::string error, bool retryable = true) {
    return JobOutcome{false, "", std::move(error), retryable};
  }
};

// Why a running job was asked to stop.
enum class StopReason {
  kNone,
  kCancelled,  // a client cancelled the job; no result is sent
  kLeaseLost,  // the broker no longer recognises the lease; no result
  kTimeout,    // the job's execution timeout passed
  kShutdown,   // the worker is stopping and the drain timeout passed
};

// A job as its handler sees it. Thread-safe: the worker sets the stop
// signal from its own threads while the handler runs.
class JobContext {
 public:
  // `max_output_bytes`: the broker's limit on a result (0: not known).
  JobContext(v1::Job job, absl::Time deadline, uint64_t max_output_bytes = 0,
             std::string lease_token = "");

  const v1::Job& job() const { return job_; }
  const std::string& id() const { return job_.id(); }
  const std::string& kind() const { return job_.kind(); }
  const std::string& payload() const { return job_.payload(); }
  uint32_t attempt() const { return job_.attempt(); }
  // The lease this attempt runs under: the broker accepts a result only
  // with it (fencing). For logs and for drills that check the fencing.
  const std::string& lease_token() const { return lease_token_; }
  // When the job's execution timeout passes (InfiniteFuture if none).
  absl::Time deadline() const { return deadline_; }
  // The largest output the broker stores (Welcome.max_output_bytes); 0 if
  // it did not say. A larger output fails the job, so a handler that may
  // produce more should cut it to this.
  uint64_t max_output_bytes() const { return max_output_bytes_; }

  // Reports progress (0..100 and a message); sent with the next heartbeat.
  void ReportProgress(uint32_t percent, std::string message);

  // True once the job should stop (see reason()). Handlers that run long
  // should check it, or use OnStop.
  bool stopped() const;
  StopReason reason() const;
  // Runs `fn` once when the job is asked to stop (at once if it already
  // is). Runs on a worker thread that holds the Worker's lock: must not
  // block, and must not call the Worker (running(), Stop()...); wake the
  // handler instead (a pipe, a condition), as the command handler does.
  void OnStop(absl::AnyInvocable<void()> fn);
  // Waits up to `timeout` for a stop; true if stopped.
  bool WaitForStop(absl::Duration timeout) const;

  // ---- used by the worker ----
  void Stop(StopReason reason);
  // Takes the progress reported since the last call, if any.
  bool TakeProgress(v1::Progress* progress);

 private:
  bool StopRequested() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return reason_ != StopReason::kNone;
  }

  const v1::Job job_;
  const absl::Time deadline_;
  const uint64_t max_output_bytes_;
  const std::string lease_token_;
  mutable absl::Mutex mu_;
  StopReason reason_ ABSL_GUARDED_BY(mu_) = StopReason::kNone;
  std::vector<absl::AnyInvocable<void()>> on_stop_ ABSL_GUARDED_BY(mu_);
  bool has_progress_ ABSL_GUARDED_BY(mu_) = false;
  v1::Progress progress_ ABSL_GUARDED_BY(mu_);
};

using Handler = std::function<JobOutcome(JobContext&)>;

struct WorkerOptions {
  // host:port of ferryd.
  std::string broker = kDefaultBrokerAddress;
  // Queues to take jobs from (at least one).
  std::vector<std::string> queues;
  // Jobs run at once; also the credits granted to the broker.
  int concurrency = 1;
  // Run handlers on the connection's network thread, one job after another,
  // instead of on `concurrency` threads of their own. Only for handlers
  // that never block (microseconds of CPU, no I/O, no waiting): it saves a
  // thread hand-off per job, but while a handler runs no other message of
  // the connection is read (heartbeats still go out). `concurrency` is then
  // only the credits granted: how many jobs wait prefetched, unread, their
  // leases running (a slow inline handler lets them expire).
  bool inline_handlers = false;
  std::map<std::string, std::string> labels;
  // Stable for the life of the process; default "<hostname>-<pid>".
  std::string worker_id;
  std::string version = "ferry-worker/0.1";
  // On Stop() or a broker Drain: how long running jobs may finish before
  // they are stopped and reported as failed (retryable).
  absl::Duration drain_timeout = absl::Seconds(30);
  // After the drain timeout has stopped the rest, how long they get to
  // return and have their failures acknowledged before the worker closes
  // anyway (their leases then expire). At least as long as a handler takes
  // to give up once stopped (ferry-worker: its --kill_grace, plus 5 s).
  absl::Duration stop_grace = absl::Seconds(5);
  // Reconnect backoff: doubles from initial to max, with jitter.
  absl::Duration reconnect_initial = absl::Milliseconds(100);
  absl::Duration reconnect_max = absl::Seconds(10);
  // TLS and the access token (client/connect.h). If they are wrong (a file
  // that cannot be read, a certificate that expired), Run() returns
  // INVALID_ARGUMENT saying so at once.
  ConnectOptions connect;
  // Use this channel instead of dialing `broker` (tests); `connect` is then
  // not used.
  std::shared_ptr<grpc::Channel> channel;
  // Time source for timeouts and heartbeats; default the system clock.
  const Clock* clock = nullptr;
  // Called when the broker acknowledges a result (the result is durable),
  // on the stream's reader thread; must not block. For benchmarks/tests.
  std::function<void(const v1::ResultAck&)> on_result_ack;
};

// A Ferry worker: connects to ferryd over Workers.Connect, runs handlers
// for the jobs it is assigned (at most `concurrency` at once), heartbeats
// their leases, reports results, and reconnects (announcing the leases it
// still holds) when the broker goes away.
//
// Register handlers, then call Run() from one thread; Stop() from any
// thread (or a signal-handling thread) makes Run() return.
class Worker {
 public:
  explicit Worker(WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Runs jobs of `kind` with `handler`. Call before Run().
  void Handle(std::string kind, Handler handler);
  // Runs jobs whose kind has no handler. Without one, such jobs fail (not
  // retryable) with a message that names the kind.
  void HandleDefault(Handler handler);

  // Connects and works until Stop(). Returns OK after a graceful stop, or
  // INVALID_ARGUMENT for a bad configuration (no queues, a name the broker
  // refuses). Destroy the worker only after Run() returned.
  absl::Status Run();

  // Graceful stop: takes no more jobs, lets running ones finish for up to
  // drain_timeout, stops the rest and reports them failed (retryable),
  // waits briefly for the broker to acknowledge results, then Run()
  // returns. Idempotent; does not block.
  void Stop();
  // As Stop(), but without the drain: running handlers are stopped now and
  // reported failed (retryable), as if the drain timeout had passed. For an
  // operator's second Ctrl-C.
  void StopNow();

  const std::string& worker_id() const { return options_.worker_id; }
  // Handlers running right now (for tests and status).
  int running() const;

 private:
  struct Running;
  class Connection;

  // One session over one stream; returns when it ends. OK after a graceful
  // stop, an error the caller decides on (retry or give up).
  absl::Status Session(bool* welcomed);
  // Handles one message from the broker (on a gRPC thread).
  void OnMessage(Connection& connection, v1::ServerMessage& msg);
  absl::Time FinalDeadline() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasReadyOrQuit() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !ready_.empty() || quit_;
  }
  bool StoppedAndQuiet() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ && Quiet();
  }
  void Dispatch(v1::Assignment assignment);
  // Runs the job's handler and reports its outcome.
  void RunJob(std::shared_ptr<Running> job);
  // The handler for `kind`: its own, else the default; nullptr if none.
  const Handler* FindHandler(const std::string& kind) const;
  // The job's handler returned: frees its slot and, unless `send_result`
  // is false (the broker took the job back), sends `result_msg` and keeps
  // it until acknowledged. The slot's credit goes back to the broker
  // unless the worker is stopping or draining.
  void FinishJob(const Running& job, v1::WorkerMessage result_msg,
                 bool send_result);
  void HeartbeatLoop();
  void StopAll(StopReason reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Quiet() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  WorkerOptions options_;
  std::map<std::string, Handler> handlers_;
  Handler default_handler_;
  absl::Status setup_;  // why the channel could not be made
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Workers::Stub> stub_;

  mutable absl::Mutex mu_;
  // Jobs whose handler runs, by lease token.
  std::map<std::string, std::shared_ptr<Running>> running_ ABSL_GUARDED_BY(mu_);
  // Assigned jobs waiting for a handler thread (normally for an instant).
  std::deque<std::shared_ptr<Running>> ready_ ABSL_GUARDED_BY(mu_);
  // Results sent (or to send) and not yet acknowledged, by lease token.
  struct Unacked {
    std::string job_id;
    v1::WorkerMessage result;  // resent as is after a reconnect
  };
  std::map<std::string, Unacked> unacked_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Connection> connection_ ABSL_GUARDED_BY(mu_);
  absl::Duration heartbeat_interval_ ABSL_GUARDED_BY(mu_) = absl::Seconds(10);
  // The broker's Welcome.max_output_bytes; 0 if it did not say.
  std::atomic<uint64_t> max_output_bytes_{0};
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;  // until the stream ends
  absl::Time drain_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool quit_ ABSL_GUARDED_BY(mu_) = false;  // threads exit
};

}  // namespace ferry

#endif  // FERRY_WORKER_WORKER_H_
