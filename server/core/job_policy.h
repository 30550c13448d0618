#ifndef FERRY_SERVER_CORE_JOB_POLICY_H_
#define FERRY_SERVER_CORE_JOB_POLICY_H_

#include <cstdint>

#include "absl/time/time.h"

namespace ferry {

// What a job gets when its spec leaves a field unset, and the largest
// payload (and result) accepted. Defaults live once: in ferryd's flags.
struct JobPolicy {
  absl::Duration lease_ttl = absl::Seconds(30);
  int32_t max_attempts = 5;
  absl::Duration initial_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Hours(1);
  int64_t max_payload_bytes = 1 << 20;
};

}  // namespace ferry

#endif  // FERRY_SERVER_CORE_JOB_POLICY_H_
