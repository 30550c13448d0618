#include "server/jobs_service.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "server/convert.h"
#include "server/service_util.h"
#include "server/validate.h"
#include "server/write_queue.h"

namespace ferry {
namespace {

// Updates of one job waiting to be written on a Watch stream whose client
// does not read, at most; then the newest replaces the last.
constexpr size_t kMaxWaitingWatchUpdates = 64;

bool WantPayload(v1::JobView view, v1::JobView default_view) {
  if (view == v1::JOB_VIEW_UNSPECIFIED) view = default_view;
  return view == v1::JOB_VIEW_FULL;
}

absl::Status ValidateView(v1::JobView view) {
  if (!v1::JobView_IsValid(view)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown view ", view));
  }
  return absl::OkStatus();
}

// The job a Get, Watch or Wait names, once its id and view are valid.
absl::StatusOr<int64_t> JobToRead(const std::string& job_id, v1::JobView view) {
  FERRY_ASSIGN_OR_RETURN(int64_t id, ParseJobId(job_id));
  FERRY_RETURN_IF_ERROR(ValidateView(view));
  return id;
}

absl::Status ValidateState(v1::JobState state) {
  if (!v1::JobState_IsValid(state)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown state ", state));
  }
  return absl::OkStatus();
}

// The response to Submit: the job without its payload (the client has it).
void FillSubmit(const CreateResult& created, v1::SubmitResponse* response) {
  ToProto(created.job, /*with_payload=*/false, response->mutable_job());
  response->mutable_job()->set_result(created.job.result);
  response->set_created(created.created);
}

// Serializes the updates of one job onto a Watch stream. Lives until gRPC
// is done with the call and the broker has let go of it.
class WatchReactor final : public grpc::ServerWriteReactor<v1::WatchResponse>,
                           public JobSink,
                           public std::enable_shared_from_this<WatchReactor> {
 public:
  WatchReactor(Broker* broker, bool with_payload, ByteBudget* budget,
               PeerCounter::Slot slot)
      : broker_(broker),
        with_payload_(with_payload),
        budget_(budget),
        slot_(std::move(slot)) {}

  // Registers with the broker, or ends the call with `invalid` if set.
  void Start(absl::StatusOr<int64_t> id, std::shared_ptr<WatchReactor> self) {
    self_ = std::move(self);
    absl::StatusOr<uint64_t> handle =
        id.ok()
            ? broker_->Watch(*id, shared_from_this(), absl::InfiniteFuture())
            : absl::StatusOr<uint64_t>(id.status());
    if (!handle.ok()) {
      Close(handle.status());
      Kick();
      return;
    }
    absl::MutexLock lock(&mu_);
    handle_ = *handle;
  }

  // Every change in order, to a client that reads; one that does not keeps
  // kMaxWaitingWatchUpdates queued (the newest last), not every progress
  // report since.
  void Push(JobRecord job) override {
    writes_.PushLatest(std::move(job), kMaxWaitingWatchUpdates);
  }
  void Close(absl::Status status) override { writes_.Close(std::move(status)); }

  void Kick() override {
    JobRecord next;
    absl::Status finish;
    bool more = false;
    switch (writes_.Next(&next, &finish, &more)) {
      case WriteQueue<JobRecord>::Action::kNothing:
        return;
      case WriteQueue<JobRecord>::Action::kFinish:
        Finish(ToGrpcStatus(finish));
        return;
      case WriteQueue<JobRecord>::Action::kWrite:
        break;
    }
    response_.Clear();
    ToProto(next, /*with_payload=*/false, response_.mutable_job());
    if (with_payload_ && !AddPayload(next.id)) {
      writes_.AbandonWrite(absl::ResourceExhaustedError(absl::StrCat(
          "Watch responses with payloads that their clients have not read "
          "hold over ",
          budget_->limit() >> 20,
          " MiB in ferryd: this Watch is ended; read your streams, or watch "
          "with the BASIC view and Get the payload")));
      Kick();
      return;
    }
    // Updates queued together leave in one socket write, as on streams.
    StartWrite(&response_, more ? grpc::WriteOptions().set_buffer_hint()
                                : grpc::WriteOptions());
  }

  void OnWriteDone(bool ok) override {
    budget_->Give(std::exchange(in_flight_bytes_, 0));
    // Let a written payload go now (clearing would keep its capacity),
    // not with the next update or when the call is done.
    if (with_payload_) v1::WatchResponse().Swap(&response_);
    writes_.WriteDone(ok);
    Kick();
  }

  void OnCancel() override {
    Close(absl::CancelledError("cancelled by the client"));
    Kick();
  }

  void OnDone() override {
    writes_.SetDone();
    uint64_t handle;
    {
      absl::MutexLock lock(&mu_);
      handle = handle_;
    }
    broker_->Unwatch(handle);
    std::shared_ptr<WatchReactor> keep = std::move(self_);
  }

 private:
  // Reads the job's payload and result into response_ if the budget holds
  // them; false if it does not. A client that does not read leaves the
  // write, payload and all, in ferryd: our response and gRPC's serialized
  // copy of it. All such writes share one budget, and the most a response
  // can carry is taken from it before the read, so that a burst of new
  // Watch calls cannot read more than the budget either.
  bool AddPayload(int64_t id) {
    const int64_t most =
        2 * 2 * broker_->options().policy.max_payload_bytes;  // copies, fields
    if (!budget_->TryTake(most)) return false;
    absl::StatusOr<JobRecord> full = broker_->Get(id, true);
    if (full.ok()) {
      response_.mutable_job()->set_payload(std::move(full->payload));
      response_.mutable_job()->set_result(std::move(full->result));
    }
    in_flight_bytes_ = std::min<int64_t>(
        most, 2 * static_cast<int64_t>(response_.job().payload().size() +
                                       response_.job().result().size()));
    budget_->Give(most - in_flight_bytes_);
    return true;
  }

  Broker* const broker_;
  const bool with_payload_;
  ByteBudget* const budget_;
  PeerCounter::Slot slot_;              // the connection's, while open
  int64_t in_flight_bytes_ = 0;         // of the write in flight, taken
  std::shared_ptr<WatchReactor> self_;  // until OnDone
  v1::WatchResponse response_;          // owned by the write in flight

  WriteQueue<JobRecord> writes_;

  absl::Mutex mu_;
  uint64_t handle_ ABSL_GUARDED_BY(mu_) = 0;
};

// Completes a Wait call when its job turns terminal or the wait times out.
class WaitSink final : public JobSink {
 public:
  WaitSink(Broker* broker, grpc::ServerUnaryReactor* reactor,
           v1::WaitResponse* response, bool with_payload)
      : broker_(broker),
        reactor_(reactor),
        response_(response),
        with_payload_(with_payload) {}

