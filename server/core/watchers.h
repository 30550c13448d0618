#ifndef FERRY_SERVER_CORE_WATCHERS_H_
#define FERRY_SERVER_CORE_WATCHERS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/core/events.h"
#include "storage/store.h"

namespace ferry {

// Watch calls: who follows which job, what each was last sent, until when.
// A watcher sees the job's states in order, each once, and is closed OK
// after a terminal one.
//
// A watcher starts unprimed: the broker registers it, reads the job from
// the store without holding its lock, then primes it with what it read.
// Changes committed meanwhile are held and sent after that read, so none
// is missed and none goes back in time.
//
// Not thread-safe: the broker calls it under its lock. Sinks are pushed to
// and closed here; the caller kicks them (KickList) after unlocking.
class Watchers {
 public:
  // Registers an unprimed watcher of `job_id` under `handle` (new).
  void Add(uint64_t handle, int64_t job_id, std::shared_ptr<JobSink> sink,
           absl::Time deadline);
  // Sends the watcher `job` as read from the store, then the newest change
  // held since Add, and closes it after a terminal state. Returns false if
  // the watcher is gone by now (closed, or it reached a terminal state).
  bool Prime(uint64_t handle, const JobRecord& job, KickList& kicks);
  // Stops updates to a watcher. Idempotent.
  void Remove(uint64_t handle);

  // A change of `job` was committed: tells its watchers.
  void Notify(const JobRecord& job, KickList& kicks);
  // Closes every watcher of `job_id` with `status`.
  void CloseJob(int64_t job_id, const absl::Status& status, KickList& kicks);
  // Closes every watcher with `status`.
  void CloseAll(const absl::Status& status, KickList& kicks);
  // Closes OK the primed watchers whose deadline is at or before `now`.
  void ExpireDue(absl::Time now, KickList& kicks);
  // The earliest deadline of a primed watcher (InfiniteFuture if none).
  absl::Time NextDeadline() const;
  bool Watched(int64_t job_id) const { return of_job_.contains(job_id); }
  size_t size() const { return watchers_.size(); }

 private:
  struct Watcher {
    int64_t job_id = 0;
    std::shared_ptr<JobSink> sink;
    absl::Time deadline = absl::InfiniteFuture();
    bool primed = false;
    JobRecord last;                 // what it was last sent, to drop repeats
    std::optional<JobRecord> held;  // newest change before it was primed
  };

  // Sends `job` unless the watcher has it or something newer; closes it
  // after a terminal state.
  void Deliver(uint64_t handle, Watcher& watcher, const JobRecord& job,
               KickList& kicks);
  void Close(uint64_t handle, const absl::Status& status, KickList& kicks);

  absl::flat_hash_map<uint64_t, Watcher> watchers_;
  absl::flat_hash_map<int64_t, std::vector<uint64_t>> of_job_;
};

}  // namespace ferry

#endif  // FERRY_SERVER_CORE_WATCHERS_H_
