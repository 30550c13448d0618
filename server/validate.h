#ifndef FERRY_SERVER_VALIDATE_H_
#define FERRY_SERVER_VALIDATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "ferry/v1/job.pb.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/map.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "proto/names.h"
#include "proto/protocol_limits.h"
#include "proto/result_limits.h"
#include "server/core/job_policy.h"
#include "storage/store.h"

namespace ferry {

// A google.protobuf.Duration as the type defines it: nanos within
// ±999,999,999 and of the same sign as seconds. INVALID_ARGUMENT naming
// `what` otherwise (such a value would be read as some other duration).
absl::Status ValidateDuration(absl::string_view what,
                              const google::protobuf::Duration& d);

// Checks a job policy's values (ferryd's flags, a --queue_config line).
// `prefix` goes before each field's name in the message ("--" for flags).
absl::Status ValidatePolicy(const JobPolicy& policy, absl::string_view prefix);

// Checks the queues a worker takes from (a Hello's, a Lease request's; the
// list is named `field` in messages) and returns them without repeats, in
// order.
absl::StatusOr<std::vector<std::string>> ValidateWorkerQueues(
    absl::string_view field,
    const google::protobuf::RepeatedPtrField<std::string>& queues);

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
