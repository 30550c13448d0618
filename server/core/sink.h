#ifndef FERRY_SERVER_CORE_SINK_H_
#define FERRY_SERVER_CORE_SINK_H_

#include <memory>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"

namespace ferry {

// Something that sends what was queued into it once kicked. The broker queues
// messages while holding its lock (so they are ordered as the changes they
// report) and kicks after releasing it (so no gRPC call runs under the lock).
class Kickable {
 public:
  virtual ~Kickable() = default;
  // Starts sending whatever is queued. Called with no broker lock held; may
  // call into gRPC. Must tolerate being called when there is nothing to do.
  virtual void Kick() = 0;
};

// Where the broker sends messages for one RPC (a worker stream, a watch, a
// long-poll). Push and Close never block and never call back into the
// broker; they may be called under the broker's lock.
template <typename Msg>
class Sink : public Kickable {
 public:
  virtual void Push(Msg msg) = 0;
  // Ends the RPC with `status` after what was pushed has been sent. Further
  // pushes are dropped.
  virtual void Close(absl::Status status) = 0;
};

// Work to do once the broker's lock is released: sinks to kick and calls to
// make (completing an RPC, say), in the order they were added. Declare it
// before the MutexLock so that the lock is released first.
class KickList {
 public:
  KickList() = default;
  KickList(const KickList&) = delete;
  KickList& operator=(const KickList&) = delete;
  ~KickList() {
    for (Item& item : items_) {
      if (item.sink != nullptr) {
        item.sink->Kick();
      } else {
        std::move(item.fn)();
      }
    }
  }
  void Add(std::shared_ptr<Kickable> sink) {
    if (sink != nullptr) items_.push_back(Item{std::move(sink), nullptr});
  }
  void Defer(absl::AnyInvocable<void() &&> fn) {
    items_.push_back(Item{nullptr, std::move(fn)});
  }

 private:
  struct Item {
    std::shared_ptr<Kickable> sink;
    absl::AnyInvocable<void() &&> fn;
  };
  std::vector<Item> items_;
};

}  // namespace ferry

#endif  // FERRY_SERVER_CORE_SINK_H_
