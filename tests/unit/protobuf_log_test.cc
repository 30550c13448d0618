#include "server/protobuf_log.h"

#include <memory>
#include <string>

#include "base/log_rate_limiter.h"
#include "ferry/v1/job.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fake_clock.h"
#include "tests/log_capture.h"

namespace ferry::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

TEST(LogRateLimiter, LetsNPerSecondThroughAndCountsTheRest) {
  FakeClock clock;
  LogRateLimiter limiter(&clock, 3);
  int64_t suppressed = -1;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(limiter.Allow(&suppressed));
    EXPECT_EQ(suppressed, 0);
  }
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(limiter.Allow(&suppressed));
  clock.Advance(absl::Seconds(1));
  EXPECT_TRUE(limiter.Allow(&suppressed));
  EXPECT_EQ(suppressed, 5) << "the next line says what was dropped";
}

// Lines a run of `attempts` bad parses logs.
std::vector<std::string> LogOfBadParses(int attempts) {
  LogCapture log;
  v1::JobSpec spec;
  spec.set_queue("q");
  std::string bytes = spec.SerializeAsString();
  bytes.back() = '\xff';  // invalid UTF-8 in a string field
  for (int i = 0; i < attempts; ++i) {
    v1::JobSpec parsed;
    EXPECT_FALSE(parsed.ParseFromString(bytes));
  }
  return log.Lines();
}

TEST(RouteProtobufLogs, AFloodOfBadRequestsLogsTenLinesASecond) {
  // The handler stays installed after the test: its clock must outlive it.
  static FakeClock& clock = *new FakeClock();
  RouteProtobufLogs(&clock);
  std::vector<std::string> lines = LogOfBadParses(1000);
  ASSERT_THAT(lines, SizeIs(10));
  EXPECT_THAT(lines[0], HasSubstr("protobuf library message=\""));
  EXPECT_THAT(lines[0], HasSubstr("invalid UTF-8"));

  clock.Advance(absl::Seconds(1));
  lines = LogOfBadParses(1);
  ASSERT_THAT(lines, SizeIs(1));
  EXPECT_THAT(lines[0], HasSubstr("suppressed_before=990"));
}

}  // namespace
}  // namespace ferry::testing
