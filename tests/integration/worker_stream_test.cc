// Workers.Connect end to end: a real FerryServer over loopback, test workers
// speaking the generated stub, and a FakeClock that moves only when a test
// says so.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "ferry/v1/jobs.pb.h"
#include "ferry/v1/workers.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/protocol_limits.h"
#include "tests/server_fixture.h"
#include "tests/status_matchers.h"
#include "tests/test_worker.h"

namespace ferry::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using Msg = v1::ServerMessage;

// The broker's default lease TTL (JobPolicy) and initial backoff.
constexpr absl::Duration kDefaultTtl = absl::Seconds(30);
constexpr absl::Duration kDefaultBackoff = absl::Seconds(1);

class WorkerStreamTest : public ServerTest {
 protected:
  using RawStream = grpc::ClientReaderWriter<v1::WorkerMessage, Msg>;

  // Worker sessions ferryd lists; -1 if the call fails.
  int Sessions() {
    absl::StatusOr<std::vector<v1::WorkerInfo>> listed = ListWorkers();
    return listed.ok() ? static_cast<int>(listed->size()) : -1;
  }

  // A raw stream that says Hello as `worker_id` on queue q with `credits`
  // and then reads nothing; returned once ferryd lists the session.
  std::unique_ptr<RawStream> HelloAndNeverRead(grpc::ClientContext& ctx,
                                               const std::string& worker_id,
                                               uint32_t credits) {
    std::unique_ptr<RawStream> stream = workers().Connect(&ctx);
    v1::WorkerMessage hello;
    hello.mutable_hello()->set_worker_id(worker_id);
    hello.mutable_hello()->add_queues("q");
    hello.mutable_hello()->set_initial_credits(credits);
    EXPECT_TRUE(stream->Write(hello));
    EXPECT_TRUE(Eventually([&] { return Sessions() == 1; }));
    return stream;
  }
};

TEST_F(WorkerStreamTest, WelcomeCarriesTheHeartbeatIntervalAndLeaseTtl) {
  auto worker = Connect("w1", "q", 0);
  std::optional<v1::Welcome> welcome = worker->ExpectWelcome();
  ASSERT_TRUE(welcome.has_value());
  EXPECT_THAT(welcome->session_id(), Not(IsEmpty()));
  EXPECT_EQ(FromProto(welcome->lease_ttl()), kDefaultTtl);
  EXPECT_GT(FromProto(welcome->heartbeat_interval()), absl::ZeroDuration());
  EXPECT_LT(FromProto(welcome->heartbeat_interval()), kDefaultTtl);
  EXPECT_EQ(FromProto(welcome->heartbeat_interval()), kDefaultTtl / 3);
}

TEST_F(WorkerStreamTest, AWorkerThatStopsReadingHasItsSessionEnded) {
  // A raw stream that writes and never reads: bogus heartbeats make the
  // broker queue a LeaseLost per token, past what one stream may queue.
  grpc::ClientContext ctx;
  std::unique_ptr<RawStream> stream = HelloAndNeverRead(ctx, "deaf", 0);
  ASSERT_FALSE(HasFailure());
  const int heartbeats =
      static_cast<int>(kMaxQueuedWorkerMessages / kMaxHeldLeases) + 1;
  for (int h = 0; h < heartbeats; ++h) {
    v1::WorkerMessage heartbeat;
    for (int i = 0; i < kMaxHeldLeases; ++i) {
      heartbeat.mutable_heartbeat()->add_lease_tokens(absl::StrCat(h, "-", i));
    }
    if (!stream->Write(heartbeat)) break;  // the broker ended it already
  }
  EXPECT_TRUE(Eventually([&] { return Sessions() == 0; }))
      << "the session of a stream that does not read was not ended";
  ctx.TryCancel();
}

