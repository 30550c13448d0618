#ifndef FERRY_SERVER_CORE_TAKER_TABLE_H_
#define FERRY_SERVER_CORE_TAKER_TABLE_H_

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "server/core/dispatcher.h"

namespace ferry {

// Takers of one kind (`T` derives from Taker) by handle, each registered
// with the dispatcher for as long as it is in the table. The base of
// SessionTable and LongPolls.
//
// Not thread-safe: the broker calls it under its lock. A taker's address is
// stable until Remove.
template <typename T>
class TakerTable {
 public:
  // `dispatcher` is not owned and must outlive the table.
  explicit TakerTable(Dispatcher* dispatcher) : dispatcher_(dispatcher) {}

  // nullptr if `handle` is not in the table.
  T* Find(uint64_t handle) {
    auto it = takers_.find(handle);
    return it == takers_.end() ? nullptr : it->second.get();
  }
  void Remove(uint64_t handle) {
    dispatcher_->Unregister(handle);
    takers_.erase(handle);
  }
  size_t size() const { return takers_.size(); }
  std::vector<uint64_t> Handles() const {
    std::vector<uint64_t> handles;
    handles.reserve(takers_.size());
    for (const auto& [handle, taker] : takers_) handles.push_back(handle);
    return handles;
  }

 protected:
  // Adds `taker` (its handle new) and registers it.
  T& Insert(std::unique_ptr<T> taker) {
    T& added = *taker;
    takers_[added.handle] = std::move(taker);
    dispatcher_->Register(&added);
    return added;
  }
  const absl::flat_hash_map<uint64_t, std::unique_ptr<T>>& takers() const {
    return takers_;
  }

 private:
  Dispatcher* const dispatcher_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<T>> takers_;
};

}  // namespace ferry

#endif  // FERRY_SERVER_CORE_TAKER_TABLE_H_
