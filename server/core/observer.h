#ifndef FERRY_SERVER_CORE_OBSERVER_H_
#define FERRY_SERVER_CORE_OBSERVER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "storage/store.h"

namespace ferry {

// What the broker core reports as it works: metrics and tests implement it,
// injected like the Clock. Every method has a no-op default, so an
// implementation overrides only what it counts.
//
// The broker calls these under its lock, in commit order: they must be
// cheap (count, copy a few fields), must not block, and must not call the
// broker.
//
// Commit groups are the store's to report, from its writer thread: see
// CommitListener (storage/store.h, SqliteOptions::on_commit).
class BrokerObserver {
 public:
  virtual ~BrokerObserver() = default;

  // A change of `job` was committed and is now in the broker's memory:
  // created, leased, ended (succeeded, failed, retry scheduled), cancelled,
  // requeued by retry, put back, or its progress. `job` may carry its
  // payload and result (a lease's read-back does): read, do not keep.
  virtual void JobChanged(const JobRecord& job) {}
  // Due SCHEDULED jobs became QUEUED.
  virtual void JobsPromoted(const std::vector<JobKey>& jobs) {}
  // `job` (attempt `job.attempt`) was leased to `worker_id`.
  virtual void JobDispatched(const JobRecord& job,
                             absl::string_view worker_id) {}
  // A heartbeat or result named a lease its sender does not hold (unknown,
  // already ended, or another worker's); `worker_id` is empty for a unary
  // call. Refused, and changed nothing.
  virtual void LeaseRefused(absl::string_view worker_id,
                            absl::string_view why) {}
  // A lease ran out without a heartbeat; its attempt ends as a failure.
  virtual void LeaseExpired(int64_t job_id, absl::string_view queue,
                            absl::string_view worker_id, int32_t attempt) {}
};

}  // namespace ferry

#endif  // FERRY_SERVER_CORE_OBSERVER_H_