TEST_F(WorkerStreamTest, AWorkerThatDoesNotReadCannotPinAPayloadPerCredit) {
  // A raw stream with many credits that never reads: 1 MiB assignments
  // pile up behind the one gRPC is stuck writing, until their payloads
  // pass what one stream may queue; then its session ends.
  grpc::ClientContext ctx;
  std::unique_ptr<RawStream> stream = HelloAndNeverRead(ctx, "hoarder", 10000);
  ASSERT_FALSE(HasFailure());
  const std::string payload(1 << 20, 'x');
  const int jobs = static_cast<int>(kMaxQueuedWorkerBytes >> 20) + 16;
  for (int i = 0; i < jobs; ++i) {
    ASSERT_THAT(Submit("q", "k", payload).status(), IsOk());
  }
  Settle();
  EXPECT_TRUE(Eventually([&] { return Sessions() == 0; }))
      << "a stream holding " << jobs << " MiB of unread payloads kept going";
  // The assignments still queued were never sent: their jobs are back in
  // line with their attempt undone, not left to burn it when the lease
  // expires. Only what gRPC took (the write it is stuck on, and what the
  // flow-control windows held) stays leased.
  ASSERT_TRUE(Eventually([&] {
    absl::StatusOr<v1::QueueInfo> stats = Stats("q");
    return stats.ok() && stats->queued() >= static_cast<uint64_t>(jobs - 16);
  })) << "assignments that were never sent kept their jobs RUNNING";
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo stats, Stats("q"));
  EXPECT_EQ(stats.queued() + stats.running(), static_cast<uint64_t>(jobs));
  ctx.TryCancel();
}

TEST_F(WorkerStreamTest, AHeartbeatNamingTooManyLeasesEndsTheStream) {
  auto worker = Connect(TestWorkerOptions());
  ASSERT_TRUE(worker->ExpectWelcome().has_value());
  std::vector<std::string> tokens(kMaxHeldLeases + 1, "t");
  worker->Heartbeat(tokens);
  grpc::Status end = worker->AwaitEnd();
  EXPECT_EQ(end.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(end.error_message(),
              HasSubstr(absl::StrCat("at most ", kMaxHeldLeases, " leases")));
}

TEST_F(WorkerStreamTest, JobRunsToSuccessWithProgressOverTheStream) {
  auto worker = Connect("w1", "q", 1);
  ASSERT_TRUE(worker->ExpectWelcome().has_value());

  const std::string payload("bytes\0with\xffnul", 14);
  v1::JobSpec spec = Spec("q", "resize", payload);
  spec.set_content_type("application/octet-stream");
  (*spec.mutable_labels())["env"] = "test";
  *spec.mutable_lease_ttl() = DurationProto(absl::Seconds(20));
  const absl::Time submitted = Now();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse submit, Submit(spec));

  std::optional<v1::Assignment> a = worker->ExpectAssignment();
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->job().id(), submit.job().id());
  EXPECT_EQ(a->job().payload(), payload);
  EXPECT_EQ(a->job().kind(), "resize");
  EXPECT_EQ(a->job().content_type(), "application/octet-stream");
  EXPECT_EQ(a->job().labels().at("env"), "test");
  EXPECT_EQ(a->job().attempt(), 1u);
  EXPECT_EQ(a->job().state(), v1::JOB_STATE_RUNNING);
  EXPECT_THAT(a->lease_token(), Not(IsEmpty()));
  EXPECT_EQ(FromProto(a->lease_deadline()), submitted + absl::Seconds(20));

  worker->Progress(a->lease_token(), 40, "halfway");
  ASSERT_TRUE(worker->Sync());
  Settle();  // the progress write
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job running, Get(submit.job().id()));
  EXPECT_EQ(running.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(running.progress().percent(), 40u);
  EXPECT_EQ(running.progress().message(), "halfway");
  EXPECT_EQ(running.worker_id(), "w1");

  worker->Succeed(a->lease_token(), "thumbnail");
  std::optional<v1::ResultAck> ack = worker->ExpectResultAck();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->lease_token(), a->lease_token());
  EXPECT_EQ(ack->job_id(), submit.job().id());
  EXPECT_EQ(ack->state(), v1::JOB_STATE_SUCCEEDED);

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job done, Get(submit.job().id()));
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.result(), "thumbnail");
  EXPECT_EQ(done.payload(), payload);
  EXPECT_EQ(done.attempt(), 1u);
  EXPECT_EQ(FromProto(done.finished_at()), Now());
}

TEST_F(WorkerStreamTest, JobSubmittedWhileAWorkerWaitsIsLeasedAtSubmit) {
  auto worker = Connect("w1", "q", 1);
  // The Welcome is sent when the session is registered with its credit.
  ASSERT_TRUE(worker->ExpectWelcome().has_value());

  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse submit,
                             Submit(Spec("q", "k", "direct")));
  // Leased in the transaction that stored it.
  EXPECT_EQ(submit.job().state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(submit.job().attempt(), 1u);
  EXPECT_EQ(submit.job().worker_id(), "w1");

  std::optional<v1::Assignment> a = worker->ExpectAssignment();
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->job().id(), submit.job().id());
  EXPECT_EQ(a->job().payload(), "direct");
  EXPECT_EQ(a->job().attempt(), 1u);
}

