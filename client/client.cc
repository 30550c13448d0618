#include "client/client.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "proto/grpc_status.h"
#include "proto/time_util.h"

namespace ferry {

v1::JobSpec SubmitOptions::ToSpec() const {
  v1::JobSpec spec;
  spec.set_queue(queue);
  spec.set_kind(kind);
  spec.set_payload(payload);
  spec.set_content_type(content_type);
  spec.mutable_labels()->insert(labels.begin(), labels.end());
  spec.set_priority(priority);
  if (delay) ToProto(*delay, spec.mutable_delay());
  if (run_at) ToProto(*run_at, spec.mutable_run_at());
  if (max_attempts > 0) spec.mutable_retry()->set_max_attempts(max_attempts);
  if (initial_backoff) {
    ToProto(*initial_backoff, spec.mutable_retry()->mutable_initial_backoff());
  }
  if (max_backoff) {
    ToProto(*max_backoff, spec.mutable_retry()->mutable_max_backoff());
  }
  if (lease_ttl) ToProto(*lease_ttl, spec.mutable_lease_ttl());
  if (timeout) ToProto(*timeout, spec.mutable_timeout());
  spec.set_idempotency_key(idempotency_key);
  return spec;
}

// Calls `call` page after page (each at most 4 MiB), from `request`,
// handing each response to `take`, until one has no next_page_token.
// Bounded: the broker caps what it lists.
template <typename Response, typename Request, typename Call, typename Take>
absl::Status Client::AllPages(Request request, Call call, Take take) const {
  for (int page = 0; page < 100000; ++page) {
    Response response;
    grpc::Status status = call(request, &response);
    if (!status.ok()) return Error(status);
    take(response);
    if (response.next_page_token().empty()) return absl::OkStatus();
    request.set_page_token(response.next_page_token());
  }
  return absl::OkStatus();
}

Client::Client(ClientOptions options)
    : broker_(std::move(options.broker)), timeout_(options.timeout) {
  std::shared_ptr<grpc::Channel> channel = std::move(options.channel);
  if (channel == nullptr) {
    grpc::ChannelArguments args;
    // As the worker SDK: a job's payload or result may be larger than
    // gRPC's default 4 MiB receive limit (ferryd --max_payload_bytes).
    args.SetMaxReceiveMessageSize(-1);
    absl::StatusOr<std::shared_ptr<grpc::Channel>> opened =
        OpenChannel(broker_, options.connect, args);
    if (!opened.ok()) {
      // Every call returns this; the stub is never used.
      setup_ = opened.status();
      return;
    }
    channel = *std::move(opened);
  }
  stub_ = v1::Jobs::NewStub(channel);
}

std::unique_ptr<grpc::ClientContext> Client::Context(
    absl::Duration extra) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    absl::ToChronoMilliseconds(timeout_ + extra));
  return ctx;
}

absl::Status Client::Error(const grpc::Status& status) const {
  absl::Status error = FromGrpcStatus(status);
  if (absl::IsUnavailable(error) || absl::IsDeadlineExceeded(error)) {
    return absl::Status(
        error.code(), absl::StrCat("broker ", broker_, ": ", error.message()));
  }
  return error;
}

absl::StatusOr<SubmitResult> Client::Submit(const SubmitOptions& options) {
  v1::SubmitRequest request;
  *request.mutable_job() = options.ToSpec();
  v1::SubmitResponse response;
  FERRY_RETURN_IF_ERROR(setup_);
  grpc::Status status = stub_->Submit(Context().get(), request, &response);
  if (!status.ok()) return Error(status);
  return SubmitResult{std::move(*response.mutable_job()), response.created()};
}

absl::StatusOr<std::vector<SubmitResult>> Client::SubmitBatch(
    const std::vector<SubmitOptions>& jobs) {
  v1::SubmitBatchRequest request;
  for (const SubmitOptions& job : jobs) *request.add_jobs() = job.ToSpec();
  v1::SubmitBatchResponse response;
  FERRY_RETURN_IF_ERROR(setup_);
  grpc::Status status = stub_->SubmitBatch(Context().get(), request, &response);
  if (!status.ok()) return Error(status);
  std::vector<SubmitResult> results;
  for (v1::SubmitResponse& result : *response.mutable_results()) {
    results.push_back(
        SubmitResult{std::move(*result.mutable_job()), result.created()});
  }
  return results;
}

absl::StatusOr<v1::Job> Client::Get(absl::string_view job_id,
                                    v1::JobView view) {
  v1::GetRequest request;
  request.set_job_id(std::string(job_id));
  request.set_view(view);
  v1::GetResponse response;
  FERRY_RETURN_IF_ERROR(setup_);
  grpc::Status status = stub_->Get(Context().get(), request, &response);
  if (!status.ok()) return Error(status);
  return std::move(*response.mutable_job());
}

absl::StatusOr<v1::ListResponse> Client::List(const v1::ListRequest& request) {
  v1::ListResponse response;
  FERRY_RETURN_IF_ERROR(setup_);
  grpc::Status status = stub_->List(Context().get(), request, &response);
  if (!status.ok()) return Error(status);
  return response;
}

