#ifndef FERRY_BASE_BACKOFF_H_
#define FERRY_BASE_BACKOFF_H_

#include <algorithm>
#include <cstdint>

#include "absl/time/time.h"

namespace ferry {

// Delay before the attempt after `attempt` (1-based) failed: `initial`
// doubled per earlier attempt, capped at `max`, then jittered into
// [delay/2, delay] by `unit` in [0, 1) so that jobs failing together do not
// retry together.
inline absl::Duration RetryBackoff(int32_t attempt, absl::Duration initial,
                                   absl::Duration max, double unit) {
  absl::Duration delay = initial;
  for (int32_t i = 1; i < attempt && delay < max; ++i) delay *= 2;
  delay = std::min(delay, max);
  return delay / 2 + (delay / 2) * unit;
}

}  // namespace ferry

#endif  // FERRY_BASE_BACKOFF_H_
