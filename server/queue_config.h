#ifndef FERRY_SERVER_QUEUE_CONFIG_H_
#define FERRY_SERVER_QUEUE_CONFIG_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/validate.h"

namespace ferry {

// Per-queue defaults for jobs that leave a field unset, read by ferryd from
// --queue_config. One queue per line:
//
//   # QUEUE  KEY=VALUE...
//   emails   lease_ttl=60s max_attempts=10
//   reports  lease_ttl=10m initial_backoff=30s max_backoff=2h
//
// Keys: lease_ttl, max_attempts, initial_backoff, max_backoff; values as
// ferryd's flags take them. Keys not given keep the broker's `defaults`.
// Blank lines and lines starting with # are ignored. INVALID_ARGUMENT names
// the line and what is wrong.
absl::StatusOr<std::map<std::string, JobPolicy>> ParseQueueConfig(
    absl::string_view text, const JobPolicy& defaults);

}  // namespace ferry

#endif  // FERRY_SERVER_QUEUE_CONFIG_H_
