// The C++ client SDK (client/client.h) against a real FerryServer over
// loopback with a FakeClock: every Client method, what it sends and what it
// returns, and how the broker's errors reach the caller.

#include "client/client.h"

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "ferry/v1/jobs.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server_fixture.h"
#include "tests/status_matchers.h"
#include "tests/test_worker.h"

namespace ferry::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Pair;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

// Nothing listens on port 1 of loopback (a privileged port no test binds).
constexpr char kUnreachable[] = "127.0.0.1:1";

SubmitOptions Job(absl::string_view queue, absl::string_view payload = "") {
  SubmitOptions options;
  options.queue = std::string(queue);
  options.kind = "k";
  options.payload = std::string(payload);
  return options;
}

// What the client reports for a broker it cannot reach: UNAVAILABLE or
// DEADLINE_EXCEEDED, with the broker's address in the message.
MATCHER_P(IsUnreachable, address,
          absl::StrCat("is UNAVAILABLE or DEADLINE_EXCEEDED naming ",
                       address)) {
  const absl::Status& status = GetStatus(arg);
  *result_listener << "status is " << status;
  return (absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status)) &&
         absl::StrContains(status.message(), address);
}

std::vector<v1::JobState> States(const std::vector<v1::Job>& jobs) {
  std::vector<v1::JobState> states;
  for (const v1::Job& job : jobs) states.push_back(job.state());
  return states;
}

class ClientTest : public ServerTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ServerTest::SetUp());
    // Dials the broker's address as an application would.
    client_ = std::make_unique<Client>(
        ClientOptions{server().address(), kRpcTimeout, nullptr});
  }

  void TearDown() override {
    client_.reset();
    ServerTest::TearDown();
  }

  // Submits `options` and returns the job's id.
  std::string MustSubmit(const SubmitOptions& options) {
    absl::StatusOr<SubmitResult> result = client_->Submit(options);
    EXPECT_THAT(result, IsOk());
    return result.ok() ? result->job.id() : "";
  }

  // Runs the next job of `queue` to success with `output` on a test worker.
  void RunToSuccess(absl::string_view queue, const std::string& output) {
    auto worker = Connect("runner", queue, 1);
    std::optional<v1::Assignment> a = worker->ExpectAssignment();
    ASSERT_TRUE(a.has_value());
    worker->Succeed(a->lease_token(), output);
    ASSERT_TRUE(worker->ExpectResultAck().has_value());
  }

  std::unique_ptr<Client> client_;
};

// ------------------------------------------------------------------ submit

TEST_F(ClientTest, SubmitSendsEveryOptionAndReturnsTheStoredJob) {
  SubmitOptions options = Job("emails", "{\"to\":\"a@b\"}");
  options.kind = "welcome";
  options.content_type = "application/json";
  options.labels = {{"tenant", "acme"}, {"env", "prod"}};
  options.priority = 7;
  options.delay = absl::Minutes(10);
  options.max_attempts = 3;
  options.initial_backoff = absl::Seconds(2);
  options.max_backoff = absl::Minutes(5);
  options.lease_ttl = absl::Seconds(45);
  options.timeout = absl::Minutes(2);
  options.idempotency_key = "welcome-a@b";

  FERRY_ASSERT_OK_AND_ASSIGN(SubmitResult result, client_->Submit(options));
  EXPECT_TRUE(result.created);
  const v1::Job& job = result.job;
  EXPECT_THAT(job.id(), Not(IsEmpty()));
  EXPECT_EQ(job.queue(), "emails");
  EXPECT_EQ(job.kind(), "welcome");
  EXPECT_EQ(job.state(), v1::JOB_STATE_SCHEDULED);
  // The submit response leaves the payload out.
  EXPECT_THAT(job.payload(), IsEmpty());

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job stored, client_->Get(job.id()));
  EXPECT_EQ(stored.payload(), "{\"to\":\"a@b\"}");
  EXPECT_EQ(stored.content_type(), "application/json");
  EXPECT_THAT(stored.labels(), UnorderedElementsAre(Pair("tenant", "acme"),
                                                    Pair("env", "prod")));
  EXPECT_EQ(stored.priority(), 7);
  EXPECT_EQ(FromProto(stored.created_at()), Now());
  EXPECT_EQ(FromProto(stored.run_at()), Now() + absl::Minutes(10));
  EXPECT_EQ(stored.retry().max_attempts(), 3u);
  EXPECT_EQ(FromProto(stored.retry().initial_backoff()), absl::Seconds(2));
  EXPECT_EQ(FromProto(stored.retry().max_backoff()), absl::Minutes(5));
  EXPECT_EQ(FromProto(stored.lease_ttl()), absl::Seconds(45));
  EXPECT_EQ(FromProto(stored.timeout()), absl::Minutes(2));
  EXPECT_EQ(stored.idempotency_key(), "welcome-a@b");
}