TEST_F(WorkerStreamTest, JobSubmittedBeforeAnyWorkerWaitsUntilOneConnects) {
  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse submit,
                             Submit(Spec("q", "k", "queued")));
  EXPECT_EQ(submit.job().state(), v1::JOB_STATE_QUEUED);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo stats, Stats("q"));
  EXPECT_EQ(stats.queued(), 1u);

  auto worker = Connect("w1", "q", 1);
  std::optional<v1::Assignment> a = worker->ExpectAssignment();
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->job().id(), submit.job().id());
  EXPECT_EQ(a->job().payload(), "queued");
  EXPECT_EQ(a->job().attempt(), 1u);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Get(submit.job().id()));
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job.worker_id(), "w1");
}

TEST_F(WorkerStreamTest, ExpiredLeaseIsLostAndTheJobRunsAgainOnAnotherWorker) {
  auto first = Connect("w1", "q", 1);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  std::optional<v1::Assignment> a1 = first->ExpectAssignment();
  ASSERT_TRUE(a1.has_value());

  Advance(kDefaultTtl - absl::Seconds(1));
  Quiesce(*first);
  EXPECT_EQ(first->Pending(Msg::kLeaseLost), 0) << first->DescribeInbox();

  Advance(absl::Seconds(1));  // exactly at the deadline
  std::optional<v1::LeaseLost> lost = first->ExpectLeaseLost();
  ASSERT_TRUE(lost.has_value());
  EXPECT_EQ(lost->lease_token(), a1->lease_token());
  EXPECT_EQ(lost->job_id(), job.id());

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job scheduled, Get(job.id()));
  EXPECT_EQ(scheduled.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(scheduled.attempt(), 1u);
  EXPECT_THAT(scheduled.last_error(), HasSubstr("lease expired"));
  // Backoff before attempt 2: the initial backoff, jittered into [1/2, 1].
  EXPECT_GE(FromProto(scheduled.run_at()), Now() + kDefaultBackoff / 2);
  EXPECT_LE(FromProto(scheduled.run_at()), Now() + kDefaultBackoff);

  auto second = Connect("w2", "q", 1);
  ASSERT_TRUE(second->ExpectWelcome().has_value());
  Quiesce(*second);
  EXPECT_EQ(second->Pending(Msg::kAssignment), 0)
      << "delivered during its backoff: " << second->DescribeInbox();

  Advance(kDefaultBackoff);
  std::optional<v1::Assignment> a2 = second->ExpectAssignment();
  ASSERT_TRUE(a2.has_value());
  EXPECT_EQ(a2->job().id(), job.id());
  EXPECT_EQ(a2->job().attempt(), 2u);
  EXPECT_NE(a2->lease_token(), a1->lease_token());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job running, Get(job.id()));
  EXPECT_EQ(running.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(running.worker_id(), "w2");
}

TEST_F(WorkerStreamTest, StaleTokenIsRefusedAndDoesNotChangeTheJob) {
  auto first = Connect("w1", "q", 1);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  std::optional<v1::Assignment> a1 = first->ExpectAssignment();
  ASSERT_TRUE(a1.has_value());
  Advance(kDefaultTtl);
  ASSERT_TRUE(first->ExpectLeaseLost().has_value());
  auto second = Connect("w2", "q", 1);
  Advance(kDefaultBackoff);
  std::optional<v1::Assignment> a2 = second->ExpectAssignment();
  ASSERT_TRUE(a2.has_value());
  ASSERT_EQ(a2->job().attempt(), 2u);

  // The first worker did not notice and reports late, under attempt 1.
  first->Heartbeat({a1->lease_token()});
  first->Succeed(a1->lease_token(), "stale output");
  ASSERT_TRUE(first->Sync());
  Settle();
  ASSERT_TRUE(first->Sync());
  EXPECT_EQ(first->Pending(Msg::kLeaseLost), 2)
      << "the heartbeat and the result must both get LeaseLost; inbox:\n"
      << first->DescribeInbox();
  EXPECT_EQ(first->Pending(Msg::kResultAck), 0)
      << "a stale result must not be acknowledged; inbox:\n"
      << first->DescribeInbox();

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job still, Get(job.id()));
  EXPECT_EQ(still.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(still.attempt(), 2u);
  EXPECT_EQ(still.worker_id(), "w2");
  EXPECT_THAT(still.result(), IsEmpty());

  second->Succeed(a2->lease_token(), "fresh output");
  std::optional<v1::ResultAck> ack = second->ExpectResultAck();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->state(), v1::JOB_STATE_SUCCEEDED);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job done, Get(job.id()));
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.result(), "fresh output");
  EXPECT_EQ(done.attempt(), 2u);
}

