// The contract every Store implementation must pass. Each TEST_P runs
// against every factory in INSTANTIATE_TEST_SUITE_P below; nothing here may
// depend on one implementation.

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/store.h"
#include "tests/fake_clock.h"
#include "tests/status_matchers.h"
#include "tests/store_test_util.h"

namespace ferry::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::IsEmpty;
using ::testing::Optional;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;
using ::testing::UnorderedElementsAreArray;

enum class Compare { kEverything, kAllButPayloadAndResult };

// Expects `actual` to equal `expected` field by field. Writes that return a
// job without its payload and result are compared with
// kAllButPayloadAndResult.
void ExpectSameJob(const JobRecord& actual, const JobRecord& expected,
                   Compare compare = Compare::kEverything) {
  SCOPED_TRACE(absl::StrCat("job ", expected.id));
  EXPECT_EQ(actual.id, expected.id);
  EXPECT_EQ(actual.queue, expected.queue);
  EXPECT_EQ(actual.kind, expected.kind);
  EXPECT_EQ(actual.state, expected.state);
  EXPECT_EQ(actual.priority, expected.priority);
  EXPECT_EQ(actual.run_at, expected.run_at);
  EXPECT_EQ(actual.created_at, expected.created_at);
  EXPECT_EQ(actual.updated_at, expected.updated_at);
  EXPECT_EQ(actual.started_at, expected.started_at);
  EXPECT_EQ(actual.finished_at, expected.finished_at);
  EXPECT_EQ(actual.attempt, expected.attempt);
  EXPECT_EQ(actual.max_attempts, expected.max_attempts);
  EXPECT_EQ(actual.initial_backoff, expected.initial_backoff);
  EXPECT_EQ(actual.max_backoff, expected.max_backoff);
  EXPECT_EQ(actual.lease_ttl, expected.lease_ttl);
  EXPECT_EQ(actual.timeout, expected.timeout);
  EXPECT_EQ(actual.idempotency_key, expected.idempotency_key);
  EXPECT_EQ(actual.content_type, expected.content_type);
  EXPECT_EQ(actual.labels, expected.labels);
  EXPECT_EQ(actual.last_error, expected.last_error);
  EXPECT_EQ(actual.progress_percent, expected.progress_percent);
  EXPECT_EQ(actual.progress_message, expected.progress_message);
  EXPECT_EQ(actual.worker_id, expected.worker_id);
  EXPECT_EQ(actual.lease_token, expected.lease_token);
  EXPECT_EQ(actual.lease_deadline, expected.lease_deadline);
  EXPECT_EQ(actual.result_token, expected.result_token);
  if (compare == Compare::kEverything) {
    EXPECT_EQ(actual.payload, expected.payload);
    EXPECT_EQ(actual.result, expected.result);
  }
}

std::vector<int64_t> Ids(const std::vector<JobRecord>& jobs) {
  std::vector<int64_t> ids;
  for (const JobRecord& job : jobs) ids.push_back(job.id);
  return ids;
}

std::vector<int64_t> Ids(const std::vector<JobKey>& keys) {
  std::vector<int64_t> ids;
  for (const JobKey& key : keys) ids.push_back(key.id);
  return ids;
}

using Count = std::tuple<std::string, JobState, int64_t>;

std::vector<Count> Counts(const std::vector<QueueCount>& counts) {
  std::vector<Count> out;
  for (const QueueCount& c : counts)
    out.emplace_back(c.queue, c.state, c.count);
  return out;
}

class StoreContractTest : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    ASSERT_NO_FATAL_FAILURE(Open());
  }

  void Open() { FERRY_ASSERT_OK_AND_ASSIGN(store_, GetParam()(dir_.path())); }

  // Destroys the store, which completes its pending writes, and opens the
  // same directory again.
  void Reopen() {
    store_.reset();
    Open();
  }

  absl::Time Now() const { return clock_.Now(); }

  absl::StatusOr<JobRecord> Get(int64_t id) {
    return store_->GetJob(id, /*with_payload=*/true);
  }

  absl::StatusOr<JobState> StateOf(int64_t id) {
    FERRY_ASSIGN_OR_RETURN(JobRecord job,
                           store_->GetJob(id, /*with_payload=*/false));
    return job.state;
  }

  absl::StatusOr<int64_t> CreateQueued(absl::string_view queue) {
    FERRY_ASSIGN_OR_RETURN(CreateResult created,
                           Create(*store_, MakeJob(queue, Now())));
    return created.job.id;
  }

  absl::StatusOr<int64_t> CreateScheduled(absl::string_view queue,
                                          absl::Time run_at) {
    JobRecord job = MakeJob(queue, Now());
    job.state = JobState::kScheduled;
    job.run_at = run_at;
    FERRY_ASSIGN_OR_RETURN(CreateResult created, Create(*store_, job));
    return created.job.id;
  }

  // A new job in `state`, reached through the store's own transitions (at
  // Now()); RUNNING jobs hold the lease "token-<id>" of worker "w1".
  absl::StatusOr<JobRecord> NewJobIn(JobState state,
                                     absl::string_view queue = "q") {
    if (state == JobState::kScheduled) {
      FERRY_ASSIGN_OR_RETURN(int64_t id,
                             CreateScheduled(queue, Now() + absl::Hours(1)));
      return Get(id);
    }
    FERRY_ASSIGN_OR_RETURN(int64_t id, CreateQueued(queue));
    const std::string token = absl::StrCat("token-", id);
    switch (state) {
      case JobState::kScheduled:
      case JobState::kQueued:
        break;
      case JobState::kCancelled:
        FERRY_RETURN_IF_ERROR(
            Cancel(*store_, id, "not wanted", Now()).status());
        break;
      case JobState::kRunning:
      case JobState::kSucceeded:
      case JobState::kFailed:
        FERRY_RETURN_IF_ERROR(Lease(*store_, id, token, "w1", Now()).status());
        if (state == JobState::kSucceeded) {
          FERRY_RETURN_IF_ERROR(
              Finish(*store_, id, token, Succeeded(Now(), "done")).status());
        } else if (state == JobState::kFailed) {
          FERRY_RETURN_IF_ERROR(
              Finish(*store_, id, token, Failed(Now(), "broken")).status());
        }
        break;
    }
    return Get(id);
  }

  absl::StatusOr<int64_t> TotalJobs() {
    FERRY_ASSIGN_OR_RETURN(std::vector<QueueCount> counts,
                           store_->CountJobs(""));
    int64_t total = 0;
    for (const QueueCount& c : counts) total += c.count;
    return total;
  }

  absl::StatusOr<std::vector<int64_t>> ListIds(ListFilter filter) {
    FERRY_ASSIGN_OR_RETURN(std::vector<JobRecord> jobs,
                           store_->ListJobs(filter));
    return Ids(jobs);
  }

  // Declared first so that it outlives the store.
  ScopedTempDir dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
};

const JobState kAllStates[] = {JobState::kScheduled, JobState::kQueued,
                               JobState::kRunning,   JobState::kSucceeded,
                               JobState::kFailed,    JobState::kCancelled};

// ---- CreateJobs and GetJob ----

TEST_P(StoreContractTest, CreateAssignsIncreasingDistinctIds) {
  std::vector<int64_t> ids;
  for (int i = 0; i < 3; ++i) {
    FERRY_ASSERT_OK_AND_ASSIGN(CreateResult created,
                               Create(*store_, MakeJob("q", Now())));
    EXPECT_TRUE(created.created);
    ids.push_back(created.job.id);
  }
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::vector<CreateResult> batch,
      CreateAll(*store_, {MakeJob("q", Now()), MakeJob("r", Now()),
                          MakeJob("q", Now())}));
  ASSERT_THAT(batch, SizeIs(3));
  for (const CreateResult& created : batch) {
    EXPECT_TRUE(created.created);
    ids.push_back(created.job.id);
  }
  EXPECT_GT(ids.front(), 0);
  for (size_t i = 1; i < ids.size(); ++i) {
    EXPECT_GT(ids[i], ids[i - 1]) << "ids: " << ::testing::PrintToString(ids);
  }
}

