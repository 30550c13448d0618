#ifndef FERRY_BASE_LOG_RATE_LIMITER_H_
#define FERRY_BASE_LOG_RATE_LIMITER_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/clock.h"

namespace ferry {

// Lets at most `per_second` log lines of one source through per second of
// `clock`, and counts the rest, so that a flood (a client sending bad input
// in a loop, a failing disk) cannot fill the log or the disk. Thread-safe.
class LogRateLimiter {
 public:
  // `clock` is not owned and must outlive the limiter.
  LogRateLimiter(const Clock* clock, int per_second)
      : clock_(clock), per_second_(per_second) {}

  // True if a line may be logged now; `*suppressed` is then the number of
  // lines refused since the last one allowed (say so in the line).
  bool Allow(int64_t* suppressed) {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    if (now - window_start_ >= absl::Seconds(1)) {
      window_start_ = now;
      in_window_ = 0;
    }
    if (in_window_ >= per_second_) {
      ++suppressed_;
      return false;
    }
    ++in_window_;
    *suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }

 private:
  const Clock* const clock_;
  const int per_second_;
  absl::Mutex mu_;
  absl::Time window_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int in_window_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ferry

#endif  // FERRY_BASE_LOG_RATE_LIMITER_H_
