#ifndef FERRY_BASE_CLOCK_H_
#define FERRY_BASE_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ferry {

// The one source of time. Everything that depends on time (run_at, backoff,
// lease expiry, retention) reads a Clock so tests can use a fake one and
// never sleep. Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// Wall-clock time. The only place in Ferry that calls absl::Now().
class SystemClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }

  // A process-wide instance; it has no state, so sharing it is safe.
  static const Clock* Get() {
    static const SystemClock* const clock = new SystemClock();
    return clock;
  }
};

}  // namespace ferry

#endif  // FERRY_BASE_CLOCK_H_
