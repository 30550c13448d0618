#include "server/worker_stream.h"

#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/log_format.h"
#include "base/status_macros.h"
#include "proto/batch.h"
#include "proto/grpc_status.h"
#include "server/convert.h"
#include "server/validate.h"
#include "server/workers_service.h"

namespace ferry {

WorkerStream::WorkerStream(Broker* broker, grpc::CallbackServerContext* ctx)
    : broker_(broker), peer_(ctx->peer()) {}

void WorkerStream::Start(std::shared_ptr<WorkerStream> self,
                         absl::StatusOr<Caller> caller) {
  self_ = std::move(self);
  if (!caller.ok()) {
    End(caller.status());
    return;
  }
  caller_ = *std::move(caller);
  StartRead(&in_);
}

namespace {

// Calls `fn` with each assignment `message` carries, a batch's included.
template <typename Fn>
void ForEachAssignment(const v1::ServerMessage& message, Fn fn) {
  if (message.has_assignment()) fn(message.assignment());
  for (const v1::ServerMessage& inner : message.batch().messages()) {
    if (inner.has_assignment()) fn(inner.assignment());
  }
}

}  // namespace

size_t WorkerStream::PayloadBytes(const v1::ServerMessage& message) {
  size_t bytes = 0;
  ForEachAssignment(message, [&bytes](const v1::Assignment& assignment) {
    bytes += assignment.job().payload().size();
  });
  return bytes;
}

void WorkerStream::PutBackUnsent() {
  std::vector<std::string> tokens;
  for (const v1::ServerMessage& message : writes_.TakeDropped()) {
    ForEachAssignment(message, [&tokens](const v1::Assignment& assignment) {
      tokens.push_back(assignment.lease_token());
    });
  }
  if (tokens.empty()) return;
  broker_->PutBackUndelivered(
      tokens,
      "assignments queued for a worker stream that ended were never "
      "sent");
}

void WorkerStream::Push(WorkerEvent event) {
  if (!writes_.Push(ToServerMessage(std::move(event)))) {
    overflowed_.store(true);
  }
}

void WorkerStream::Close(absl::Status status) {
  writes_.Close(std::move(status));
}

void WorkerStream::Kick() {
  if (overflowed_.exchange(false)) {
    // The worker stopped reading: end its session, so that nothing more is
    // dispatched to a stream that would only queue it.
    spdlog::warn(
        "worker stream not reading, session ended peer={} queued_max={} "
        "queued_bytes_max={}",
        peer_, kMaxQueuedWorkerMessages, kMaxQueuedWorkerBytes);
    // (The stream's status is the queue's own RESOURCE_EXHAUSTED, set by
    // the overflowing push; the first close wins.)
    End(absl::OkStatus());
    PutBackUnsent();
    return;
  }
  absl::Status finish;
  bool more = false;
  const bool batches = batches_.load();
  // Messages queued together (the acks of one commit, say) leave as one
  // batch if the worker takes batches, else in one write to the socket.
  switch (writes_.Next(
      &out_, &finish, &more,
      [batches](std::deque<v1::ServerMessage>& queue, v1::ServerMessage* out) {
        TakeNextWrite(queue, batches, out);
      })) {
    case WriteQueue<v1::ServerMessage>::Action::kWrite:
      StartWrite(&out_, more ? grpc::WriteOptions().set_buffer_hint()
                             : grpc::WriteOptions());
      break;
    case WriteQueue<v1::ServerMessage>::Action::kFinish:
      Finish(ToGrpcStatus(finish));
      break;
    case WriteQueue<v1::ServerMessage>::Action::kNothing:
      break;
  }
}

void WorkerStream::OnWriteDone(bool ok) {
  // The first write is the Welcome; it always goes alone.
  if (accepts_batches_.load()) batches_.store(true);
  writes_.WriteDone(ok);
  if (!ok) {
    // Nothing more can be sent: end the session now, not when the read
    // side notices, so that no job is dispatched to this stream meanwhile.
    End(absl::UnavailableError("the stream broke while writing"));
  }
  // Also after a failed write: the stream may have been ended while this
  // write was stuck (a reader that stopped), and only now can it finish.
  Kick();
}

void WorkerStream::OnReadDone(bool ok) {
  if (!ok) {
    // The worker closed its side, or the connection broke.
    End(absl::OkStatus());
    return;
  }
  absl::Status status = Handle(in_);
  if (!status.ok()) {
    End(std::move(status));
    return;
  }
  StartRead(&in_);
}

void WorkerStream::OnCancel() {
  End(absl::CancelledError("the stream was cancelled"));
  Kick();  // if it was ended before, it may still have to finish
}

void WorkerStream::OnDone() {
  End(absl::CancelledError("done"));
  writes_.SetDone();
  PutBackUnsent();
  std::shared_ptr<WorkerStream> keep = std::move(self_);
}

void WorkerStream::End(absl::Status status) {
  uint64_t session;
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return;
    ended_ = true;
    session = session_;
  }
  if (session != 0) broker_->CloseSession(session);
  Close(std::move(status));
  Kick();
}