TEST_P(StoreContractTest, GetReturnsEveryFieldAsWritten) {
  const absl::Time t = Now();
  // Times with microseconds, so truncation to seconds or milliseconds shows.
  JobRecord queued = MakeJob("emails", t);
  queued.kind = "send-welcome";
  queued.priority = -7;
  queued.run_at = t + absl::Microseconds(1);
  queued.created_at = t + absl::Microseconds(123457);
  queued.updated_at = t + absl::Microseconds(234568);
  queued.max_attempts = 9;
  queued.initial_backoff = absl::Microseconds(1500);
  queued.max_backoff = absl::Seconds(90) + absl::Microseconds(7);
  queued.lease_ttl = absl::Milliseconds(12345);
  queued.timeout = absl::Hours(2);
  queued.idempotency_key = "order-42";
  queued.content_type = "application/json";
  queued.labels = {{"tenant", "acme"}, {"expr", "a=b"}, {"empty", ""}};
  queued.payload = std::string("a\0b\0\xff\n", 6);

  // The lease and result fields are the caller's too.
  JobRecord running = MakeJob("video", t);
  running.state = JobState::kRunning;
  running.started_at = t + absl::Microseconds(345679);
  running.attempt = 2;
  running.last_error = "first try: connection reset";
  running.progress_percent = 55;
  running.progress_message = "transcoding";
  running.worker_id = "worker-7";
  running.lease_token = "tok\x01secret";
  running.lease_deadline = t + absl::Seconds(30) + absl::Microseconds(3);
  running.payload = "";

  JobRecord succeeded = MakeJob("video", t);
  succeeded.state = JobState::kSucceeded;
  succeeded.attempt = 1;
  succeeded.started_at = t + absl::Microseconds(10);
  succeeded.finished_at = t + absl::Microseconds(999999);
  succeeded.result = std::string("out\0put", 7);

  std::vector<JobRecord> jobs = {queued, running, succeeded};
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<CreateResult> created,
                             CreateAll(*store_, jobs));
  ASSERT_THAT(created, SizeIs(3));
  for (size_t i = 0; i < jobs.size(); ++i) {
    jobs[i].id = created[i].job.id;
    EXPECT_TRUE(created[i].created);
    ExpectSameJob(created[i].job, jobs[i]);
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord got, Get(jobs[i].id));
    ExpectSameJob(got, jobs[i]);
  }
}

TEST_P(StoreContractTest, GetWithoutPayloadOmitsPayloadAndResult) {
  JobRecord job = MakeJob("q", Now());
  job.state = JobState::kSucceeded;
  job.finished_at = Now();
  job.payload = "input";
  job.result = "output";
  FERRY_ASSERT_OK_AND_ASSIGN(CreateResult created, Create(*store_, job));
  job.id = created.job.id;

  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord got,
                             store_->GetJob(job.id, /*with_payload=*/false));
  ExpectSameJob(got, job, Compare::kAllButPayloadAndResult);
  EXPECT_EQ(got.payload, "");
  EXPECT_EQ(got.result, "");
}

TEST_P(StoreContractTest, GetOfUnknownJobIsNotFound) {
  EXPECT_THAT(store_->GetJob(12345, /*with_payload=*/true),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->GetJob(12345, /*with_payload=*/false),
              StatusIs(absl::StatusCode::kNotFound));
}

// ---- idempotency keys ----

TEST_P(StoreContractTest, CreateWithKnownIdempotencyKeyReturnsTheFirstJob) {
  JobRecord first = MakeJob("q", Now());
  first.idempotency_key = "order-42";
  first.payload = "first";
  FERRY_ASSERT_OK_AND_ASSIGN(CreateResult original, Create(*store_, first));
  ASSERT_TRUE(original.created);

  clock_.Advance(absl::Seconds(5));
  JobRecord second = MakeJob("q", Now());
  second.idempotency_key = "order-42";
  second.payload = "second";
  FERRY_ASSERT_OK_AND_ASSIGN(CreateResult again, Create(*store_, second));

  EXPECT_FALSE(again.created);
  first.id = original.job.id;
  ExpectSameJob(again.job, first);  // payload included
  EXPECT_THAT(TotalJobs(), IsOkAndHolds(1));
}

TEST_P(StoreContractTest, IdempotencyKeysAreScopedToTheirQueue) {
  JobRecord billing = MakeJob("billing", Now());
  billing.idempotency_key = "order-42";
  FERRY_ASSERT_OK_AND_ASSIGN(CreateResult first, Create(*store_, billing));
  ASSERT_TRUE(first.created);

  JobRecord emails = MakeJob("emails", Now());
  emails.idempotency_key = "order-42";
  FERRY_ASSERT_OK_AND_ASSIGN(CreateResult second, Create(*store_, emails));
  EXPECT_TRUE(second.created) << "another queue's key must not match";
  EXPECT_EQ(second.job.queue, "emails");
  EXPECT_NE(second.job.id, first.job.id);
  EXPECT_THAT(TotalJobs(), IsOkAndHolds(2));
}

TEST_P(StoreContractTest, IdempotencyKeyRepeatedWithinOneBatchInsertsOnce) {
  JobRecord a = MakeJob("q", Now());
  a.idempotency_key = "k1";
  a.payload = "a";
  JobRecord b = MakeJob("q", Now());
  b.idempotency_key = "k1";
  b.payload = "b";
  // Jobs without a key never match each other.
  JobRecord c = MakeJob("q", Now());
  JobRecord d = MakeJob("q", Now());

  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<CreateResult> results,
                             CreateAll(*store_, {a, b, c, d}));
  ASSERT_THAT(results, SizeIs(4));
  EXPECT_TRUE(results[0].created);
  EXPECT_FALSE(results[1].created);
  EXPECT_EQ(results[1].job.id, results[0].job.id);
  EXPECT_EQ(results[1].job.payload, "a");
  EXPECT_TRUE(results[2].created);
  EXPECT_TRUE(results[3].created);
  EXPECT_NE(results[2].job.id, results[3].job.id);
  EXPECT_THAT(TotalJobs(), IsOkAndHolds(3));
}

TEST_P(StoreContractTest, IdempotentCreateReturnsTheResultOnceTheJobHasOne) {
  JobRecord job = MakeJob("q", Now());
  job.idempotency_key = "report-7";
  job.payload = "input";
  FERRY_ASSERT_OK_AND_ASSIGN(CreateResult original, Create(*store_, job));
  const int64_t id = original.job.id;
  ASSERT_THAT(Lease(*store_, id, "t1", "w1", Now()), IsOk());
  const std::string output("out\0put", 7);
  ASSERT_THAT(Finish(*store_, id, "t1", Succeeded(Now(), output)), IsOk());

  FERRY_ASSERT_OK_AND_ASSIGN(CreateResult again, Create(*store_, job));
  EXPECT_FALSE(again.created);
  EXPECT_EQ(again.job.id, id);
  EXPECT_EQ(again.job.state, JobState::kSucceeded);
  EXPECT_EQ(again.job.result, output);
  EXPECT_EQ(again.job.payload, "input");
  EXPECT_THAT(TotalJobs(), IsOkAndHolds(1));
}

// ---- LeaseJob ----

