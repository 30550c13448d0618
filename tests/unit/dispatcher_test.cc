#include "server/core/dispatcher.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::testing::ElementsAre;

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

Taker MakeTaker(uint64_t handle, std::vector<std::string> queues,
                int64_t credits) {
  Taker taker;
  taker.handle = handle;
  taker.identity.worker_id = "w" + std::to_string(handle);
  taker.identity.queues = std::move(queues);
  taker.credits = credits;
  return taker;
}

// Matches in `queue` until none is left: "job@taker" each, taking the
// taker's credit as the broker's Grant does.
std::vector<std::string> Drain(Dispatcher& dispatcher,
                               const std::string& queue) {
  std::vector<std::string> matches;
  for (int i = 0; i < 100; ++i) {
    std::optional<Dispatcher::Match> match = dispatcher.Next(queue);
    if (!match.has_value()) break;
    --match->taker->credits;
    matches.push_back(std::to_string(match->job.id) + "@" +
                      std::to_string(match->taker->handle));
  }
  return matches;
}

TEST(Dispatcher, HigherPriorityThenEarlierRunAtThenLowerIdGoesFirst) {
  Dispatcher dispatcher;
  dispatcher.AddReady("q", Dispatcher::KeyOf(0, kT0, 1));
  dispatcher.AddReady("q", Dispatcher::KeyOf(5, kT0 + absl::Seconds(9), 2));
  dispatcher.AddReady("q", Dispatcher::KeyOf(0, kT0 - absl::Seconds(1), 3));
  dispatcher.AddReady("q", Dispatcher::KeyOf(0, kT0, 0));
  Taker taker = MakeTaker(7, {"q"}, 10);
  dispatcher.Register(&taker);
  dispatcher.MarkHungry(taker);
  EXPECT_THAT(Drain(dispatcher, "q"), ElementsAre("2@7", "3@7", "0@7", "1@7"));
  EXPECT_EQ(taker.credits, 6);
}

TEST(Dispatcher, TakersWithCreditShareAQueueRoundRobin) {
  Dispatcher dispatcher;
  for (int64_t id = 1; id <= 4; ++id) {
    dispatcher.AddReady("q", Dispatcher::KeyOf(0, kT0, id));
  }
  Taker a = MakeTaker(1, {"q"}, 2);
  Taker b = MakeTaker(2, {"q"}, 2);
  dispatcher.Register(&a);
  dispatcher.Register(&b);
  dispatcher.MarkHungry(a);
  dispatcher.MarkHungry(b);
  EXPECT_THAT(Drain(dispatcher, "q"), ElementsAre("1@1", "2@2", "3@1", "4@2"));
}

TEST(Dispatcher, NoMatchWithoutCreditWhilePausedOrAfterUnregister) {
  Dispatcher dispatcher;
  dispatcher.AddReady("q", Dispatcher::KeyOf(0, kT0, 1));
  Taker broke = MakeTaker(1, {"q"}, 0);
  dispatcher.Register(&broke);
  dispatcher.MarkHungry(broke);  // no credit: not in line
  EXPECT_FALSE(dispatcher.Next("q").has_value());

  Taker gone = MakeTaker(2, {"q"}, 1);
  dispatcher.Register(&gone);
  dispatcher.MarkHungry(gone);
  dispatcher.Unregister(2);
  EXPECT_FALSE(dispatcher.Next("q").has_value());

  Taker ready = MakeTaker(3, {"q"}, 1);
  dispatcher.Register(&ready);
  dispatcher.SetPaused("q", true);
  dispatcher.MarkHungry(ready);
  EXPECT_FALSE(dispatcher.Next("q").has_value());
  dispatcher.SetPaused("q", false);
  EXPECT_THAT(Drain(dispatcher, "q"), ElementsAre("1@3"));
}

TEST(Dispatcher, ANewJobGoesStraightToATakerOnlyWhenNothingIsReadyAhead) {
  Dispatcher dispatcher;
  Taker taker = MakeTaker(1, {"q"}, 1);
  dispatcher.Register(&taker);
  dispatcher.MarkHungry(taker);
  dispatcher.AddReady("q", Dispatcher::KeyOf(0, kT0, 1));
  EXPECT_EQ(dispatcher.TakerForNewJob("q"), nullptr);
  dispatcher.EraseReady("q", Dispatcher::KeyOf(0, kT0, 1));
  EXPECT_EQ(dispatcher.TakerForNewJob("q"), &taker);
}

TEST(Dispatcher, AQueueWithNothingReadyNoTakerAndNotPausedIsForgotten) {
  Dispatcher dispatcher;
  dispatcher.AddReady("once", Dispatcher::KeyOf(0, kT0, 1));
  dispatcher.AddReady("cancelled", Dispatcher::KeyOf(0, kT0, 2));
  dispatcher.SetPaused("paused", true);
  EXPECT_EQ(dispatcher.queue_count(), 3u);
  Taker taker = MakeTaker(1, {"once"}, 1);
  dispatcher.Register(&taker);
  dispatcher.MarkHungry(taker);
  EXPECT_THAT(Drain(dispatcher, "once"), ElementsAre("1@1"));
  EXPECT_FALSE(dispatcher.Holds("once")) << "its job went, its taker too";
  dispatcher.EraseReady("cancelled", Dispatcher::KeyOf(0, kT0, 2));
  EXPECT_FALSE(dispatcher.Holds("cancelled"));
  EXPECT_TRUE(dispatcher.Holds("paused")) << "a pause is kept";
  dispatcher.SetPaused("paused", false);
  EXPECT_EQ(dispatcher.queue_count(), 0u);
  EXPECT_EQ(dispatcher.TakerForNewJob("never-seen"), nullptr);
  EXPECT_FALSE(dispatcher.Holds("never-seen")) << "asking adds nothing";
  // A taker waiting on a queue keeps it.
  taker.credits = 1;
  dispatcher.MarkHungry(taker);
  EXPECT_TRUE(dispatcher.Holds("once"));
}

TEST(Dispatcher, QueueViewShowsPausedAndTheOldestReadyOfAnyPriority) {
  Dispatcher dispatcher;
  dispatcher.AddReady("q", Dispatcher::KeyOf(9, kT0, 1));
  dispatcher.AddReady("q", Dispatcher::KeyOf(0, kT0 - absl::Minutes(5), 2));
  dispatcher.AddReady("q", Dispatcher::KeyOf(0, kT0, 3));
  dispatcher.SetPaused("idle", true);
  std::vector<std::string> seen;
  dispatcher.ForEachQueue([&](const Dispatcher::QueueView& view) {
    std::string line = *view.name + (view.paused ? " paused" : "");
    if (view.oldest_ready.has_value()) {
      line += " oldest=" +
              std::to_string(absl::ToInt64Seconds(*view.oldest_ready - kT0));
    }
    seen.push_back(line);
  });
  EXPECT_THAT(seen,
              testing::UnorderedElementsAre("q oldest=-300", "idle paused"));
}

}  // namespace
}  // namespace ferry
