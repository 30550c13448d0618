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
  LongPoll& added = *poll;
  polls_[handle] = std::move(poll);
  dispatcher_->Register(&added);
  return added;
}

LongPoll* LongPolls::Find(uint64_t handle) {
  auto it = polls_.find(handle);
  return it == polls_.end() ? nullptr : it->second.get();
}

void LongPolls::Remove(uint64_t handle) {
  dispatcher_->Unregister(handle);
  polls_.erase(handle);
}

std::vector<uint64_t> LongPolls::Handles() const {
  std::vector<uint64_t> handles;
  handles.reserve(polls_.size());
  for (const auto& [handle, poll] : polls_) handles.push_back(handle);
  return handles;
}

absl::Time LongPolls::NextDeadline() const {
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [handle, poll] : polls_) {
    if (poll->granting == 0) next = std::min(next, poll->deadline);
  }
  return next;
}

}  // namespace ferry