// Payloads over gRPC's default 4 MiB receive limit.
class LargePayloadClientTest : public ClientTest {
 protected:
  LargePayloadClientTest() {
    options_.broker.policy.max_payload_bytes = 6 << 20;
  }
};

TEST_F(LargePayloadClientTest, GetReturnsAPayloadLargerThanFourMebibytes) {
  SubmitOptions big;
  big.queue = "q";
  big.kind = "k";
  big.payload = std::string(5 << 20, 'x');
  FERRY_ASSERT_OK_AND_ASSIGN(SubmitResult submitted, client_->Submit(big));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, client_->Get(submitted.job.id()));
  EXPECT_EQ(job.payload().size(), size_t{5} << 20);
}

TEST_F(ClientTest, SubmitWithoutOptionsTakesTheBrokersDefaults) {
  FERRY_ASSERT_OK_AND_ASSIGN(SubmitResult result, client_->Submit(Job("q")));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, client_->Get(result.job.id()));
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.priority(), 0);
  EXPECT_EQ(FromProto(job.run_at()), Now());
  const JobPolicy& defaults = options_.broker.policy;
  EXPECT_EQ(job.retry().max_attempts(),
            static_cast<uint32_t>(defaults.max_attempts));
  EXPECT_EQ(FromProto(job.retry().initial_backoff()), defaults.initial_backoff);
  EXPECT_EQ(FromProto(job.lease_ttl()), defaults.lease_ttl);
  EXPECT_THAT(job.idempotency_key(), IsEmpty());
}

TEST_F(ClientTest, SubmitWithRunAtSchedulesTheJobForThatTime) {
  SubmitOptions options = Job("q");
  options.run_at = Now() + absl::Hours(3);
  FERRY_ASSERT_OK_AND_ASSIGN(SubmitResult result, client_->Submit(options));
  EXPECT_EQ(result.job.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(FromProto(result.job.run_at()), Now() + absl::Hours(3));

  // It becomes due when the clock gets there.
  Advance(absl::Hours(3));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job due, client_->Get(result.job.id()));
  EXPECT_EQ(due.state(), v1::JOB_STATE_QUEUED);
}

TEST_F(ClientTest, SubmitWithAKnownIdempotencyKeyReturnsTheSameJobNotCreated) {
  SubmitOptions options = Job("q", "charge");
  options.idempotency_key = "order-42";
  FERRY_ASSERT_OK_AND_ASSIGN(SubmitResult first, client_->Submit(options));
  FERRY_ASSERT_OK_AND_ASSIGN(SubmitResult again, client_->Submit(options));
  EXPECT_TRUE(first.created);
  EXPECT_FALSE(again.created);
  EXPECT_EQ(again.job.id(), first.job.id());
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<v1::QueueInfo> stats,
                             client_->QueueStats("q"));
  ASSERT_THAT(stats, SizeIs(1));
  EXPECT_EQ(stats[0].queued(), 1u);
}

