#include "worker/worker.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <thread>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/backoff.h"
#include "base/log_format.h"
#include "base/status_macros.h"
#include "proto/batch.h"
#include "proto/grpc_status.h"
#include "proto/names.h"
#include "proto/result_limits.h"
#include "proto/time_util.h"

namespace ferry {

// ---------------------------------------------------------------- context

JobContext::JobContext(v1::Job job, absl::Time deadline,
                       uint64_t max_output_bytes, std::string lease_token)
    : job_(std::move(job)),
      deadline_(deadline),
      max_output_bytes_(max_output_bytes),
      lease_token_(std::move(lease_token)) {}

void JobContext::ReportProgress(uint32_t percent, std::string message) {
  absl::MutexLock lock(&mu_);
  has_progress_ = true;
  progress_.set_percent(std::min<uint32_t>(percent, 100));
  progress_.set_message(std::move(message));
}

bool JobContext::TakeProgress(v1::Progress* progress) {
  absl::MutexLock lock(&mu_);
  if (!has_progress_) return false;
  has_progress_ = false;
  *progress = progress_;
  return true;
}

bool JobContext::stopped() const { return reason() != StopReason::kNone; }

StopReason JobContext::reason() const {
  absl::MutexLock lock(&mu_);
  return reason_;
}

void JobContext::OnStop(absl::AnyInvocable<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    if (reason_ == StopReason::kNone) {
      on_stop_.push_back(std::move(fn));
      return;
    }
  }
  fn();
}

bool JobContext::WaitForStop(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(this, &JobContext::StopRequested),
                              timeout);
}

void JobContext::Stop(StopReason reason) {
  std::vector<absl::AnyInvocable<void()>> callbacks;
  {
    absl::MutexLock lock(&mu_);
    if (reason_ != StopReason::kNone) return;
    reason_ = reason;
    callbacks.swap(on_stop_);
  }
  for (auto& fn : callbacks) fn();
}

// ------------------------------------------------------------ connection

struct Worker::Running {
  std::string token;
  std::shared_ptr<JobContext> ctx;
  absl::Duration ttl;
  absl::Time started;
};

