#include "server/queue_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace ferry::testing {
namespace {

using ::testing::HasSubstr;

TEST(QueueConfig, OverridesOnlyTheKeysGivenPerQueue) {
  JobPolicy defaults;
  FERRY_ASSERT_OK_AND_ASSIGN(auto policies, ParseQueueConfig(R"(
# comment
emails   lease_ttl=60s max_attempts=10

reports  initial_backoff=30s max_backoff=2h
)",
                                                             defaults));
  ASSERT_EQ(policies.size(), 2u);
  EXPECT_EQ(policies["emails"].lease_ttl, absl::Seconds(60));
  EXPECT_EQ(policies["emails"].max_attempts, 10);
  EXPECT_EQ(policies["emails"].initial_backoff, defaults.initial_backoff);
  EXPECT_EQ(policies["reports"].initial_backoff, absl::Seconds(30));
  EXPECT_EQ(policies["reports"].max_backoff, absl::Hours(2));
  EXPECT_EQ(policies["reports"].lease_ttl, defaults.lease_ttl);
}

TEST(QueueConfig, ErrorsNameTheLineAndTheProblem) {
  JobPolicy defaults;
  EXPECT_THAT(ParseQueueConfig("ok lease_ttl=5s\nbad color=red\n", defaults),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("line 2: unknown key \"color\"")));
  EXPECT_THAT(
      ParseQueueConfig("q lease_ttl=0s\n", defaults),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1s..24h")));
  EXPECT_THAT(
      ParseQueueConfig("q max_attempts=0\n", defaults),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_attempts")));
  EXPECT_THAT(
      ParseQueueConfig("q max_attempts=2\nq max_attempts=3\n", defaults),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("twice")));
  EXPECT_THAT(ParseQueueConfig("bad/name lease_ttl=5s\n", defaults),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("queue")));
  EXPECT_THAT(
      ParseQueueConfig("q\n", defaults),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("KEY=VALUE")));
  EXPECT_THAT(
      ParseQueueConfig("q initial_backoff=1h max_backoff=1m\n", defaults),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("below")));
}

}  // namespace
}  // namespace ferry::testing
