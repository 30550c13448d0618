#ifndef FERRY_SERVER_WRITE_QUEUE_H_
#define FERRY_SERVER_WRITE_QUEUE_H_

#include <deque>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace ferry {

// The bookkeeping of a server stream that writes one message at a time, in
// order, then finishes: what is queued, whether a write is in flight,
// whether the stream is closing. The reactor asks Next() what to do and does
// it outside the lock. Thread-safe.
template <typename Item>
class WriteQueue {
 public:
  enum class Action { kNothing, kWrite, kFinish };

  // The bytes of an item worth counting (its payloads); for what a write
  // carries too (several items bundled in one, see Next).
  using BytesFn = size_t (*)(const Item&);

  // At most `max_pending` items wait, and with `bytes_of`, items of at
  // most `max_bytes` bytes (0: no limit): a peer that stops reading
  // cannot grow the server's memory without end. With `keep_dropped`,
  // items that will never be written (dropped, pushed while closing, or
  // still queued when gRPC is done) are kept for TakeDropped.
  explicit WriteQueue(size_t max_pending = 0, size_t max_bytes = 0,
                      BytesFn bytes_of = nullptr, bool keep_dropped = false)
      : max_pending_(max_pending),
        max_bytes_(max_bytes),
        bytes_of_(bytes_of),
        keep_dropped_(keep_dropped) {}

  // Dropped once the stream is closing. Returns false for the push that
  // overflowed the queue: what was queued is dropped, the stream closes
  // with RESOURCE_EXHAUSTED, and the caller must end its side of it.
  bool Push(Item item) {
    const size_t bytes = bytes_of_ != nullptr ? bytes_of_(item) : 0;
    absl::MutexLock lock(&mu_);
    if (closing_) {
      if (keep_dropped_) dropped_.push_back(std::move(item));
      return true;
    }
    const bool too_many = max_pending_ > 0 && pending_.size() >= max_pending_;
    const bool too_big = max_bytes_ > 0 && !pending_.empty() &&
                         pending_bytes_ + bytes > max_bytes_;
    if (too_many || too_big) {
      DropPendingLocked();
      if (keep_dropped_) dropped_.push_back(std::move(item));
      closing_ = true;
      status_ = absl::ResourceExhaustedError(absl::StrCat(
          "more than ",
          too_many ? absl::StrCat(max_pending_, " messages")
                   : absl::StrCat(max_bytes_, " bytes of messages"),
          " waited to be sent on this stream: it is closed so that the "
          "server's memory stays bounded; read the stream promptly"));
      return false;
    }
    pending_.push_back(std::move(item));
    pending_bytes_ += bytes;
    return true;
  }

  // For streams where the newest item supersedes the ones before (a job's
  // state): up to `max_waiting` items wait behind the write in flight;
  // past that a newer one replaces the last. A reader that falls far
  // behind skips to the latest and costs the server `max_waiting` items,
  // however long it does not read.
  void PushLatest(Item item, size_t max_waiting) {
    const size_t bytes = bytes_of_ != nullptr ? bytes_of_(item) : 0;
    absl::MutexLock lock(&mu_);
    if (closing_) return;
    if (pending_.size() < max_waiting || pending_.empty()) {
      pending_.push_back(std::move(item));
    } else {
      if (bytes_of_ != nullptr) pending_bytes_ -= bytes_of_(pending_.back());
      pending_.back() = std::move(item);
    }
    pending_bytes_ += bytes;
  }

  // Finish with `status` after what is queued is written. First call wins.
  void Close(absl::Status status) {
    absl::MutexLock lock(&mu_);
    if (closing_) return;
    closing_ = true;
    status_ = std::move(status);
  }

  // The write Next just handed out cannot be made (the server will not
  // hold it): nothing more is written, and the stream finishes with
  // `status`, even if it was closing with another.
  void AbandonWrite(absl::Status status) {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    DropPendingLocked();
    closing_ = true;
    status_ = std::move(status);
  }

  // kWrite: write `*item` and call WriteDone when it completes; `*more` is
  // set when others are queued behind it (the write may then be buffered
  // and go out with them in one syscall).
  // kFinish: finish the call with `*status` (returned once).
  Action Next(Item* item, absl::Status* status, bool* more) {
    return Next(item, status, more, [](std::deque<Item>& queue, Item* out) {
      *out = std::move(queue.front());
      queue.pop_front();
    });
  }

  // Like Next, but `take(queue, item)` moves what the write carries out of
  // the non-empty queue: the front, or several bundled in one (see
  // TakeNextWrite in proto/batch.h).
  template <typename TakeFn>
  Action Next(Item* item, absl::Status* status, bool* more, TakeFn take) {
    absl::MutexLock lock(&mu_);
    if (done_ || writing_ || finished_) return Action::kNothing;
    if (!pending_.empty()) {
      writing_ = true;
      take(pending_, item);
      if (bytes_of_ != nullptr) pending_bytes_ -= bytes_of_(*item);
      *more = !pending_.empty();
      return Action::kWrite;
    }
    if (!closing_) return Action::kNothing;
    finished_ = true;
    *status = status_;
    return Action::kFinish;
  }

  // A write completed; `ok` false means the stream is broken.
  void WriteDone(bool ok) {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (ok) return;
    DropPendingLocked();
    if (!closing_) {
      closing_ = true;
      status_ = absl::UnavailableError("the stream broke while writing");
    }
  }

  // gRPC is done with the call: never act again.
  void SetDone() {
    absl::MutexLock lock(&mu_);
    done_ = true;
    DropPendingLocked();
  }

  // With keep_dropped: the items that will never be written, since the
  // last call.
  std::deque<Item> TakeDropped() {
    absl::MutexLock lock(&mu_);
    return std::exchange(dropped_, {});
  }

 private:
  void DropPendingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (keep_dropped_) {
      for (Item& item : pending_) dropped_.push_back(std::move(item));
    }
    pending_.clear();
    pending_bytes_ = 0;
  }

  const size_t max_pending_;
  const size_t max_bytes_;
  const BytesFn bytes_of_;
  const bool keep_dropped_;
  absl::Mutex mu_;
  std::deque<Item> pending_ ABSL_GUARDED_BY(mu_);
  std::deque<Item> dropped_ ABSL_GUARDED_BY(mu_);  // with keep_dropped_
  size_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // bytes_of_ the pending
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry

#endif  // FERRY_SERVER_WRITE_QUEUE_H_