// One Workers.Connect stream on gRPC's callback API: what the broker sends
// is handled on gRPC's threads as it arrives (no thread of ours waits on the
// stream), and writes are queued and go out in order, one at a time or,
// once the broker has said it accepts them, several in one batch.
//
// Use: Bind, queue the Hello with Write, StartCall, then Wait for the end.
// A hold keeps the call open until no write can be started any more, so a
// Write racing with the end of the stream never touches a finished call.
class Worker::Connection final
    : public grpc::ClientBidiReactor<v1::WorkerMessage, v1::ServerMessage> {
 public:
  explicit Connection(Worker* worker) : worker_(worker) {}

  // Creates the call and starts reading (nothing is sent before
  // StartCall). `self` keeps the connection alive until OnDone.
  void Bind(v1::Workers::Stub* stub, std::shared_ptr<Connection> self) {
    self_ = std::move(self);
    stub->async()->Connect(&ctx_, this);
    AddHold();
    StartRead(&in_);
  }

  // Queues `msg`; false if the stream takes no more writes. Once credits
  // are withdrawn, credits in `msg` are dropped.
  bool Write(v1::WorkerMessage msg) {
    {
      absl::MutexLock lock(&mu_);
      if (sealed_ || closing_) return false;
      if (withdrawn_ && !DropCredits(msg)) return true;
      pending_.push_back(std::move(msg));
    }
    Pump();
    return true;
  }

  // Takes back every credit this stream has given: queues Credit{0,
  // reset}, and drops the credits of messages still queued or written
  // after it, so that none reaches the broker after the reset (a result
  // finishing while the worker stops would otherwise bring one more job).
  void WithdrawCredits() {
    {
      absl::MutexLock lock(&mu_);
      if (sealed_ || closing_) return;
      withdrawn_ = true;
      std::deque<v1::WorkerMessage> kept;
      for (v1::WorkerMessage& msg : pending_) {
        if (DropCredits(msg)) kept.push_back(std::move(msg));
      }
      pending_ = std::move(kept);
      v1::WorkerMessage reset;
      reset.mutable_credit()->set_credits(0);
      reset.mutable_credit()->set_reset(true);
      pending_.push_back(std::move(reset));
    }
    Pump();
  }

  // Half-closes once the queued writes are out: the broker ends the stream
  // when it has read everything.
  void Close() {
    {
      absl::MutexLock lock(&mu_);
      if (closing_) return;
      closing_ = true;
    }
    Pump();
  }

  // Blocks until gRPC is done with the call; its status.
  absl::Status Wait() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    return FromGrpcStatus(status_);
  }

  bool welcomed() const { return welcomed_.load(); }
  // `batches`: the broker takes WorkerMessage.batch.
  void set_welcomed(bool batches) {
    batches_.store(batches);
    welcomed_.store(true);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The broker ended the stream or it broke: nothing more to write.
      Seal();
      return;
    }
    worker_->OnMessage(*this, in_);
    StartRead(&in_);
  }
  void OnWriteDone(bool ok) override { OpDone(ok); }
  void OnWritesDoneDone(bool ok) override { OpDone(ok); }
  void OnDone(const grpc::Status& status) override {
    {
      absl::MutexLock lock(&mu_);
      sealed_ = true;
      pending_.clear();
      status_ = status;
      done_ = true;
    }
    std::shared_ptr<Connection> keep = std::move(self_);
  }

 private:
  // Starts the next write, or the half-close, unless one is in flight.
  void Pump() {
    grpc::WriteOptions options;
    bool write = false;
    {
      absl::MutexLock lock(&mu_);
      if (busy_ || sealed_) return;
      if (!pending_.empty()) {
        // Results of jobs that finished together, say, go in one batch.
        TakeNextWrite(pending_, batches_.load(), &out_);
        // More queued: let this one wait in the buffer and leave with them.
        if (!pending_.empty()) options.set_buffer_hint();
        write = true;
      } else if (!closing_ || half_closed_) {
        return;
      }
      half_closed_ = !write;
      busy_ = true;
    }
    if (write) {
      StartWrite(&out_, options);
    } else {
      StartWritesDone();
    }
  }

  void OpDone(bool ok) {
    bool release = false;
    {
      absl::MutexLock lock(&mu_);
      busy_ = false;
      if (!ok || half_closed_) {
        sealed_ = true;
        pending_.clear();
      }
      release = sealed_ && held_;
      if (release) held_ = false;
    }
    if (release) {
      RemoveHold();
    } else {
      Pump();
    }
  }

  // Strips the credits from `msg` (a Result's, a Credit); false if
  // nothing is left to send. Queued messages are never batches: those are
  // made when a write starts (Pump).
  static bool DropCredits(v1::WorkerMessage& msg) {
    if (msg.has_result()) msg.mutable_result()->clear_credits();
    return !msg.has_credit();
  }

  // No write will be started any more.
  void Seal() {
    bool release = false;
    {
      absl::MutexLock lock(&mu_);
      sealed_ = true;
      pending_.clear();
      release = !busy_ && held_;
      if (release) held_ = false;
    }
    if (release) RemoveHold();
  }

  Worker* const worker_;
  grpc::ClientContext ctx_;
  std::shared_ptr<Connection> self_;  // until OnDone
  v1::ServerMessage in_;              // owned by the read in flight
  v1::WorkerMessage out_;             // owned by the write in flight
  std::atomic<bool> welcomed_{false};
  std::atomic<bool> batches_{false};

  absl::Mutex mu_;
  std::deque<v1::WorkerMessage> pending_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;  // a write or half-close in flight
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool half_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool sealed_ ABSL_GUARDED_BY(mu_) = false;     // no more writes
  bool withdrawn_ ABSL_GUARDED_BY(mu_) = false;  // WithdrawCredits()
  bool held_ ABSL_GUARDED_BY(mu_) = true;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// ------------------------------------------------------------------ worker

namespace {

std::string Hostname() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return host;
}

