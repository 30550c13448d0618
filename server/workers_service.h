#ifndef FERRY_SERVER_WORKERS_SERVICE_H_
#define FERRY_SERVER_WORKERS_SERVICE_H_

#include "ferry/v1/workers.grpc.pb.h"
#include "server/access.h"
#include "server/core/broker.h"

namespace ferry {

// The worker API (ferry.v1.Workers): the Connect stream (one WorkerStream
// per worker process, see worker_stream.h) and the unary Lease, Heartbeat
// and Complete for clients that do not want a stream.
class WorkersService final : public v1::Workers::CallbackService {
 public:
  // `broker` and `access` are not owned and must outlive the service.
  WorkersService(Broker* broker, Access* access)
      : broker_(broker), access_(access) {}

  grpc::ServerBidiReactor<v1::WorkerMessage, v1::ServerMessage>* Connect(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* Lease(grpc::CallbackServerContext* ctx,
                                  const v1::LeaseRequest* request,
                                  v1::LeaseResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) override;
  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* ctx,
                                     const v1::CompleteRequest* request,
                                     v1::CompleteResponse* response) override;

 private:
  Broker* const broker_;
  Access* const access_;
};

// For a caller limited to some queues, the job leased under `token` must
// be in one of them: PERMISSION_DENIED naming `what` if not. An unknown
// lease passes (the broker answers for it). Stream and unary alike: a
// lease token must not let a worker reach into another queue.
absl::Status CheckLeaseScope(Broker& broker, const Caller& caller,
                             const std::string& token, absl::string_view what);

// Checks a Result (stream or unary) and turns it into an Outcome. An output
// over the payload limit becomes a non-retryable failure that says so, so
// that the job ends visibly instead of the worker resending forever.
absl::StatusOr<Outcome> OutcomeFromResult(const v1::Result& result,
                                          int64_t max_output_bytes);

}  // namespace ferry

#endif  // FERRY_SERVER_WORKERS_SERVICE_H_
