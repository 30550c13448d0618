#include "server/workers_service.h"

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/convert.h"
#include "server/service_util.h"
#include "server/validate.h"
#include "server/worker_stream.h"

namespace ferry {
namespace {

// A waiting Lease call. If its caller goes away (cancels, passes its
// deadline, loses the connection), the broker stops holding jobs for it:
// without this, the next job would be leased to nobody and sit RUNNING
// until its lease expired.
class LeaseReactor final : public grpc::ServerUnaryReactor {
 public:
  LeaseReactor(Broker* broker, grpc::CallbackServerContext* ctx)
      : broker_(broker), ctx_(ctx) {}

  // Set before the reactor is returned to gRPC, so before any OnCancel.
  void set_handle(uint64_t handle) { handle_ = handle; }

  // Fills the response and finishes the call; gRPC's Finish orders this
  // before OnDone.
  void Answer(std::vector<Assignment>& granted, v1::LeaseResponse* response) {
    for (Assignment& assignment : granted) {
      answered_.push_back(assignment.lease_token);
      ToProto(std::move(assignment), response->add_assignments());
    }
  }

  void OnCancel() override {
    if (handle_ != 0) broker_->CancelLease(handle_);
  }
  void OnDone() override {
    // Cancelled after the broker answered, or the response could not be
    // sent: the caller never saw these leases.
    if (!answered_.empty() && ctx_->IsCancelled()) {
      broker_->PutBackUndelivered(
          answered_,
          "a Lease response did not reach its caller (cancelled, deadline, "
          "disconnect or too large)");
    }
    delete this;
  }