// "<hostname>-<pid>", made a valid name.
std::string DefaultWorkerId() {
  const std::string host = Hostname();
  std::string id = absl::StrCat(host.empty() ? "worker" : host, "-", getpid());
  for (char& c : id) {
    if (!IsNameChar(c)) c = '-';
  }
  return id.substr(0, kMaxNameLength);
}

}  // namespace

Worker::Worker(WorkerOptions options) : options_(std::move(options)) {
  if (options_.worker_id.empty()) options_.worker_id = DefaultWorkerId();
  if (options_.clock == nullptr) options_.clock = SystemClock::Get();
  channel_ = options_.channel;
  if (channel_ == nullptr) {
    grpc::ChannelArguments args;
    // gRPC's own reconnect backoff (up to 120 s by default) would keep the
    // worker away long after the broker is back; follow ours.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                static_cast<int>(
                    absl::ToInt64Milliseconds(options_.reconnect_initial)));
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
                static_cast<int>(
                    absl::ToInt64Milliseconds(options_.reconnect_initial)));
    args.SetInt(
        GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
        static_cast<int>(absl::ToInt64Milliseconds(options_.reconnect_max)));
    // Keep idle streams alive through NATs and notice dead brokers.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    // gRPC clients refuse messages over 4 MiB by default, and ferryd takes
    // payloads up to its --max_payload_bytes: an Assignment over 4 MiB
    // would break the stream on every attempt. The broker's own send limit
    // governs instead.
    args.SetMaxReceiveMessageSize(-1);
    absl::StatusOr<std::shared_ptr<grpc::Channel>> opened =
        OpenChannel(options_.broker, options_.connect, args);
    if (!opened.ok()) {
      setup_ = opened.status();  // Run() returns it
      return;
    }
    channel_ = *std::move(opened);
  }
  stub_ = v1::Workers::NewStub(channel_);
}

// Run() has joined its threads before it returned.
Worker::~Worker() { Stop(); }

void Worker::Handle(std::string kind, Handler handler) {
  handlers_[std::move(kind)] = std::move(handler);
}

void Worker::HandleDefault(Handler handler) {
  default_handler_ = std::move(handler);
}

int Worker::running() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(running_.size());
}

void Worker::Stop() {
  std::shared_ptr<Connection> connection;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    drain_deadline_ = options_.clock->Now() + options_.drain_timeout;
    connection = connection_;
    spdlog::info("worker stopping worker_id={} running={} drain_timeout_s={}",
                 options_.worker_id, running_.size(),
                 absl::ToInt64Seconds(options_.drain_timeout));
  }
  // Withdraw the credits the broker still holds, so no new job comes. (Not
  // under mu_: a gRPC call may run callbacks, which take mu_, on the
  // calling thread before it returns.)
  if (connection != nullptr) connection->WithdrawCredits();
}

void Worker::StopNow() {
  Stop();
  absl::MutexLock lock(&mu_);
  const absl::Time now = options_.clock->Now();
  if (drain_deadline_ <= now) return;
  drain_deadline_ = now;  // the heartbeat loop stops the handlers
  spdlog::warn("worker stopping now worker_id={} running={}",
               options_.worker_id, running_.size());
}

bool Worker::Quiet() const { return running_.empty() && unacked_.empty(); }

void Worker::StopAll(StopReason reason) {
  for (auto& [token, job] : running_) job->ctx->Stop(reason);
}