TEST_P(StoreContractTest, LeaseMovesQueuedJobToRunningAndReturnsPayload) {
  JobRecord job = MakeJob("q", Now());
  job.payload = std::string("in\0put", 6);
  job.progress_percent = 12;
  job.progress_message = "left over";
  job.lease_ttl = absl::Seconds(45) + absl::Microseconds(7);
  FERRY_ASSERT_OK_AND_ASSIGN(CreateResult created, Create(*store_, job));
  const int64_t id = created.job.id;

  clock_.Advance(absl::Milliseconds(1500));
  const absl::Time leased_at = Now();
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord leased,
                             Lease(*store_, id, "tok-1", "w1", leased_at));
  EXPECT_EQ(leased.id, id);
  EXPECT_EQ(leased.state, JobState::kRunning);
  EXPECT_EQ(leased.attempt, 1);
  EXPECT_EQ(leased.lease_token, "tok-1");
  EXPECT_EQ(leased.worker_id, "w1");
  EXPECT_EQ(leased.lease_deadline, leased_at + job.lease_ttl);
  EXPECT_EQ(leased.started_at, leased_at);
  EXPECT_EQ(leased.updated_at, leased_at);
  EXPECT_EQ(leased.progress_percent, 0);
  EXPECT_EQ(leased.progress_message, "");
  EXPECT_EQ(leased.payload, job.payload);

  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord stored, Get(id));
  ExpectSameJob(stored, leased);
}

TEST_P(StoreContractTest, LeaseOfJobThatIsNotQueuedFailsAndChangesNothing) {
  for (JobState state : kAllStates) {
    if (state == JobState::kQueued) continue;
    SCOPED_TRACE(JobStateName(state));
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord before, NewJobIn(state));
    clock_.Advance(absl::Seconds(1));

    EXPECT_THAT(Lease(*store_, before.id, "intruder", "w2", Now()),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord after, Get(before.id));
    ExpectSameJob(after, before);
  }
}

TEST_P(StoreContractTest, LeaseOfUnknownJobIsNotFound) {
  EXPECT_THAT(Lease(*store_, 777, "tok", "w1", Now()),
              StatusIs(absl::StatusCode::kNotFound));
}

// ---- FinishAttempt ----

TEST_P(StoreContractTest, FinishWithSuccessStoresResultAndClearsLease) {
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord running, NewJobIn(JobState::kRunning));
  clock_.Advance(absl::Seconds(3));
  const absl::Time finished_at = Now();
  const std::string output("res\0ult", 7);

  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord finished,
                             Finish(*store_, running.id, running.lease_token,
                                    Succeeded(finished_at, output)));
  EXPECT_EQ(finished.state, JobState::kSucceeded);
  EXPECT_EQ(finished.finished_at, finished_at);
  EXPECT_EQ(finished.updated_at, finished_at);
  EXPECT_EQ(finished.lease_token, "");
  EXPECT_EQ(finished.lease_deadline, absl::InfinitePast());
  EXPECT_EQ(finished.attempt, 1);
  EXPECT_EQ(finished.result, "");  // returned without payload and result

  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord stored, Get(running.id));
  ExpectSameJob(stored, finished, Compare::kAllButPayloadAndResult);
  EXPECT_EQ(stored.result, output);
  EXPECT_EQ(stored.payload, running.payload);
}

TEST_P(StoreContractTest, FinishWithRetryReschedulesTheJobAtRunAt) {
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord running, NewJobIn(JobState::kRunning));
  clock_.Advance(absl::Seconds(3));
  const absl::Time retry_at = Now() + absl::Seconds(10);

  FERRY_ASSERT_OK_AND_ASSIGN(
      JobRecord scheduled,
      Finish(*store_, running.id, running.lease_token,
             RetryAt(Now(), retry_at, "connection reset")));
  EXPECT_EQ(scheduled.state, JobState::kScheduled);
  EXPECT_EQ(scheduled.run_at, retry_at);
  EXPECT_EQ(scheduled.last_error, "connection reset");
  EXPECT_EQ(scheduled.finished_at, absl::InfinitePast());
  EXPECT_EQ(scheduled.lease_token, "");
  EXPECT_EQ(scheduled.lease_deadline, absl::InfinitePast());
  EXPECT_EQ(scheduled.attempt, 1);

  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord stored, Get(running.id));
  ExpectSameJob(stored, scheduled, Compare::kAllButPayloadAndResult);
  EXPECT_THAT(store_->NextScheduledTime(), IsOkAndHolds(Optional(retry_at)));
}

TEST_P(StoreContractTest, AReportedOutcomeKeepsItsTokenAsResultToken) {
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord running, NewJobIn(JobState::kRunning));
  AttemptOutcome outcome = Succeeded(Now(), "out");
  outcome.reported = true;
  FERRY_ASSERT_OK_AND_ASSIGN(
      JobRecord finished,
      Finish(*store_, running.id, running.lease_token, outcome));
  EXPECT_EQ(finished.result_token, running.lease_token);
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord stored, Get(running.id));
  EXPECT_EQ(stored.result_token, running.lease_token);
}

TEST_P(StoreContractTest, AnExpiredLeaseLeavesNoResultToken) {
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord running, NewJobIn(JobState::kRunning));
  // Not reported: the broker ended the attempt because the lease expired.
  FERRY_ASSERT_OK_AND_ASSIGN(
      JobRecord scheduled,
      Finish(*store_, running.id, running.lease_token,
             RetryAt(Now(), Now() + absl::Seconds(5), "lease expired")));
  EXPECT_EQ(scheduled.result_token, "");
}

TEST_P(StoreContractTest, FinishWithFailureStoresTheError) {
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord running, NewJobIn(JobState::kRunning));
  clock_.Advance(absl::Seconds(3));

  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord failed,
                             Finish(*store_, running.id, running.lease_token,
                                    Failed(Now(), "exit status 2")));
  EXPECT_EQ(failed.state, JobState::kFailed);
  EXPECT_EQ(failed.last_error, "exit status 2");
  EXPECT_EQ(failed.finished_at, Now());
  EXPECT_EQ(failed.lease_token, "");
  EXPECT_EQ(failed.lease_deadline, absl::InfinitePast());

  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord stored, Get(running.id));
  ExpectSameJob(stored, failed, Compare::kAllButPayloadAndResult);
  EXPECT_EQ(stored.result, "");
}

TEST_P(StoreContractTest, FinishWithStaleOrForeignTokenFailsAndKeepsTheLease) {
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t id, CreateQueued("q"));
  // Attempt 1 fails and is retried at once; attempt 2 holds the lease.
  ASSERT_THAT(Lease(*store_, id, "attempt-1", "w1", Now()), IsOk());
  ASSERT_THAT(Finish(*store_, id, "attempt-1", RetryAt(Now(), Now(), "lost")),
              IsOk());
  ASSERT_THAT(Promote(*store_, Now(), 10), IsOk());
  ASSERT_THAT(Lease(*store_, id, "attempt-2", "w2", Now()), IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord before, Get(id));
  ASSERT_EQ(before.attempt, 2);
  clock_.Advance(absl::Seconds(1));

  for (const char* token : {"attempt-1", "forged", ""}) {
    SCOPED_TRACE(absl::StrCat("token \"", token, "\""));
    EXPECT_THAT(Finish(*store_, id, token, Succeeded(Now(), "stale result")),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    EXPECT_THAT(Finish(*store_, id, token, Failed(Now(), "stale failure")),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord after, Get(id));
    ExpectSameJob(after, before);
  }
  // The current holder still can.
  EXPECT_THAT(Finish(*store_, id, "attempt-2", Succeeded(Now(), "ok")), IsOk());
}

TEST_P(StoreContractTest, FinishOfJobThatIsNotRunningFails) {
  for (JobState state : kAllStates) {
    if (state == JobState::kRunning) continue;
    SCOPED_TRACE(JobStateName(state));
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord before, NewJobIn(state));
    EXPECT_THAT(Finish(*store_, before.id, absl::StrCat("token-", before.id),
                       Succeeded(Now(), "late")),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord after, Get(before.id));
    ExpectSameJob(after, before);
  }
}

TEST_P(StoreContractTest, FinishOfUnknownJobIsNotFound) {
  EXPECT_THAT(Finish(*store_, 777, "tok", Succeeded(Now(), "")),
              StatusIs(absl::StatusCode::kNotFound));
}

// ---- ReleaseLease and SetProgress ----

