#include "server/convert.h"

#include <algorithm>
#include <utility>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ferry {

namespace {

// Sets the field only for a known time, so unset times stay unset.
template <typename SetFn>
void SetTime(absl::Time t, SetFn mutable_field) {
  if (t != absl::InfinitePast()) ToProto(t, mutable_field());
}

}  // namespace

void ToProto(const JobRecord& job, bool with_payload, v1::Job* out) {
  out->set_id(FormatJobId(job.id));
  out->set_queue(job.queue);
  out->set_kind(job.kind);
  if (with_payload) {
    out->set_payload(job.payload);
    out->set_result(job.result);
  }
  out->set_content_type(job.content_type);
  out->mutable_labels()->insert(job.labels.begin(), job.labels.end());
  out->set_priority(job.priority);
  out->set_state(ToProto(job.state));
  out->set_attempt(job.attempt);
  v1::RetryPolicy* retry = out->mutable_retry();
  retry->set_max_attempts(job.max_attempts);
  ToProto(job.initial_backoff, retry->mutable_initial_backoff());
  ToProto(job.max_backoff, retry->mutable_max_backoff());
  ToProto(job.lease_ttl, out->mutable_lease_ttl());
  if (job.timeout > absl::ZeroDuration()) {
    ToProto(job.timeout, out->mutable_timeout());
  }
  SetTime(job.run_at, [out] { return out->mutable_run_at(); });
  SetTime(job.created_at, [out] { return out->mutable_created_at(); });
  SetTime(job.started_at, [out] { return out->mutable_started_at(); });
  SetTime(job.finished_at, [out] { return out->mutable_finished_at(); });
  SetTime(job.updated_at, [out] { return out->mutable_updated_at(); });
  out->set_idempotency_key(job.idempotency_key);
  out->set_last_error(job.last_error);
  if (job.progress_percent != 0 || !job.progress_message.empty()) {
    out->mutable_progress()->set_percent(job.progress_percent);
    out->mutable_progress()->set_message(job.progress_message);
  }
  out->set_worker_id(job.worker_id);
  if (job.state == JobState::kRunning) {
    SetTime(job.lease_deadline,
            [out] { return out->mutable_lease_deadline(); });
  }
}

void ToProto(Assignment assignment, v1::Assignment* out) {
  JobRecord& job = assignment.job;
  v1::Job* wire = out->mutable_job();
  ToProto(job, /*with_payload=*/false, wire);
  wire->set_payload(std::move(job.payload));
  wire->set_result(std::move(job.result));
  out->set_lease_token(std::move(assignment.lease_token));
  ToProto(assignment.lease_deadline, out->mutable_lease_deadline());
}

namespace {

// One overload per WorkerEvent alternative, for std::visit.
struct ToWire {
  v1::ServerMessage* out;
  void operator()(WelcomeEvent& welcome) const {
    v1::Welcome* wire = out->mutable_welcome();
    wire->set_session_id(std::move(welcome.session_id));
    ToProto(welcome.heartbeat_interval, wire->mutable_heartbeat_interval());
    ToProto(welcome.lease_ttl, wire->mutable_lease_ttl());
    wire->set_accepts_batches(true);
    wire->set_max_output_bytes(static_cast<uint64_t>(welcome.max_output_bytes));
  }
  void operator()(Assignment& assignment) const {
    ToProto(std::move(assignment), out->mutable_assignment());
  }
  void operator()(CancelEvent& cancel) const {
    v1::Cancel* wire = out->mutable_cancel();
    wire->set_lease_token(std::move(cancel.lease_token));
    wire->set_job_id(FormatJobId(cancel.job_id));
    wire->set_reason(std::move(cancel.reason));
  }
  void operator()(LeaseLostEvent& lost) const {
    v1::LeaseLost* wire = out->mutable_lease_lost();
    wire->set_lease_token(std::move(lost.lease_token));
    if (lost.job_id != 0) wire->set_job_id(FormatJobId(lost.job_id));
    wire->set_reason(std::move(lost.reason));
  }
  void operator()(ResultAckedEvent& acked) const {
    v1::ResultAck* wire = out->mutable_result_ack();
    wire->set_lease_token(std::move(acked.lease_token));
    wire->set_job_id(FormatJobId(acked.job_id));
    wire->set_state(ToProto(acked.state));
  }
  void operator()(DrainEvent& drain) const {
    out->mutable_drain()->set_reason(std::move(drain.reason));
  }
};

}  // namespace

v1::ServerMessage ToServerMessage(WorkerEvent event) {
  v1::ServerMessage msg;
  std::visit(ToWire{&msg}, event);
  return msg;
}

Progress FromProto(const v1::Progress& progress) {
  return Progress{progress.percent(), progress.message()};
}

HeartbeatReport FromProto(const v1::Heartbeat& heartbeat) {
  HeartbeatReport report;
  report.lease_tokens.assign(heartbeat.lease_tokens().begin(),
                             heartbeat.lease_tokens().end());
  report.progress.reserve(heartbeat.progress_size());
  for (const v1::ProgressUpdate& update : heartbeat.progress()) {
    report.progress.push_back(
        {update.lease_token(), FromProto(update.progress())});
  }
  return report;
}

std::string FormatJobId(int64_t id) { return absl::StrCat(id); }

absl::StatusOr<int64_t> ParseJobId(absl::string_view id) {
  int64_t value = 0;
  if (id.empty()) return absl::InvalidArgumentError("job_id is required");
  const bool digits = std::all_of(id.begin(), id.end(), [](char c) {
    return absl::ascii_isdigit(static_cast<unsigned char>(c));
  });
  if (!digits || !absl::SimpleAtoi(id, &value) || value <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job_id must be a positive integer as returned by Submit, got \"",
        absl::CEscape(id.substr(0, 64)), "\""));
  }
  return value;
}

}  // namespace ferry