TEST_F(WorkerStreamTest, ForeignTokenIsRejectedAndTheHolderKeepsTheLease) {
  auto holder = Connect("w1", "q", 1);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  std::optional<v1::Assignment> a = holder->ExpectAssignment();
  ASSERT_TRUE(a.has_value());

  auto intruder = Connect("w2", "q", 0);
  intruder->Heartbeat({a->lease_token()});
  intruder->Succeed(a->lease_token(), "forged");
  std::optional<v1::LeaseLost> lost1 = intruder->ExpectLeaseLost();
  std::optional<v1::LeaseLost> lost2 = intruder->ExpectLeaseLost();
  ASSERT_TRUE(lost1.has_value());
  ASSERT_TRUE(lost2.has_value());
  EXPECT_EQ(lost1->lease_token(), a->lease_token());
  EXPECT_EQ(lost2->lease_token(), a->lease_token());
  Quiesce(*intruder);
  EXPECT_EQ(intruder->Pending(Msg::kResultAck), 0) << intruder->DescribeInbox();

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job still, Get(job.id()));
  EXPECT_EQ(still.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(still.worker_id(), "w1");
  EXPECT_THAT(still.result(), IsEmpty());

  holder->Succeed(a->lease_token(), "genuine");
  std::optional<v1::ResultAck> ack = holder->ExpectResultAck();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->state(), v1::JOB_STATE_SUCCEEDED);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job done, Get(job.id()));
  EXPECT_EQ(done.result(), "genuine");
  EXPECT_EQ(done.worker_id(), "w1");
}

TEST_F(WorkerStreamTest, CancellingARunningJobTellsItsWorkerToStop) {
  auto worker = Connect("w1", "q", 1);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  std::optional<v1::Assignment> a = worker->ExpectAssignment();
  ASSERT_TRUE(a.has_value());

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job cancelled,
                             Cancel(job.id(), "no longer needed"));
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);

  std::optional<v1::Cancel> cancel = worker->ExpectCancel();
  ASSERT_TRUE(cancel.has_value());
  EXPECT_EQ(cancel->lease_token(), a->lease_token());
  EXPECT_EQ(cancel->job_id(), job.id());
  EXPECT_EQ(cancel->reason(), "no longer needed");

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job after, Get(job.id()));
  EXPECT_EQ(after.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(after.last_error(), "no longer needed");

  // A result sent anyway is refused and changes nothing.
  worker->Succeed(a->lease_token(), "too late");
  std::optional<v1::LeaseLost> lost = worker->ExpectLeaseLost();
  ASSERT_TRUE(lost.has_value());
  EXPECT_EQ(lost->lease_token(), a->lease_token());
  Settle();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job still, Get(job.id()));
  EXPECT_EQ(still.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(still.result(), IsEmpty());
}

TEST_F(WorkerStreamTest, WorkerGetsNoMoreAssignmentsThanItsCredits) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_THAT(Submit("q", "k", absl::StrCat("job-", i)), IsOk());
  }
  auto worker = Connect("w1", "q", 2);
  ASSERT_TRUE(worker->ExpectAssignment().has_value());
  ASSERT_TRUE(worker->ExpectAssignment().has_value());
  Quiesce(*worker);
  EXPECT_EQ(worker->Pending(Msg::kAssignment), 0) << worker->DescribeInbox();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo stats, Stats("q"));
  EXPECT_EQ(stats.running(), 2u);
  EXPECT_EQ(stats.queued(), 3u);
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<v1::WorkerInfo> workers,
                             ListWorkers());
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0].credits(), 0u);
  EXPECT_EQ(workers[0].leases(), 2u);

  worker->Credit(1);
  ASSERT_TRUE(worker->ExpectAssignment().has_value());
  Quiesce(*worker);
  EXPECT_EQ(worker->Pending(Msg::kAssignment), 0) << worker->DescribeInbox();
  FERRY_ASSERT_OK_AND_ASSIGN(stats, Stats("q"));
  EXPECT_EQ(stats.running(), 3u);
  EXPECT_EQ(stats.queued(), 2u);
}