TEST_P(StoreContractTest, ReleaseLeaseUndoesTheAttempt) {
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord running, NewJobIn(JobState::kRunning));
  clock_.Advance(absl::Seconds(1));

  FERRY_ASSERT_OK_AND_ASSIGN(
      JobRecord released,
      Release(*store_, running.id, running.lease_token, Now()));
  EXPECT_EQ(released.state, JobState::kQueued);
  EXPECT_EQ(released.attempt, 0);
  EXPECT_EQ(released.lease_token, "");
  EXPECT_EQ(released.lease_deadline, absl::InfinitePast());
  EXPECT_EQ(released.worker_id, "");
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord stored, Get(running.id));
  ExpectSameJob(stored, released, Compare::kAllButPayloadAndResult);

  // The next lease is attempt 1 again, and the released token is dead.
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord again,
                             Lease(*store_, running.id, "tok-2", "w2", Now()));
  EXPECT_EQ(again.attempt, 1);
  EXPECT_THAT(Release(*store_, running.id, running.lease_token, Now()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_P(StoreContractTest, ReleaseLeaseRequiresTheCurrentToken) {
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord running, NewJobIn(JobState::kRunning));
  EXPECT_THAT(Release(*store_, running.id, "forged", Now()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord after, Get(running.id));
  ExpectSameJob(after, running);
  EXPECT_THAT(Release(*store_, 777, "tok", Now()),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_P(StoreContractTest, SetProgressRecordsProgressUnderTheCurrentToken) {
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord running, NewJobIn(JobState::kRunning));
  clock_.Advance(absl::Seconds(2));

  FERRY_ASSERT_OK_AND_ASSIGN(
      JobRecord updated,
      Progress(*store_, running.id, running.lease_token, 40, "halfway", Now()));
  EXPECT_EQ(updated.progress_percent, 40);
  EXPECT_EQ(updated.progress_message, "halfway");
  EXPECT_EQ(updated.state, JobState::kRunning);
  EXPECT_EQ(updated.lease_token, running.lease_token);
  EXPECT_EQ(updated.lease_deadline, running.lease_deadline);
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord stored, Get(running.id));
  ExpectSameJob(stored, updated, Compare::kAllButPayloadAndResult);
}

TEST_P(StoreContractTest, SetProgressWithoutTheCurrentTokenFails) {
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord running, NewJobIn(JobState::kRunning));
  ASSERT_THAT(
      Progress(*store_, running.id, running.lease_token, 10, "start", Now()),
      IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord before, Get(running.id));

  EXPECT_THAT(Progress(*store_, running.id, "forged", 99, "almost", Now()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord after, Get(running.id));
  ExpectSameJob(after, before);

  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord queued, NewJobIn(JobState::kQueued));
  EXPECT_THAT(Progress(*store_, queued.id, "token", 50, "", Now()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(Progress(*store_, 777, "token", 50, "", Now()),
              StatusIs(absl::StatusCode::kNotFound));
}

// ---- CancelJob ----

TEST_P(StoreContractTest, CancelOfLiveJobReturnsPreviousStateAndToken) {
  for (JobState state :
       {JobState::kQueued, JobState::kScheduled, JobState::kRunning}) {
    SCOPED_TRACE(JobStateName(state));
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord before, NewJobIn(state));
    ASSERT_EQ(before.lease_token.empty(), state != JobState::kRunning);
    clock_.Advance(absl::Seconds(1));

    FERRY_ASSERT_OK_AND_ASSIGN(CancelResult cancelled,
                               Cancel(*store_, before.id, "user asked", Now()));
    EXPECT_EQ(cancelled.previous_state, state);
    EXPECT_EQ(cancelled.previous_lease_token, before.lease_token);
    EXPECT_EQ(cancelled.job.id, before.id);
    EXPECT_EQ(cancelled.job.state, JobState::kCancelled);
    EXPECT_EQ(cancelled.job.last_error, "user asked");
    EXPECT_EQ(cancelled.job.finished_at, Now());
    EXPECT_EQ(cancelled.job.updated_at, Now());
    EXPECT_EQ(cancelled.job.lease_token, "");
    EXPECT_EQ(cancelled.job.lease_deadline, absl::InfinitePast());
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord stored, Get(before.id));
    ExpectSameJob(stored, cancelled.job, Compare::kAllButPayloadAndResult);
    EXPECT_EQ(stored.payload, before.payload);
  }
}

TEST_P(StoreContractTest, CancelledLeaseCanNoLongerFinish) {
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord running, NewJobIn(JobState::kRunning));
  ASSERT_THAT(Cancel(*store_, running.id, "stop", Now()), IsOk());
  EXPECT_THAT(Finish(*store_, running.id, running.lease_token,
                     Succeeded(Now(), "too late")),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord stored, Get(running.id));
  EXPECT_EQ(stored.state, JobState::kCancelled);
  EXPECT_EQ(stored.result, "");
}

TEST_P(StoreContractTest, CancelOfTerminalJobFailsAndChangesNothing) {
  for (JobState state :
       {JobState::kSucceeded, JobState::kFailed, JobState::kCancelled}) {
    SCOPED_TRACE(JobStateName(state));
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord before, NewJobIn(state));
    clock_.Advance(absl::Seconds(1));
    EXPECT_THAT(Cancel(*store_, before.id, "too late", Now()),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord after, Get(before.id));
    ExpectSameJob(after, before);
  }
}

TEST_P(StoreContractTest, CancelOfUnknownJobIsNotFound) {
  EXPECT_THAT(Cancel(*store_, 777, "why", Now()),
              StatusIs(absl::StatusCode::kNotFound));
}

// ---- RetryJob ----

TEST_P(StoreContractTest, RetryRequeuesFailedAndCancelledJobs) {
  for (JobState state : {JobState::kFailed, JobState::kCancelled}) {
    SCOPED_TRACE(JobStateName(state));
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord before, NewJobIn(state));
    clock_.Advance(absl::Minutes(1));

    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord retried,
                               Retry(*store_, before.id, Now()));
    EXPECT_EQ(retried.state, JobState::kQueued);
    EXPECT_EQ(retried.attempt, 0);
    EXPECT_EQ(retried.run_at, Now());
    EXPECT_EQ(retried.updated_at, Now());
    EXPECT_EQ(retried.finished_at, absl::InfinitePast());
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord stored, Get(before.id));
    ExpectSameJob(stored, retried, Compare::kAllButPayloadAndResult);
    EXPECT_EQ(stored.payload, before.payload);
    EXPECT_EQ(stored.result, "");

    // It runs again as attempt 1.
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord leased,
                               Lease(*store_, before.id, "again", "w1", Now()));
    EXPECT_EQ(leased.attempt, 1);
  }
}

TEST_P(StoreContractTest, RetryClearsTheResult) {
  JobRecord job = MakeJob("q", Now());
  job.state = JobState::kFailed;
  job.attempt = 3;
  job.finished_at = Now();
  job.result = "partial output";
  FERRY_ASSERT_OK_AND_ASSIGN(CreateResult created, Create(*store_, job));

  ASSERT_THAT(Retry(*store_, created.job.id, Now()), IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord stored, Get(created.job.id));
  EXPECT_EQ(stored.result, "");
  EXPECT_EQ(stored.attempt, 0);
}

TEST_P(StoreContractTest, RetryOfJobThatIsNotFailedOrCancelledFails) {
  for (JobState state : {JobState::kScheduled, JobState::kQueued,
                         JobState::kRunning, JobState::kSucceeded}) {
    SCOPED_TRACE(JobStateName(state));
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord before, NewJobIn(state));
    clock_.Advance(absl::Seconds(1));
    EXPECT_THAT(Retry(*store_, before.id, Now()),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord after, Get(before.id));
    ExpectSameJob(after, before);
  }
  EXPECT_THAT(Retry(*store_, 777, Now()),
              StatusIs(absl::StatusCode::kNotFound));
}

// ---- scheduling ----

