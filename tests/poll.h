#ifndef FERRY_TESTS_POLL_H_
#define FERRY_TESTS_POLL_H_

#include <functional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ferry::testing {

// Calls `condition` every `interval` until it returns true (then true) or
// `timeout` of real time passes (then false). For the few things no event
// reports (a row committed while its callback is held, a process group
// gone, a file a child wrote): a poll interval, never a wait for time to
// pass. Bounded in count and time.
inline bool PollUntil(const std::function<bool()>& condition,
                      absl::Duration timeout,
                      absl::Duration interval = absl::Milliseconds(2)) {
  const absl::Time deadline = absl::Now() + timeout;
  for (int i = 0; i < 100000; ++i) {
    if (condition()) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(interval);
  }
  return false;
}

}  // namespace ferry::testing

#endif  // FERRY_TESTS_POLL_H_
