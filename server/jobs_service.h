#ifndef FERRY_SERVER_JOBS_SERVICE_H_
#define FERRY_SERVER_JOBS_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "ferry/v1/jobs.grpc.pb.h"
#include "server/access.h"
#include "server/core/broker.h"

namespace ferry {

// Bytes held by writes in flight, shared by many streams, up to a limit.
class ByteBudget {
 public:
  explicit ByteBudget(int64_t limit) : limit_(limit) {}
  // Takes `bytes` if they fit (or nothing else is held: one always goes).
  bool TryTake(int64_t bytes) {
    int64_t held = held_.load(std::memory_order_relaxed);
    do {
      if (held > 0 && held + bytes > limit_) return false;
    } while (!held_.compare_exchange_weak(held, held + bytes));
    return true;
  }
  void Give(int64_t bytes) { held_.fetch_sub(bytes); }
  int64_t limit() const { return limit_; }

 private:
  const int64_t limit_;
  std::atomic<int64_t> held_{0};
};

// Open Watch and Wait calls per connection (gRPC's peer string names one),
// up to a limit, so that one client cannot take every watcher ferryd has.
class PeerCounter {
 public:
  explicit PeerCounter(int64_t limit) : limit_(limit) {}

  // One call's place, given back when it is destroyed; empty if the
  // connection had none left.
  class Slot {
   public:
    Slot() = default;
    Slot(PeerCounter* counter, std::string peer)
        : counter_(counter), peer_(std::move(peer)) {}
    Slot(Slot&& other) noexcept
        : counter_(std::exchange(other.counter_, nullptr)),
          peer_(std::move(other.peer_)) {}
    Slot& operator=(Slot&& other) noexcept {
      std::swap(counter_, other.counter_);
      std::swap(peer_, other.peer_);
      return *this;
    }
    ~Slot() {
      if (counter_ != nullptr) counter_->Give(peer_);
    }
    explicit operator bool() const { return counter_ != nullptr; }

   private:
    PeerCounter* counter_ = nullptr;
    std::string peer_;
  };

  Slot Take(const std::string& peer) {
    absl::MutexLock lock(&mu_);
    int64_t& count = counts_[peer];
    if (count >= limit_) return Slot();
    ++count;
    return Slot(this, peer);
  }
  int64_t limit() const { return limit_; }

 private:
  void Give(const std::string& peer) {
    absl::MutexLock lock(&mu_);
    auto it = counts_.find(peer);
    if (it != counts_.end() && --it->second <= 0) counts_.erase(it);
  }

  const int64_t limit_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, int64_t> counts_ ABSL_GUARDED_BY(mu_);
};

// The client API (ferry.v1.Jobs) over the broker core. Each handler
// validates, calls the core and finishes; docs/protocol.md lists the codes.
class JobsService final : public v1::Jobs::CallbackService {
 public:
  // `broker` and `access` are not owned and must outlive the service.
  // Watch responses with payloads that clients have not read yet hold at
  // most `max_watch_bytes` (past it such a Watch is ended); one connection
  // has at most `max_watchers_per_connection` Watch and Wait calls open.
  JobsService(Broker* broker, Access* access, int64_t max_watch_bytes,
              int64_t max_watchers_per_connection)
      : broker_(broker),
        access_(access),
        watch_bytes_(max_watch_bytes),
        watchers_by_peer_(max_watchers_per_connection) {}

  grpc::ServerUnaryReactor* Submit(grpc::CallbackServerContext* ctx,
                                   const v1::SubmitRequest* request,
                                   v1::SubmitResponse* response) override;
  grpc::ServerUnaryReactor* SubmitBatch(
      grpc::CallbackServerContext* ctx, const v1::SubmitBatchRequest* request,
      v1::SubmitBatchResponse* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx,
                                const v1::GetRequest* request,
                                v1::GetResponse* response) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* ctx,
                                 const v1::ListRequest* request,
                                 v1::ListResponse* response) override;
  grpc::ServerWriteReactor<v1::WatchResponse>* Watch(
      grpc::CallbackServerContext* ctx,
      const v1::WatchRequest* request) override;
  grpc::ServerUnaryReactor* Wait(grpc::CallbackServerContext* ctx,
                                 const v1::WaitRequest* request,
                                 v1::WaitResponse* response) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* ctx,
                                   const v1::CancelRequest* request,
                                   v1::CancelResponse* response) override;
  grpc::ServerUnaryReactor* Retry(grpc::CallbackServerContext* ctx,
                                  const v1::RetryRequest* request,
                                  v1::RetryResponse* response) override;
  grpc::ServerUnaryReactor* QueueStats(
      grpc::CallbackServerContext* ctx, const v1::QueueStatsRequest* request,
      v1::QueueStatsResponse* response) override;
  grpc::ServerUnaryReactor* PauseQueue(
      grpc::CallbackServerContext* ctx, const v1::PauseQueueRequest* request,
      v1::PauseQueueResponse* response) override;
  grpc::ServerUnaryReactor* ResumeQueue(
      grpc::CallbackServerContext* ctx, const v1::ResumeQueueRequest* request,
      v1::ResumeQueueResponse* response) override;
  grpc::ServerUnaryReactor* PurgeQueue(
      grpc::CallbackServerContext* ctx, const v1::PurgeQueueRequest* request,
      v1::PurgeQueueResponse* response) override;
  grpc::ServerUnaryReactor* ListWorkers(
      grpc::CallbackServerContext* ctx, const v1::ListWorkersRequest* request,
      v1::ListWorkersResponse* response) override;

 private:
  grpc::ServerUnaryReactor* SetPaused(grpc::CallbackServerContext* ctx,
                                      const std::string& queue, bool paused,
                                      absl::string_view method);
  // For a caller limited to some queues, job `id` must be in one of them:
  // NOT_FOUND, as for a job that does not exist, if it is not.
  absl::Status CheckVisible(const Caller& caller, int64_t id);
  absl::Status TooManyWatchers() const;

  Broker* const broker_;
  Access* const access_;
  ByteBudget watch_bytes_;
  PeerCounter watchers_by_peer_;
};

}  // namespace ferry

#endif  // FERRY_SERVER_JOBS_SERVICE_H_