absl::Status WorkerStream::Handle(const v1::WorkerMessage& msg) {
  uint64_t session;
  {
    absl::MutexLock lock(&mu_);
    session = session_;
  }
  if (msg.has_hello()) {
    if (session != 0) {
      return absl::InvalidArgumentError("Hello was sent twice on one stream");
    }
    return Hello(msg.hello());
  }
  if (session == 0) {
    return absl::InvalidArgumentError(
        "the first message on Workers.Connect must be a Hello");
  }
  return HandleInSession(session, msg);
}

absl::Status WorkerStream::HandleInSession(uint64_t session,
                                           const v1::WorkerMessage& msg) {
  switch (msg.msg_case()) {
    case v1::WorkerMessage::kCredit:
      broker_->AddCredit(session, msg.credit().credits(), msg.credit().reset());
      return absl::OkStatus();
    case v1::WorkerMessage::kHeartbeat:
      if (msg.heartbeat().lease_tokens_size() +
              msg.heartbeat().progress_size() >
          kMaxHeldLeases) {
        return absl::InvalidArgumentError(absl::StrCat(
            "a Heartbeat may name at most ", kMaxHeldLeases, " leases"));
      }
      for (const std::string& token : msg.heartbeat().lease_tokens()) {
        FERRY_RETURN_IF_ERROR(
            CheckLeaseScope(*broker_, caller_, token, "Heartbeat"));
      }
      for (const v1::ProgressUpdate& update : msg.heartbeat().progress()) {
        FERRY_RETURN_IF_ERROR(CheckLeaseScope(
            *broker_, caller_, update.lease_token(), "Heartbeat"));
      }
      broker_->Heartbeat(session, FromProto(msg.heartbeat()));
      return absl::OkStatus();
    case v1::WorkerMessage::kBatch:
      for (const v1::WorkerMessage& inner : msg.batch().messages()) {
        if (inner.has_hello() || inner.has_batch()) {
          return absl::InvalidArgumentError(
              "a WorkerMessage batch may not hold a Hello or another batch");
        }
        FERRY_RETURN_IF_ERROR(HandleInSession(session, inner));
      }
      return absl::OkStatus();
    case v1::WorkerMessage::kResult: {
      FERRY_ASSIGN_OR_RETURN(
          Outcome outcome,
          OutcomeFromResult(msg.result(),
                            broker_->options().policy.max_payload_bytes));
      FERRY_RETURN_IF_ERROR(CheckLeaseScope(
          *broker_, caller_, msg.result().lease_token(), "Result"));
      broker_->Complete(session, msg.result().lease_token(), std::move(outcome),
                        msg.result().credits());
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(
          "empty WorkerMessage: set one of hello, credit, heartbeat, result, "
          "batch");
  }
}

absl::Status WorkerStream::Hello(const v1::Hello& hello) {
  FERRY_RETURN_IF_ERROR(ValidateName("worker_id", hello.worker_id()));
  WorkerIdentity identity;
  FERRY_ASSIGN_OR_RETURN(identity.queues,
                         ValidateWorkerQueues("Hello.queues", hello.queues()));
  for (const std::string& queue : identity.queues) {
    FERRY_RETURN_IF_ERROR(caller_.CheckQueue(queue, "Hello.queues"));
  }
  FERRY_RETURN_IF_ERROR(ValidateLabels("worker label", hello.labels()));
  if (hello.held_leases_size() > kMaxHeldLeases) {
    return absl::InvalidArgumentError("too many held_leases");
  }
  identity.worker_id = hello.worker_id();
  identity.hostname = hello.hostname().substr(0, kMaxHostnameLength);
  identity.pid = hello.pid();
  identity.version = hello.version().substr(0, kMaxVersionLength);
  identity.labels.insert(hello.labels().begin(), hello.labels().end());
  identity.peer = peer_;
  accepts_batches_.store(hello.accepts_batches());
  std::vector<HeldLease> held;
  for (const v1::HeldLease& lease : hello.held_leases()) {
    FERRY_RETURN_IF_ERROR(CheckLeaseScope(
        *broker_, caller_, lease.lease_token(), "Hello.held_leases"));
    int64_t job_id = 0;
    if (!lease.job_id().empty()) {
      absl::StatusOr<int64_t> id = ParseJobId(lease.job_id());
      if (id.ok()) job_id = *id;
    }
    held.push_back(HeldLease{job_id, lease.lease_token()});
  }
  FERRY_ASSIGN_OR_RETURN(
      uint64_t session,
      broker_->OpenSession(std::move(identity), std::move(held),
                           hello.initial_credits(), shared_from_this()));
  bool ended;
  {
    absl::MutexLock lock(&mu_);
    session_ = session;
    ended = ended_;
  }
  // Cancelled while registering: let go of the session now.
  if (ended) broker_->CloseSession(session);
  return absl::OkStatus();
}

}  // namespace ferry