TEST_P(StoreContractTest, PromoteDueJobsPromotesOnlyDueScheduledJobs) {
  const absl::Time t = Now();
  JobRecord later = MakeJob("q", t);
  later.state = JobState::kScheduled;
  later.run_at = t + absl::Seconds(30);  // due exactly at the promotion time
  later.priority = 4;
  FERRY_ASSERT_OK_AND_ASSIGN(CreateResult a, Create(*store_, later));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t b,
                             CreateScheduled("r", t + absl::Seconds(10)));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t not_due,
                             CreateScheduled("q", t + absl::Seconds(31)));
  // Not SCHEDULED, although their run_at has passed.
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord queued, NewJobIn(JobState::kQueued));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord running, NewJobIn(JobState::kRunning));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord failed, NewJobIn(JobState::kFailed));

  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<JobKey> promoted,
                             Promote(*store_, t + absl::Seconds(30), 100));
  EXPECT_THAT(Ids(promoted), UnorderedElementsAre(a.job.id, b));
  for (const JobKey& key : promoted) {
    if (key.id != a.job.id) continue;
    EXPECT_EQ(key.queue, "q");
    EXPECT_EQ(key.priority, 4);
    EXPECT_EQ(key.run_at, later.run_at);
  }
  EXPECT_THAT(StateOf(a.job.id), IsOkAndHolds(JobState::kQueued));
  EXPECT_THAT(StateOf(b), IsOkAndHolds(JobState::kQueued));
  EXPECT_THAT(StateOf(not_due), IsOkAndHolds(JobState::kScheduled));
  EXPECT_THAT(StateOf(queued.id), IsOkAndHolds(JobState::kQueued));
  EXPECT_THAT(StateOf(running.id), IsOkAndHolds(JobState::kRunning));
  EXPECT_THAT(StateOf(failed.id), IsOkAndHolds(JobState::kFailed));

  // Nothing is promoted twice.
  EXPECT_THAT(Promote(*store_, t + absl::Seconds(30), 100),
              IsOkAndHolds(IsEmpty()));
}

TEST_P(StoreContractTest, PromoteDueJobsTakesTheEarliestAndAtMostLimit) {
  const absl::Time t = Now();
  // Created latest-first so that id order and run_at order disagree.
  std::vector<int64_t> ids;  // ids[i] is due at t + i + 1 seconds
  for (int i = 5; i >= 1; --i) {
    FERRY_ASSERT_OK_AND_ASSIGN(int64_t id,
                               CreateScheduled("q", t + absl::Seconds(i)));
    ids.insert(ids.begin(), id);
  }
  const absl::Time now = t + absl::Minutes(1);
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<JobKey> first,
                             Promote(*store_, now, 2));
  EXPECT_THAT(Ids(first), UnorderedElementsAre(ids[0], ids[1]));
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<JobKey> second,
                             Promote(*store_, now, 2));
  EXPECT_THAT(Ids(second), UnorderedElementsAre(ids[2], ids[3]));
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<JobKey> third,
                             Promote(*store_, now, 2));
  EXPECT_THAT(Ids(third), UnorderedElementsAre(ids[4]));
  EXPECT_THAT(Promote(*store_, now, 2), IsOkAndHolds(IsEmpty()));
}

TEST_P(StoreContractTest, NextScheduledTimeIsTheEarliestRunAt) {
  EXPECT_THAT(store_->NextScheduledTime(),
              IsOkAndHolds(std::optional<absl::Time>()));
  const absl::Time t = Now();
  ASSERT_THAT(CreateScheduled("q", t + absl::Seconds(20)), IsOk());
  ASSERT_THAT(CreateScheduled("r", t + absl::Microseconds(5000001)), IsOk());
  ASSERT_THAT(CreateScheduled("q", t + absl::Seconds(9)), IsOk());
  // A queued job due earlier does not count.
  JobRecord queued = MakeJob("q", t - absl::Hours(1));
  ASSERT_THAT(Create(*store_, queued), IsOk());

  EXPECT_THAT(store_->NextScheduledTime(),
              IsOkAndHolds(Optional(t + absl::Microseconds(5000001))));
  ASSERT_THAT(Promote(*store_, t + absl::Seconds(10), 100), IsOk());
  EXPECT_THAT(store_->NextScheduledTime(),
              IsOkAndHolds(Optional(t + absl::Seconds(20))));
  ASSERT_THAT(Promote(*store_, t + absl::Seconds(20), 100), IsOk());
  EXPECT_THAT(store_->NextScheduledTime(),
              IsOkAndHolds(std::optional<absl::Time>()));
}

// ---- deletion ----

TEST_P(StoreContractTest, DeleteJobsDeletesByQueueAndStateUpToLimit) {
  std::vector<int64_t> queued_in_a;
  for (int i = 0; i < 3; ++i) {
    FERRY_ASSERT_OK_AND_ASSIGN(int64_t id, CreateQueued("a"));
    queued_in_a.push_back(id);
  }
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord scheduled_in_a,
                             NewJobIn(JobState::kScheduled, "a"));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t queued_in_b, CreateQueued("b"));

  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<JobKey> first,
                             Delete(*store_, "a", JobState::kQueued, 2));
  ASSERT_THAT(first, SizeIs(2));
  for (const JobKey& key : first) {
    EXPECT_EQ(key.queue, "a");
    EXPECT_THAT(queued_in_a, ::testing::Contains(key.id));
    EXPECT_THAT(Get(key.id), StatusIs(absl::StatusCode::kNotFound));
  }
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<JobKey> second,
                             Delete(*store_, "a", JobState::kQueued, 10));
  ASSERT_THAT(second, SizeIs(1));
  std::vector<int64_t> deleted = Ids(first);
  deleted.push_back(second[0].id);
  EXPECT_THAT(deleted, UnorderedElementsAreArray(queued_in_a));
  EXPECT_THAT(Delete(*store_, "a", JobState::kQueued, 10),
              IsOkAndHolds(IsEmpty()));

  EXPECT_THAT(Get(scheduled_in_a.id), IsOk());
  EXPECT_THAT(Get(queued_in_b), IsOk());
  EXPECT_THAT(TotalJobs(), IsOkAndHolds(2));
}

TEST_P(StoreContractTest, DeleteFinishedBeforeDeletesOnlyTerminalJobs) {
  const absl::Time t = Now();
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord succeeded,
                             NewJobIn(JobState::kSucceeded));
  clock_.Advance(absl::Seconds(1));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord failed, NewJobIn(JobState::kFailed));
  clock_.Advance(absl::Seconds(1));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord cancelled,
                             NewJobIn(JobState::kCancelled));
  // Finished, then retried: live again.
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord retried, NewJobIn(JobState::kFailed));
  ASSERT_THAT(Retry(*store_, retried.id, Now()), IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord queued, NewJobIn(JobState::kQueued));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord scheduled,
                             NewJobIn(JobState::kScheduled));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord running, NewJobIn(JobState::kRunning));
  const absl::Time cutoff = t + absl::Seconds(5);
  clock_.Set(cutoff);  // finished exactly at the cutoff: not before it
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord at_cutoff,
                             NewJobIn(JobState::kSucceeded));
  clock_.Advance(absl::Seconds(5));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord recent, NewJobIn(JobState::kSucceeded));

  EXPECT_THAT(DeleteFinished(*store_, cutoff, 100), IsOkAndHolds(3));
  for (int64_t id : {succeeded.id, failed.id, cancelled.id}) {
    EXPECT_THAT(Get(id), StatusIs(absl::StatusCode::kNotFound)) << id;
  }
  for (int64_t id : {retried.id, queued.id, scheduled.id, running.id,
                     at_cutoff.id, recent.id}) {
    EXPECT_THAT(Get(id), IsOk()) << id;
  }
  EXPECT_THAT(DeleteFinished(*store_, cutoff, 100), IsOkAndHolds(0));
}