TEST_F(WorkerStreamTest, CreditsReturnedWithAResultBringTheNextJob) {
  for (int i = 0; i < 3; ++i) {
    ASSERT_THAT(Submit("q", "k", absl::StrCat("job-", i)), IsOk());
  }
  auto worker = Connect("w1", "q", 1);
  std::optional<v1::Assignment> first = worker->ExpectAssignment();
  ASSERT_TRUE(first.has_value());

  // A result without credits frees no slot.
  worker->Succeed(first->lease_token(), "", /*credits=*/0);
  ASSERT_TRUE(worker->ExpectResultAck().has_value());
  Quiesce(*worker);
  EXPECT_EQ(worker->Pending(Msg::kAssignment), 0) << worker->DescribeInbox();

  worker->Credit(1);
  std::optional<v1::Assignment> second = worker->ExpectAssignment();
  ASSERT_TRUE(second.has_value());
  // One returned with the result: the last job comes without a Credit.
  worker->Succeed(second->lease_token(), "", /*credits=*/1);
  ASSERT_TRUE(worker->ExpectResultAck().has_value());
  ASSERT_TRUE(worker->ExpectAssignment().has_value());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo stats, Stats("q"));
  EXPECT_EQ(stats.queued(), 0u);
  EXPECT_EQ(stats.running(), 1u);
  EXPECT_EQ(stats.succeeded(), 2u);
}

TEST_F(WorkerStreamTest, HigherPriorityJobsAreDeliveredFirst) {
  const std::vector<int> priorities = {0, 10, -5, 10, 3};
  std::vector<std::string> ids;
  for (int priority : priorities) {
    v1::JobSpec spec = Spec("q", "k");
    spec.set_priority(priority);
    FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse r, Submit(spec));
    ids.push_back(r.job().id());
  }
  // Highest priority first; equal priorities in submission order.
  const std::vector<std::string> expected = {ids[1], ids[3], ids[4], ids[0],
                                             ids[2]};
  auto worker = Connect("w1", "q", 1);
  std::vector<std::string> delivered;
  for (size_t i = 0; i < expected.size(); ++i) {
    std::optional<v1::Assignment> a = worker->ExpectAssignment();
    ASSERT_TRUE(a.has_value()) << "assignment " << i;
    delivered.push_back(a->job().id());
    worker->Credit(1);
  }
  EXPECT_EQ(delivered, expected);
}

TEST_F(WorkerStreamTest, DelayedJobsAreDeliveredOnlyOnceTheirTimeComes) {
  auto worker = Connect("w1", "q", 2);
  ASSERT_TRUE(worker->ExpectWelcome().has_value());
  v1::JobSpec delayed = Spec("q", "k", "delayed");
  *delayed.mutable_delay() = DurationProto(absl::Seconds(60));
  v1::JobSpec at = Spec("q", "k", "at");
  *at.mutable_run_at() = TimestampProto(Now() + absl::Seconds(90));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse r1, Submit(delayed));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse r2, Submit(at));
  EXPECT_EQ(r1.job().state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(r2.job().state(), v1::JOB_STATE_SCHEDULED);

  Advance(absl::Seconds(59));
  Quiesce(*worker);
  EXPECT_EQ(worker->Pending(Msg::kAssignment), 0) << worker->DescribeInbox();

  Advance(absl::Seconds(1));
  std::optional<v1::Assignment> a1 = worker->ExpectAssignment();
  ASSERT_TRUE(a1.has_value());
  EXPECT_EQ(a1->job().id(), r1.job().id());
  Quiesce(*worker);
  EXPECT_EQ(worker->Pending(Msg::kAssignment), 0) << worker->DescribeInbox();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job waiting, Get(r2.job().id()));
  EXPECT_EQ(waiting.state(), v1::JOB_STATE_SCHEDULED);

  Advance(absl::Seconds(30));
  std::optional<v1::Assignment> a2 = worker->ExpectAssignment();
  ASSERT_TRUE(a2.has_value());
  EXPECT_EQ(a2->job().id(), r2.job().id());
}

