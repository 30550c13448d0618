#include "tests/tools/history.h"

#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"
#include "tests/temp_dir.h"

namespace ferry::history {
namespace {

using ::ferry::testing::ScopedTempDir;
using ::ferry::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Builds a history by hand, one event a microsecond apart.
class HistoryBuilder {
 public:
  HistoryBuilder& Submit(const std::string& ref, int64_t id,
                         const std::string& queue = "q",
                         const std::string& key = "") {
    Event sent;
    sent.type = EventType::kSubmitSent;
    sent.ref = ref;
    sent.queue = queue;
    sent.key = key;
    Add(std::move(sent));
    Event ok;
    ok.type = EventType::kSubmitOk;
    ok.ref = ref;
    ok.job_id = id;
    return Add(std::move(ok));
  }
  HistoryBuilder& Leased(int64_t id, const std::string& token, int attempt) {
    return Add(LeaseEvent(EventType::kLeased, id, token, attempt));
  }
  HistoryBuilder& Sent(int64_t id, const std::string& token) {
    Event e = LeaseEvent(EventType::kResultSent, id, token);
    e.detail = "r-" + token;
    return Add(std::move(e));
  }
  HistoryBuilder& Accepted(int64_t id, const std::string& token) {
    return Add(LeaseEvent(EventType::kResultOk, id, token));
  }
  HistoryBuilder& Refused(int64_t id, const std::string& token) {
    Event e = LeaseEvent(EventType::kResultRefused, id, token);
    e.detail = "lease lost";
    return Add(std::move(e));
  }
  HistoryBuilder& Observed(int64_t id, JobState state) {
    Event e;
    e.type = EventType::kObserved;
    e.job_id = id;
    e.detail = std::string(JobStateName(state));
    return Add(std::move(e));
  }
  HistoryBuilder& Add(Event event) {
    event.time_us = ++now_;
    event.process = "test";
    events_.push_back(std::move(event));
    return *this;
  }
  const std::vector<Event>& events() const { return events_; }