  void Push(JobRecord job) override {
    absl::MutexLock lock(&mu_);
    last_ = std::move(job);
  }
  void Close(absl::Status status) override {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    status_ = std::move(status);
  }
  void Kick() override {
    JobRecord job;
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (!closed_ || finished_) return;
      finished_ = true;
      job = last_;
      status = status_;
    }
    if (status.ok()) {
      if (with_payload_) {
        absl::StatusOr<JobRecord> full = broker_->Get(job.id, true);
        if (full.ok()) job = *std::move(full);
      }
      ToProto(job, with_payload_, response_->mutable_job());
      response_->set_done(IsTerminal(job.state));
    }
    reactor_->Finish(ToGrpcStatus(status));
  }

 private:
  Broker* const broker_;
  grpc::ServerUnaryReactor* const reactor_;
  v1::WaitResponse* const response_;
  const bool with_payload_;

  absl::Mutex mu_;
  JobRecord last_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

// A Wait call. If its caller goes away (cancels, passes its deadline,
// disconnects) before the job is done, the broker stops watching for it:
// otherwise the watcher would stay until the wait's own timeout, up to an
// hour, and every tick would look at it.
class WaitReactor final : public grpc::ServerUnaryReactor {
 public:
  WaitReactor(Broker* broker, PeerCounter::Slot slot)
      : broker_(broker), slot_(std::move(slot)) {}

  // Set before the reactor is returned to gRPC, so before any OnCancel.
  void set_watch(std::shared_ptr<WaitSink> sink, uint64_t handle) {
    sink_ = std::move(sink);
    handle_ = handle;
  }

