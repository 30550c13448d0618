#include "server/core/lease_table.h"

#include <optional>
#include <string>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::testing::Optional;

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

TEST(LeaseTable, ExpiresActiveLeasesInDeadlineOrder) {
  LeaseTable table;
  table.Add("a");
  table.Add("b");  // (an Add may move the others: find them afresh)
  table.SetDeadline("a", *table.Find("a"), kT0 + absl::Seconds(20));
  table.SetDeadline("b", *table.Find("b"), kT0 + absl::Seconds(10));
  EXPECT_EQ(table.NextDeadline(), kT0 + absl::Seconds(10));
  EXPECT_EQ(table.FirstExpired(kT0 + absl::Seconds(9)), std::nullopt);
  EXPECT_THAT(table.FirstExpired(kT0 + absl::Seconds(30)),
              Optional(std::string("b")));

  // Extended: b now ends after a.
  table.SetDeadline("b", *table.Find("b"), kT0 + absl::Seconds(40));
  EXPECT_THAT(table.FirstExpired(kT0 + absl::Seconds(30)),
              Optional(std::string("a")));
  // Ending: no deadline any more.
  table.ClearDeadline("a", *table.Find("a"));
  EXPECT_EQ(table.FirstExpired(kT0 + absl::Seconds(30)), std::nullopt);
  EXPECT_EQ(table.NextDeadline(), kT0 + absl::Seconds(40));
}

TEST(LeaseTable, DropForgetsTheLeaseAndItsDeadline) {
  LeaseTable table;
  LeaseState& lease = table.Add("t");
  lease.job_id = 7;
  lease.session = 3;
  table.SetDeadline("t", lease, kT0);
  std::optional<LeaseState> dropped = table.Drop("t");
  ASSERT_TRUE(dropped.has_value());
  EXPECT_EQ(dropped->job_id, 7);
  EXPECT_EQ(dropped->session, 3u);
  EXPECT_EQ(table.Find("t"), nullptr);
  EXPECT_EQ(table.NextDeadline(), absl::InfiniteFuture());
  EXPECT_EQ(table.Drop("t"), std::nullopt);
}

TEST(LeaseTable, OrphanDetachesHeldLeasesButNotThoseBeingGranted) {
  LeaseTable table;
  table.Add("held");
  table.Add("granting");
  table.Add("other");
  table.Find("held")->session = 1;
  table.Find("held")->phase = LeasePhase::kActive;
  table.Find("granting")->session = 1;
  table.Find("other")->session = 2;
  table.Find("other")->phase = LeasePhase::kActive;
  EXPECT_EQ(table.Orphan(1), 1);
  EXPECT_EQ(table.Find("held")->session, 0u);
  EXPECT_EQ(table.Find("granting")->session, 1u);
  EXPECT_EQ(table.Find("other")->session, 2u);
}

TEST(LeaseTable, RemembersTheLatestResultsOnly) {
  LeaseTable table;
  table.RememberResult("first", 1, JobState::kSucceeded);
  for (size_t i = 0; i < LeaseTable::kRecentResults; ++i) {
    table.RememberResult("t" + std::to_string(i), 2, JobState::kFailed);
  }
  EXPECT_EQ(table.RecentResult("first"), nullptr);
  const LeaseTable::Recent* last =
      table.RecentResult("t" + std::to_string(LeaseTable::kRecentResults - 1));
  ASSERT_NE(last, nullptr);
  EXPECT_EQ(last->job_id, 2);
  EXPECT_EQ(last->state, JobState::kFailed);
}

TEST(LeaseTable, AnAcknowledgementGoesToTheLastSessionThatAskedOnce) {
  LeaseTable table;
  EXPECT_FALSE(table.RetargetAck("t", 5));
  table.SetAckTarget("t", 4);
  EXPECT_TRUE(table.AckPending("t"));
  EXPECT_TRUE(table.RetargetAck("t", 5));
  EXPECT_EQ(table.TakeAckTarget("t"), 5u);
  EXPECT_FALSE(table.AckPending("t"));
  EXPECT_EQ(table.TakeAckTarget("t"), 0u);
}

}  // namespace
}  // namespace ferry
