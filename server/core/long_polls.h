#ifndef FERRY_SERVER_CORE_LONG_POLLS_H_
#define FERRY_SERVER_CORE_LONG_POLLS_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "server/core/dispatcher.h"
#include "server/core/events.h"
#include "server/core/taker_table.h"
#include "storage/store.h"

namespace ferry {

// A unary Lease call waiting for jobs. It takes up to its credits in jobs
// and is answered once it has at least one and no lease write is in
// flight, when its credits run out, at its deadline, or when the broker
// drains. Its leases belong to no session: the token alone identifies them.
struct LongPoll : Taker {
  absl::Time deadline = absl::InfiniteFuture();
  std::vector<Assignment> assignments;
  // An upper bound of the encoded size of `assignments`.
  int64_t assignment_bytes = 0;
  ResultCallback<std::vector<Assignment>> done;
};

// The waiting Lease calls, each registered with the dispatcher while it
// waits.
//
// Not thread-safe: the broker calls it under its lock.
class LongPolls : public TakerTable<LongPoll> {
 public:
  using TakerTable::TakerTable;

  // Adds a waiting call under `handle` (new).
  LongPoll& Add(uint64_t handle, WorkerIdentity identity, absl::Time deadline,
                ResultCallback<std::vector<Assignment>> done);
  // The earliest deadline of a call that a tick may answer: one with a
  // lease being written is answered when the write lands, not by a tick.
  absl::Time NextDeadline() const;
};

}  // namespace ferry

#endif  // FERRY_SERVER_CORE_LONG_POLLS_H_