  void OnCancel() override {
    if (sink_ == nullptr) return;
    broker_->Unwatch(handle_);
    // Finish (once: the sink keeps count) so that gRPC can let go.
    sink_->Close(absl::CancelledError("the caller went away"));
    sink_->Kick();
  }
  void OnDone() override { delete this; }

 private:
  Broker* const broker_;
  PeerCounter::Slot slot_;  // the connection's, while open
  std::shared_ptr<WaitSink> sink_;
  uint64_t handle_ = 0;
};

absl::StatusOr<ListFilter> FilterFromRequest(const v1::ListRequest& request) {
  ListFilter filter;
  if (!request.queue().empty()) {
    FERRY_RETURN_IF_ERROR(ValidateName("queue", request.queue()));
    filter.queue = request.queue();
  }
  FERRY_RETURN_IF_ERROR(ValidateState(request.state()));
  if (request.state() != v1::JOB_STATE_UNSPECIFIED) {
    filter.state = FromProto(request.state());
  }
  if (!request.kind().empty()) {
    FERRY_RETURN_IF_ERROR(ValidateName("kind", request.kind()));
    filter.kind = request.kind();
  }
  FERRY_RETURN_IF_ERROR(ValidateLabels("label filter", request.labels()));
  filter.labels.insert(request.labels().begin(), request.labels().end());
  filter.oldest_first = request.oldest_first();
  filter.limit = static_cast<int>(
      request.page_size() == 0 ? kDefaultPageSize
                               : std::min(request.page_size(), kMaxPageSize));
  if (!request.page_token().empty()) {
    absl::StatusOr<int64_t> after = ParseJobId(request.page_token());
    if (!after.ok()) {
      return absl::InvalidArgumentError(
          "page_token is not one this broker issued; pass next_page_token "
          "from the previous response unchanged");
    }
    filter.after_id = *after;
  }
  FERRY_RETURN_IF_ERROR(ValidateView(request.view()));
  filter.with_payload = WantPayload(request.view(), v1::JOB_VIEW_BASIC);
  return filter;
}

}  // namespace

grpc::ServerUnaryReactor* JobsService::Submit(grpc::CallbackServerContext* ctx,
                                              const v1::SubmitRequest* request,
                                              v1::SubmitResponse* response) {
  absl::StatusOr<Caller> caller =
      access_->Check(*ctx, Role::kSubmit, "Jobs.Submit");
  if (!caller.ok()) return Finish(ctx, caller.status());
  absl::StatusOr<JobRecord> job = JobFromSpec(
      request->job(), broker_->options().PolicyFor(request->job().queue()),
      broker_->Now());
  if (!job.ok()) return Finish(ctx, job.status());
  if (absl::Status s = caller->CheckQueue(job->queue); !s.ok()) {
    return Finish(ctx, s);
  }
  std::vector<JobRecord> jobs;
  jobs.push_back(*std::move(job));
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  broker_->Submit(std::move(jobs),
                  FinishWith<std::vector<CreateResult>>(
                      reactor, [response](const std::vector<CreateResult>& r) {
                        FillSubmit(r.front(), response);
                      }));
  return reactor;
}

grpc::ServerUnaryReactor* JobsService::SubmitBatch(
    grpc::CallbackServerContext* ctx, const v1::SubmitBatchRequest* request,
    v1::SubmitBatchResponse* response) {
  absl::StatusOr<Caller> caller =
      access_->Check(*ctx, Role::kSubmit, "Jobs.SubmitBatch");
  if (!caller.ok()) return Finish(ctx, caller.status());
  if (request->jobs_size() == 0) {
    return Finish(ctx, absl::InvalidArgumentError(
                           absl::StrCat("jobs is empty: a batch holds 1 to ",
                                        kMaxBatchSize, " jobs")));
  }
  if (request->jobs_size() > kMaxBatchSize) {
    return Finish(ctx, absl::InvalidArgumentError(absl::StrCat(
                           "at most ", kMaxBatchSize, " jobs per batch, got ",
                           request->jobs_size())));
  }
  const absl::Time now = broker_->Now();
  std::vector<JobRecord> jobs;
  jobs.reserve(request->jobs_size());
  for (int i = 0; i < request->jobs_size(); ++i) {
    absl::StatusOr<JobRecord> job = JobFromSpec(
        request->jobs(i),
        broker_->options().PolicyFor(request->jobs(i).queue()), now);
    if (!job.ok()) {
      return Finish(ctx, absl::InvalidArgumentError(absl::StrCat(
                             "jobs[", i, "]: ", job.status().message())));
    }
    if (absl::Status s =
            caller->CheckQueue(job->queue, absl::StrCat("jobs[", i, "]"));
        !s.ok()) {
      return Finish(ctx, s);
    }
    jobs.push_back(*std::move(job));
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  broker_->Submit(
      std::move(jobs),
      FinishWith<std::vector<CreateResult>>(
          reactor, [response](const std::vector<CreateResult>& results) {
            for (const CreateResult& created : results) {
              FillSubmit(created, response->add_results());
            }
          }));
  return reactor;
}

grpc::ServerUnaryReactor* JobsService::Get(grpc::CallbackServerContext* ctx,
                                           const v1::GetRequest* request,
                                           v1::GetResponse* response) {
  absl::StatusOr<Caller> caller = access_->Check(*ctx, Role::kRead, "Jobs.Get");
  if (!caller.ok()) return Finish(ctx, caller.status());
  absl::StatusOr<int64_t> id = JobToRead(request->job_id(), request->view());
  if (!id.ok()) return Finish(ctx, id.status());
  const bool with_payload = WantPayload(request->view(), v1::JOB_VIEW_FULL);
  absl::StatusOr<JobRecord> job = broker_->Get(*id, with_payload);
  if (job.ok() && !caller->InScope(job->queue)) job = JobNotFoundError(*id);
  if (job.ok()) ToProto(*job, with_payload, response->mutable_job());
  return Finish(ctx, job.status());
}

grpc::ServerUnaryReactor* JobsService::List(grpc::CallbackServerContext* ctx,
                                            const v1::ListRequest* request,
                                            v1::ListResponse* response) {
  absl::StatusOr<Caller> caller =
      access_->Check(*ctx, Role::kRead, "Jobs.List");
  if (!caller.ok()) return Finish(ctx, caller.status());
  absl::StatusOr<ListFilter> filter = FilterFromRequest(*request);
  if (!filter.ok()) return Finish(ctx, filter.status());
  // Another queue's jobs are not there for this caller: an empty page.
  if (!filter->queue.empty() && !caller->InScope(filter->queue)) {
    return Finish(ctx, absl::OkStatus());
  }
  filter->queue_globs = caller->queue_globs();
  const int page_size = filter->limit;
  filter->limit = page_size + 1;  // one more tells whether a page follows
  absl::StatusOr<std::vector<JobRecord>> jobs = broker_->List(*filter);
  if (!jobs.ok()) return Finish(ctx, jobs.status());
  bool more = static_cast<int>(jobs->size()) > page_size;
  if (more) jobs->resize(page_size);
  size_t bytes = 0;
  for (const JobRecord& job : *jobs) {
    if (bytes > kMaxPageBytes) {
      // Large payloads (FULL view): end the page early, well inside the
      // message size limit; the token continues from here.
      more = true;
      break;
    }
    v1::Job* out = response->add_jobs();
    ToProto(job, filter->with_payload, out);
    bytes += out->ByteSizeLong();
  }
  if (more) {
    response->set_next_page_token(
        response->jobs(response->jobs_size() - 1).id());
  }
  return Finish(ctx, absl::OkStatus());
}

grpc::ServerWriteReactor<v1::WatchResponse>* JobsService::Watch(
    grpc::CallbackServerContext* ctx, const v1::WatchRequest* request) {
  absl::StatusOr<int64_t> id = JobToRead(request->job_id(), request->view());
  if (absl::StatusOr<Caller> caller =
          access_->Check(*ctx, Role::kRead, "Jobs.Watch");
      !caller.ok()) {
    id = caller.status();
  } else if (id.ok()) {
    if (absl::Status s = CheckVisible(*caller, *id); !s.ok()) id = s;
  }
  PeerCounter::Slot slot = watchers_by_peer_.Take(ctx->peer());
  if (!slot && id.ok()) id = TooManyWatchers();
  auto reactor = std::make_shared<WatchReactor>(
      broker_, WantPayload(request->view(), v1::JOB_VIEW_BASIC), &watch_bytes_,
      std::move(slot));
  WatchReactor* raw = reactor.get();
  raw->Start(std::move(id), std::move(reactor));
  return raw;
}

grpc::ServerUnaryReactor* JobsService::Wait(grpc::CallbackServerContext* ctx,
                                            const v1::WaitRequest* request,
                                            v1::WaitResponse* response) {
  absl::StatusOr<Caller> caller =
      access_->Check(*ctx, Role::kRead, "Jobs.Wait");
  if (!caller.ok()) return Finish(ctx, caller.status());
  absl::StatusOr<int64_t> id = JobToRead(request->job_id(), request->view());
  if (!id.ok()) return Finish(ctx, id.status());
  if (absl::Status s = CheckVisible(*caller, *id); !s.ok()) {
    return Finish(ctx, s);
  }
  absl::Duration timeout = kDefaultWait;
  if (request->has_timeout()) {
    if (absl::Status s = ValidateDuration("timeout", request->timeout());
        !s.ok()) {
      return Finish(ctx, s);
    }
    timeout = FromProto(request->timeout());
    if (timeout < absl::ZeroDuration() || timeout > kMaxWait) {
      return Finish(ctx, absl::InvalidArgumentError(
                             absl::StrCat("timeout must be between 0s and ",
                                          absl::FormatDuration(kMaxWait))));
    }
  }
  PeerCounter::Slot slot = watchers_by_peer_.Take(ctx->peer());
  if (!slot) return Finish(ctx, TooManyWatchers());
  auto* reactor = new WaitReactor(broker_, std::move(slot));
  auto sink = std::make_shared<WaitSink>(
      broker_, reactor, response,
      WantPayload(request->view(), v1::JOB_VIEW_FULL));
  absl::StatusOr<uint64_t> handle =
      broker_->Watch(*id, sink, broker_->Now() + timeout);
  if (!handle.ok()) {
    sink->Close(handle.status());
    sink->Kick();
  } else {
    reactor->set_watch(std::move(sink), *handle);
  }
  return reactor;
}

grpc::ServerUnaryReactor* JobsService::Cancel(grpc::CallbackServerContext* ctx,
                                              const v1::CancelRequest* request,
                                              v1::CancelResponse* response) {
  absl::StatusOr<Caller> caller =
      access_->Check(*ctx, Role::kSubmit, "Jobs.Cancel");
  if (!caller.ok()) return Finish(ctx, caller.status());
  absl::StatusOr<int64_t> id = ParseJobId(request->job_id());
  if (!id.ok()) return Finish(ctx, id.status());
  if (request->reason().size() > kMaxCancelReasonLength) {
    return Finish(
        ctx, absl::InvalidArgumentError(absl::StrCat(
                 "reason must be at most ", kMaxCancelReasonLength, " bytes")));
  }
  if (absl::Status s = CheckVisible(*caller, *id); !s.ok()) {
    return Finish(ctx, s);
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  broker_->Cancel(
      *id, request->reason(),
      FinishWith<JobRecord>(reactor, [response](const JobRecord& job) {
        ToProto(job, false, response->mutable_job());
      }));
  return reactor;
}

grpc::ServerUnaryReactor* JobsService::Retry(grpc::CallbackServerContext* ctx,
                                             const v1::RetryRequest* request,
                                             v1::RetryResponse* response) {
  absl::StatusOr<Caller> caller =
      access_->Check(*ctx, Role::kSubmit, "Jobs.Retry");
  if (!caller.ok()) return Finish(ctx, caller.status());
  absl::StatusOr<int64_t> id = ParseJobId(request->job_id());
  if (!id.ok()) return Finish(ctx, id.status());
  if (absl::Status s = CheckVisible(*caller, *id); !s.ok()) {
    return Finish(ctx, s);
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  broker_->Retry(
      *id, FinishWith<JobRecord>(reactor, [response](const JobRecord& job) {
        ToProto(job, false, response->mutable_job());
      }));
  return reactor;
}

grpc::ServerUnaryReactor* JobsService::QueueStats(
    grpc::CallbackServerContext* ctx, const v1::QueueStatsRequest* request,
    v1::QueueStatsResponse* response) {
  absl::StatusOr<Caller> caller =
      access_->Check(*ctx, Role::kRead, "Jobs.QueueStats");
  if (!caller.ok()) return Finish(ctx, caller.status());
  if (!request->queue().empty()) {
    if (absl::Status s = ValidateName("queue", request->queue()); !s.ok()) {
      return Finish(ctx, s);
    }
  }
  absl::StatusOr<std::vector<QueueSnapshot>> stats =
      broker_->QueueStats(request->queue());
  if (!stats.ok()) return Finish(ctx, stats.status());
  PageFill page(request->page_size());
  const std::string* last = nullptr;
  // Snapshots come in name order; a page starts after the token's name.
  for (const QueueSnapshot& snapshot : *stats) {
    if (!caller->InScope(snapshot.name) ||
        (!request->page_token().empty() &&
         snapshot.name <= request->page_token())) {
      continue;
    }
    if (page.Full()) {
      response->set_next_page_token(*last);
      break;
    }
    last = &snapshot.name;
    v1::QueueInfo* info = response->add_queues();
    info->set_name(snapshot.name);
    info->set_paused(snapshot.paused);
    auto count = [&](JobState state) {
      return static_cast<uint64_t>(snapshot.counts[static_cast<int>(state)]);
    };
    info->set_scheduled(count(JobState::kScheduled));
    info->set_queued(count(JobState::kQueued));
    info->set_running(count(JobState::kRunning));
    info->set_succeeded(count(JobState::kSucceeded));
    info->set_failed(count(JobState::kFailed));
    info->set_cancelled(count(JobState::kCancelled));
    ToProto(snapshot.oldest_queued_age, info->mutable_oldest_queued_age());
    page.Add(info->ByteSizeLong());
  }
  return Finish(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* JobsService::SetPaused(
    grpc::CallbackServerContext* ctx, const std::string& queue, bool paused,
    absl::string_view method) {
  absl::StatusOr<Caller> caller = access_->Check(*ctx, Role::kAdmin, method);
  if (!caller.ok()) return Finish(ctx, caller.status());
  if (absl::Status s = ValidateName("queue", queue); !s.ok()) {
    return Finish(ctx, s);
  }
  if (absl::Status s = caller->CheckQueue(queue); !s.ok()) {
    return Finish(ctx, s);
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  broker_->SetPaused(queue, paused, FinishWith<bool>(reactor, [](bool) {}));
  return reactor;
}

grpc::ServerUnaryReactor* JobsService::PauseQueue(
    grpc::CallbackServerContext* ctx, const v1::PauseQueueRequest* request,
    v1::PauseQueueResponse* response) {
  return SetPaused(ctx, request->queue(), true, "Jobs.PauseQueue");
}

grpc::ServerUnaryReactor* JobsService::ResumeQueue(
    grpc::CallbackServerContext* ctx, const v1::ResumeQueueRequest* request,
    v1::ResumeQueueResponse* response) {
  return SetPaused(ctx, request->queue(), false, "Jobs.ResumeQueue");
}

grpc::ServerUnaryReactor* JobsService::PurgeQueue(
    grpc::CallbackServerContext* ctx, const v1::PurgeQueueRequest* request,
    v1::PurgeQueueResponse* response) {
  absl::StatusOr<Caller> caller =
      access_->Check(*ctx, Role::kAdmin, "Jobs.PurgeQueue");
  if (!caller.ok()) return Finish(ctx, caller.status());
  if (absl::Status s = ValidateName("queue", request->queue()); !s.ok()) {
    return Finish(ctx, s);
  }
  if (absl::Status s = caller->CheckQueue(request->queue()); !s.ok()) {
    return Finish(ctx, s);
  }
  if (absl::Status s = ValidateState(request->state()); !s.ok()) {
    return Finish(ctx, s);
  }
  if (request->state() == v1::JOB_STATE_UNSPECIFIED) {
    return Finish(ctx, absl::InvalidArgumentError(
                           "state is required: which jobs to purge"));
  }
  if (request->state() == v1::JOB_STATE_RUNNING) {
    return Finish(ctx, absl::FailedPreconditionError(
                           "RUNNING jobs cannot be purged; cancel them"));
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  broker_->Purge(request->queue(), FromProto(request->state()),
                 FinishWith<int64_t>(reactor, [response](int64_t purged) {
                   response->set_purged(static_cast<uint64_t>(purged));
                 }));
  return reactor;
}

absl::Status JobsService::TooManyWatchers() const {
  return absl::ResourceExhaustedError(absl::StrCat(
      "this connection has ", watchers_by_peer_.limit(),
      " Watch and Wait calls open (--max_watchers_per_connection); end some, "
      "or poll with Get"));
}

absl::Status JobsService::CheckVisible(const Caller& caller, int64_t id) {
  if (!caller.Scoped()) return absl::OkStatus();
  absl::StatusOr<JobRecord> job = broker_->Get(id, /*with_payload=*/false);
  if (!job.ok()) return job.status();
  if (!caller.InScope(job->queue)) return JobNotFoundError(id);
  return absl::OkStatus();
}

namespace {

// Where a ListWorkers page starts: after the worker that ended the last
// one, named by "CONNECTED_AT_US:SESSION_ID" (the order workers are listed
// in).
struct WorkerCursor {
  int64_t connected_at_us = INT64_MIN;
  std::string session_id;

  static absl::StatusOr<WorkerCursor> Parse(absl::string_view token) {
    WorkerCursor cursor;
    if (token.empty()) return cursor;
    std::pair<absl::string_view, absl::string_view> parts =
        absl::StrSplit(token, absl::MaxSplits(':', 1));
    if (!absl::SimpleAtoi(parts.first, &cursor.connected_at_us) ||
        parts.second.empty()) {
      return absl::InvalidArgumentError(
          "page_token is not one a ListWorkers response returned");
    }
    cursor.session_id = std::string(parts.second);
    return cursor;
  }
  static std::string TokenAfter(const WorkerSnapshot& worker) {
    return absl::StrCat(absl::ToUnixMicros(worker.connected_at), ":",
                        worker.session_id);
  }
  bool Before(const WorkerSnapshot& worker) const {
    const int64_t at = absl::ToUnixMicros(worker.connected_at);
    return at > connected_at_us ||
           (at == connected_at_us && worker.session_id > session_id);
  }
};

}  // namespace

grpc::ServerUnaryReactor* JobsService::ListWorkers(
    grpc::CallbackServerContext* ctx, const v1::ListWorkersRequest* request,
    v1::ListWorkersResponse* response) {
  absl::StatusOr<Caller> caller =
      access_->Check(*ctx, Role::kRead, "Jobs.ListWorkers");
  if (!caller.ok()) return Finish(ctx, caller.status());
  absl::StatusOr<WorkerCursor> cursor =
      WorkerCursor::Parse(request->page_token());
  if (!cursor.ok()) return Finish(ctx, cursor.status());
  PageFill page(request->page_size());
  const std::vector<WorkerSnapshot> workers = broker_->ListWorkers();
  const WorkerSnapshot* last = nullptr;
  // A caller limited to some queues sees the workers serving one of them.
  const auto visible = [&caller](const WorkerSnapshot& worker) {
    if (!caller->Scoped()) return true;
    for (const std::string& queue : worker.identity.queues) {
      if (caller->InScope(queue)) return true;
    }
    return false;
  };
  for (const WorkerSnapshot& worker : workers) {
    if (!cursor->Before(worker) || !visible(worker)) continue;
    if (page.Full()) {
      // More follow: the next page starts after the last one shown.
      response->set_next_page_token(WorkerCursor::TokenAfter(*last));
      break;
    }
    v1::WorkerInfo* info = response->add_workers();
    info->set_worker_id(worker.identity.worker_id);
    info->set_session_id(worker.session_id);
    info->set_hostname(worker.identity.hostname);
    info->set_pid(worker.identity.pid);
    info->set_version(worker.identity.version);
    for (const std::string& queue : worker.identity.queues) {
      info->add_queues(queue);
    }
    info->mutable_labels()->insert(worker.identity.labels.begin(),
                                   worker.identity.labels.end());
    info->set_credits(static_cast<uint32_t>(worker.credits));
    info->set_leases(static_cast<uint32_t>(worker.leases));
    ToProto(worker.connected_at, info->mutable_connected_at());
    ToProto(worker.last_seen, info->mutable_last_seen());
    info->set_peer(worker.identity.peer);
    page.Add(info->ByteSizeLong());
    last = &worker;
  }
  return Finish(ctx, absl::OkStatus());
}

}  // namespace ferry
