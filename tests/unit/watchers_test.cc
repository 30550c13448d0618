#include "server/core/watchers.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

// Records "STATE@second" for each job pushed, and how it was closed.
class RecordingSink final : public JobSink {
 public:
  void Push(JobRecord job) override {
    pushed.push_back(std::string(JobStateName(job.state)) + "@" +
                     std::to_string(absl::ToUnixSeconds(job.updated_at) -
                                    absl::ToUnixSeconds(kT0)));
    payloads.push_back(job.payload);
  }
  void Close(absl::Status status) override { closed = status; }
  void Kick() override {}

  std::vector<std::string> pushed;
  std::vector<std::string> payloads;
  std::optional<absl::Status> closed;
};

JobRecord At(JobState state, int seconds) {
  JobRecord job;
  job.id = 1;
  job.state = state;
  job.updated_at = kT0 + absl::Seconds(seconds);
  return job;
}

TEST(Watchers, ChangesBeforePrimingAreSentAfterTheReadInOrder) {
  Watchers watchers;
  auto sink = std::make_shared<RecordingSink>();
  KickList kicks;
  watchers.Add(1, 1, sink, absl::InfiniteFuture());
  watchers.Notify(At(JobState::kRunning, 2), kicks);
  EXPECT_THAT(sink->pushed, IsEmpty()) << "held until primed";
  EXPECT_TRUE(watchers.Prime(1, At(JobState::kQueued, 1), kicks));
  EXPECT_THAT(sink->pushed, ElementsAre("QUEUED@1", "RUNNING@2"));
}

TEST(Watchers, AHeldChangeTheReadAlreadyShowsIsNotSentTwice) {
  Watchers watchers;
  auto sink = std::make_shared<RecordingSink>();
  KickList kicks;
  watchers.Add(1, 1, sink, absl::InfiniteFuture());
  watchers.Notify(At(JobState::kQueued, 1), kicks);
  EXPECT_TRUE(watchers.Prime(1, At(JobState::kRunning, 2), kicks));
  watchers.Notify(At(JobState::kRunning, 2), kicks);
  EXPECT_THAT(sink->pushed, ElementsAre("RUNNING@2"));
}

TEST(Watchers, ATerminalStateClosesTheWatcherOk) {
  Watchers watchers;
  auto done = std::make_shared<RecordingSink>();
  auto later = std::make_shared<RecordingSink>();
  KickList kicks;
  watchers.Add(1, 1, done, absl::InfiniteFuture());
  EXPECT_FALSE(watchers.Prime(1, At(JobState::kSucceeded, 1), kicks));
  EXPECT_THAT(done->closed, testing::Optional(absl::OkStatus()));

  watchers.Add(2, 1, later, absl::InfiniteFuture());
  // A terminal change held before priming is not traded for a later one.
  watchers.Notify(At(JobState::kFailed, 2), kicks);
  watchers.Notify(At(JobState::kQueued, 3), kicks);
  EXPECT_FALSE(watchers.Prime(2, At(JobState::kRunning, 1), kicks));
  EXPECT_THAT(later->pushed, ElementsAre("RUNNING@1", "FAILED@2"));
  EXPECT_FALSE(watchers.Watched(1));
}

TEST(Watchers, OnlyPrimedWatchersExpireAtTheirDeadline) {
  Watchers watchers;
  auto primed = std::make_shared<RecordingSink>();
  auto reading = std::make_shared<RecordingSink>();
  KickList kicks;
  watchers.Add(1, 1, primed, kT0);
  ASSERT_TRUE(watchers.Prime(1, At(JobState::kQueued, 0), kicks));
  watchers.Add(2, 1, reading, kT0);
  EXPECT_EQ(watchers.NextDeadline(), kT0);
  watchers.ExpireDue(kT0, kicks);
  EXPECT_TRUE(primed->closed.has_value());
  EXPECT_FALSE(reading->closed.has_value()) << "it has not had its job yet";
  EXPECT_TRUE(watchers.Prime(2, At(JobState::kQueued, 0), kicks));
  watchers.ExpireDue(kT0, kicks);
  EXPECT_TRUE(reading->closed.has_value());
}

TEST(Watchers, NotifyKeepsNoPayloadAndCloseJobEndsEveryWatcherOfIt) {
  Watchers watchers;
  auto a = std::make_shared<RecordingSink>();
  auto b = std::make_shared<RecordingSink>();
  KickList kicks;
  watchers.Add(1, 1, a, absl::InfiniteFuture());
  watchers.Add(2, 1, b, absl::InfiniteFuture());
  ASSERT_TRUE(watchers.Prime(1, At(JobState::kQueued, 0), kicks));
  ASSERT_TRUE(watchers.Prime(2, At(JobState::kQueued, 0), kicks));
  JobRecord running = At(JobState::kRunning, 1);
  running.payload = "secret input";
  watchers.Notify(running, kicks);
  EXPECT_THAT(a->payloads, ElementsAre("", ""));
  watchers.CloseJob(1, absl::NotFoundError("purged"), kicks);
  EXPECT_EQ(a->closed->code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(b->closed->code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(watchers.Watched(1));
}

}  // namespace
}  // namespace ferry
