#include "server/validate.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/convert.h"

namespace ferry {
namespace {

// Printable text: no control characters (labels are stored one per line).
bool IsPrintable(absl::string_view text) {
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return false;
  }
  return true;
}

absl::Status CheckDuration(absl::string_view what,
                           const google::protobuf::Duration& d,
                           absl::Duration min, absl::Duration max) {
  FERRY_RETURN_IF_ERROR(ValidateDuration(what, d));
  absl::Duration value = FromProto(d);
  if (value < min || value > max) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " must be between ", absl::FormatDuration(min), " and ",
        absl::FormatDuration(max), ", got ", absl::FormatDuration(value)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateDuration(absl::string_view what,
                              const google::protobuf::Duration& d) {
  const bool nanos_in_range = d.nanos() >= -999999999 && d.nanos() <= 999999999;
  const bool signs_agree = (d.seconds() >= 0 && d.nanos() >= 0) ||
                           (d.seconds() <= 0 && d.nanos() <= 0);
  if (!nanos_in_range || !signs_agree) {
    return absl::InvalidArgumentError(absl::StrCat(
        what,
        " is not a valid Duration: nanos must be within +-999999999 "
        "and have the sign of seconds (got seconds=",
        d.seconds(), " nanos=", d.nanos(), ")"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePolicy(const JobPolicy& policy, absl::string_view prefix) {
  if (policy.lease_ttl < kMinLeaseTtl || policy.lease_ttl > kMaxLeaseTtl) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "lease_ttl must be a duration in 1s..24h"));
  }
  if (policy.max_attempts < 1 || policy.max_attempts > kMaxAttempts) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, "max_attempts must be between 1 and ", kMaxAttempts));
  }
  for (const auto& [name, backoff] :
       {std::pair<absl::string_view, absl::Duration>{"initial_backoff",
                                                     policy.initial_backoff},
        {"max_backoff", policy.max_backoff}}) {
    if (backoff < absl::ZeroDuration() || backoff > kMaxDelay) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, name, " must be a duration in 0s..",
                       absl::FormatDuration(kMaxDelay)));
    }
  }
  if (policy.max_backoff < policy.initial_backoff) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, "max_backoff is below ", prefix, "initial_backoff"));
  }
  if (policy.max_payload_bytes < 1 ||
      policy.max_payload_bytes > kMaxPayloadLimit) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, "max_payload_bytes must be between 1 and ", kMaxPayloadLimit));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ValidateWorkerQueues(
    absl::string_view field,
    const google::protobuf::RepeatedPtrField<std::string>& queues) {
  if (queues.empty() || queues.size() > kMaxWorkerQueues) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " must name 1 to ", kMaxWorkerQueues, " queues"));
  }
  std::vector<std::string> unique;
  for (const std::string& queue : queues) {
    FERRY_RETURN_IF_ERROR(ValidateName("queue", queue));
    if (std::find(unique.begin(), unique.end(), queue) == unique.end()) {
      unique.push_back(queue);
    }
  }
  return unique;
}

