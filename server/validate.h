#ifndef FERRY_SERVER_VALIDATE_H_
#define FERRY_SERVER_VALIDATE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "ferry/v1/job.pb.h"
#include "google/protobuf/map.h"
#include "proto/names.h"
#include "proto/result_limits.h"
#include "server/core/job_policy.h"
#include "storage/store.h"

namespace ferry {

// Limits that are part of the protocol (docs/protocol.md lists them).
inline constexpr size_t kMaxLabelKeyLength = 63;
inline constexpr size_t kMaxLabelValueLength = 256;
inline constexpr int kMaxLabels = 32;
inline constexpr size_t kMaxIdempotencyKeyLength = 256;
inline constexpr size_t kMaxContentTypeLength = 128;
inline constexpr int32_t kMaxPriority = 1000;
inline constexpr int32_t kMaxAttempts = 1000;
inline constexpr int kMaxBatchSize = 1000;
inline constexpr absl::Duration kMinLeaseTtl = absl::Seconds(1);
inline constexpr absl::Duration kMaxLeaseTtl = absl::Hours(24);
inline constexpr absl::Duration kMaxDelay = absl::Hours(24 * 366);

absl::Status ValidateLabels(
    absl::string_view what,
    const google::protobuf::Map<std::string, std::string>& labels);

// Checks `spec` and resolves it into the record to store, with defaults from
// `policy`; `now` decides run_at and whether the job starts SCHEDULED or
// QUEUED. INVALID_ARGUMENT names the first bad field and what to fix.
absl::StatusOr<JobRecord> JobFromSpec(const v1::JobSpec& spec,
                                      const JobPolicy& policy, absl::Time now);

}  // namespace ferry

#endif  // FERRY_SERVER_VALIDATE_H_