TEST_F(WorkerStreamTest,
       RetryableFailureWithAttemptsLeftRunsAgainAfterBackoff) {
  auto worker = Connect("w1", "q", 2);
  v1::JobSpec spec = Spec("q", "k", "p");
  spec.mutable_retry()->set_max_attempts(3);
  *spec.mutable_retry()->mutable_initial_backoff() =
      DurationProto(absl::Seconds(10));
  *spec.mutable_retry()->mutable_max_backoff() =
      DurationProto(absl::Seconds(10));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse submit, Submit(spec));
  const std::string id = submit.job().id();
  std::optional<v1::Assignment> a1 = worker->ExpectAssignment();
  ASSERT_TRUE(a1.has_value());

  worker->Fail(a1->lease_token(), "transient", /*retryable=*/true);
  std::optional<v1::ResultAck> ack = worker->ExpectResultAck();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->state(), v1::JOB_STATE_SCHEDULED);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job scheduled, Get(id));
  EXPECT_EQ(scheduled.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(scheduled.attempt(), 1u);
  EXPECT_EQ(scheduled.last_error(), "transient");
  EXPECT_GE(FromProto(scheduled.run_at()), Now() + absl::Seconds(5));
  EXPECT_LE(FromProto(scheduled.run_at()), Now() + absl::Seconds(10));
  Quiesce(*worker);
  EXPECT_EQ(worker->Pending(Msg::kAssignment), 0) << worker->DescribeInbox();

  Advance(absl::Seconds(10));
  std::optional<v1::Assignment> a2 = worker->ExpectAssignment();
  ASSERT_TRUE(a2.has_value());
  EXPECT_EQ(a2->job().id(), id);
  EXPECT_EQ(a2->job().attempt(), 2u);
}

TEST_F(WorkerStreamTest, NonRetryableFailureDeadLettersTheJobAndRetryRequeues) {
  auto worker = Connect("w1", "q", 1);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  std::optional<v1::Assignment> a1 = worker->ExpectAssignment();
  ASSERT_TRUE(a1.has_value());

  worker->Fail(a1->lease_token(), "bad input", /*retryable=*/false);
  std::optional<v1::ResultAck> ack = worker->ExpectResultAck();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->state(), v1::JOB_STATE_FAILED);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job failed, Get(job.id()));
  EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed.last_error(), "bad input");
  EXPECT_EQ(FromProto(failed.finished_at()), Now());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo stats, Stats("q"));
  EXPECT_EQ(stats.failed(), 1u);

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job requeued, Retry(job.id()));
  EXPECT_EQ(requeued.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(requeued.attempt(), 0u);
  worker->Credit(1);
  std::optional<v1::Assignment> a2 = worker->ExpectAssignment();
  ASSERT_TRUE(a2.has_value());
  EXPECT_EQ(a2->job().id(), job.id());
  EXPECT_EQ(a2->job().attempt(), 1u);
}

TEST_F(WorkerStreamTest, FailureOfTheLastAttemptDeadLettersTheJob) {
  auto worker = Connect("w1", "q", 2);
  v1::JobSpec spec = Spec("q", "k", "p");
  spec.mutable_retry()->set_max_attempts(2);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse submit, Submit(spec));
  std::optional<v1::Assignment> a1 = worker->ExpectAssignment();
  ASSERT_TRUE(a1.has_value());
  worker->Fail(a1->lease_token(), "first", /*retryable=*/true);
  std::optional<v1::ResultAck> ack1 = worker->ExpectResultAck();
  ASSERT_TRUE(ack1.has_value());
  EXPECT_EQ(ack1->state(), v1::JOB_STATE_SCHEDULED);

  Advance(kDefaultBackoff);
  std::optional<v1::Assignment> a2 = worker->ExpectAssignment();
  ASSERT_TRUE(a2.has_value());
  ASSERT_EQ(a2->job().attempt(), 2u);
  worker->Fail(a2->lease_token(), "second", /*retryable=*/true);
  std::optional<v1::ResultAck> ack2 = worker->ExpectResultAck();
  ASSERT_TRUE(ack2.has_value());
  EXPECT_EQ(ack2->state(), v1::JOB_STATE_FAILED);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job failed, Get(submit.job().id()));
  EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed.attempt(), 2u);
  EXPECT_EQ(failed.last_error(), "second");
}

TEST_F(WorkerStreamTest, PausedQueueDeliversNothingUntilResumed) {
  ASSERT_THAT(Pause("q"), IsOk());
  auto worker = Connect("w1", "q", 1);
  ASSERT_TRUE(worker->ExpectWelcome().has_value());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse submit,
                             Submit(Spec("q", "k", "p")));
  EXPECT_EQ(submit.job().state(), v1::JOB_STATE_QUEUED);
  Quiesce(*worker);
  EXPECT_EQ(worker->Pending(Msg::kAssignment), 0) << worker->DescribeInbox();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo stats, Stats("q"));
  EXPECT_TRUE(stats.paused());
  EXPECT_EQ(stats.queued(), 1u);

  ASSERT_THAT(Resume("q"), IsOk());
  std::optional<v1::Assignment> a = worker->ExpectAssignment();
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->job().id(), submit.job().id());
  FERRY_ASSERT_OK_AND_ASSIGN(stats, Stats("q"));
  EXPECT_FALSE(stats.paused());
}

