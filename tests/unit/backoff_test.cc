// RetryBackoff: the delay before the next attempt after a failed one.

#include "base/backoff.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

constexpr absl::Duration kInitial = absl::Seconds(1);
constexpr absl::Duration kMax = absl::Minutes(1);
// Near the top of the jitter's range [0, 1).
const double kAlmostOne = std::nextafter(1.0, 0.0);

TEST(RetryBackoff, DoublesPerFailedAttempt) {
  // unit 0 gives delay/2 exactly.
  EXPECT_EQ(RetryBackoff(1, kInitial, kMax, 0.0), absl::Milliseconds(500));
  EXPECT_EQ(RetryBackoff(2, kInitial, kMax, 0.0), absl::Seconds(1));
  EXPECT_EQ(RetryBackoff(3, kInitial, kMax, 0.0), absl::Seconds(2));
  EXPECT_EQ(RetryBackoff(4, kInitial, kMax, 0.0), absl::Seconds(4));
  EXPECT_EQ(RetryBackoff(6, kInitial, kMax, 0.0), absl::Seconds(16));
}

TEST(RetryBackoff, IsCappedAtMax) {
  // 1s doubled 6 times is 64s, over the 60s cap.
  EXPECT_EQ(RetryBackoff(7, kInitial, kMax, 0.0), kMax / 2);
  EXPECT_EQ(RetryBackoff(8, kInitial, kMax, 0.0), kMax / 2);
  // Attempts far past the cap neither overflow nor loop for long.
  EXPECT_EQ(RetryBackoff(1000, kInitial, kMax, 0.0), kMax / 2);
  EXPECT_EQ(RetryBackoff(INT32_MAX, kInitial, kMax, 0.0), kMax / 2);
  EXPECT_LE(RetryBackoff(INT32_MAX, kInitial, kMax, kAlmostOne), kMax);
}

TEST(RetryBackoff, InitialAboveMaxIsCapped) {
  EXPECT_EQ(RetryBackoff(1, absl::Minutes(5), kMax, 0.0), kMax / 2);
}

TEST(RetryBackoff, JitterSpansHalfToAllOfTheDelay) {
  for (int32_t attempt : {1, 2, 5, 10}) {
    SCOPED_TRACE(attempt);
    // The undelayed delay, worked out here rather than by the function.
    const absl::Duration delay =
        std::min(kInitial * (int64_t{1} << (attempt - 1)), kMax);
    EXPECT_EQ(RetryBackoff(attempt, kInitial, kMax, 0.0), delay / 2);
    const absl::Duration top =
        RetryBackoff(attempt, kInitial, kMax, kAlmostOne);
    EXPECT_LE(top, delay);
    EXPECT_GE(top, delay - absl::Microseconds(1));
    absl::Duration previous = absl::ZeroDuration();
    for (double unit : {0.0, 0.25, 0.5, 0.75, kAlmostOne}) {
      const absl::Duration d = RetryBackoff(attempt, kInitial, kMax, unit);
      EXPECT_GE(d, delay / 2) << "unit " << unit;
      EXPECT_LE(d, delay) << "unit " << unit;
      EXPECT_GE(d, previous) << "not monotonic in unit at " << unit;
      previous = d;
    }
    EXPECT_EQ(RetryBackoff(attempt, kInitial, kMax, 0.5), delay * 3 / 4);
  }
}

TEST(RetryBackoff, ZeroInitialBackoffRetriesAtOnce) {
  EXPECT_EQ(RetryBackoff(1, absl::ZeroDuration(), kMax, kAlmostOne),
            absl::ZeroDuration());
  EXPECT_EQ(RetryBackoff(10, absl::ZeroDuration(), kMax, kAlmostOne),
            absl::ZeroDuration());
}

}  // namespace
}  // namespace ferry