TEST_F(ClientTest, SubmitBatchReturnsOneResultPerJobInOrder) {
  std::vector<SubmitOptions> jobs = {Job("a", "1"), Job("b", "2"),
                                     Job("a", "3")};
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<SubmitResult> results,
                             client_->SubmitBatch(jobs));
  ASSERT_THAT(results, SizeIs(3));
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    EXPECT_TRUE(results[i].created);
    EXPECT_EQ(results[i].job.queue(), jobs[i].queue);
    FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, client_->Get(results[i].job.id()));
    EXPECT_EQ(job.payload(), absl::StrCat(i + 1));
  }
  EXPECT_NE(results[0].job.id(), results[2].job.id());
}

TEST_F(ClientTest, SubmitBatchWithOneInvalidJobFailsAndCreatesNothing) {
  SubmitOptions bad = Job("q", "2");
  bad.kind = "";
  EXPECT_THAT(client_->SubmitBatch({Job("q", "1"), bad, Job("q", "3")}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[1]")));
  v1::ListRequest all;
  FERRY_ASSERT_OK_AND_ASSIGN(v1::ListResponse listed, client_->List(all));
  EXPECT_THAT(listed.jobs(), IsEmpty());
}

// ---------------------------------------------------------------- get, list

TEST_F(ClientTest, GetWithTheBasicViewLeavesThePayloadOut) {
  const std::string id = MustSubmit(Job("q", "secret"));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job basic,
                             client_->Get(id, v1::JOB_VIEW_BASIC));
  EXPECT_EQ(basic.id(), id);
  EXPECT_THAT(basic.payload(), IsEmpty());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job full, client_->Get(id));
  EXPECT_EQ(full.payload(), "secret");
}

TEST_F(ClientTest, ListPagesThroughEveryJobWithTheNextPageToken) {
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) ids.push_back(MustSubmit(Job("paged")));
  MustSubmit(Job("elsewhere"));

  v1::ListRequest request;
  request.set_queue("paged");
  request.set_page_size(3);
  request.set_oldest_first(true);
  std::vector<std::string> seen;
  std::vector<int> sizes;
  for (int page = 0; page < 10; ++page) {
    FERRY_ASSERT_OK_AND_ASSIGN(v1::ListResponse response,
                               client_->List(request));
    sizes.push_back(response.jobs_size());
    for (const std::string& id : Ids(response)) seen.push_back(id);
    if (response.next_page_token().empty()) break;
    request.set_page_token(response.next_page_token());
  }
  EXPECT_THAT(sizes, ElementsAre(3, 3, 1));
  EXPECT_EQ(seen, ids);
}

TEST_F(ClientTest, ListSendsItsFilters) {
  SubmitOptions labelled = Job("f");
  labelled.labels = {{"tenant", "acme"}};
  const std::string acme = MustSubmit(labelled);
  SubmitOptions other_kind = Job("f");
  other_kind.kind = "other";
  const std::string other = MustSubmit(other_kind);
  const std::string cancelled = MustSubmit(Job("f"));
  ASSERT_THAT(client_->Cancel(cancelled), IsOk());

  v1::ListRequest by_label;
  (*by_label.mutable_labels())["tenant"] = "acme";
  FERRY_ASSERT_OK_AND_ASSIGN(v1::ListResponse r1, client_->List(by_label));
  EXPECT_THAT(Ids(r1), ElementsAre(acme));

  v1::ListRequest by_kind;
  by_kind.set_kind("other");
  FERRY_ASSERT_OK_AND_ASSIGN(v1::ListResponse r2, client_->List(by_kind));
  EXPECT_THAT(Ids(r2), ElementsAre(other));

  v1::ListRequest by_state;
  by_state.set_queue("f");
  by_state.set_state(v1::JOB_STATE_CANCELLED);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::ListResponse r3, client_->List(by_state));
  EXPECT_THAT(Ids(r3), ElementsAre(cancelled));
}

// ------------------------------------------------------------- watch, wait