TEST_F(WorkerStreamTest,
       WorkerReconnectingAfterABrokerRestartFinishesItsLease) {
  auto before = Connect("w1", "q", 1);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  std::optional<v1::Assignment> a = before->ExpectAssignment();
  ASSERT_TRUE(a.has_value());

  ASSERT_NO_FATAL_FAILURE(Restart());
  // The old stream was told to drain, then ended.
  EXPECT_TRUE(before->Await(Msg::kDrain, absl::ZeroDuration()).has_value())
      << before->DescribeInbox();
  EXPECT_TRUE(before->AwaitEnd().ok());

  TestWorkerOptions options;
  options.worker_id = "w1";
  options.queues = {"q"};
  options.held_leases = {{job.id(), a->lease_token()}};
  auto after = Connect(options);
  ASSERT_TRUE(after->ExpectWelcome().has_value());
  Quiesce(*after);
  EXPECT_EQ(after->Pending(Msg::kLeaseLost), 0) << after->DescribeInbox();

  // Heartbeats keep the re-bound lease alive past its original TTL.
  Advance(kDefaultTtl * 2 / 3);
  after->Heartbeat({a->lease_token()});
  ASSERT_TRUE(after->Sync());
  const absl::Time heartbeat_at = Now();
  Advance(kDefaultTtl * 2 / 3);
  Quiesce(*after);
  EXPECT_EQ(after->Pending(Msg::kLeaseLost), 0) << after->DescribeInbox();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job running, Get(job.id()));
  EXPECT_EQ(running.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(running.attempt(), 1u);
  EXPECT_EQ(FromProto(running.lease_deadline()), heartbeat_at + kDefaultTtl);

  after->Succeed(a->lease_token(), "after restart");
  std::optional<v1::ResultAck> ack = after->ExpectResultAck();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->state(), v1::JOB_STATE_SUCCEEDED);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job done, Get(job.id()));
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.attempt(), 1u) << "the restart must not cause a re-run";
  EXPECT_EQ(done.result(), "after restart");
}

TEST_F(WorkerStreamTest, ResultResentAfterABrokerRestartIsAckedNotReapplied) {
  auto before = Connect("w1", "q", 1);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  std::optional<v1::Assignment> a = before->ExpectAssignment();
  ASSERT_TRUE(a.has_value());
  before->Succeed(a->lease_token(), "first copy");
  // Stored; suppose the ack was lost with the connection.
  ASSERT_TRUE(before->ExpectResultAck().has_value());
  ASSERT_NO_FATAL_FAILURE(Restart());

  TestWorkerOptions options;
  options.worker_id = "w1";
  options.held_leases = {{job.id(), a->lease_token()}};
  auto after = Connect(options);
  ASSERT_TRUE(after->ExpectWelcome().has_value());
  after->Succeed(a->lease_token(), "second copy");
  std::optional<v1::ResultAck> ack = after->ExpectResultAck();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->lease_token(), a->lease_token());
  EXPECT_EQ(ack->state(), v1::JOB_STATE_SUCCEEDED);
  Quiesce(*after);
  EXPECT_EQ(after->Pending(Msg::kLeaseLost), 0) << after->DescribeInbox();

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job done, Get(job.id()));
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.result(), "first copy");
  EXPECT_EQ(done.attempt(), 1u);
}

