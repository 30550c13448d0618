#ifndef FERRY_SERVER_CORE_DISPATCHER_H_
#define FERRY_SERVER_CORE_DISPATCHER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "storage/store.h"

namespace ferry {

// Who a worker says it is (a stream's Hello, a unary Lease request).
struct WorkerIdentity {
  std::string worker_id;
  std::string hostname;
  uint32_t pid = 0;
  std::string version;
  std::vector<std::string> queues;
  Labels labels;
  std::string peer;
};

// Something dispatch hands jobs to, one per credit: a worker stream's
// session or a waiting unary Lease call. Owned by its table (SessionTable,
// LongPolls), which registers it with the Dispatcher for as long as it
// lives.
struct Taker {
  enum class Kind { kStream, kLongPoll };
  Kind kind = Kind::kStream;
  uint64_t handle = 0;
  WorkerIdentity identity;
  int64_t credits = 0;
  int64_t leases = 0;    // active and granting leases held
  int64_t granting = 0;  // lease writes in flight
  // Counts the worker's credit resets: a lease write that fails gives its
  // credit back only if no reset came since it was granted.
  uint64_t credit_epoch = 0;
  // hungry_in[i]: the taker is in the line of identity.queues[i].
  std::vector<bool> hungry_in;
};

// The ready side of dispatch: per queue, the jobs ready to run (higher
// priority first, then earlier run_at, then id), whether the queue is
// paused, and the line of takers that may have credit for it. It matches
// the two; the broker writes the leases. Knows no store and no clock.
//
// Not thread-safe: the broker calls it under its lock.
class Dispatcher {
 public:
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
  static ReadyKey KeyOf(int32_t priority, absl::Time run_at, int64_t id) {
    return ReadyKey{-priority, absl::ToUnixMicros(run_at), id};
  }
  static ReadyKey KeyOf(const JobKey& key) {
    return KeyOf(key.priority, key.run_at, key.id);
  }

  // A ready job and a taker with credit, both taken off their lines.
  struct Match {
    Taker* taker;
    ReadyKey job;
  };

  // ---- ready jobs ----

  void AddReady(const std::string& queue, const ReadyKey& key);
  // No-op if `key` is not ready in `queue`.
  void EraseReady(const std::string& queue, const ReadyKey& key);
  void SetPaused(const std::string& queue, bool paused);

  // The next match in `queue`, or nullopt when it is paused, has no ready
  // job, or no taker with credit.
  std::optional<Match> Next(const std::string& queue);
  // A taker for a job about to be stored in `queue` that could go straight
  // to it: the queue is not paused and has nothing ready ahead of it.
  // nullptr if there is none.
  Taker* TakerForNewJob(const std::string& queue);

  // Queues held: those with ready jobs, takers waiting, or paused.
  size_t queue_count() const { return queues_.size(); }
  bool Holds(const std::string& queue) const { return queues_.contains(queue); }

  // What QueueStats shows of a queue that memory knows.
  struct QueueView {
    const std::string* name;
    bool paused;
    // run_at of the oldest ready job, if any is ready.
    std::optional<absl::Time> oldest_ready;
  };
  void ForEachQueue(const std::function<void(const QueueView&)>& visit) const;

  // ---- takers ----

  // `taker` must stay valid until Unregister(taker->handle).
  void Register(Taker* taker);
  void Unregister(uint64_t handle);
  // The registered taker `handle` (a session or a long-poll), or nullptr.
  Taker* Find(uint64_t handle) const;
  // Puts a taker that has credit in the line of each of its queues that it
  // is not in yet.
  void MarkHungry(Taker& taker);

 private:
  struct QueueState {
    absl::btree_set<ReadyKey> ready;
    // Takers that may have credit; checked lazily when popped.
    std::deque<uint64_t> hungry;
    bool paused = false;
  };

  using Queues = absl::flat_hash_map<std::string, QueueState>;

  Taker* PopHungry(const std::string& name, QueueState& queue);
  // Drops a queue with nothing ready, no taker waiting and not paused: a
  // name used once costs nothing once its jobs have gone.
  void ForgetIfIdle(Queues::iterator it);

  Queues queues_;
  absl::flat_hash_map<uint64_t, Taker*> takers_;
};

}  // namespace ferry

#endif  // FERRY_SERVER_CORE_DISPATCHER_H_