TEST_P(StoreContractTest, DeleteFinishedBeforeDeletesAtMostLimit) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_THAT(
        NewJobIn(i % 2 == 0 ? JobState::kSucceeded : JobState::kCancelled),
        IsOk());
    clock_.Advance(absl::Seconds(1));
  }
  ASSERT_THAT(NewJobIn(JobState::kQueued), IsOk());
  const absl::Time cutoff = Now();
  EXPECT_THAT(DeleteFinished(*store_, cutoff, 2), IsOkAndHolds(2));
  EXPECT_THAT(DeleteFinished(*store_, cutoff, 2), IsOkAndHolds(2));
  EXPECT_THAT(DeleteFinished(*store_, cutoff, 2), IsOkAndHolds(1));
  EXPECT_THAT(DeleteFinished(*store_, cutoff, 2), IsOkAndHolds(0));
  EXPECT_THAT(TotalJobs(), IsOkAndHolds(1));
}

// ---- ListJobs ----

TEST_P(StoreContractTest, ListJobsFiltersByQueueStateAndKind) {
  auto create = [&](absl::string_view queue,
                    absl::string_view kind) -> absl::StatusOr<int64_t> {
    JobRecord job = MakeJob(queue, Now());
    job.kind = std::string(kind);
    FERRY_ASSIGN_OR_RETURN(CreateResult created, Create(*store_, job));
    return created.job.id;
  };
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t a_x, create("a", "x"));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t a_y, create("a", "y"));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t b_x, create("b", "x"));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t a_x_running, create("a", "x"));
  ASSERT_THAT(Lease(*store_, a_x_running, "tok", "w1", Now()), IsOk());

  ListFilter filter;
  EXPECT_THAT(ListIds(filter),
              IsOkAndHolds(ElementsAre(a_x_running, b_x, a_y, a_x)));
  filter.queue = "a";
  EXPECT_THAT(ListIds(filter),
              IsOkAndHolds(ElementsAre(a_x_running, a_y, a_x)));
  filter = ListFilter();
  filter.state = JobState::kQueued;
  EXPECT_THAT(ListIds(filter), IsOkAndHolds(ElementsAre(b_x, a_y, a_x)));
  filter = ListFilter();
  filter.kind = "x";
  EXPECT_THAT(ListIds(filter),
              IsOkAndHolds(ElementsAre(a_x_running, b_x, a_x)));
  filter.queue = "a";
  filter.state = JobState::kQueued;
  EXPECT_THAT(ListIds(filter), IsOkAndHolds(ElementsAre(a_x)));
  filter.queue = "c";
  EXPECT_THAT(ListIds(filter), IsOkAndHolds(IsEmpty()));
}

TEST_P(StoreContractTest, ListJobsKeepsToQueueGlobs) {
  std::vector<int64_t> ids;
  for (absl::string_view queue : {"emails", "emails.eu", "sms", "mail"}) {
    FERRY_ASSERT_OK_AND_ASSIGN(CreateResult created,
                               Create(*store_, MakeJob(queue, Now())));
    ids.push_back(created.job.id);
  }
  ListFilter filter;
  filter.queue_globs = {"emails*"};
  EXPECT_THAT(ListIds(filter), IsOkAndHolds(ElementsAre(ids[1], ids[0])));
  filter.queue_globs = {"emails*", "sms"};
  EXPECT_THAT(ListIds(filter),
              IsOkAndHolds(ElementsAre(ids[2], ids[1], ids[0])));
  filter.queue_globs = {"*.eu"};
  EXPECT_THAT(ListIds(filter), IsOkAndHolds(ElementsAre(ids[1])));
  // With a queue too, both must hold.
  filter.queue_globs = {"emails*"};
  filter.queue = "sms";
  EXPECT_THAT(ListIds(filter), IsOkAndHolds(IsEmpty()));
}

TEST_P(StoreContractTest, ListJobsMatchesEveryLabelExactly) {
  auto create = [&](Labels labels) -> absl::StatusOr<int64_t> {
    JobRecord job = MakeJob("q", Now());
    job.labels = std::move(labels);
    FERRY_ASSIGN_OR_RETURN(CreateResult created, Create(*store_, job));
    return created.job.id;
  };
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t a1, create({{"a", "1"}}));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t a10, create({{"a", "10"}}));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t xa1, create({{"xa", "1"}}));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t a1_b2, create({{"a", "1"}, {"b", "2"}}));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t b2, create({{"b", "2"}}));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t a1eq2, create({{"a", "1=2"}}));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t none, create({}));

  auto list = [&](Labels labels) {
    ListFilter filter;
    filter.labels = std::move(labels);
    return ListIds(filter);
  };
  EXPECT_THAT(list({{"a", "1"}}), IsOkAndHolds(ElementsAre(a1_b2, a1)));
  EXPECT_THAT(list({{"a", "10"}}), IsOkAndHolds(ElementsAre(a10)));
  EXPECT_THAT(list({{"xa", "1"}}), IsOkAndHolds(ElementsAre(xa1)));
  EXPECT_THAT(list({{"b", "2"}}), IsOkAndHolds(ElementsAre(b2, a1_b2)));
  EXPECT_THAT(list({{"a", "1"}, {"b", "2"}}), IsOkAndHolds(ElementsAre(a1_b2)));
  EXPECT_THAT(list({{"a", "1=2"}}), IsOkAndHolds(ElementsAre(a1eq2)));
  EXPECT_THAT(list({{"a", "1"}, {"b", "3"}}), IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(list({}), IsOkAndHolds(SizeIs(7)));
  EXPECT_THAT(list({}), IsOkAndHolds(::testing::Contains(none)));
}

TEST_P(StoreContractTest, ListJobsIsNewestFirstUnlessOldestFirst) {
  std::vector<int64_t> ids;
  for (int i = 0; i < 4; ++i) {
    FERRY_ASSERT_OK_AND_ASSIGN(int64_t id, CreateQueued("q"));
    ids.push_back(id);
  }
  ListFilter filter;
  EXPECT_THAT(ListIds(filter),
              IsOkAndHolds(ElementsAre(ids[3], ids[2], ids[1], ids[0])));
  filter.oldest_first = true;
  EXPECT_THAT(ListIds(filter), IsOkAndHolds(ElementsAreArray(ids)));
  filter.limit = 2;
  EXPECT_THAT(ListIds(filter), IsOkAndHolds(ElementsAre(ids[0], ids[1])));
}

TEST_P(StoreContractTest, ListJobsReturnsPayloadOnlyWhenAsked) {
  JobRecord job = MakeJob("q", Now());
  job.payload = std::string("p\0q", 3);
  ASSERT_THAT(Create(*store_, job), IsOk());
  ListFilter filter;
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<JobRecord> without,
                             store_->ListJobs(filter));
  ASSERT_THAT(without, SizeIs(1));
  EXPECT_EQ(without[0].payload, "");
  filter.with_payload = true;
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<JobRecord> with,
                             store_->ListJobs(filter));
  ASSERT_THAT(with, SizeIs(1));
  EXPECT_EQ(with[0].payload, job.payload);
}

TEST_P(StoreContractTest, ListJobsPagesCoverEveryJobExactlyOnce) {
  std::vector<int64_t> in_a;
  for (int i = 0; i < 23; ++i) {
    FERRY_ASSERT_OK_AND_ASSIGN(int64_t id,
                               CreateQueued(i % 3 == 0 ? "b" : "a"));
    if (i % 3 != 0) in_a.push_back(id);
  }
  for (bool oldest_first : {false, true}) {
    SCOPED_TRACE(oldest_first ? "oldest first" : "newest first");
    ListFilter filter;
    filter.queue = "a";
    filter.oldest_first = oldest_first;
    filter.limit = 4;
    std::vector<int64_t> seen;
    // Bounded: 15 jobs in pages of 4 take 4 pages; 10 is plenty.
    for (int page = 0; page < 10; ++page) {
      FERRY_ASSERT_OK_AND_ASSIGN(std::vector<int64_t> ids, ListIds(filter));
      EXPECT_LE(ids.size(), 4u);
      seen.insert(seen.end(), ids.begin(), ids.end());
      if (ids.size() < 4) break;
      filter.after_id = ids.back();
    }
    std::vector<int64_t> expected = in_a;
    if (!oldest_first) std::reverse(expected.begin(), expected.end());
    EXPECT_THAT(seen, ElementsAreArray(expected));
  }
}