TEST_F(WorkerStreamTest, HeldLeaseTheBrokerDoesNotKnowIsLostOnReconnect) {
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  TestWorkerOptions options;
  options.worker_id = "w1";
  options.held_leases = {{job.id(), "0123456789abcdef0123456789abcdef"}};
  auto worker = Connect(options);
  std::optional<v1::LeaseLost> lost = worker->ExpectLeaseLost();
  ASSERT_TRUE(lost.has_value());
  EXPECT_EQ(lost->lease_token(), "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(lost->job_id(), job.id());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job still, Get(job.id()));
  EXPECT_EQ(still.state(), v1::JOB_STATE_QUEUED);
}

// ---- batches ----

// Submits three jobs in one SubmitBatch to a worker waiting with three
// credits: their assignments are pushed together, after the Welcome.
class WorkerStreamBatchTest : public WorkerStreamTest {
 protected:
  std::unique_ptr<TestWorker> ConnectWaiting(bool accepts_batches) {
    TestWorkerOptions options;
    options.worker_id = "w1";
    options.initial_credits = 3;
    options.accepts_batches = accepts_batches;
    auto worker = Connect(options);
    std::optional<v1::Welcome> welcome = worker->ExpectWelcome();
    EXPECT_TRUE(welcome.has_value()) << "the Welcome must come alone";
    if (welcome.has_value()) {
      EXPECT_TRUE(welcome->accepts_batches());
    }
    return worker;
  }

  std::vector<std::string> SubmitThree() {
    std::vector<std::string> ids;
    absl::StatusOr<v1::SubmitBatchResponse> batch = SubmitBatch(
        {Spec("q", "k", "a"), Spec("q", "k", "b"), Spec("q", "k", "c")});
    EXPECT_THAT(batch, IsOk());
    if (!batch.ok()) return ids;
    for (const v1::SubmitResponse& r : batch->results()) {
      EXPECT_EQ(r.job().state(), v1::JOB_STATE_RUNNING);
      ids.push_back(r.job().id());
    }
    return ids;
  }
};

TEST_F(WorkerStreamBatchTest, WorkerThatTakesBatchesGetsQueuedMessagesInOne) {
  auto worker = ConnectWaiting(/*accepts_batches=*/true);
  const std::vector<std::string> ids = SubmitThree();
  ASSERT_EQ(ids.size(), 3u);

  std::optional<Msg> msg = worker->Next();
  ASSERT_TRUE(msg.has_value());
  ASSERT_TRUE(msg->has_batch()) << msg->DebugString();
  ASSERT_EQ(msg->batch().messages_size(), 3) << msg->DebugString();
  v1::WorkerMessage results;
  for (int i = 0; i < 3; ++i) {
    const v1::ServerMessage& inner = msg->batch().messages(i);
    ASSERT_TRUE(inner.has_assignment()) << inner.DebugString();
    EXPECT_EQ(inner.assignment().job().id(), ids[i]);
    v1::Result* result =
        results.mutable_batch()->add_messages()->mutable_result();
    result->set_lease_token(inner.assignment().lease_token());
    result->mutable_success()->set_output(absl::StrCat("out-", i));
  }

  // The worker answers with one batch of three results; once the broker
  // has handled it and the writes are committed, all three succeeded.
  ASSERT_TRUE(worker->Send(results));
  Quiesce(*worker);
  for (int i = 0; i < 3; ++i) {
    FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Get(ids[i]));
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.DebugString();
    EXPECT_EQ(job.result(), absl::StrCat("out-", i));
  }
}

TEST_F(WorkerStreamBatchTest, WorkerThatDoesNotTakeBatchesGetsOneAtATime) {
  auto worker = ConnectWaiting(/*accepts_batches=*/false);
  const std::vector<std::string> ids = SubmitThree();
  ASSERT_EQ(ids.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    std::optional<Msg> msg = worker->Next();
    ASSERT_TRUE(msg.has_value());
    ASSERT_TRUE(msg->has_assignment()) << msg->DebugString();
    EXPECT_EQ(msg->assignment().job().id(), ids[i]);
  }
}

TEST_F(WorkerStreamTest, BatchHoldingAHelloEndsTheStreamAsInvalid) {
  auto worker = Connect("w1", "q", 0);
  ASSERT_TRUE(worker->ExpectWelcome().has_value());
  v1::WorkerMessage bad;
  bad.mutable_batch()->add_messages()->mutable_credit()->set_credits(1);
  bad.mutable_batch()->add_messages()->mutable_hello()->set_worker_id("w1");
  ASSERT_TRUE(worker->Send(bad));
  grpc::Status status = worker->AwaitEnd();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("batch"));
}

TEST_F(WorkerStreamTest, FirstMessageOtherThanHelloEndsTheStreamAsInvalid) {
  TestWorkerOptions options;
  options.send_hello = false;
  auto worker = Connect(options);
  v1::WorkerMessage credit;
  credit.mutable_credit()->set_credits(1);
  ASSERT_TRUE(worker->Send(credit));
  grpc::Status status = worker->AwaitEnd();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("Hello"));
  EXPECT_EQ(worker->Pending(Msg::kWelcome), 0);
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<v1::WorkerInfo> workers,
                             ListWorkers());
  EXPECT_THAT(workers, IsEmpty());
}

}  // namespace
}  // namespace ferry::testing
