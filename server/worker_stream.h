#ifndef FERRY_SERVER_WORKER_STREAM_H_
#define FERRY_SERVER_WORKER_STREAM_H_

#include <atomic>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "ferry/v1/workers.grpc.pb.h"
#include "proto/protocol_limits.h"
#include "server/access.h"
#include "server/core/broker.h"
#include "server/write_queue.h"

namespace ferry {

// One Workers.Connect stream: reads worker messages and hands them to the
// broker, and writes what the broker pushes, one message at a time, in
// order. Owns itself until gRPC calls OnDone; the broker may hold it a bit
// longer (until CloseSession), after which pushes are dropped.
class WorkerStream final
    : public grpc::ServerBidiReactor<v1::WorkerMessage, v1::ServerMessage>,
      public WorkerSink,
      public std::enable_shared_from_this<WorkerStream> {
 public:
  // `broker` is not owned and must outlive the stream.
  WorkerStream(Broker* broker, grpc::CallbackServerContext* ctx);

  // Starts reading, for `caller` (the opening call's token), or ends the
  // stream at once with the caller's error. `self` keeps the stream alive
  // until OnDone.
  void Start(std::shared_ptr<WorkerStream> self, absl::StatusOr<Caller> caller);

  // WorkerSink: events become wire messages here, in the order pushed.
  void Push(WorkerEvent event) override;
  void Close(absl::Status status) override;
  void Kick() override;

  // Reactor.
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // The payload bytes of the assignments in `message` (a batch's too):
  // what a queue of messages for a worker costs.
  static size_t PayloadBytes(const v1::ServerMessage& message);
  // Handles one message; an error ends the stream with it.
  absl::Status Handle(const v1::WorkerMessage& msg);
  // A message after the Hello, for the open `session`.
  absl::Status HandleInSession(uint64_t session, const v1::WorkerMessage& msg);
  absl::Status Hello(const v1::Hello& hello);
  // Detaches from the broker and finishes with `status` once queued
  // messages are written. Idempotent.
  void End(absl::Status status);

  Broker* const broker_;
  const std::string peer_;
  Caller caller_;                       // set before the first read
  std::shared_ptr<WorkerStream> self_;  // until OnDone
  v1::WorkerMessage in_;                // owned by the read in flight
  v1::ServerMessage out_;               // owned by the write in flight

  // Hands the leases of assignments that will never be sent back to the
  // broker, which puts their jobs back in line without using an attempt.
  void PutBackUnsent();

  WriteQueue<v1::ServerMessage> writes_{kMaxQueuedWorkerMessages,
                                        kMaxQueuedWorkerBytes, &PayloadBytes,
                                        /*keep_dropped=*/true};
  // Set by a Push that overflowed writes_ (under the broker's lock);
  // Kick ends the session, outside it.
  std::atomic<bool> overflowed_{false};

  // The worker understands ServerMessage.batch (its Hello said so) ...
  std::atomic<bool> accepts_batches_{false};
  // ... and the Welcome is out: later writes may bundle queued messages.
  std::atomic<bool> batches_{false};

  absl::Mutex mu_;
  uint64_t session_ ABSL_GUARDED_BY(mu_) = 0;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ferry

#endif  // FERRY_SERVER_WORKER_STREAM_H_
