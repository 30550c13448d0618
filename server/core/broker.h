#ifndef FERRY_SERVER_CORE_BROKER_H_
#define FERRY_SERVER_CORE_BROKER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "base/log_rate_limiter.h"
#include "server/core/dispatcher.h"
#include "server/core/events.h"
#include "server/core/job_policy.h"
#include "server/core/lease_table.h"
#include "server/core/long_polls.h"
#include "server/core/observer.h"
#include "server/core/sessions.h"
#include "server/core/watchers.h"
#include "storage/store.h"

namespace ferry {

struct BrokerOptions {
  // Defaults and limits for every queue...
  JobPolicy policy;
  // ...unless the queue has its own defaults (ferryd --queue_config).
  std::map<std::string, JobPolicy> queue_policies;
  const JobPolicy& PolicyFor(const std::string& queue) const {
    auto it = queue_policies.find(queue);
    return it == queue_policies.end() ? policy : it->second;
  }
  // Terminal jobs are deleted this long after they finish.
  absl::Duration retention = absl::Hours(24 * 7);
  // Rows deleted per retention or purge transaction: small, so the writer
  // never stalls on one big delete.
  int delete_batch = 500;
  // Most jobs promoted from SCHEDULED per transaction.
  int promote_batch = 1000;
  // Most credits a worker session may hold.
  int64_t max_credits = 10000;
  // Most worker streams open at once; past it a Hello is refused
  // (RESOURCE_EXHAUSTED), so fake workers cannot grow memory without end.
  int64_t max_sessions = 10000;
  // Most queues held in memory at once (those with jobs waiting to run,
  // workers waiting on them, or paused); a Submit that would add one past
  // it is refused (RESOURCE_EXHAUSTED), so made-up queue names cannot grow
  // memory and the operator's views without end.
  int64_t max_queues = 100000;
  // Most Watch and Wait calls open at once; past it they are refused
  // (RESOURCE_EXHAUSTED): each holds memory until its job ends.
  int64_t max_watchers = 100000;
  // A unary Lease response stops growing at this many bytes of
  // assignments (the first always goes): gRPC clients refuse messages over
  // 4 MiB unless told otherwise, and a response the caller refuses leaves
  // its jobs leased to nobody until the leases expire. Leases granted past
  // it are put back (QUEUED, attempt undone) for the next call.
  int64_t max_lease_response_bytes = 3 << 20;
};

struct QueueSnapshot {
  std::string name;
  bool paused = false;
  int64_t counts[7] = {};  // indexed by JobState
  absl::Duration oldest_queued_age;
};

// The broker core: the in-memory mirror of what is ready and what is leased,
// dispatch to workers, leases and their expiry, retries, delayed jobs,
// cancellation, watchers and retention. Every change goes through the Store;
// memory follows the committed result ("memory mirrors, disk decides").
//
// It is a thin sequencer over its parts, each with its own state and
// invariants: the Dispatcher (ready jobs, paused queues, takers waiting for
// work), the LeaseTable (leases, deadlines, results recently stored), the
// SessionTable (worker streams and their credits), LongPolls (waiting unary
// Lease calls) and Watchers. One mutex guards them all; the store is never
// read under it. It speaks in plain events (events.h), never in protobuf or
// gRPC: server/ turns those into messages.
//
// Thread-safe. Methods that change jobs complete through a callback that runs
// once the change is durable (on the store's completion thread); callbacks must
// not block. Sinks receive messages in commit order.
//
// Time comes only from `clock`. Nothing happens on its own: Tick() does the
// time-driven work (expiring leases, promoting due jobs, retention, long-poll
// timeouts) and the caller decides when to call it - ferryd from a ticker
// thread, tests after advancing a fake clock.
class Broker {
 public:
  // `store`, `clock` and `observer` (nullptr: none) are not owned and must
  // outlive the broker.
  Broker(Store* store, const Clock* clock, BrokerOptions options,
         BrokerObserver* observer = nullptr);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Rebuilds memory from the store: ready jobs, leases (each gets at least
  // one full TTL from now), paused queues, the next scheduled time.
  absl::Status Start();

  const BrokerOptions& options() const { return options_; }
  absl::Time Now() const { return clock_->Now(); }

  // ---- jobs ----

  // Stores the jobs (already validated, see JobFromSpec). A due job may go
  // straight to a waiting worker in the same transaction.
  void Submit(std::vector<JobRecord> jobs,
              ResultCallback<std::vector<CreateResult>> done);
  absl::StatusOr<JobRecord> Get(int64_t id, bool with_payload);
  absl::StatusOr<std::vector<JobRecord>> List(const ListFilter& filter);
  void Cancel(int64_t id, std::string reason, ResultCallback<JobRecord> done);
  void Retry(int64_t id, ResultCallback<JobRecord> done);

  // Sends `sink` the job as it is now, then after each state change, and
  // closes it OK after a terminal state, NOT_FOUND if the job is deleted,
  // and OK at `deadline` (InfiniteFuture for none). Returns a handle for
  // Unwatch (0 if the job was terminal already), or NOT_FOUND.
  absl::StatusOr<uint64_t> Watch(int64_t id, std::shared_ptr<JobSink> sink,
                                 absl::Time deadline);
  // Stops updates to a watcher (the client went away). Idempotent.
  void Unwatch(uint64_t handle);

  // ---- queues ----

  absl::StatusOr<std::vector<QueueSnapshot>> QueueStats(
      absl::string_view queue);
  void SetPaused(std::string queue, bool paused, ResultCallback<bool> done);
  // Deletes every job of `state` in `queue`, in small batches.
  void Purge(std::string queue, JobState state, ResultCallback<int64_t> done);

  // ---- worker streams ----

  // Registers a stream. Sends a Welcome, then Assignments as credits allow.
  // Held leases the broker still knows are re-bound to this session; the
  // rest get LeaseLost. `sink` is kept until CloseSession. Returns the
  // session handle, UNAVAILABLE while draining, or RESOURCE_EXHAUSTED when
  // max_sessions streams are open.
  absl::StatusOr<uint64_t> OpenSession(WorkerIdentity identity,
                                       std::vector<HeldLease> held,
                                       int64_t initial_credits,
                                       std::shared_ptr<WorkerSink> sink);
  // Adds `credits` to the session's, or sets them when `reset`.
  void AddCredit(uint64_t session, int64_t credits, bool reset = false);
  // Extends the listed leases; records progress when given.
  void Heartbeat(uint64_t session, const HeartbeatReport& heartbeat);
  // Ends the attempt; the session gets a ResultAcked once it is durable, or
  // LeaseLost if the token is not the job's current lease. `credits` come
  // back with the result (Result.credits), as if AddCredit followed.
  void Complete(uint64_t session, std::string token, Outcome outcome,
                int64_t credits = 0);
  // The stream is gone. Its leases stay until they expire, so the worker
  // can reconnect and re-bind them.
  void CloseSession(uint64_t session);

  // ---- unary worker API ----

  // Leases up to `max_jobs` jobs from `queues`, waiting until `deadline` for
  // the first one. Completes with the assignments (maybe none). Returns a
  // handle for CancelLease while the call waits, 0 if it completed at once.
  uint64_t Lease(WorkerIdentity identity, int64_t max_jobs, absl::Time deadline,
                 ResultCallback<std::vector<Assignment>> done);
  // The caller of Lease `handle` went away: stop holding jobs for it, put
  // back (QUEUED, attempt undone) what was leased for it and not yet
  // delivered, and complete its call CANCELLED. No-op once it completed.
  void CancelLease(uint64_t handle);
  // Leases that never reached their worker (a Lease response cancelled as
  // it was being sent or refused by gRPC, assignments a stream never sent):
  // puts back those still untouched, attempt undone, and logs `what`
  // happened. A lease already ended or expired is left alone.
  void PutBackUndelivered(const std::vector<std::string>& tokens,
                          absl::string_view what);
  // Extends the lease `token` (and records progress if given). Returns the
  // new deadline, or FAILED_PRECONDITION if the lease is lost.
  void HeartbeatLease(std::string token, std::optional<Progress> progress,
                      ResultCallback<absl::Time> done);
  // Ends the attempt held under `token`; returns the job's new state.
  void CompleteLease(std::string token, Outcome outcome,
                     ResultCallback<JobState> done);

  std::vector<WorkerSnapshot> ListWorkers();
  // The queue of the job leased under `token`, while the lease lasts.
  std::optional<std::string> LeaseQueue(const std::string& token);

  // ---- lifecycle ----

  // Does what is due at clock->Now(): expires leases, promotes due jobs,
  // deletes expired terminal jobs, times out watchers and long-polls.
  void Tick();
  // The earliest time Tick() has something to do (InfiniteFuture if none).
  absl::Time NextTickTime();
  // Stops dispatching and tells every worker to drain; new sessions and
  // long-polls are refused. Watchers are closed UNAVAILABLE; sessions get a
  // Drain and stay open so their workers can report what they finish.
  void Drain(absl::string_view reason);

 private:
  // Runs under mu_ once an attempt's end is committed (or failed).
  using Then =
      absl::AnyInvocable<void(const absl::StatusOr<JobRecord>&, KickList&) &&>;

  // Memory follows a committed change of `job`: ready, scheduled, watchers.
  void Applied(const JobRecord& job, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tells watchers and the observer of a committed change of `job`.
  void Changed(const JobRecord& job, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NoteScheduled(absl::Time run_at) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Matches ready jobs in `queue` with takers that have credit.
  // OK unless `jobs` would add queues past max_queues (RESOURCE_EXHAUSTED).
  absl::Status RoomForQueues(const std::vector<JobRecord>& jobs)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Dispatch(const std::string& queue, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds `credits` (or sets them, `reset`) and dispatches to the taker.
  void GrantCredits(Taker& taker, int64_t credits, bool reset, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes one credit from `taker` and records a granting lease; returns
  // its token. `job_id` is 0 for a job not stored yet.
  std::string Grant(Taker& taker, const std::string& queue, int64_t job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Completion of a lease write (LeaseJob or a direct-at-submit insert).
  void OnGranted(const std::string& token, absl::StatusOr<JobRecord> job,
                 KickList& kicks) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A lease write failed for storage: no lease is tried for a while (see
  // lease_backoff_), and the failure is logged, rate-limited.
  void BackOffLeases(int64_t job_id, const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds a granted lease to a waiting Lease call's response.
  void DeliverToPoll(LongPoll& poll, const std::string& token,
                     LeaseState& lease, Assignment assignment, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Returns a credit a lease did not use (taken in `epoch`: after a reset
  // it is not returned) and dispatches again.
  void ReturnCredit(uint64_t taker, uint64_t epoch, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Taker* FindTaker(uint64_t handle) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Answers a waiting Lease call if it is done (see LongPoll).
  void FinishPollIfDone(LongPoll& poll, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Complete's work once the session is known: acks, LeaseLost, or the end
  // of the attempt.
  void EndReportedAttempt(uint64_t session, const std::string& token,
                          Outcome outcome, absl::Time now, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // CloseSession's work: its leases stay, orphaned, until they expire.
  void EndSession(uint64_t session) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Starts writing the end of an attempt; `then` runs once it is committed.
  // `reported`: the worker sent this outcome (not an expiry); only then is
  // the token remembered as the job's result_token and as a recent result.
  void EndAttempt(const std::string& token, LeaseState& lease, Outcome outcome,
                  bool reported, absl::Time now, Then then)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Finds the active lease `token` for a call from `session` (0: unary).
  // A lease whose session is gone, or held by an older stream of the same
  // worker, moves to `session`. nullptr with `why` set if it is lost.
  LeaseState* FindLease(const std::string& token, uint64_t session,
                        std::string* why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Extends `token` by its TTL, or tells the session it is lost.
  LeaseState* ExtendLease(uint64_t session, const std::string& token,
                          absl::Time now, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordProgress(const LeaseState& lease, const std::string& token,
                      const Progress& progress, ResultCallback<JobRecord> done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets the lease and takes it off its taker's count.
  void DropLease(const std::string& token) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts back a lease whose worker never got its assignment: the job is
  // QUEUED again with the attempt undone.
  void ReleaseUndelivered(const std::string& token, LeaseState& lease)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ReleaseUndelivered for those of `tokens` whose leases are still active
  // (one that ended or expired meanwhile is on its way out); how many.
  int ReleaseActive(const std::vector<std::string>& tokens)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A write that was to end the lease failed in storage: the attempt is
  // still running on disk. Keeps the lease, active with a fresh TTL, so
  // that it is not forgotten: it ends by a result or by expiring.
  void KeepLeaseAfterFailedEnd(const std::string& token)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendLeaseLost(uint64_t session, int64_t job_id, const std::string& token,
                     absl::string_view reason, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts and logs (rate-limited) a heartbeat or result refused for a
  // lease its sender (`session`, 0: a unary call) does not hold.
  void Refused(uint64_t session, absl::string_view why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void PromoteDue(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PurgeBatch(std::string queue, JobState state, int64_t total,
                  ResultCallback<int64_t> done);
  void DeleteExpired(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  double Jitter() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  Store* const store_;
  const Clock* const clock_;
  const BrokerOptions options_;
  BrokerObserver* const observer_;
  // Refused tokens may come in a flood (a buggy or hostile worker).
  LogRateLimiter refused_log_;
  // So may refused Watch and Wait calls.
  LogRateLimiter watchers_refused_log_;
  // And failed lease writes (a full disk).
  LogRateLimiter lease_failed_log_;
  // And submits to new queues past max_queues.
  LogRateLimiter queues_full_log_;

  absl::Mutex mu_;
  Dispatcher dispatcher_ ABSL_GUARDED_BY(mu_);
  LeaseTable leases_ ABSL_GUARDED_BY(mu_);
  SessionTable sessions_ ABSL_GUARDED_BY(mu_){&dispatcher_};
  LongPolls polls_ ABSL_GUARDED_BY(mu_){&dispatcher_};
  Watchers watchers_ ABSL_GUARDED_BY(mu_);
  // Handles of sessions, long-polls and watchers.
  uint64_t next_handle_ ABSL_GUARDED_BY(mu_) = 1;
  // Earliest run_at among SCHEDULED jobs (never later than the truth).
  absl::Time next_scheduled_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool promoting_ ABSL_GUARDED_BY(mu_) = false;
  bool deleting_expired_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time next_retention_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  // After a lease write failed for storage (a full disk), no lease is tried
  // before lease_retry_at_: the backoff doubles per failure (100 ms to
  // 10 s) and resets on a lease that lands. Without it a waiting worker
  // and a ready job retried the failing write in a hot loop.
  bool lease_backoff_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time lease_retry_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Duration lease_retry_delay_ ABSL_GUARDED_BY(mu_);
  absl::BitGen bitgen_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry

#endif  // FERRY_SERVER_CORE_BROKER_H_