 private:
  int64_t now_ = 1000;
  std::vector<Event> events_;
};

FinalJob Done(int64_t id, const std::string& token, int attempt = 1,
              int max_attempts = 5) {
  FinalJob job;
  job.id = id;
  job.queue = "q";
  job.state = JobState::kSucceeded;
  job.attempt = attempt;
  job.max_attempts = max_attempts;
  job.result = "r-" + token;
  job.result_token = token;
  return job;
}

std::vector<std::string> Kinds(const Report& report) {
  std::vector<std::string> kinds;
  for (const Violation& v : report.violations) kinds.push_back(v.kind);
  return kinds;
}

TEST(HistoryCheck, ACleanRunWithARetryAfterAnExpiryHasNoViolation) {
  HistoryBuilder h;
  h.Submit("a", 1).Leased(1, "t1", 1).Sent(1, "t1").Accepted(1, "t1");
  h.Observed(1, JobState::kSucceeded);
  // Job 2: the first worker's lease ran out before it reported; the
  // second attempt succeeded and the first worker's late result was
  // refused.
  h.Submit("b", 2).Leased(2, "u1", 1).Leased(2, "u2", 2);
  h.Sent(2, "u1").Refused(2, "u1").Sent(2, "u2").Accepted(2, "u2");
  const Report report = Check(h.events(), {Done(1, "t1"), Done(2, "u2", 2)});
  EXPECT_THAT(report.violations, IsEmpty()) << FormatReport(report);
  EXPECT_EQ(report.submits_acked, 2);
  EXPECT_EQ(report.results_accepted, 2);
  EXPECT_EQ(report.results_refused, 1);
  EXPECT_EQ(report.jobs_run_more_than_once, 1);
}

TEST(HistoryCheck, AnAcknowledgedSubmitMissingFromTheDatabaseIsLost) {
  HistoryBuilder h;
  h.Submit("a", 1).Submit("b", 2);
  const Report report = Check(h.events(), {Done(1, "t")});
  EXPECT_THAT(Kinds(report), ElementsAre("lost"));
  EXPECT_EQ(report.violations[0].job_id, 2);
}

TEST(HistoryCheck, AResultAcceptedAfterTheJobWasLeasedAgainIsStale) {
  // The zombie: worker A's lease expired and B got attempt 2 before A
  // sent its result; the broker must refuse A's.
  HistoryBuilder h;
  h.Submit("a", 1).Leased(1, "A", 1).Leased(1, "B", 2);
  h.Sent(1, "A").Accepted(1, "A").Sent(1, "B").Accepted(1, "B");
  const Report report = Check(h.events(), {Done(1, "B", 2)});
  EXPECT_THAT(Kinds(report), ElementsAre("stale-accept"));
}

TEST(HistoryCheck, TwoResultsAcceptedForOneAttempt) {
  HistoryBuilder h;
  h.Submit("a", 1).Leased(1, "A", 1).Leased(1, "A2", 1);
  h.Sent(1, "A").Accepted(1, "A").Sent(1, "A2").Accepted(1, "A2");
  const Report report = Check(h.events(), {Done(1, "A2")});
  EXPECT_THAT(Kinds(report), ElementsAre("double-accept"));
}

TEST(HistoryCheck, AStoredResultFromAnEarlierLeaseOrARefusedOne) {
  HistoryBuilder h;
  h.Submit("a", 1).Leased(1, "A", 1).Leased(1, "B", 2);
  h.Sent(1, "B").Accepted(1, "B");
  h.Submit("b", 2).Leased(2, "C", 1).Sent(2, "C").Refused(2, "C");
  const Report report =
      Check(h.events(), {Done(1, "A", /*attempt=*/2), Done(2, "C")});
  EXPECT_THAT(Kinds(report), ElementsAre("stale-stored", "refused-stored"));
}

TEST(HistoryCheck, MoreRunsThanAttempts) {
  HistoryBuilder h;
  h.Submit("a", 1).Leased(1, "A", 1).Leased(1, "B", 2).Leased(1, "C", 3);
  h.Sent(1, "C").Accepted(1, "C");
  const Report report =
      Check(h.events(), {Done(1, "C", /*attempt=*/3, /*max_attempts=*/2)});
  EXPECT_THAT(Kinds(report), ElementsAre("over-run"));
}

TEST(HistoryCheck, ATerminalJobThatChangesAfterwards) {
  HistoryBuilder h;
  h.Submit("a", 1).Observed(1, JobState::kCancelled);
  h.Observed(1, JobState::kQueued);
  h.Submit("b", 2).Observed(2, JobState::kFailed);
  FinalJob two = Done(2, "x");  // ends SUCCEEDED
  FinalJob one = Done(1, "y");
  one.state = JobState::kCancelled;
  const Report report = Check(h.events(), {one, two});
  EXPECT_THAT(Kinds(report),
              ElementsAre("terminal-changed", "terminal-changed"));
  EXPECT_THAT(report.violations[0].detail, HasSubstr("later QUEUED"));
  EXPECT_THAT(report.violations[1].detail, HasSubstr("ends SUCCEEDED"));
}

TEST(HistoryCheck, OneIdempotencyKeyGivingTwoJobs) {
  HistoryBuilder h;
  h.Submit("a", 1, "q", "order-42").Submit("b", 1, "q", "order-42");
  h.Submit("c", 2, "other", "order-42");  // another queue: another job
  h.Submit("d", 3, "q", "order-42");
  FinalJob one = Done(1, "t"), two = Done(2, "t"), three = Done(3, "t");
  const Report report = Check(h.events(), {one, two, three});
  EXPECT_THAT(Kinds(report), ElementsAre("idempotency-split"));
}

TEST(HistoryFile, EventsRoundTripThroughTheFileAndACutLastLineIsSkipped) {
  ScopedTempDir dir;
  const std::string path = dir.path() + "/history";
  {
    FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Recorder> recorder,
                               Recorder::Open(path, "producer-1"));
    recorder->SubmitSent("ref\twith\ttabs", "q", "key\nwith newline");
    recorder->SubmitOk("ref\twith\ttabs", 7);
    recorder->Leased(7, "tok", 1);
    recorder->ResultSent(7, "tok", std::string("bin\0ary", 7));
    recorder->Observed(7, JobState::kSucceeded);
  }
  std::ofstream(path, std::ios::app) << "12345\tsubmit_o";  // killed here
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<Event> events, ReadHistory({path}));
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[0].ref, "ref\twith\ttabs");
  EXPECT_EQ(events[0].key, "key\nwith newline");
  EXPECT_EQ(events[0].process, "producer-1");
  EXPECT_EQ(events[1].type, EventType::kSubmitOk);
  EXPECT_EQ(events[1].job_id, 7);
  EXPECT_EQ(events[2].attempt, 1);
  EXPECT_EQ(events[3].detail, std::string("bin\0ary", 7));
  EXPECT_EQ(events[4].detail, "SUCCEEDED");
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_LE(events[i - 1].time_us, events[i].time_us);
  }

  // A bad line that is not the last is an error that names it.
  std::ofstream(path, std::ios::app) << "\nnot an event\n1\tleased\n";
  EXPECT_THAT(ReadHistory({path}), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr(path + ":6")));
}

}  // namespace
}  // namespace ferry::history