absl::Status Worker::Run() {
  FERRY_RETURN_IF_ERROR(setup_);
  if (options_.queues.empty()) {
    return absl::InvalidArgumentError("a worker needs at least one queue");
  }
  if (options_.concurrency < 1) {
    return absl::InvalidArgumentError("concurrency must be at least 1");
  }
  std::vector<std::thread> threads;
  const int handler_threads =
      options_.inline_handlers ? 0 : options_.concurrency;
  {
    absl::MutexLock lock(&mu_);
    quit_ = false;
  }
  for (int i = 0; i < handler_threads; ++i) {
    threads.emplace_back([this] {
      while (true) {
        std::shared_ptr<Running> job;
        {
          absl::MutexLock lock(&mu_);
          mu_.Await(absl::Condition(this, &Worker::HasReadyOrQuit));
          if (ready_.empty()) break;  // quitting
          job = std::move(ready_.front());
          ready_.pop_front();
        }
        RunJob(std::move(job));
      }
    });
  }
  threads.emplace_back([this] { HeartbeatLoop(); });

  absl::Status result = absl::OkStatus();
  int attempt = 0;  // reconnects since the last Welcome
  absl::BitGen bitgen;
  while (true) {
    bool welcomed = false;
    absl::Status status = Session(&welcomed);
    absl::MutexLock lock(&mu_);
    if (stopping_ && (Quiet() || options_.clock->Now() >= FinalDeadline())) {
      if (!Quiet()) {
        spdlog::warn(
            "worker stopped with results the broker never acknowledged "
            "worker_id={} unacknowledged={}",
            options_.worker_id, unacked_.size());
      }
      break;
    }
    if (absl::IsInvalidArgument(status)) {
      // The broker refused our Hello: retrying cannot help.
      spdlog::error("broker refused the worker worker_id={} status=\"{}\"",
                    options_.worker_id, status.ToString());
      StopAll(StopReason::kShutdown);
      result = status;
      break;
    }
    if (absl::IsUnauthenticated(status) || absl::IsPermissionDenied(status)) {
      // Retried all the same: the broker's token file may be fixed and
      // reloaded while the worker waits.
      spdlog::error(
          "broker refused the worker's token broker={} status=\"{}\"{}",
          options_.broker, status.ToString(),
          options_.connect.has_token()
              ? ""
              : " hint=\"the broker needs a token: --token_file or "
                "FERRY_TOKEN\"");
    }
    if (welcomed) attempt = 0;
    const absl::Duration wait =
        RetryBackoff(++attempt, options_.reconnect_initial,
                     options_.reconnect_max, absl::Uniform(bitgen, 0.0, 1.0));
    spdlog::warn(
        "broker connection lost broker={} status=\"{}\" reconnect_in_ms={}",
        options_.broker, status.ToString(), absl::ToInt64Milliseconds(wait));
    // Wait, but wake early when a stop makes waiting pointless.
    mu_.AwaitWithTimeout(absl::Condition(this, &Worker::StoppedAndQuiet), wait);
  }
  {
    absl::MutexLock lock(&mu_);
    quit_ = true;
  }
  for (std::thread& t : threads) t.join();
  return result;
}

absl::Time Worker::FinalDeadline() const {
  return drain_deadline_ + options_.stop_grace;
}

absl::Status Worker::Session(bool* welcomed) {
  auto connection = std::make_shared<Connection>(this);
  connection->Bind(stub_.get(), connection);
  {
    // The Hello is queued first, and the connection published with it, so
    // that nothing (a credit, a result) overtakes it.
    absl::MutexLock lock(&mu_);
    v1::WorkerMessage hello_msg;
    v1::Hello* hello = hello_msg.mutable_hello();
    hello->set_worker_id(options_.worker_id);
    hello->set_hostname(Hostname());
    hello->set_pid(static_cast<uint32_t>(getpid()));
    hello->set_version(options_.version);
    for (const std::string& queue : options_.queues) hello->add_queues(queue);
    hello->mutable_labels()->insert(options_.labels.begin(),
                                    options_.labels.end());
    for (const auto& [token, job] : running_) {
      v1::HeldLease* held = hello->add_held_leases();
      held->set_job_id(job->ctx->id());
      held->set_lease_token(token);
    }
    for (const auto& [token, unacked] : unacked_) {
      v1::HeldLease* held = hello->add_held_leases();
      held->set_job_id(unacked.job_id);
      held->set_lease_token(token);
    }
    const int free_slots =
        options_.concurrency - static_cast<int>(running_.size());
    hello->set_initial_credits(stopping_ ? 0 : std::max(free_slots, 0));
    hello->set_accepts_batches(true);
    connection->Write(std::move(hello_msg));
    // Results the last stream did not get acknowledged, without credits
    // (initial_credits counts the free slots).
    for (const auto& [token, unacked] : unacked_) {
      connection->Write(unacked.result);
    }
    draining_ = false;
    connection_ = connection;
  }
  connection->StartCall();
  absl::Status status = connection->Wait();
  *welcomed = connection->welcomed();
  absl::MutexLock lock(&mu_);
  if (connection_ == connection) connection_.reset();
  return status;
}