absl::Status ValidateLabels(
    absl::string_view what,
    const google::protobuf::Map<std::string, std::string>& labels) {
  if (labels.size() > static_cast<size_t>(kMaxLabels)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "too many ", what, "s: ", labels.size(), "; at most ", kMaxLabels));
  }
  for (const auto& [key, value] : labels) {
    FERRY_RETURN_IF_ERROR(
        ValidateName(absl::StrCat(what, " key"), key, kMaxLabelKeyLength));
    if (value.size() > kMaxLabelValueLength || !IsPrintable(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " ", key, " has an invalid value: at most ",
                       kMaxLabelValueLength, " bytes, no control characters"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<JobRecord> JobFromSpec(const v1::JobSpec& spec,
                                      const JobPolicy& policy, absl::Time now) {
  FERRY_RETURN_IF_ERROR(ValidateName("queue", spec.queue()));
  FERRY_RETURN_IF_ERROR(ValidateName("kind", spec.kind()));
  if (static_cast<int64_t>(spec.payload().size()) > policy.max_payload_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "payload is ", spec.payload().size(), " bytes; the limit is ",
        policy.max_payload_bytes,
        " (ferryd --max_payload_bytes); store large data elsewhere and "
        "send a reference"));
  }
  if (spec.content_type().size() > kMaxContentTypeLength ||
      !IsPrintable(spec.content_type())) {
    return absl::InvalidArgumentError(
        absl::StrCat("content_type must be at most ", kMaxContentTypeLength,
                     " printable bytes"));
  }
  FERRY_RETURN_IF_ERROR(ValidateLabels("label", spec.labels()));
  if (spec.priority() < -kMaxPriority || spec.priority() > kMaxPriority) {
    return absl::InvalidArgumentError(
        absl::StrCat("priority must be between ", -kMaxPriority, " and ",
                     kMaxPriority, ", got ", spec.priority()));
  }
  if (spec.has_run_at() && spec.has_delay()) {
    return absl::InvalidArgumentError("set at most one of run_at and delay");
  }
  if (spec.has_delay()) {
    FERRY_RETURN_IF_ERROR(
        CheckDuration("delay", spec.delay(), absl::ZeroDuration(), kMaxDelay));
  }
  if (spec.has_run_at()) {
    const auto& t = spec.run_at();
    if (t.nanos() < 0 || t.nanos() > 999999999 ||
        FromProto(t) > now + kMaxDelay) {
      return absl::InvalidArgumentError(
          "run_at must be a valid timestamp at most 366 days ahead");
    }
  }
  const v1::RetryPolicy& retry = spec.retry();
  if (retry.max_attempts() > static_cast<uint32_t>(kMaxAttempts)) {
    return absl::InvalidArgumentError(
        absl::StrCat("retry.max_attempts must be at most ", kMaxAttempts,
                     ", got ", retry.max_attempts()));
  }
  if (retry.has_initial_backoff()) {
    FERRY_RETURN_IF_ERROR(CheckDuration("retry.initial_backoff",
                                        retry.initial_backoff(),
                                        absl::ZeroDuration(), kMaxDelay));
  }
  if (retry.has_max_backoff()) {
    FERRY_RETURN_IF_ERROR(CheckDuration("retry.max_backoff",
                                        retry.max_backoff(),
                                        absl::ZeroDuration(), kMaxDelay));
  }
  if (spec.has_lease_ttl()) {
    FERRY_RETURN_IF_ERROR(CheckDuration("lease_ttl", spec.lease_ttl(),
                                        kMinLeaseTtl, kMaxLeaseTtl));
  }
  if (spec.has_timeout()) {
    FERRY_RETURN_IF_ERROR(CheckDuration("timeout", spec.timeout(),
                                        absl::ZeroDuration(), kMaxDelay));
  }
  if (spec.idempotency_key().size() > kMaxIdempotencyKeyLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("idempotency_key must be at most ",
                     kMaxIdempotencyKeyLength, " bytes"));
  }

  JobRecord job;
  job.queue = spec.queue();
  job.kind = spec.kind();
  job.payload = spec.payload();
  job.content_type = spec.content_type();
  job.labels.insert(spec.labels().begin(), spec.labels().end());
  job.priority = spec.priority();
  job.run_at = now;
  if (spec.has_delay()) job.run_at = now + FromProto(spec.delay());
  if (spec.has_run_at()) job.run_at = std::max(now, FromProto(spec.run_at()));
  job.state = job.run_at > now ? JobState::kScheduled : JobState::kQueued;
  job.created_at = now;
  job.updated_at = now;
  job.max_attempts = retry.max_attempts() > 0
                         ? static_cast<int32_t>(retry.max_attempts())
                         : policy.max_attempts;
  job.initial_backoff = retry.has_initial_backoff()
                            ? FromProto(retry.initial_backoff())
                            : policy.initial_backoff;
  job.max_backoff = retry.has_max_backoff() ? FromProto(retry.max_backoff())
                                            : policy.max_backoff;
  if (job.max_backoff < job.initial_backoff)
    job.max_backoff = job.initial_backoff;
  job.lease_ttl =
      spec.has_lease_ttl() ? FromProto(spec.lease_ttl()) : policy.lease_ttl;
  job.timeout =
      spec.has_timeout() ? FromProto(spec.timeout()) : absl::ZeroDuration();
  job.idempotency_key = spec.idempotency_key();
  return job;
}

}  // namespace ferry
