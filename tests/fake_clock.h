#ifndef FERRY_TESTS_FAKE_CLOCK_H_
#define FERRY_TESTS_FAKE_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/clock.h"

namespace ferry::testing {

// A clock that moves only when the test says so. Thread-safe.
class FakeClock final : public Clock {
 public:
  // Starts at a fixed, realistic instant so times print readably.
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1800000000))
      : now_(start) {}

  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }
  void Set(absl::Time t) {
    absl::MutexLock lock(&mu_);
    now_ = t;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::testing

#endif  // FERRY_TESTS_FAKE_CLOCK_H_