void Worker::OnMessage(Connection& connection, v1::ServerMessage& msg) {
  switch (msg.msg_case()) {
    case v1::ServerMessage::kWelcome: {
      absl::MutexLock lock(&mu_);
      connection.set_welcomed(msg.welcome().accepts_batches());
      max_output_bytes_.store(msg.welcome().max_output_bytes());
      if (msg.welcome().has_heartbeat_interval()) {
        heartbeat_interval_ =
            std::max(absl::Milliseconds(100),
                     FromProto(msg.welcome().heartbeat_interval()));
      }
      spdlog::info("connected broker={} worker_id={} session_id={} queues={}",
                   options_.broker, options_.worker_id,
                   msg.welcome().session_id(),
                   absl::StrJoin(options_.queues, ","));
      break;
    }
    case v1::ServerMessage::kAssignment:
      Dispatch(std::move(*msg.mutable_assignment()));
      break;
    case v1::ServerMessage::kBatch:
      for (v1::ServerMessage& inner :
           *msg.mutable_batch()->mutable_messages()) {
        if (!inner.has_batch()) OnMessage(connection, inner);
      }
      break;
    case v1::ServerMessage::kCancel: {
      absl::MutexLock lock(&mu_);
      auto it = running_.find(msg.cancel().lease_token());
      if (it != running_.end()) {
        spdlog::info("job cancelled by the broker job_id={} reason=\"{}\"",
                     LogValue(msg.cancel().job_id()),
                     LogValue(msg.cancel().reason()));
        it->second->ctx->Stop(StopReason::kCancelled);
      }
      break;
    }
    case v1::ServerMessage::kLeaseLost: {
      absl::MutexLock lock(&mu_);
      const std::string& token = msg.lease_lost().lease_token();
      auto it = running_.find(token);
      if (it != running_.end()) {
        spdlog::warn("lease lost job_id={} reason=\"{}\"",
                     it->second->ctx->id(),
                     LogValue(msg.lease_lost().reason()));
        it->second->ctx->Stop(StopReason::kLeaseLost);
      }
      auto refused = unacked_.find(token);
      if (refused != unacked_.end()) {
        spdlog::warn("result refused by the broker job_id={} reason=\"{}\"",
                     refused->second.job_id,
                     LogValue(msg.lease_lost().reason()));
        unacked_.erase(refused);
      }
      break;
    }
    case v1::ServerMessage::kDrain: {
      // The broker is going away (or wants us to leave): take no more work
      // on this stream. Running jobs go on: their leases survive a broker
      // restart, and their results are sent after reconnecting. Once none
      // runs and every result is acknowledged, the heartbeat loop ends the
      // stream, so the broker need not wait out its grace.
      absl::MutexLock lock(&mu_);
      draining_ = true;
      spdlog::info("broker asked to drain reason=\"{}\" running={}",
                   LogValue(msg.drain().reason()), running_.size());
      break;
    }
    case v1::ServerMessage::kResultAck: {
      {
        absl::MutexLock lock(&mu_);
        unacked_.erase(msg.result_ack().lease_token());
      }
      if (options_.on_result_ack) options_.on_result_ack(msg.result_ack());
      break;
    }
    default:
      break;  // newer message types are ignored
  }
}