// ---- counts and queues ----

TEST_P(StoreContractTest, CountJobsCountsPerQueueAndState) {
  EXPECT_THAT(store_->CountJobs(""), IsOkAndHolds(IsEmpty()));
  ASSERT_THAT(NewJobIn(JobState::kQueued, "a"), IsOk());
  ASSERT_THAT(NewJobIn(JobState::kQueued, "a"), IsOk());
  ASSERT_THAT(NewJobIn(JobState::kRunning, "a"), IsOk());
  ASSERT_THAT(NewJobIn(JobState::kScheduled, "b"), IsOk());
  ASSERT_THAT(NewJobIn(JobState::kFailed, "b"), IsOk());

  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<QueueCount> all,
                             store_->CountJobs(""));
  EXPECT_THAT(Counts(all),
              UnorderedElementsAre(Count("a", JobState::kQueued, 2),
                                   Count("a", JobState::kRunning, 1),
                                   Count("b", JobState::kScheduled, 1),
                                   Count("b", JobState::kFailed, 1)));
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<QueueCount> in_a,
                             store_->CountJobs("a"));
  EXPECT_THAT(Counts(in_a),
              UnorderedElementsAre(Count("a", JobState::kQueued, 2),
                                   Count("a", JobState::kRunning, 1)));
  EXPECT_THAT(store_->CountJobs("nope"), IsOkAndHolds(IsEmpty()));
}

TEST_P(StoreContractTest, SetQueuePausedReportsWhetherItChanged) {
  EXPECT_THAT(store_->PausedQueues(), IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(SetPaused(*store_, "a", true), IsOkAndHolds(true));
  EXPECT_THAT(SetPaused(*store_, "a", true), IsOkAndHolds(false));
  EXPECT_THAT(SetPaused(*store_, "b", true), IsOkAndHolds(true));
  EXPECT_THAT(store_->PausedQueues(),
              IsOkAndHolds(UnorderedElementsAre("a", "b")));

  EXPECT_THAT(SetPaused(*store_, "a", false), IsOkAndHolds(true));
  EXPECT_THAT(SetPaused(*store_, "a", false), IsOkAndHolds(false));
  EXPECT_THAT(store_->PausedQueues(), IsOkAndHolds(ElementsAre("b")));
  EXPECT_THAT(SetPaused(*store_, "a", true), IsOkAndHolds(true));
  EXPECT_THAT(store_->PausedQueues(),
              IsOkAndHolds(UnorderedElementsAre("a", "b")));
}

TEST_P(StoreContractTest, ResumingAQueueThatWasNeverPausedChangesNothing) {
  EXPECT_THAT(SetPaused(*store_, "never-paused", false), IsOkAndHolds(false));
  EXPECT_THAT(store_->PausedQueues(), IsOkAndHolds(IsEmpty()));
}

// ---- start-up load ----

TEST_P(StoreContractTest, LoadLiveJobsOfEmptyStoreIsEmpty) {
  FERRY_ASSERT_OK_AND_ASSIGN(LiveJobs live, store_->LoadLiveJobs());
  EXPECT_THAT(live.queued, IsEmpty());
  EXPECT_THAT(live.running, IsEmpty());
  EXPECT_EQ(live.next_scheduled, std::nullopt);
}

TEST_P(StoreContractTest, LoadLiveJobsReturnsQueuedKeysLeasesAndNextDueTime) {
  const absl::Time t = Now();
  JobRecord urgent = MakeJob("a", t - absl::Microseconds(1500));
  urgent.priority = 9;
  FERRY_ASSERT_OK_AND_ASSIGN(CreateResult q1, Create(*store_, urgent));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t q2, CreateQueued("b"));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t r1, CreateQueued("a"));
  ASSERT_THAT(Lease(*store_, r1, "lease-r1", "w9", t), IsOk());
  ASSERT_THAT(CreateScheduled("a", t + absl::Hours(2)), IsOk());
  ASSERT_THAT(CreateScheduled("b", t + absl::Hours(1)), IsOk());
  for (JobState state :
       {JobState::kSucceeded, JobState::kFailed, JobState::kCancelled}) {
    ASSERT_THAT(NewJobIn(state, "a"), IsOk());
  }

  FERRY_ASSERT_OK_AND_ASSIGN(LiveJobs live, store_->LoadLiveJobs());
  EXPECT_THAT(Ids(live.queued), UnorderedElementsAre(q1.job.id, q2));
  for (const JobKey& key : live.queued) {
    if (key.id != q1.job.id) continue;
    EXPECT_EQ(key.queue, "a");
    EXPECT_EQ(key.priority, 9);
    EXPECT_EQ(key.run_at, urgent.run_at);
  }
  ASSERT_THAT(live.running, SizeIs(1));
  const JobRecord& running = live.running[0];
  EXPECT_EQ(running.id, r1);
  EXPECT_EQ(running.state, JobState::kRunning);
  EXPECT_EQ(running.lease_token, "lease-r1");
  EXPECT_EQ(running.worker_id, "w9");
  EXPECT_EQ(running.lease_deadline, t + MakeJob("a", t).lease_ttl);
  EXPECT_EQ(running.attempt, 1);
  EXPECT_EQ(running.payload, "");
  EXPECT_THAT(live.next_scheduled, Optional(t + absl::Hours(1)));
}

// ---- the write path: ordering, group commit, durability ----

TEST_P(StoreContractTest, CallbacksRunInTheOrderTheWritesWereQueued) {
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t existing, CreateQueued("q"));
  constexpr int kWrites = 300;
  struct Order {
    absl::Mutex mu;
    std::vector<int> seen ABSL_GUARDED_BY(mu);
  };
  auto order = std::make_shared<Order>();
  auto record = [order](int i) {
    absl::MutexLock lock(&order->mu);
    order->seen.push_back(i);
  };
  // Different kinds of writes, succeeding and failing, all queued at once.
  for (int i = 0; i < kWrites; ++i) {
    switch (i % 3) {
      case 0:
        store_->CreateJobs({MakeJob("q", Now())},
                           [record, i](auto) { record(i); });
        break;
      case 1:
        store_->CancelJob(existing + 100000, "no such job", Now(),
                          [record, i](auto) { record(i); });
        break;
      case 2:
        store_->SetQueuePaused("q", i % 2 == 0,
                               [record, i](auto) { record(i); });
        break;
    }
  }
  // A write queued after all the others: its callback runs last.
  ASSERT_THAT(SetPaused(*store_, "q", false), IsOk());

  absl::MutexLock lock(&order->mu);
  ASSERT_THAT(order->seen, SizeIs(kWrites));
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_EQ(order->seen[i], i) << "callbacks ran out of order";
  }
}

TEST_P(StoreContractTest, FlushWaitsForEveryEarlierWrite) {
  auto completed = std::make_shared<std::atomic<int>>(0);
  for (int i = 0; i < 50; ++i) {
    store_->CreateJobs({MakeJob("q", Now())}, [completed](auto result) {
      if (result.ok()) completed->fetch_add(1);
    });
  }
  store_->Flush();
  EXPECT_EQ(completed->load(), 50);
  EXPECT_THAT(TotalJobs(), IsOkAndHolds(50));
}

