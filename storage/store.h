#ifndef FERRY_STORAGE_STORE_H_
#define FERRY_STORAGE_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace ferry {

// Values match ferry.v1.JobState so conversion is a cast; they are also what
// the database stores, so they never change.
enum class JobState : int {
  kScheduled = 1,
  kQueued = 2,
  kRunning = 3,
  kSucceeded = 4,
  kFailed = 5,
  kCancelled = 6,
};

inline bool IsTerminal(JobState state) {
  return state == JobState::kSucceeded || state == JobState::kFailed ||
         state == JobState::kCancelled;
}

// "SCHEDULED", "QUEUED", ... ; "UNKNOWN" for anything else.
inline absl::string_view JobStateName(JobState state) {
  switch (state) {
    case JobState::kScheduled:
      return "SCHEDULED";
    case JobState::kQueued:
      return "QUEUED";
    case JobState::kRunning:
      return "RUNNING";
    case JobState::kSucceeded:
      return "SUCCEEDED";
    case JobState::kFailed:
      return "FAILED";
    case JobState::kCancelled:
      return "CANCELLED";
  }
  return "UNKNOWN";
}

// NOT_FOUND "job N not found": what every store answers for a job id it
// does not hold, and what a caller is told of a job it may not see.
inline absl::Status JobNotFoundError(int64_t id) {
  return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
}

using Labels = std::map<std::string, std::string>;

// One row of the job table. Times are absl::InfinitePast() when unset.
struct JobRecord {
  int64_t id = 0;
  std::string queue;
  std::string kind;
  JobState state = JobState::kQueued;
  int32_t priority = 0;
  absl::Time run_at = absl::InfinitePast();
  absl::Time created_at = absl::InfinitePast();
  absl::Time updated_at = absl::InfinitePast();
  absl::Time started_at = absl::InfinitePast();
  absl::Time finished_at = absl::InfinitePast();
  int32_t attempt = 0;
  int32_t max_attempts = 1;
  absl::Duration initial_backoff;
  absl::Duration max_backoff;
  absl::Duration lease_ttl;
  absl::Duration timeout;
  std::string idempotency_key;  // empty: none
  std::string content_type;
  Labels labels;
  std::string last_error;
  int32_t progress_percent = 0;
  std::string progress_message;
  std::string worker_id;
  std::string lease_token;                           // RUNNING only
  absl::Time lease_deadline = absl::InfinitePast();  // RUNNING only
  // The lease token under which a worker last reported an outcome, so a
  // result resent after a broker restart is recognised as already stored.
  std::string result_token;
  std::string payload;
  std::string result;
};

// What a job's lease is granted with. The deadline is now + the job's own
// lease_ttl.
struct LeaseGrant {
  std::string token;
  std::string worker_id;
  absl::Time now;
};

// The end of an attempt: a result, a failure, or an expired lease.
struct AttemptOutcome {
  // SUCCEEDED, FAILED, or SCHEDULED (retry at `run_at`).
  JobState next_state = JobState::kSucceeded;
  absl::Time now;
  absl::Time run_at = absl::InfinitePast();  // SCHEDULED only
  std::string result;                        // SUCCEEDED only
  std::string error;                         // failures
  // The worker reported this outcome (an expiry is not reported): the lease
  // token is kept as the job's result_token.
  bool reported = false;
};

struct CreateResult {
  JobRecord job;
  bool created = false;  // false: the idempotency key matched `job`
};

struct CancelResult {
  JobRecord job;  // after the change, without payload and result
  JobState previous_state = JobState::kQueued;
  std::string previous_lease_token;  // set when it was RUNNING
};

// Enough of a deleted or promoted job to find it in the broker's memory.
struct JobKey {
  int64_t id = 0;
  std::string queue;
  int32_t priority = 0;
  absl::Time run_at;
};

struct ListFilter {
  std::string queue;  // empty: any
  // Queues matching one of these ('*' for any characters; names hold no
  // other glob character); empty: any.
  std::vector<std::string> queue_globs;
  std::optional<JobState> state;
  std::string kind;  // empty: any
  Labels labels;     // every one must match
  bool oldest_first = false;
  int64_t after_id = 0;  // page cursor: ids past this one, in list order
  int limit = 100;
  bool with_payload = false;  // payload and result
};

struct QueueCount {
  std::string queue;
  JobState state;
  int64_t count = 0;
};

// Non-terminal jobs, read at broker start to rebuild its memory.
struct LiveJobs {
  std::vector<JobKey> queued;
  std::vector<JobRecord> running;  // without payload and result
  std::optional<absl::Time> next_scheduled;
};

template <typename T>
using ResultCallback = absl::AnyInvocable<void(absl::StatusOr<T>) &&>;

// Told of each transaction a store committed: how many writes it held
// (group commit) and how long it took from its start to the end of its
// commit. Called on the store's writer thread before the writes complete:
// it must be cheap and must not block or call the store. For metrics.
using CommitListener = std::function<void(int writes, absl::Duration took)>;