absl::Status Client::Watch(absl::string_view job_id,
                           const std::function<bool(const v1::Job&)>& on_update,
                           std::optional<absl::Duration> timeout) {
  grpc::ClientContext ctx;
  if (timeout) {
    ctx.set_deadline(std::chrono::system_clock::now() +
                     absl::ToChronoMilliseconds(*timeout));
  }
  v1::WatchRequest request;
  request.set_job_id(std::string(job_id));
  FERRY_RETURN_IF_ERROR(setup_);
  std::unique_ptr<grpc::ClientReader<v1::WatchResponse>> reader =
      stub_->Watch(&ctx, request);
  v1::WatchResponse update;
  while (reader->Read(&update)) {
    if (!on_update(update.job())) {
      ctx.TryCancel();
      reader->Finish().IgnoreError();
      return absl::OkStatus();
    }
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) return Error(status);
  return absl::OkStatus();
}

absl::StatusOr<v1::WaitResponse> Client::Wait(absl::string_view job_id,
                                              absl::Duration timeout) {
  v1::WaitRequest request;
  request.set_job_id(std::string(job_id));
  ToProto(timeout, request.mutable_timeout());
  v1::WaitResponse response;
  FERRY_RETURN_IF_ERROR(setup_);
  grpc::Status status = stub_->Wait(Context(timeout).get(), request, &response);
  if (!status.ok()) return Error(status);
  return response;
}

absl::StatusOr<v1::Job> Client::Cancel(absl::string_view job_id,
                                       absl::string_view reason) {
  v1::CancelRequest request;
  request.set_job_id(std::string(job_id));
  request.set_reason(std::string(reason));
  v1::CancelResponse response;
  FERRY_RETURN_IF_ERROR(setup_);
  grpc::Status status = stub_->Cancel(Context().get(), request, &response);
  if (!status.ok()) return Error(status);
  return std::move(*response.mutable_job());
}

absl::StatusOr<v1::Job> Client::Retry(absl::string_view job_id) {
  v1::RetryRequest request;
  request.set_job_id(std::string(job_id));
  v1::RetryResponse response;
  FERRY_RETURN_IF_ERROR(setup_);
  grpc::Status status = stub_->Retry(Context().get(), request, &response);
  if (!status.ok()) return Error(status);
  return std::move(*response.mutable_job());
}

absl::StatusOr<std::vector<v1::QueueInfo>> Client::QueueStats(
    absl::string_view queue) {
  FERRY_RETURN_IF_ERROR(setup_);
  v1::QueueStatsRequest request;
  request.set_queue(std::string(queue));
  std::vector<v1::QueueInfo> queues;
  FERRY_RETURN_IF_ERROR(AllPages<v1::QueueStatsResponse>(
      request,
      [this](const v1::QueueStatsRequest& r, v1::QueueStatsResponse* out) {
        return stub_->QueueStats(Context().get(), r, out);
      },
      [&queues](v1::QueueStatsResponse& page) {
        for (v1::QueueInfo& info : *page.mutable_queues()) {
          queues.push_back(std::move(info));
        }
      }));
  return queues;
}

absl::Status Client::PauseQueue(absl::string_view queue) {
  v1::PauseQueueRequest request;
  request.set_queue(std::string(queue));
  v1::PauseQueueResponse response;
  FERRY_RETURN_IF_ERROR(setup_);
  grpc::Status status = stub_->PauseQueue(Context().get(), request, &response);
  return status.ok() ? absl::OkStatus() : Error(status);
}

absl::Status Client::ResumeQueue(absl::string_view queue) {
  v1::ResumeQueueRequest request;
  request.set_queue(std::string(queue));
  v1::ResumeQueueResponse response;
  FERRY_RETURN_IF_ERROR(setup_);
  grpc::Status status = stub_->ResumeQueue(Context().get(), request, &response);
  return status.ok() ? absl::OkStatus() : Error(status);
}

absl::StatusOr<uint64_t> Client::PurgeQueue(absl::string_view queue,
                                            v1::JobState state) {
  v1::PurgeQueueRequest request;
  request.set_queue(std::string(queue));
  request.set_state(state);
  v1::PurgeQueueResponse response;
  FERRY_RETURN_IF_ERROR(setup_);
  grpc::Status status = stub_->PurgeQueue(Context().get(), request, &response);
  if (!status.ok()) return Error(status);
  return response.purged();
}

absl::StatusOr<std::vector<v1::WorkerInfo>> Client::ListWorkers() {
  FERRY_RETURN_IF_ERROR(setup_);
  std::vector<v1::WorkerInfo> workers;
  FERRY_RETURN_IF_ERROR(AllPages<v1::ListWorkersResponse>(
      v1::ListWorkersRequest(),
      [this](const v1::ListWorkersRequest& r, v1::ListWorkersResponse* out) {
        return stub_->ListWorkers(Context().get(), r, out);
      },
      [&workers](v1::ListWorkersResponse& page) {
        for (v1::WorkerInfo& worker : *page.mutable_workers()) {
          workers.push_back(std::move(worker));
        }
      }));
  return workers;
}

}  // namespace ferry