TEST_F(ClientTest, WatchCallsBackOnEveryChangeUntilTheJobIsTerminal) {
  const std::string id = MustSubmit(Job("q", "p"));
  absl::Mutex mu;
  std::vector<v1::Job> seen;
  absl::Notification first;
  absl::Status watched = absl::UnknownError("Watch did not return");
  std::thread watcher([&] {
    watched = client_->Watch(
        id,
        [&](const v1::Job& job) {
          absl::MutexLock lock(&mu);
          seen.push_back(job);
          if (!first.HasBeenNotified()) first.Notify();
          return true;
        },
        kRpcTimeout);
  });
  // The job as it is now comes first; only then does anything happen.
  ASSERT_TRUE(first.WaitForNotificationWithTimeout(kRpcTimeout));
  RunToSuccess("q", "out");
  watcher.join();

  EXPECT_THAT(watched, IsOk());
  absl::MutexLock lock(&mu);
  EXPECT_THAT(States(seen),
              ElementsAre(v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING,
                          v1::JOB_STATE_SUCCEEDED));
  for (const v1::Job& job : seen) EXPECT_EQ(job.id(), id);
}

TEST_F(ClientTest, WatchStopsWhenTheCallbackReturnsFalse) {
  const std::string id = MustSubmit(Job("q"));
  int calls = 0;
  EXPECT_THAT(client_->Watch(
                  id,
                  [&](const v1::Job& job) {
                    ++calls;
                    EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
                    return false;
                  },
                  kRpcTimeout),
              IsOk());
  EXPECT_EQ(calls, 1);
  // The job is untouched and the broker still serves the client.
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, client_->Get(id));
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
}

TEST_F(ClientTest, WatchOfAFinishedJobCallsBackOnceAndReturns) {
  const std::string id = MustSubmit(Job("q"));
  ASSERT_THAT(client_->Cancel(id, "stop"), IsOk());
  std::vector<v1::Job> seen;
  EXPECT_THAT(client_->Watch(
                  id,
                  [&](const v1::Job& job) {
                    seen.push_back(job);
                    return true;
                  },
                  kRpcTimeout),
              IsOk());
  EXPECT_THAT(States(seen), ElementsAre(v1::JOB_STATE_CANCELLED));
}

TEST_F(ClientTest, WaitReturnsTheFinishedJobWithItsResult) {
  const std::string id = MustSubmit(Job("q", "in"));
  ASSERT_NO_FATAL_FAILURE(RunToSuccess("q", "answer"));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::WaitResponse waited,
                             client_->Wait(id, absl::Seconds(30)));
  EXPECT_TRUE(waited.done());
  EXPECT_EQ(waited.job().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(waited.job().result(), "answer");
}

TEST_F(ClientTest, WaitIsWokenWhenTheJobFinishes) {
  Tick();  // sets the broker's first retention deadline
  const std::string id = MustSubmit(Job("q"));
  absl::StatusOr<v1::WaitResponse> waited = absl::UnknownError("not run");
  std::thread waiter([&] { waited = client_->Wait(id, absl::Seconds(30)); });
  AwaitWatcherWithDeadline(Now() + absl::Seconds(30));
  RunToSuccess("q", "late answer");
  waiter.join();
  ASSERT_THAT(waited, IsOk());
  EXPECT_TRUE(waited->done());
  EXPECT_EQ(waited->job().result(), "late answer");
}

TEST_F(ClientTest, WaitReturnsNotDoneWhenItsTimeoutPassesFirst) {
  Tick();
  const std::string id = MustSubmit(Job("q"));
  absl::StatusOr<v1::WaitResponse> waited = absl::UnknownError("not run");
  std::thread waiter([&] { waited = client_->Wait(id, absl::Seconds(5)); });
  AwaitWatcherWithDeadline(Now() + absl::Seconds(5));
  Advance(absl::Seconds(5));
  waiter.join();
  ASSERT_THAT(waited, IsOk());
  EXPECT_FALSE(waited->done());
  EXPECT_EQ(waited->job().id(), id);
  EXPECT_EQ(waited->job().state(), v1::JOB_STATE_QUEUED);
}

// ------------------------------------------------------------ cancel, retry

