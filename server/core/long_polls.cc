#include "server/core/long_polls.h"

#include <algorithm>
#include <utility>

namespace ferry {

LongPoll& LongPolls::Add(uint64_t handle, WorkerIdentity identity,
                         absl::Time deadline,
                         ResultCallback<std::vector<Assignment>> done) {
  auto poll = std::make_unique<LongPoll>();
  poll->kind = Taker::Kind::kLongPoll;
  poll->handle = handle;
  poll->identity = std::move(identity);
  poll->deadline = deadline;
  poll->done = std::move(done);
  return Insert(std::move(poll));
}

absl::Time LongPolls::NextDeadline() const {
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [handle, poll] : takers()) {
    if (poll->granting == 0) next = std::min(next, poll->deadline);
  }
  return next;
}

}  // namespace ferry
