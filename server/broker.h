#ifndef FERRY_SERVER_BROKER_H_
#define FERRY_SERVER_BROKER_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "ferry/v1/workers.pb.h"
#include "server/sink.h"
#include "server/validate.h"
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
  // A unary Lease response stops growing at this many bytes of
  // assignments (the first always goes): gRPC clients refuse messages over
  // 4 MiB unless told otherwise, and a response the caller refuses leaves
  // its jobs leased to nobody until the leases expire. Leases granted past
  // it are put back (QUEUED, attempt undone) for the next call.
  int64_t max_lease_response_bytes = 3 << 20;
};

// Who a worker session says it is (from its Hello).
struct WorkerIdentity {
  std::string worker_id;
  std::string hostname;
  uint32_t pid = 0;
  std::string version;
  std::vector<std::string> queues;
  Labels labels;
  std::string peer;
};

struct HeldLease {
  int64_t job_id = 0;
  std::string token;
};

// A connected worker, for ListWorkers.
struct WorkerSnapshot {
  WorkerIdentity identity;
  std::string session_id;
  int64_t credits = 0;
  int64_t leases = 0;
  absl::Time connected_at;
  absl::Time last_seen;
};

struct QueueSnapshot {
  std::string name;
  bool paused = false;
  int64_t counts[7] = {};  // indexed by JobState
  absl::Duration oldest_queued_age;
};

// How a worker ended an attempt.
struct Outcome {
  bool success = false;
  std::string output;  // success
  std::string error;   // failure
  bool retryable = true;
};

using WorkerSink = Sink<v1::ServerMessage>;
using JobSink = Sink<JobRecord>;