TEST_F(ClientTest, CancelStoresTheReasonAndRetryPutsTheJobBack) {
  const std::string id = MustSubmit(Job("q"));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job cancelled,
                             client_->Cancel(id, "customer left"));
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(cancelled.last_error(), HasSubstr("customer left"));

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job retried, client_->Retry(id));
  EXPECT_EQ(retried.id(), id);
  EXPECT_EQ(retried.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(retried.attempt(), 0u);
}

TEST_F(ClientTest, CancelOfAFinishedJobIsAFailedPreconditionFromTheBroker) {
  const std::string id = MustSubmit(Job("q"));
  ASSERT_THAT(client_->Cancel(id), IsOk());
  EXPECT_THAT(client_->Cancel(id),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  const std::string queued = MustSubmit(Job("q"));
  EXPECT_THAT(client_->Retry(queued),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

// ------------------------------------------------------------------ queues

TEST_F(ClientTest, QueueStatsReportsEveryQueueOrJustOne) {
  MustSubmit(Job("a"));
  MustSubmit(Job("a"));
  ASSERT_THAT(client_->Cancel(MustSubmit(Job("b"))), IsOk());

  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<v1::QueueInfo> all,
                             client_->QueueStats());
  std::vector<std::string> names;
  for (const v1::QueueInfo& q : all) names.push_back(q.name());
  EXPECT_THAT(names, ElementsAre("a", "b"));

  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<v1::QueueInfo> b,
                             client_->QueueStats("b"));
  ASSERT_THAT(b, SizeIs(1));
  EXPECT_EQ(b[0].name(), "b");
  EXPECT_EQ(b[0].queued(), 0u);
  EXPECT_EQ(b[0].cancelled(), 1u);
}

TEST_F(ClientTest, PausedQueueDeliversNothingUntilResumed) {
  ASSERT_THAT(client_->PauseQueue("q"), IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<v1::QueueInfo> paused,
                             client_->QueueStats("q"));
  ASSERT_THAT(paused, SizeIs(1));
  EXPECT_TRUE(paused[0].paused());

  const std::string id = MustSubmit(Job("q"));
  auto worker = Connect("w1", "q", 1);
  ASSERT_TRUE(worker->ExpectWelcome().has_value());
  Quiesce(*worker);
  EXPECT_EQ(worker->Pending(v1::ServerMessage::kAssignment), 0)
      << worker->DescribeInbox();

  ASSERT_THAT(client_->ResumeQueue("q"), IsOk());
  std::optional<v1::Assignment> a = worker->ExpectAssignment();
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->job().id(), id);
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<v1::QueueInfo> resumed,
                             client_->QueueStats("q"));
  ASSERT_THAT(resumed, SizeIs(1));
  EXPECT_FALSE(resumed[0].paused());
}

TEST_F(ClientTest, PurgeQueueReturnsHowManyJobsItDeleted) {
  const std::string a = MustSubmit(Job("p"));
  const std::string b = MustSubmit(Job("p"));
  const std::string cancelled = MustSubmit(Job("p"));
  ASSERT_THAT(client_->Cancel(cancelled), IsOk());
  const std::string other = MustSubmit(Job("other"));

  EXPECT_THAT(client_->PurgeQueue("p", v1::JOB_STATE_QUEUED), IsOkAndHolds(2u));
  EXPECT_THAT(client_->Get(a), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(client_->Get(b), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(client_->Get(cancelled), IsOk());
  EXPECT_THAT(client_->Get(other), IsOk());
  EXPECT_THAT(client_->PurgeQueue("p", v1::JOB_STATE_QUEUED), IsOkAndHolds(0u));
}

TEST_F(ClientTest, ListWorkersShowsAConnectedWorker) {
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<v1::WorkerInfo> none,
                             client_->ListWorkers());
  EXPECT_THAT(none, IsEmpty());

  TestWorkerOptions options;
  options.worker_id = "w-listed";
  options.queues = {"a", "b"};
  options.initial_credits = 2;
  auto worker = Connect(options);
  ASSERT_TRUE(worker->ExpectWelcome().has_value());

  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<v1::WorkerInfo> listed,
                             client_->ListWorkers());
  ASSERT_THAT(listed, SizeIs(1));
  EXPECT_EQ(listed[0].worker_id(), "w-listed");
  EXPECT_THAT(listed[0].queues(), ElementsAre("a", "b"));
  EXPECT_EQ(listed[0].credits(), 2u);
}