 private:
  Broker* const broker_;
  grpc::CallbackServerContext* const ctx_;
  uint64_t handle_ = 0;
  std::vector<std::string> answered_;
};

}  // namespace

absl::StatusOr<Outcome> OutcomeFromResult(const v1::Result& result,
                                          int64_t max_output_bytes) {
  if (result.lease_token().empty()) {
    return absl::InvalidArgumentError("Result.lease_token is required");
  }
  Outcome outcome;
  switch (result.outcome_case()) {
    case v1::Result::kSuccess:
      if (static_cast<int64_t>(result.success().output().size()) >
          max_output_bytes) {
        outcome.success = false;
        outcome.retryable = false;
        outcome.error = OutputOverLimitError(result.success().output().size(),
                                             max_output_bytes);
        return outcome;
      }
      outcome.success = true;
      outcome.output = result.success().output();
      return outcome;
    case v1::Result::kFailure:
      outcome.success = false;
      outcome.error =
          result.failure().message().substr(0, kMaxErrorMessageLength);
      outcome.retryable = result.failure().retryable();
      return outcome;
    default:
      return absl::InvalidArgumentError(
          "Result needs an outcome: set success or failure");
  }
}

absl::Status CheckLeaseScope(Broker& broker, const Caller& caller,
                             const std::string& token, absl::string_view what) {
  if (!caller.Scoped()) return absl::OkStatus();
  const std::optional<std::string> queue = broker.LeaseQueue(token);
  if (!queue.has_value()) return absl::OkStatus();
  return caller.CheckQueue(*queue, what);
}

grpc::ServerBidiReactor<v1::WorkerMessage, v1::ServerMessage>*
WorkersService::Connect(grpc::CallbackServerContext* ctx) {
  auto stream = std::make_shared<WorkerStream>(broker_, ctx);
  WorkerStream* raw = stream.get();
  // The opening call's token stands for every message on the stream.
  raw->Start(std::move(stream),
             access_->Check(*ctx, Role::kWork, "Workers.Connect"));
  return raw;
}

grpc::ServerUnaryReactor* WorkersService::Lease(
    grpc::CallbackServerContext* ctx, const v1::LeaseRequest* request,
    v1::LeaseResponse* response) {
  absl::StatusOr<Caller> caller =
      access_->Check(*ctx, Role::kWork, "Workers.Lease");
  if (!caller.ok()) return Finish(ctx, caller.status());
  if (absl::Status s = ValidateName("worker_id", request->worker_id());
      !s.ok()) {
    return Finish(ctx, s);
  }
  absl::StatusOr<std::vector<std::string>> queues =
      ValidateWorkerQueues("queues", request->queues());
  if (!queues.ok()) return Finish(ctx, queues.status());
  for (const std::string& queue : *queues) {
    if (absl::Status s = caller->CheckQueue(queue, "queues"); !s.ok()) {
      return Finish(ctx, s);
    }
  }
  WorkerIdentity identity;
  identity.worker_id = request->worker_id();
  identity.peer = ctx->peer();
  identity.queues = *std::move(queues);
  if (request->max_jobs() > kMaxLeaseJobs) {
    return Finish(ctx, absl::InvalidArgumentError(absl::StrCat(
                           "max_jobs must be at most ", kMaxLeaseJobs)));
  }
  absl::Duration wait = absl::ZeroDuration();
  if (request->has_wait()) {
    if (absl::Status s = ValidateDuration("wait", request->wait()); !s.ok()) {
      return Finish(ctx, s);
    }
    wait = FromProto(request->wait());
    if (wait < absl::ZeroDuration() || wait > kMaxLeaseWait) {
      return Finish(ctx, absl::InvalidArgumentError(absl::StrCat(
                             "wait must be between 0 and ",
                             absl::ToInt64Seconds(kMaxLeaseWait), " seconds")));
    }
  }
  const int64_t max_jobs = request->max_jobs() == 0 ? 1 : request->max_jobs();
  auto* reactor = new LeaseReactor(broker_, ctx);
  reactor->set_handle(broker_->Lease(
      std::move(identity), max_jobs, broker_->Now() + wait,
      FinishWith<std::vector<Assignment>>(
          reactor, [reactor, response](std::vector<Assignment>& granted) {
            reactor->Answer(granted, response);
          })));
  return reactor;
}

grpc::ServerUnaryReactor* WorkersService::Heartbeat(
    grpc::CallbackServerContext* ctx, const v1::HeartbeatRequest* request,
    v1::HeartbeatResponse* response) {
  absl::StatusOr<Caller> caller =
      access_->Check(*ctx, Role::kWork, "Workers.Heartbeat");
  if (!caller.ok()) return Finish(ctx, caller.status());
  if (request->lease_token().empty()) {
    return Finish(ctx, absl::InvalidArgumentError("lease_token is required"));
  }
  if (absl::Status s = CheckLeaseScope(*broker_, *caller,
                                       request->lease_token(), "lease_token");
      !s.ok()) {
    return Finish(ctx, s);
  }
  std::optional<Progress> progress;
  if (request->has_progress()) {
    if (request->progress().percent() > 100) {
      return Finish(ctx, absl::InvalidArgumentError(
                             "progress.percent must be between 0 and 100"));
    }
    progress = FromProto(request->progress());
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  broker_->HeartbeatLease(
      request->lease_token(), std::move(progress),
      FinishWith<absl::Time>(reactor, [response](absl::Time deadline) {
        ToProto(deadline, response->mutable_lease_deadline());
      }));
  return reactor;
}

grpc::ServerUnaryReactor* WorkersService::Complete(
    grpc::CallbackServerContext* ctx, const v1::CompleteRequest* request,
    v1::CompleteResponse* response) {
  absl::StatusOr<Caller> caller =
      access_->Check(*ctx, Role::kWork, "Workers.Complete");
  if (!caller.ok()) return Finish(ctx, caller.status());
  absl::StatusOr<Outcome> outcome = OutcomeFromResult(
      request->result(), broker_->options().policy.max_payload_bytes);
  if (!outcome.ok()) return Finish(ctx, outcome.status());
  if (absl::Status s =
          CheckLeaseScope(*broker_, *caller, request->result().lease_token(),
                          "result.lease_token");
      !s.ok()) {
    return Finish(ctx, s);
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  broker_->CompleteLease(
      request->result().lease_token(), *std::move(outcome),
      FinishWith<JobState>(reactor, [response](JobState state) {
        response->set_state(ToProto(state));
      }));
  return reactor;
}

}  // namespace ferry