// The broker core: the in-memory mirror of what is ready and what is leased,
// dispatch to workers, leases and their expiry, retries, delayed jobs,
// cancellation, watchers and retention. Every change goes through the Store;
// memory follows the committed result ("memory mirrors, disk decides").
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
  // `store` and `clock` are not owned and must outlive the broker.
  Broker(Store* store, const Clock* clock, BrokerOptions options);
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
  // Unwatch, or NOT_FOUND.
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
  // session handle, or UNAVAILABLE while draining.
  absl::StatusOr<uint64_t> OpenSession(WorkerIdentity identity,
                                       std::vector<HeldLease> held,
                                       int64_t initial_credits,
                                       std::shared_ptr<WorkerSink> sink);
  // Adds `credits` to the session's, or sets them when `reset`.
  void AddCredit(uint64_t session, int64_t credits, bool reset = false);
  // Extends the listed leases; records progress when given.
  void Heartbeat(uint64_t session, const v1::Heartbeat& heartbeat);
  // Ends the attempt; the session gets a ResultAck once it is durable, or
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
                 ResultCallback<std::vector<v1::Assignment>> done);
  // The caller of Lease `handle` went away: stop holding jobs for it, put
  // back (QUEUED, attempt undone) what was leased for it and not yet
  // delivered, and complete its call CANCELLED. No-op once it completed.
  void CancelLease(uint64_t handle);
  // The response of a Lease call never reached its caller (cancelled as
  // it was being sent, or refused by gRPC): puts back the leases it
  // carried that are still untouched. A lease already ended or expired is
  // left alone.
  void PutBackUndelivered(const std::vector<std::string>& tokens);
  // Extends the lease `token` (and records progress if given). Returns the
  // new deadline, or FAILED_PRECONDITION if the lease is lost.
  void HeartbeatLease(std::string token, std::optional<v1::Progress> progress,
                      ResultCallback<absl::Time> done);
  // Ends the attempt held under `token`; returns the job's new state.
  void CompleteLease(std::string token, Outcome outcome,
                     ResultCallback<JobState> done);

  std::vector<WorkerSnapshot> ListWorkers();

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
  // Ready jobs order: higher priority first, then earlier run_at, then id.
  struct ReadyKey {
    int32_t neg_priority;
    int64_t run_at_us;
    int64_t id;
    friend bool operator<(const ReadyKey& a, const ReadyKey& b) {
      if (a.neg_priority != b.neg_priority)
        return a.neg_priority < b.neg_priority;
      if (a.run_at_us != b.run_at_us) return a.run_at_us < b.run_at_us;
      return a.id < b.id;
    }
  };
  struct QueueState {
    absl::btree_set<ReadyKey> ready;
    // Sessions that may have credit; checked lazily when popped.
    std::deque<uint64_t> hungry;
    bool paused = false;
  };
  enum class LeasePhase {
    kGranting,  // lease write queued; the worker does not know it yet
    kActive,    // the worker holds it
    kEnding,    // a result or expiry is being written
  };
  struct LeaseState {
    int64_t job_id = 0;  // 0 while a direct-at-submit insert is pending
    std::string queue;
    uint64_t session = 0;  // 0: no live session (disconnected or unary)
    std::string worker_id;
    LeasePhase phase = LeasePhase::kGranting;
    int32_t attempt = 0;
    int32_t max_attempts = 1;
    absl::Duration ttl;
    absl::Duration initial_backoff;
    absl::Duration max_backoff;
    absl::Time deadline;
    // The session's credit_epoch when the lease took its credit.
    uint64_t credit_epoch = 0;
  };
  struct Session {
    uint64_t handle = 0;
    std::string session_id;
    WorkerIdentity identity;
    std::shared_ptr<WorkerSink> sink;
    int64_t credits = 0;
    int64_t leases = 0;    // active and granting leases held
    int64_t granting = 0;  // lease writes in flight
    // Counts the worker's credit resets: a lease write that fails gives its
    // credit back only if no reset came since it was granted.
    uint64_t credit_epoch = 0;
    // hungry_in[i]: the session is in queues_[identity.queues[i]].hungry.
    std::vector<bool> hungry_in;
    absl::Time connected_at;
    absl::Time last_seen;
    // Unary long-poll sessions: finished when their leases are granted or
    // at `deadline`.
    bool unary = false;
    absl::Time deadline = absl::InfiniteFuture();
    std::vector<v1::Assignment> assignments;
    int64_t assignment_bytes = 0;  // ByteSizeLong of `assignments`
    ResultCallback<std::vector<v1::Assignment>> unary_done;
  };
  struct Watcher {
    int64_t job_id = 0;
    std::shared_ptr<JobSink> sink;
    absl::Time deadline = absl::InfiniteFuture();
    JobRecord last;  // what it was last sent, to drop repeats
  };

  struct RecentResult {
    int64_t job_id = 0;
    JobState state = JobState::kSucceeded;
  };
  // Runs under mu_ once an attempt's end is committed (or failed).
  using Then =
      absl::AnyInvocable<void(const absl::StatusOr<JobRecord>&, KickList&) &&>;

  static ReadyKey KeyOf(int32_t priority, absl::Time run_at, int64_t id) {
    return ReadyKey{-priority, absl::ToUnixMicros(run_at), id};
  }

  QueueState& Queue(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddReady(const JobKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseReady(const std::string& queue, const ReadyKey& key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NoteScheduled(absl::Time run_at) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Memory follows a committed change of `job`: ready, scheduled, watchers.
  void Applied(const JobRecord& job, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Matches ready jobs in `queue` with sessions that have credit.
  void Dispatch(const std::string& queue, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Pops a session with credit for `queue`, or nullptr.
  Session* PopHungry(const std::string& name, QueueState& queue)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkHungry(Session& session) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Complete's work once the session is known: acks, LeaseLost, or the end
  // of the attempt.
  void EndReportedAttempt(uint64_t handle, const std::string& token,
                          Outcome outcome, absl::Time now, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds `credits` (or sets them, `reset`) and dispatches to the session.
  void GrantCredits(Session& session, int64_t credits, bool reset,
                    KickList& kicks) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes one credit from `session` and records a granting lease; returns
  // its token. `job_id` is 0 for a job not stored yet.
  std::string Grant(Session& session, const std::string& queue, int64_t job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Completion of a lease write (LeaseJob or a direct-at-submit insert).
  void OnGranted(const std::string& token, absl::StatusOr<JobRecord> job,
                 KickList& kicks) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Returns a credit a lease did not use (taken in `epoch`: after a reset
  // it is not returned) and dispatches again.
  void ReturnCredit(uint64_t session, uint64_t epoch, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishUnaryIfDone(Session& session, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // CloseSession's work: its leases stay, orphaned, until they expire.
  void EndSession(uint64_t handle) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveSession(uint64_t handle) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Starts writing the end of an attempt; `then` runs once it is committed.
  // `reported`: the worker sent this outcome (not an expiry); only then is
  // the token remembered as the job's result_token and in recent_.
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
                      const v1::Progress& progress,
                      ResultCallback<JobRecord> done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
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
  void SetDeadline(const std::string& token, LeaseState& lease,
                   absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RememberResult(const std::string& token, const JobRecord& job)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True if the result for a held lease the broker no longer tracks was
  // stored already (so the worker's resend should be acknowledged).
  bool ResultStored(const HeldLease& held) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Send(uint64_t session, v1::ServerMessage msg, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendLeaseLost(uint64_t session, int64_t job_id, const std::string& token,
                     absl::string_view reason, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendResultAck(uint64_t session, const std::string& token, int64_t job_id,
                     JobState state, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Tells watchers of `job` about its new state.
  void Notify(const JobRecord& job, KickList& kicks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CloseWatchers(int64_t job_id, const absl::Status& status,
                     KickList& kicks) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveWatcher(uint64_t handle) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void PromoteDue(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PurgeBatch(std::string queue, JobState state, int64_t total,
                  ResultCallback<int64_t> done);
  void DeleteExpired(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  double Jitter() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  Store* const store_;
  const Clock* const clock_;
  const BrokerOptions options_;

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, QueueState> queues_ ABSL_GUARDED_BY(mu_);
  // Leases by token, and the index from job id to token.
  absl::flat_hash_map<std::string, LeaseState> leases_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int64_t, std::string> lease_of_job_ ABSL_GUARDED_BY(mu_);
  // Active leases by deadline.
  absl::btree_set<std::pair<absl::Time, std::string>> deadlines_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Session> sessions_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> unary_sessions_ ABSL_GUARDED_BY(mu_);
  uint64_t next_handle_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, Watcher> watchers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int64_t, std::vector<uint64_t>> watchers_of_job_
      ABSL_GUARDED_BY(mu_);
  // Earliest run_at among SCHEDULED jobs (never later than the truth).
  absl::Time next_scheduled_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool promoting_ ABSL_GUARDED_BY(mu_) = false;
  bool deleting_expired_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time next_retention_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  // Recently reported results, for results resent after a reconnect.
  absl::flat_hash_map<std::string, RecentResult> recent_ ABSL_GUARDED_BY(mu_);
  // Stream results being written: token -> the session to acknowledge
  // (a resend while the first is written moves the ack to the new stream).
  absl::flat_hash_map<std::string, uint64_t> acks_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> recent_order_ ABSL_GUARDED_BY(mu_);
  absl::BitGen bitgen_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry

#endif  // FERRY_SERVER_BROKER_H_