// ------------------------------------------------------------------ errors

TEST_F(ClientTest, UnknownJobIsNotFoundWithTheBrokersMessage) {
  const std::string unknown = "999999";
  const auto not_found =
      StatusIs(absl::StatusCode::kNotFound, "job 999999 not found");
  EXPECT_THAT(client_->Get(unknown), not_found);
  EXPECT_THAT(client_->Cancel(unknown), not_found);
  EXPECT_THAT(client_->Retry(unknown), not_found);
  EXPECT_THAT(client_->Wait(unknown, absl::Seconds(1)), not_found);
  EXPECT_THAT(client_->Watch(
                  unknown, [](const v1::Job&) { return true; }, kRpcTimeout),
              not_found);
}

TEST_F(ClientTest, InvalidInputIsInvalidArgumentWithTheBrokersMessage) {
  EXPECT_THAT(client_->Submit(Job("bad queue")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("queue \"bad queue\" is invalid")));
  SubmitOptions both = Job("q");
  both.delay = absl::Seconds(1);
  both.run_at = Now() + absl::Seconds(1);
  EXPECT_THAT(client_->Submit(both),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("at most one of run_at and delay")));
  EXPECT_THAT(client_->Get("abc"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("job_id must be a positive integer")));
  EXPECT_THAT(client_->PurgeQueue("q", v1::JOB_STATE_UNSPECIFIED),
              StatusIs(absl::StatusCode::kInvalidArgument));
  v1::ListRequest bad_token;
  bad_token.set_page_token("xyz");
  EXPECT_THAT(client_->List(bad_token),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Errors other than UNAVAILABLE and DEADLINE_EXCEEDED are passed through
  // without the broker's address.
  EXPECT_THAT(client_->Get("abc"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       Not(HasSubstr(server().address()))));
}

TEST_F(ClientTest, UnreachableBrokerIsUnavailableAndNamesItsAddress) {
  Client unreachable(ClientOptions{kUnreachable, absl::Seconds(5), nullptr});
  EXPECT_EQ(unreachable.broker(), kUnreachable);
  const auto down = IsUnreachable(kUnreachable);
  EXPECT_THAT(unreachable.Submit(Job("q")), down);
  EXPECT_THAT(unreachable.SubmitBatch({Job("q")}), down);
  EXPECT_THAT(unreachable.Get("1"), down);
  EXPECT_THAT(unreachable.List(v1::ListRequest()), down);
  EXPECT_THAT(unreachable.Watch(
                  "1", [](const v1::Job&) { return true; }, absl::Seconds(5)),
              down);
  EXPECT_THAT(unreachable.Wait("1", absl::Seconds(1)), down);
  EXPECT_THAT(unreachable.Cancel("1"), down);
  EXPECT_THAT(unreachable.Retry("1"), down);
  EXPECT_THAT(unreachable.QueueStats(), down);
  EXPECT_THAT(unreachable.PauseQueue("q"), down);
  EXPECT_THAT(unreachable.ResumeQueue("q"), down);
  EXPECT_THAT(unreachable.PurgeQueue("q", v1::JOB_STATE_QUEUED), down);
  EXPECT_THAT(unreachable.ListWorkers(), down);
}

TEST_F(ClientTest, ClientOnAGivenChannelUsesItInsteadOfDialing) {
  // The address is not dialed when a channel is given.
  Client shared(ClientOptions{kUnreachable, kRpcTimeout, channel()});
  FERRY_ASSERT_OK_AND_ASSIGN(SubmitResult submitted, shared.Submit(Job("q")));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, client_->Get(submitted.job.id()));
  EXPECT_EQ(job.queue(), "q");
}

}  // namespace
}  // namespace ferry::testing