TEST_P(StoreContractTest, CallbackMayQueueMoreWrites) {
  struct Chain {
    absl::Notification done;
    absl::StatusOr<JobRecord> leased = absl::UnknownError("not run");
  };
  auto chain = std::make_shared<Chain>();
  Store* store = store_.get();
  const absl::Time now = Now();
  store_->CreateJobs(
      {MakeJob("q", now)},
      [store, chain, now](absl::StatusOr<std::vector<CreateResult>> created) {
        if (!created.ok()) {
          chain->leased = created.status();
          chain->done.Notify();
          return;
        }
        LeaseGrant grant;
        grant.token = "chained";
        grant.worker_id = "w1";
        grant.now = now;
        store->LeaseJob(created->front().job.id, grant,
                        [chain](absl::StatusOr<JobRecord> leased) {
                          chain->leased = std::move(leased);
                          chain->done.Notify();
                        });
      });
  ASSERT_TRUE(chain->done.WaitForNotificationWithTimeout(kCallbackTimeout));
  ASSERT_THAT(chain->leased, IsOk());
  EXPECT_EQ(chain->leased->lease_token, "chained");
  EXPECT_THAT(StateOf(chain->leased->id), IsOkAndHolds(JobState::kRunning));
}

TEST_P(StoreContractTest, QuiesceWaitsForWritesQueuedByCallbacks) {
  // Each write's callback queues the next, five in all: Quiesce, called
  // once the first is queued, returns only after the fifth completed (a
  // Flush would return after the first).
  struct Chain {
    Store* store;
    std::atomic<int> completed{0};
    void Next() {
      store->CreateJobs({MakeJob("q", absl::UnixEpoch())}, [this](auto) {
        if (++completed < 5) Next();
      });
    }
  };
  Chain chain{store_.get()};
  chain.Next();
  ASSERT_TRUE(store_->Quiesce(kCallbackTimeout));
  EXPECT_EQ(chain.completed.load(), 5);
  EXPECT_THAT(TotalJobs(), IsOkAndHolds(5));
}

TEST_P(StoreContractTest, FailedWriteDoesNotUndoWritesCommittedWithIt) {
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t queued, CreateQueued("q"));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord succeeded,
                             NewJobIn(JobState::kSucceeded));
  struct Results {
    absl::StatusOr<std::vector<CreateResult>> before, after;
    absl::StatusOr<JobRecord> bad_lease, good_lease;
  };
  auto results = std::make_shared<Results>();
  // Queued back to back, so they very likely share a transaction.
  store_->CreateJobs({MakeJob("q", Now())},
                     [results](auto r) { results->before = std::move(r); });
  LeaseGrant grant;
  grant.token = "t";
  grant.worker_id = "w";
  grant.now = Now();
  store_->LeaseJob(succeeded.id, grant,
                   [results](auto r) { results->bad_lease = std::move(r); });
  store_->LeaseJob(queued, grant,
                   [results](auto r) { results->good_lease = std::move(r); });
  store_->CreateJobs({MakeJob("q", Now())},
                     [results](auto r) { results->after = std::move(r); });
  store_->Flush();

  EXPECT_THAT(results->bad_lease,
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT(results->before, IsOk());
  ASSERT_THAT(results->after, IsOk());
  EXPECT_THAT(results->good_lease, IsOk());
  EXPECT_THAT(Get(results->before->front().job.id), IsOk());
  EXPECT_THAT(Get(results->after->front().job.id), IsOk());
  EXPECT_THAT(StateOf(queued), IsOkAndHolds(JobState::kRunning));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord unchanged, Get(succeeded.id));
  ExpectSameJob(unchanged, succeeded);
}

TEST_P(StoreContractTest, ConcurrentWritesShareCommits) {
  constexpr int kThreads = 4;
  constexpr int kWritesPerThread = 250;
  constexpr int kWrites = kThreads * kWritesPerThread;
  struct Progress {
    std::atomic<int> ok{0};
    std::atomic<int> failed{0};
    std::atomic<int> completed{0};
    absl::Notification all_done;
  };
  auto progress = std::make_shared<Progress>();
  const int64_t commits_before = store_->CommitCount();

  absl::Notification go;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      go.WaitForNotification();
      for (int i = 0; i < kWritesPerThread; ++i) {
        JobRecord job = MakeJob(absl::StrCat("q", t), Now());
        store_->CreateJobs({std::move(job)}, [progress](auto result) {
          (result.ok() ? progress->ok : progress->failed).fetch_add(1);
          if (progress->completed.fetch_add(1) + 1 == kWrites) {
            progress->all_done.Notify();
          }
        });
      }
    });
  }
  go.Notify();
  for (std::thread& thread : threads) thread.join();
  ASSERT_TRUE(
      progress->all_done.WaitForNotificationWithTimeout(kCallbackTimeout))
      << progress->completed.load() << " of " << kWrites << " completed";

  EXPECT_EQ(progress->ok.load(), kWrites);
  EXPECT_EQ(progress->failed.load(), 0);
  EXPECT_THAT(TotalJobs(), IsOkAndHolds(kWrites));
  const int64_t commits = store_->CommitCount() - commits_before;
  EXPECT_GE(commits, 1);
  // The writer commits everything pending at once; even on two cores the
  // 1,000 writes share transactions many to one.
  EXPECT_LT(commits, kWrites / 2)
      << commits << " commits for " << kWrites << " writes";
  ::testing::Test::RecordProperty("commits", static_cast<int>(commits));
}

TEST_P(StoreContractTest, ReopenedStoreHasEveryAcknowledgedWrite) {
  JobRecord keyed = MakeJob("q", Now());
  keyed.idempotency_key = "once";
  keyed.labels = {{"team", "infra"}};
  FERRY_ASSERT_OK_AND_ASSIGN(CreateResult created, Create(*store_, keyed));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord running, NewJobIn(JobState::kRunning));
  ASSERT_THAT(
      Progress(*store_, running.id, running.lease_token, 30, "a third", Now()),
      IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord succeeded,
                             NewJobIn(JobState::kSucceeded, "r"));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord scheduled,
                             NewJobIn(JobState::kScheduled, "r"));
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord cancelled,
                             NewJobIn(JobState::kCancelled, "r"));
  ASSERT_THAT(SetPaused(*store_, "r", true), IsOk());
  std::vector<JobRecord> before;
  for (int64_t id :
       {created.job.id, running.id, succeeded.id, scheduled.id, cancelled.id}) {
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord job, Get(id));
    before.push_back(std::move(job));
  }
  // Acknowledged but not waited on by anyone after the callback: the last
  // write before the store goes away.
  auto last_ok = std::make_shared<absl::Notification>();
  store_->CreateJobs({MakeJob("last", Now())}, [last_ok](auto result) {
    if (result.ok()) last_ok->Notify();
  });

  ASSERT_NO_FATAL_FAILURE(Reopen());

  ASSERT_TRUE(last_ok->HasBeenNotified());
  for (const JobRecord& job : before) {
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord after, Get(job.id));
    ExpectSameJob(after, job);
  }
  EXPECT_THAT(store_->PausedQueues(), IsOkAndHolds(ElementsAre("r")));
  EXPECT_THAT(TotalJobs(), IsOkAndHolds(6));
  FERRY_ASSERT_OK_AND_ASSIGN(LiveJobs live, store_->LoadLiveJobs());
  ASSERT_THAT(live.running, SizeIs(1));
  EXPECT_EQ(live.running[0].lease_token, running.lease_token);
  EXPECT_EQ(live.running[0].lease_deadline, running.lease_deadline);
  EXPECT_EQ(live.next_scheduled, scheduled.run_at);

  // The idempotency key still matches, and new ids keep increasing.
  FERRY_ASSERT_OK_AND_ASSIGN(CreateResult again, Create(*store_, keyed));
  EXPECT_FALSE(again.created);
  EXPECT_EQ(again.job.id, created.job.id);
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t fresh, CreateQueued("q"));
  for (const JobRecord& job : before) EXPECT_GT(fresh, job.id);
}

INSTANTIATE_TEST_SUITE_P(Sqlite, StoreContractTest,
                         ::testing::Values(&OpenTempSqliteStore));

}  // namespace
}  // namespace ferry::testing