// Durable job table. Thread-safe.
//
// Writes are asynchronous: each one is queued and its callback runs once the
// change is committed (or has failed), so an OK in a callback means durable.
// Callbacks run on the store's completion thread in the order the writes
// were queued, one after another; they must not block, and may queue more
// writes. A callback may see (through a read) commits made after its own:
// the next transaction starts while callbacks run.
// Implementations group pending writes into one transaction (group commit).
// Writes that find the job in the wrong state fail with FAILED_PRECONDITION
// and change nothing; unknown ids give NOT_FOUND. A storage failure gives
// UNAVAILABLE (busy, I/O) or RESOURCE_EXHAUSTED (disk full).
//
// Reads are synchronous and see every write whose callback has run.
//
// Storage never reads a clock: callers pass `now`.
class Store {
 public:
  virtual ~Store() = default;

  // Inserts each job as given (id is assigned; state, attempt and lease
  // fields are the caller's). A job whose non-empty idempotency_key matches
  // a stored job is not inserted: its result holds the stored job, payload
  // included, and created = false.
  virtual void CreateJobs(std::vector<JobRecord> jobs,
                          ResultCallback<std::vector<CreateResult>> done) = 0;

  // QUEUED -> RUNNING: attempt + 1, started_at = now, lease from `grant`,
  // lease_deadline = now + lease_ttl, progress cleared.
  // Returns the job after the change, payload included.
  virtual void LeaseJob(int64_t id, LeaseGrant grant,
                        ResultCallback<JobRecord> done) = 0;

  // Ends the attempt held under `lease_token` (the job must be RUNNING with
  // that token) and clears the lease. Terminal states set finished_at. A
  // reported outcome records the token as result_token.
  // Returns the job after the change, without payload and result.
  virtual void FinishAttempt(int64_t id, std::string lease_token,
                             AttemptOutcome outcome,
                             ResultCallback<JobRecord> done) = 0;

  // RUNNING (with `lease_token`) -> QUEUED, undoing the attempt: for an
  // assignment that never reached a worker.
  virtual void ReleaseLease(int64_t id, std::string lease_token, absl::Time now,
                            ResultCallback<JobRecord> done) = 0;

  // Records progress of the RUNNING attempt held under `lease_token`.
  virtual void SetProgress(int64_t id, std::string lease_token, int32_t percent,
                           std::string message, absl::Time now,
                           ResultCallback<JobRecord> done) = 0;

  // Any non-terminal state -> CANCELLED, with `reason` as last_error.
  virtual void CancelJob(int64_t id, std::string reason, absl::Time now,
                         ResultCallback<CancelResult> done) = 0;

  // FAILED or CANCELLED -> QUEUED with attempt 0, run_at = now, and the
  // result and finished_at cleared.
  virtual void RetryJob(int64_t id, absl::Time now,
                        ResultCallback<JobRecord> done) = 0;

  // SCHEDULED jobs whose run_at <= now -> QUEUED: the `limit` earliest.
  // Returns the promoted jobs, in no particular order.
  virtual void PromoteDueJobs(absl::Time now, int limit,
                              ResultCallback<std::vector<JobKey>> done) = 0;

  // Deletes at most `limit` jobs of `state` in `queue`; returns them.
  virtual void DeleteJobs(std::string queue, JobState state, int limit,
                          ResultCallback<std::vector<JobKey>> done) = 0;

  // Deletes at most `limit` terminal jobs that finished before `cutoff`;
  // returns how many.
  virtual void DeleteFinishedBefore(absl::Time cutoff, int limit,
                                    ResultCallback<int64_t> done) = 0;

  virtual void SetQueuePaused(std::string queue, bool paused,
                              ResultCallback<bool> done) = 0;

  // Returns after every write queued before the call has completed.
  virtual void Flush() = 0;
  // Returns true once no write is pending, being committed, or having its
  // callback run: every write queued so far has completed, and so has every
  // write their callbacks queued in turn. For shutdown: once nothing else
  // queues writes, after it no callback can run. (Writes other threads
  // queue meanwhile are waited for too.) False if that takes longer than
  // `timeout` (tests: a lost callback fails instead of hanging).
  virtual bool Quiesce(absl::Duration timeout) = 0;

  // The verdict of the start-up integrity check, waiting for it if it still
  // runs (it may overlap with LoadLiveJobs): DATA_LOSS for a damaged
  // database. Serve nothing until it is OK.
  virtual absl::Status AwaitStartupCheck() { return absl::OkStatus(); }

  // ---- reads ----

  virtual absl::StatusOr<JobRecord> GetJob(int64_t id, bool with_payload) = 0;
  virtual absl::StatusOr<std::vector<JobRecord>> ListJobs(
      const ListFilter& filter) = 0;
  virtual absl::StatusOr<std::vector<QueueCount>> CountJobs(
      absl::string_view queue) = 0;
  virtual absl::StatusOr<std::vector<std::string>> PausedQueues() = 0;
  virtual absl::StatusOr<LiveJobs> LoadLiveJobs() = 0;
  // The earliest run_at of a SCHEDULED job, if any.
  virtual absl::StatusOr<std::optional<absl::Time>> NextScheduledTime() = 0;

  // Transactions committed since open; with group commit this grows slower
  // than the number of writes.
  virtual int64_t CommitCount() const = 0;
};

}  // namespace ferry

#endif  // FERRY_STORAGE_STORE_H_