void Worker::Dispatch(v1::Assignment assignment) {
  auto job = std::make_shared<Running>();
  job->token = assignment.lease_token();
  const absl::Time now = options_.clock->Now();
  const absl::Duration timeout = FromProto(assignment.job().timeout());
  job->ttl = FromProto(assignment.job().lease_ttl());
  job->started = now;
  job->ctx = std::make_shared<JobContext>(
      std::move(*assignment.mutable_job()),
      timeout > absl::ZeroDuration() ? now + timeout : absl::InfiniteFuture(),
      max_output_bytes_.load(), job->token);
  {
    absl::MutexLock lock(&mu_);
    running_[job->token] = job;
    if (!options_.inline_handlers) {
      ready_.push_back(std::move(job));
      return;
    }
  }
  RunJob(std::move(job));
}

namespace {

// Runs `handler` (nullptr: none for the job's kind) unless the job is
// already stopped; an exception it throws becomes a failure.
JobOutcome CallHandler(const Handler* handler, JobContext& ctx,
                       absl::string_view worker_id) {
  if (handler == nullptr) {
    return JobOutcome::Failure(
        absl::StrCat("worker ", worker_id, " has no handler for kind \"",
                     ctx.kind(), "\""),
        /*retryable=*/false);
  }
  if (ctx.stopped()) {
    return JobOutcome::Failure(
        "the job was stopped before its handler started");
  }
  try {
    return (*handler)(ctx);
  } catch (const std::exception& e) {
    return JobOutcome::Failure(
        absl::StrCat("handler threw an exception: ", e.what()));
  } catch (...) {
    return JobOutcome::Failure("handler threw an exception");
  }
}

// A failure because the worker stopped the job says so: after `timeout`
// (the job's own), or at the end of the drain.
JobOutcome ExplainStop(JobOutcome outcome, StopReason reason,
                       absl::Duration timeout) {
  if (outcome.success) return outcome;
  if (reason == StopReason::kTimeout) {
    return JobOutcome::Failure(
        absl::StrCat("timed out after ", absl::FormatDuration(timeout),
                     outcome.error.empty() ? "" : ": ", outcome.error));
  }
  if (reason == StopReason::kShutdown) {
    return JobOutcome::Failure(
        "the worker stopped before the job finished (drain timeout)");
  }
  return outcome;
}

// What the broker would refuse or cut is settled here: an output over
// `max_output` (0: no limit), sent, could be too large for it to read at
// all, and the stream would break on every resend.
void FitForBroker(JobOutcome& outcome, uint64_t max_output) {
  if (outcome.success && max_output > 0 && outcome.output.size() > max_output) {
    outcome = JobOutcome::Failure(
        OutputOverLimitError(outcome.output.size(),
                             static_cast<int64_t>(max_output)),
        /*retryable=*/false);
  }
  if (outcome.error.size() > kMaxErrorMessageLength) {
    outcome.error.resize(kMaxErrorMessageLength);
  }
}

void LogFinished(const JobContext& ctx, const JobOutcome& outcome,
                 bool send_result, absl::Duration duration) {
  const char* verdict = !send_result        ? "abandoned"
                        : outcome.success   ? "succeeded"
                        : outcome.retryable ? "failed"
                                            : "failed_permanently";
  spdlog::info(
      "job finished job_id={} kind={} attempt={} duration_ms={} outcome={}{}{}",
      ctx.id(), ctx.kind(), ctx.attempt(), absl::ToInt64Milliseconds(duration),
      verdict, outcome.success ? "" : " error=\"",
      outcome.success ? "" : LogValue(outcome.error) + "\"");
}

v1::WorkerMessage ResultMessage(const std::string& token, JobOutcome outcome) {
  v1::WorkerMessage msg;
  v1::Result* result = msg.mutable_result();
  result->set_lease_token(token);
  if (outcome.success) {
    result->mutable_success()->set_output(std::move(outcome.output));
  } else {
    result->mutable_failure()->set_message(std::move(outcome.error));
    result->mutable_failure()->set_retryable(outcome.retryable);
  }
  return msg;
}

}  // namespace

void Worker::RunJob(std::shared_ptr<Running> job) {
  JobContext& ctx = *job->ctx;
  spdlog::info("job started job_id={} queue={} kind={} attempt={}", ctx.id(),
               ctx.job().queue(), ctx.kind(), ctx.attempt());
  JobOutcome outcome =
      CallHandler(FindHandler(ctx.kind()), ctx, options_.worker_id);
  const StopReason reason = ctx.reason();
  outcome =
      ExplainStop(std::move(outcome), reason, ctx.deadline() - job->started);
  FitForBroker(outcome, max_output_bytes_.load());
  // A cancelled job or a lost lease is the broker's again: no result.
  const bool send_result =
      reason != StopReason::kCancelled && reason != StopReason::kLeaseLost;
  LogFinished(ctx, outcome, send_result, options_.clock->Now() - job->started);
  FinishJob(*job, ResultMessage(job->token, std::move(outcome)), send_result);
}

const Handler* Worker::FindHandler(const std::string& kind) const {
  auto it = handlers_.find(kind);
  if (it != handlers_.end()) return &it->second;
  return default_handler_ ? &default_handler_ : nullptr;
}

void Worker::FinishJob(const Running& job, v1::WorkerMessage result_msg,
                       bool send_result) {
  std::shared_ptr<Connection> connection;
  bool credit;
  {
    absl::MutexLock lock(&mu_);
    running_.erase(job.token);
    if (send_result) {
      unacked_[job.token] = Unacked{job.ctx->id(), result_msg};
    }
    connection = connection_;
    credit = !stopping_ && !draining_;
  }
  if (connection == nullptr) return;  // sent (and credited) on reconnect
  // A Stop() between the line above and these writes is no harm: its
  // WithdrawCredits drops the credit from them.
  if (send_result) {
    // The freed slot's credit goes back with the result.
    if (credit) result_msg.mutable_result()->set_credits(1);
    connection->Write(std::move(result_msg));
  } else if (credit) {
    v1::WorkerMessage credit_msg;
    credit_msg.mutable_credit()->set_credits(1);
    connection->Write(std::move(credit_msg));
  }
}

void Worker::HeartbeatLoop() {
  absl::Time last_beat = absl::InfinitePast();
  while (true) {
    v1::WorkerMessage beat;
    std::shared_ptr<Connection> connection;
    bool close = false;
    absl::Duration interval;
    {
      absl::MutexLock lock(&mu_);
      if (quit_) return;
      const absl::Time now = options_.clock->Now();
      interval = heartbeat_interval_;
      for (auto& [token, job] : running_) {
        if (now >= job->ctx->deadline()) job->ctx->Stop(StopReason::kTimeout);
        if (job->ttl > absl::ZeroDuration()) {
          interval = std::min(interval, job->ttl / 3);
        }
      }
      if (stopping_ && now >= drain_deadline_) StopAll(StopReason::kShutdown);
      if (stopping_ && (Quiet() || now >= FinalDeadline())) close = true;
      // A broker going away waits for its streams to end: once nothing is
      // left to report, end this one (the worker reconnects, with backoff).
      if (draining_ && Quiet()) close = true;
      connection = connection_;
      if (connection != nullptr) {
        // Progress goes out promptly (it extends its lease too); every
        // lease is heartbeated once per interval.
        const bool due = now - last_beat >= interval;
        v1::Heartbeat* heartbeat = beat.mutable_heartbeat();
        for (auto& [token, job] : running_) {
          v1::Progress progress;
          if (job->ctx->TakeProgress(&progress)) {
            v1::ProgressUpdate* update = heartbeat->add_progress();
            update->set_lease_token(token);
            *update->mutable_progress() = std::move(progress);
          } else if (due) {
            heartbeat->add_lease_tokens(token);
          }
        }
        if (due) last_beat = now;
        if (heartbeat->lease_tokens_size() == 0 &&
            heartbeat->progress_size() == 0) {
          beat.Clear();
        }
      }
    }
    if (connection != nullptr) {
      if (beat.has_heartbeat()) connection->Write(std::move(beat));
      if (close) connection->Close();
    }
    // Checks timeouts and the drain deadline often; heartbeats at their
    // interval. Wakes at once when the worker quits.
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&quit_),
                         std::min(interval / 4, absl::Milliseconds(100)));
  }
}

}  // namespace ferry
