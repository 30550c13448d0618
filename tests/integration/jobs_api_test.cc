// The Jobs service and the unary Workers calls end to end: a real
// FerryServer over loopback with a FakeClock. Bad input must get its exact
// status code and change nothing.

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "ferry/v1/jobs.grpc.pb.h"
#include "ferry/v1/workers.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/unknown_field_set.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"
#include "proto/time_util.h"
#include "tests/raw_call.h"
#include "tests/server_fixture.h"
#include "tests/status_matchers.h"
#include "tests/test_worker.h"

namespace ferry::testing {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

constexpr absl::Duration kDefaultTtl = absl::Seconds(30);

// Everything a client can see: per-queue counts and every job, in full.
struct World {
  v1::QueueStatsResponse stats;
  v1::ListResponse jobs;
};

class JobsApiTest : public ServerTest {
 protected:
  // Whether a new Watch gets its first message (then it is cancelled):
  // false while the broker refuses it.
  bool WatchOpens(const v1::WatchRequest& request) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    auto watch = jobs().Watch(&ctx, request);
    v1::WatchResponse first;
    const bool ok = watch->Read(&first);
    ctx.TryCancel();
    watch->Finish();
    return ok;
  }

  absl::StatusOr<v1::ListResponse> List(v1::ListRequest request) {
    return Call(jobs(), &v1::Jobs::Stub::List, request);
  }

  // Starts `method` (a unary call on the callback API) with `request`,
  // waits until the broker registers it (its next tick is then
  // `deadline`), cancels it, and checks that it ends CANCELLED and that
  // the broker lets it go (nothing waits for `deadline` any more).
  template <typename Request, typename Response>
  void CancelWhileRegistered(
      const Request& request, absl::Time deadline,
      const std::function<void(grpc::ClientContext*, const Request*, Response*,
                               std::function<void(grpc::Status)>)>& method) {
    // Shared with the callback, which may outlive a failed assertion here.
    struct Call {
      Request request;
      Response response;
      grpc::ClientContext ctx;
      grpc::Status status;
      absl::Notification finished;
    };
    auto call = std::make_shared<Call>();
    call->request = request;
    method(&call->ctx, &call->request, &call->response, [call](grpc::Status s) {
      call->status = std::move(s);
      call->finished.Notify();
    });
    ASSERT_TRUE(Eventually([&] {
      return server().broker()->NextTickTime() == deadline;
    })) << "the broker never registered the call";
    call->ctx.TryCancel();
    ASSERT_TRUE(call->finished.WaitForNotificationWithTimeout(kRpcTimeout));
    EXPECT_EQ(call->status.error_code(), grpc::StatusCode::CANCELLED);
    ASSERT_TRUE(Eventually([&] {
      return server().broker()->NextTickTime() > deadline;
    })) << "the broker still holds the cancelled call";
  }

  World Snapshot() {
    World world;
    absl::StatusOr<v1::QueueStatsResponse> stats = AllStats();
    EXPECT_THAT(stats, IsOk());
    if (stats.ok()) world.stats = *stats;
    v1::ListRequest request;
    request.set_page_size(1000);
    request.set_view(v1::JOB_VIEW_FULL);
    absl::StatusOr<v1::ListResponse> jobs = List(request);
    EXPECT_THAT(jobs, IsOk());
    if (jobs.ok()) world.jobs = *jobs;
    return world;
  }

  // Two jobs in two queues, so that "nothing changed" means something.
  void Seed() {
    ASSERT_THAT(Submit("q", "k", "seed-1"), IsOk());
    ASSERT_THAT(Submit("other", "k", "seed-2"), IsOk());
  }

  void ExpectUnchanged(const World& before) {
    World after = Snapshot();
    EXPECT_TRUE(MessageDifferencer::Equals(before.stats, after.stats))
        << "before:\n"
        << before.stats.DebugString() << "after:\n"
        << after.stats.DebugString();
    EXPECT_TRUE(MessageDifferencer::Equals(before.jobs, after.jobs))
        << "before:\n"
        << before.jobs.DebugString() << "after:\n"
        << after.jobs.DebugString();
  }

  // Leases one job from `queue` over the unary API.
  absl::StatusOr<v1::Assignment> LeaseOne(const std::string& queue) {
    v1::LeaseRequest request;
    request.set_worker_id("unary-worker");
    request.add_queues(queue);
    request.set_max_jobs(1);
    absl::StatusOr<v1::LeaseResponse> response =
        Call(workers(), &v1::Workers::Stub::Lease, request);
    if (!response.ok()) return response.status();
    if (response->assignments_size() != 1) {
      return absl::NotFoundError(absl::StrCat(
          "Lease returned ", response->assignments_size(), " assignments"));
    }
    return response->assignments(0);
  }

  absl::StatusOr<v1::CompleteResponse> Complete(const std::string& token,
                                                const std::string& output) {
    v1::CompleteRequest request;
    request.mutable_result()->set_lease_token(token);
    request.mutable_result()->mutable_success()->set_output(output);
    return Call(workers(), &v1::Workers::Stub::Complete, request);
  }

  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const std::string& token) {
    v1::HeartbeatRequest request;
    request.set_lease_token(token);
    return Call(workers(), &v1::Workers::Stub::Heartbeat, request);
  }

  absl::StatusOr<v1::WaitResponse> Wait(const std::string& id,
                                        absl::Duration timeout) {
    v1::WaitRequest request;
    request.set_job_id(id);
    *request.mutable_timeout() = DurationProto(timeout);
    return Call(jobs(), &v1::Jobs::Stub::Wait, request);
  }

  absl::StatusOr<v1::PurgeQueueResponse> Purge(const std::string& queue,
                                               v1::JobState state) {
    v1::PurgeQueueRequest request;
    request.set_queue(queue);
    request.set_state(state);
    return Call(jobs(), &v1::Jobs::Stub::PurgeQueue, request);
  }
};

// ------------------------------------------------------------ idempotency

TEST_F(JobsApiTest, SubmitWithAKnownIdempotencyKeyReturnsTheSameJob) {
  v1::JobSpec spec = Spec("q", "k", "charge card");
  spec.set_idempotency_key("order-42");
  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse first, Submit(spec));
  EXPECT_TRUE(first.created());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse again, Submit(spec));
  EXPECT_FALSE(again.created());
  EXPECT_EQ(again.job().id(), first.job().id());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo stats, Stats("q"));
  EXPECT_EQ(stats.queued(), 1u);

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Assignment lease, LeaseOne("q"));
  ASSERT_EQ(lease.job().id(), first.job().id());
  ASSERT_THAT(Complete(lease.lease_token(), "receipt-7"), IsOk());

  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse late, Submit(spec));
  EXPECT_FALSE(late.created());
  EXPECT_EQ(late.job().id(), first.job().id());
  EXPECT_EQ(late.job().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(late.job().result(), "receipt-7");
  FERRY_ASSERT_OK_AND_ASSIGN(stats, Stats("q"));
  EXPECT_EQ(stats.queued(), 0u);
  EXPECT_EQ(stats.succeeded(), 1u);
}

// ------------------------------------------------------------------ batch

TEST_F(JobsApiTest, SubmitBatchCreatesEveryJobInOrder) {
  FERRY_ASSERT_OK_AND_ASSIGN(
      v1::SubmitBatchResponse response,
      SubmitBatch(
          {Spec("a", "k", "1"), Spec("b", "k", "2"), Spec("a", "k", "3")}));
  ASSERT_THAT(response.results(), SizeIs(3));
  const std::vector<std::string> queues = {"a", "b", "a"};
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    const v1::SubmitResponse& r = response.results(i);
    EXPECT_TRUE(r.created());
    EXPECT_EQ(r.job().queue(), queues[i]);
    FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Get(r.job().id()));
    EXPECT_EQ(job.payload(), absl::StrCat(i + 1));
    EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  }
  EXPECT_NE(response.results(0).job().id(), response.results(1).job().id());
  EXPECT_NE(response.results(1).job().id(), response.results(2).job().id());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo a, Stats("a"));
  EXPECT_EQ(a.queued(), 2u);
}

TEST_F(JobsApiTest, SubmitBatchWithOneInvalidSpecCreatesNothing) {
  ASSERT_NO_FATAL_FAILURE(Seed());
  const World before = Snapshot();
  EXPECT_THAT(SubmitBatch({Spec("q", "k", "1"), Spec("q", "", "2"),
                           Spec("q", "k", "3")}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[1]")));
  ExpectUnchanged(before);
}

TEST_F(JobsApiTest, SubmitBatchOfNoJobsOrMoreThanAThousandIsInvalid) {
  ASSERT_NO_FATAL_FAILURE(Seed());
  const World before = Snapshot();
  EXPECT_THAT(SubmitBatch({}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("a batch holds 1 to 1000 jobs")));
  EXPECT_THAT(SubmitBatch(std::vector<v1::JobSpec>(1001, Spec("q", "k"))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1000")));
  ExpectUnchanged(before);
  // The limit itself is accepted.
  FERRY_ASSERT_OK_AND_ASSIGN(
      v1::SubmitBatchResponse full,
      SubmitBatch(std::vector<v1::JobSpec>(1000, Spec("big", "k"))));
  EXPECT_THAT(full.results(), SizeIs(1000));
}

// ------------------------------------------------------------------- list

TEST_F(JobsApiTest, ListFiltersByQueueStateKindAndLabels) {
  std::vector<std::string> a;
  for (int i = 0; i < 3; ++i) {
    v1::JobSpec spec = Spec("q-a", "resize", absl::StrCat("a", i));
    if (i != 1) (*spec.mutable_labels())["env"] = "prod";
    FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse r, Submit(spec));
    a.push_back(r.job().id());
  }
  std::vector<std::string> b;
  for (int i = 0; i < 2; ++i) {
    FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q-b", "email", "b"));
    b.push_back(job.id());
  }
  ASSERT_THAT(Cancel(a[0]), IsOk());

  v1::ListRequest request;
  request.set_queue("q-a");
  FERRY_ASSERT_OK_AND_ASSIGN(v1::ListResponse by_queue, List(request));
  // Newest first by default.
  EXPECT_THAT(Ids(by_queue), ElementsAre(a[2], a[1], a[0]));
  EXPECT_THAT(by_queue.next_page_token(), IsEmpty());

  request.set_oldest_first(true);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::ListResponse oldest, List(request));
  EXPECT_THAT(Ids(oldest), ElementsAre(a[0], a[1], a[2]));

  request.set_state(v1::JOB_STATE_QUEUED);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::ListResponse queued_a, List(request));
  EXPECT_THAT(Ids(queued_a), ElementsAre(a[1], a[2]));

  v1::ListRequest cancelled;
  cancelled.set_state(v1::JOB_STATE_CANCELLED);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::ListResponse by_state, List(cancelled));
  EXPECT_THAT(Ids(by_state), ElementsAre(a[0]));

  v1::ListRequest kind;
  kind.set_kind("email");
  FERRY_ASSERT_OK_AND_ASSIGN(v1::ListResponse by_kind, List(kind));
  EXPECT_THAT(Ids(by_kind), ElementsAre(b[1], b[0]));

  v1::ListRequest labels;
  (*labels.mutable_labels())["env"] = "prod";
  FERRY_ASSERT_OK_AND_ASSIGN(v1::ListResponse by_label, List(labels));
  EXPECT_THAT(Ids(by_label), ElementsAre(a[2], a[0]));

  // BASIC (the default) leaves the payload out; FULL has it.
  EXPECT_THAT(by_kind.jobs(0).payload(), IsEmpty());
  kind.set_view(v1::JOB_VIEW_FULL);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::ListResponse full, List(kind));
  ASSERT_THAT(full.jobs(), SizeIs(2));
  EXPECT_EQ(full.jobs(0).payload(), "b");
}

TEST_F(JobsApiTest, ListPagesThroughEveryJobWithPageTokens) {
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", ""));
    ids.push_back(job.id());
  }
  for (bool oldest_first : {false, true}) {
    SCOPED_TRACE(oldest_first ? "oldest first" : "newest first");
    v1::ListRequest request;
    request.set_queue("q");
    request.set_page_size(3);
    request.set_oldest_first(oldest_first);
    std::vector<std::string> seen;
    std::vector<int> sizes;
    for (int page = 0; page < 10; ++page) {
      FERRY_ASSERT_OK_AND_ASSIGN(v1::ListResponse response, List(request));
      sizes.push_back(response.jobs_size());
      for (const std::string& id : Ids(response)) seen.push_back(id);
      if (response.next_page_token().empty()) break;
      request.set_page_token(response.next_page_token());
    }
    EXPECT_THAT(sizes, ElementsAre(3, 3, 1));
    std::vector<std::string> expected = ids;
    if (!oldest_first) std::reverse(expected.begin(), expected.end());
    EXPECT_THAT(seen, ElementsAreArray(expected));
  }
}

// ------------------------------------------------------------ watch, wait

TEST_F(JobsApiTest, WatchStreamsEveryStateInOrderUntilTerminal) {
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  v1::WatchRequest request;
  request.set_job_id(job.id());
  std::unique_ptr<grpc::ClientReader<v1::WatchResponse>> watch =
      jobs().Watch(&ctx, request);
  std::vector<v1::Job> seen;
  v1::WatchResponse update;
  // The job as it is now, before anything else happens.
  ASSERT_TRUE(watch->Read(&update));
  seen.push_back(update.job());

  auto worker = Connect("w1", "q", 1);
  std::optional<v1::Assignment> a = worker->ExpectAssignment();
  ASSERT_TRUE(a.has_value());
  worker->Progress(a->lease_token(), 50, "half");
  ASSERT_TRUE(worker->Sync());
  Settle();
  worker->Succeed(a->lease_token(), "out");
  ASSERT_TRUE(worker->ExpectResultAck().has_value());

  for (int i = 0; i < 10 && watch->Read(&update); ++i) {
    seen.push_back(update.job());
  }
  grpc::Status status = watch->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();

  std::vector<v1::JobState> states;
  for (const v1::Job& j : seen) states.push_back(j.state());
  EXPECT_THAT(states,
              ElementsAre(v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING,
                          v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED));
  if (seen.size() == 4) {
    EXPECT_EQ(seen[1].attempt(), 1u);
    EXPECT_EQ(seen[2].progress().percent(), 50u);
    EXPECT_EQ(seen[2].progress().message(), "half");
  }
}

class WatcherLimitTest : public JobsApiTest {
 protected:
  WatcherLimitTest() { options_.broker.max_watchers = 2; }
};

TEST_F(WatcherLimitTest, WatchAndWaitPastTheLimitAreRefusedUntilOneEnds) {
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  v1::WatchRequest request;
  request.set_job_id(job.id());
  // Two open watches (each has its first message: registered).
  grpc::ClientContext first_ctx, second_ctx;
  auto first = jobs().Watch(&first_ctx, request);
  auto second = jobs().Watch(&second_ctx, request);
  v1::WatchResponse update;
  ASSERT_TRUE(first->Read(&update));
  ASSERT_TRUE(second->Read(&update));

  grpc::ClientContext third_ctx;
  third_ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  auto third = jobs().Watch(&third_ctx, request);
  EXPECT_FALSE(third->Read(&update));
  EXPECT_THAT(FromGrpcStatus(third->Finish()),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("--max_watchers")));
  EXPECT_THAT(Wait(job.id(), absl::Seconds(30)).status(),
              StatusIs(absl::StatusCode::kResourceExhausted));

  // One ends: room for a new one.
  first_ctx.TryCancel();
  first->Finish();
  ASSERT_TRUE(Eventually([&] { return WatchOpens(request); }))
      << "the cancelled watch never made room";
  second_ctx.TryCancel();
  second->Finish();
}

class WatchersPerConnectionTest : public JobsApiTest {
 protected:
  WatchersPerConnectionTest() { options_.max_watchers_per_connection = 2; }
};

TEST_F(WatchersPerConnectionTest, OneConnectionCannotTakeEveryWatcher) {
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  v1::WatchRequest request;
  request.set_job_id(job.id());
  grpc::ClientContext a_ctx, b_ctx, c_ctx;
  auto a = jobs().Watch(&a_ctx, request);
  auto b = jobs().Watch(&b_ctx, request);
  v1::WatchResponse update;
  ASSERT_TRUE(a->Read(&update));
  ASSERT_TRUE(b->Read(&update));
  // A third on the same connection: refused, Watch and Wait alike.
  c_ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  auto c = jobs().Watch(&c_ctx, request);
  EXPECT_FALSE(c->Read(&update));
  EXPECT_THAT(FromGrpcStatus(c->Finish()),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("--max_watchers_per_connection")));
  EXPECT_THAT(Wait(job.id(), absl::Seconds(30)).status(),
              StatusIs(absl::StatusCode::kResourceExhausted));
  // Another connection has its own.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::unique_ptr<v1::Jobs::Stub> other =
      v1::Jobs::NewStub(grpc::CreateCustomChannel(
          server().address(), grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext d_ctx;
  d_ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  auto d = other->Watch(&d_ctx, request);
  EXPECT_TRUE(d->Read(&update));
  // One ends: the first connection has room again.
  a_ctx.TryCancel();
  a->Finish();
  EXPECT_TRUE(Eventually([&] { return WatchOpens(request); }));
  for (grpc::ClientContext* ctx : {&b_ctx, &d_ctx}) ctx->TryCancel();
  b->Finish();
  d->Finish();
}

class QueueLimitTest : public JobsApiTest {
 protected:
  QueueLimitTest() { options_.broker.max_queues = 2; }
};

TEST_F(QueueLimitTest, ASubmitToAQueuePastTheLimitIsRefusedUntilOneDrains) {
  ASSERT_THAT(Submit("a", "k", "p"), IsOk());
  ASSERT_THAT(Submit("b", "k", "p"), IsOk());
  EXPECT_THAT(Submit("c", "k", "p"),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("--max_queues")));
  // A batch that adds one queue too many changes nothing.
  EXPECT_THAT(SubmitBatch({Spec("a", "k", "1"), Spec("d", "k", "2")}),
              StatusIs(absl::StatusCode::kResourceExhausted));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo stats, Stats("a"));
  EXPECT_EQ(stats.queued(), 1u);
  // Queues it holds still take jobs.
  ASSERT_THAT(Submit("a", "k", "p"), IsOk());
  // Once a queue has nothing waiting, it no longer counts.
  ASSERT_THAT(Submit("b", "k", "p"), IsOk());
  ASSERT_THAT(Pause("b"), IsOk());
  ASSERT_THAT(Purge("b", v1::JOB_STATE_QUEUED), IsOk());
  EXPECT_THAT(Submit("c", "k", "p"),
              StatusIs(absl::StatusCode::kResourceExhausted))
      << "a paused queue counts";
  ASSERT_THAT(Resume("b"), IsOk());
  EXPECT_THAT(Submit("c", "k", "p"), IsOk());
}

class WatchBytesTest : public JobsApiTest {
 protected:
  WatchBytesTest() { options_.max_watch_bytes = 9 << 20; }
};

TEST_F(WatchBytesTest, UnreadFullWatchesHoldAtMostTheBudget) {
  // A 1 MiB payload: each FULL Watch writes it at once. Clients that do
  // not read leave those writes in flight once gRPC's flow-control windows
  // are full, each counted twice (the response and gRPC's serialized copy
  // of it), and a new one is refused unless the budget (9 MiB) still holds
  // the largest response there can be (payload and result of the largest
  // size, twice: 4 MiB) on top of them.
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job,
                             Submit("q", "k", std::string(1 << 20, 'x')));
  v1::WatchRequest request;
  request.set_job_id(job.id());
  request.set_view(v1::JOB_VIEW_FULL);
  constexpr int kWatches = 40;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::WatchResponse>>> watches;
  for (int i = 0; i < kWatches; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->set_deadline(
        absl::ToChronoTime(absl::Now() + kRpcTimeout));
    watches.push_back(jobs().Watch(contexts.back().get(), request));
  }
  // Opened, none read: every one was either refused or is writing.
  // Initial metadata comes with a Watch's first write or with its end, so
  // once each has it, ferryd has handled all of them before any is read.
  for (auto& watch : watches) watch->WaitForInitialMetadata();
  int refused = 0, delivered = 0;
  for (int i = 0; i < kWatches; ++i) {
    v1::WatchResponse update;
    if (watches[i]->Read(&update)) {
      EXPECT_EQ(update.job().payload().size(), 1u << 20);
      ++delivered;
      contexts[i]->TryCancel();
      watches[i]->Finish();
      continue;
    }
    absl::Status status = FromGrpcStatus(watches[i]->Finish());
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kResourceExhausted,
                                 HasSubstr("have not read")));
    ++refused;
  }
  EXPECT_GE(refused, 1);
  EXPECT_GE(delivered, 2) << "the budget holds two such responses";
}

TEST_F(JobsApiTest, WaitReturnsTheJobOnceItIsTerminal) {
  Tick();  // sets the broker's first retention deadline (see below)
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  absl::StatusOr<v1::WaitResponse> waited = absl::UnknownError("not run");
  std::thread waiter([&] { waited = Wait(job.id(), absl::Seconds(30)); });
  // Finish the job only once the Wait is parked in the broker, so that the
  // call is woken by the change rather than finding the job done.
  AwaitWatcherWithDeadline(Now() + absl::Seconds(30));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Assignment lease, LeaseOne("q"));
  EXPECT_THAT(Complete(lease.lease_token(), "answer"), IsOk());
  waiter.join();
  ASSERT_THAT(waited, IsOk());
  EXPECT_TRUE(waited->done());
  EXPECT_EQ(waited->job().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(waited->job().result(), "answer");
}

TEST_F(JobsApiTest, WaitReturnsNotDoneWhenItsTimeoutPassesFirst) {
  Tick();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  absl::StatusOr<v1::WaitResponse> waited = absl::UnknownError("not run");
  std::thread waiter([&] { waited = Wait(job.id(), absl::Seconds(5)); });
  AwaitWatcherWithDeadline(Now() + absl::Seconds(5));
  Advance(absl::Seconds(5));
  waiter.join();
  ASSERT_THAT(waited, IsOk());
  EXPECT_FALSE(waited->done());
  EXPECT_EQ(waited->job().state(), v1::JOB_STATE_QUEUED);
}

// ----------------------------------------------------------------- queues

TEST_F(JobsApiTest, QueueStatsCountsJobsByState) {
  v1::JobSpec delayed = Spec("s", "k");
  *delayed.mutable_delay() = DurationProto(absl::Hours(1));
  ASSERT_THAT(Submit(delayed), IsOk());
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("s", "k", ""));
    ids.push_back(job.id());
  }
  ASSERT_THAT(Submit("elsewhere", "k", ""), IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Assignment succeed, LeaseOne("s"));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Assignment fail, LeaseOne("s"));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Assignment keep, LeaseOne("s"));
  ASSERT_THAT(Complete(succeed.lease_token(), ""), IsOk());
  v1::CompleteRequest failure;
  failure.mutable_result()->set_lease_token(fail.lease_token());
  failure.mutable_result()->mutable_failure()->set_message("fatal");
  failure.mutable_result()->mutable_failure()->set_retryable(false);
  FERRY_ASSERT_OK_AND_ASSIGN(
      v1::CompleteResponse failed,
      Call(workers(), &v1::Workers::Stub::Complete, failure));
  EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
  ASSERT_THAT(Cancel(ids[3]), IsOk());
  Advance(absl::Seconds(7));

  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo s, Stats("s"));
  EXPECT_EQ(s.name(), "s");
  EXPECT_FALSE(s.paused());
  // scheduled, queued, running, succeeded, failed, cancelled
  EXPECT_THAT(Counts(s), ElementsAre(1, 2, 1, 1, 1, 1));
  EXPECT_EQ(FromProto(s.oldest_queued_age()), absl::Seconds(7));

  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueStatsResponse all, AllStats());
  std::vector<std::string> names;
  for (const v1::QueueInfo& info : all.queues()) names.push_back(info.name());
  EXPECT_THAT(names, ElementsAre("elsewhere", "s"));

  // A queue with nothing in it reports zeros.
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo empty, Stats("nothing-here"));
  EXPECT_THAT(Counts(empty), ElementsAre(0, 0, 0, 0, 0, 0));
  EXPECT_FALSE(empty.paused());
}

TEST_F(JobsApiTest, PurgeQueueDeletesEveryJobOfOneState) {
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("p", "k", ""));
    ids.push_back(job.id());
  }
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job cancelled, Submit("p", "k", ""));
  ASSERT_THAT(Cancel(cancelled.id()), IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job other, Submit("untouched", "k", ""));

  FERRY_ASSERT_OK_AND_ASSIGN(v1::PurgeQueueResponse purged,
                             Purge("p", v1::JOB_STATE_QUEUED));
  EXPECT_EQ(purged.purged(), 3u);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo p, Stats("p"));
  EXPECT_EQ(p.queued(), 0u);
  EXPECT_EQ(p.cancelled(), 1u);
  for (const std::string& id : ids) {
    EXPECT_THAT(Get(id), StatusIs(absl::StatusCode::kNotFound)) << id;
  }
  EXPECT_THAT(Get(cancelled.id()), IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job still, Get(other.id()));
  EXPECT_EQ(still.state(), v1::JOB_STATE_QUEUED);

  // A purged job is not delivered to a worker.
  auto worker = Connect("w1", "p", 1);
  ASSERT_TRUE(worker->ExpectWelcome().has_value());
  Quiesce(*worker);
  EXPECT_EQ(worker->Pending(v1::ServerMessage::kAssignment), 0)
      << worker->DescribeInbox();
}

TEST_F(JobsApiTest, ListWorkersShowsAConnectedWorker) {
  TestWorkerOptions options;
  options.worker_id = "w-list";
  options.queues = {"a", "b"};
  options.initial_credits = 3;
  auto worker = Connect(options);
  std::optional<v1::Welcome> welcome = worker->ExpectWelcome();
  ASSERT_TRUE(welcome.has_value());

  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<v1::WorkerInfo> listed, ListWorkers());
  ASSERT_THAT(listed, SizeIs(1));
  const v1::WorkerInfo& info = listed[0];
  EXPECT_EQ(info.worker_id(), "w-list");
  EXPECT_EQ(info.session_id(), welcome->session_id());
  EXPECT_EQ(info.hostname(), "test-host");
  EXPECT_EQ(info.pid(), 4242u);
  EXPECT_THAT(info.queues(), ElementsAre("a", "b"));
  EXPECT_EQ(info.credits(), 3u);
  EXPECT_EQ(info.leases(), 0u);
  EXPECT_EQ(FromProto(info.connected_at()), Now());
  EXPECT_THAT(info.peer(), HasSubstr("127.0.0.1"));

  // The stream has ended (the broker saw the close) once Close returns.
  EXPECT_TRUE(worker->Close().ok());
  FERRY_ASSERT_OK_AND_ASSIGN(listed, ListWorkers());
  EXPECT_THAT(listed, IsEmpty());
}

TEST_F(JobsApiTest, ListWorkersPagesOldestFirstWithATokenForTheRest) {
  std::vector<std::unique_ptr<TestWorker>> workers;
  for (const char* id : {"w-1", "w-2", "w-3"}) {
    TestWorkerOptions options;
    options.worker_id = id;
    workers.push_back(Connect(options));
    ASSERT_TRUE(workers.back()->ExpectWelcome().has_value());
    Advance(absl::Seconds(1));  // distinct connection times
  }
  auto ids = [](const v1::ListWorkersResponse& page) {
    std::vector<std::string> out;
    for (const v1::WorkerInfo& w : page.workers()) out.push_back(w.worker_id());
    return out;
  };
  v1::ListWorkersRequest request;
  request.set_page_size(2);
  FERRY_ASSERT_OK_AND_ASSIGN(
      v1::ListWorkersResponse first,
      Call(jobs(), &v1::Jobs::Stub::ListWorkers, request));
  EXPECT_THAT(ids(first), ElementsAre("w-1", "w-2"));
  ASSERT_FALSE(first.next_page_token().empty());

  request.set_page_token(first.next_page_token());
  FERRY_ASSERT_OK_AND_ASSIGN(
      v1::ListWorkersResponse second,
      Call(jobs(), &v1::Jobs::Stub::ListWorkers, request));
  EXPECT_THAT(ids(second), ElementsAre("w-3"));
  EXPECT_TRUE(second.next_page_token().empty());

  // No page size: all of them, in one page here.
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<v1::WorkerInfo> all, ListWorkers());
  EXPECT_THAT(all, SizeIs(3));

  request.set_page_token("not-a-token");
  EXPECT_THAT(
      Call(jobs(), &v1::Jobs::Stub::ListWorkers, request),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("page_token")));
}

TEST_F(JobsApiTest, QueueStatsPagesInNameOrderWithATokenForTheRest) {
  for (const char* queue : {"c", "a", "b"}) {
    ASSERT_THAT(Submit(queue, "k", "p").status(), IsOk());
  }
  auto names = [](const v1::QueueStatsResponse& page) {
    std::vector<std::string> out;
    for (const v1::QueueInfo& q : page.queues()) out.push_back(q.name());
    return out;
  };
  v1::QueueStatsRequest request;
  request.set_page_size(2);
  FERRY_ASSERT_OK_AND_ASSIGN(
      v1::QueueStatsResponse first,
      Call(jobs(), &v1::Jobs::Stub::QueueStats, request));
  EXPECT_THAT(names(first), ElementsAre("a", "b"));
  EXPECT_EQ(first.next_page_token(), "b");

  request.set_page_token(first.next_page_token());
  FERRY_ASSERT_OK_AND_ASSIGN(
      v1::QueueStatsResponse second,
      Call(jobs(), &v1::Jobs::Stub::QueueStats, request));
  EXPECT_THAT(names(second), ElementsAre("c"));
  EXPECT_TRUE(second.next_page_token().empty());

  // No page size: all of them, in one page here.
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueStatsResponse all, AllStats());
  EXPECT_THAT(names(all), ElementsAre("a", "b", "c"));
  EXPECT_TRUE(all.next_page_token().empty());
}

// ---------------------------------------------------- standard services

TEST_F(JobsApiTest, ARequestThatDoesNotParseIsRefusedAndChangesNothing) {
  const World before = Snapshot();
  v1::SubmitRequest request;
  request.mutable_job()->set_queue("q");
  request.mutable_job()->set_kind("k");
  std::string bytes = request.SerializeAsString();
  bytes.back() = '\xff';  // the kind, now invalid UTF-8
  absl::StatusOr<std::string> response =
      RawCall(channel(), "/ferry.v1.Jobs/Submit", bytes);
  ASSERT_FALSE(response.ok());
  // gRPC refuses the message before any handler runs; 1.51's callback
  // server says so with this code (docs/protocol.md, "Errors").
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnimplemented)
      << response.status();
  ExpectUnchanged(before);
}

TEST_F(JobsApiTest, HealthCheckReportsServing) {
  // grpc.health.v1 is served by gRPC's default service, which ships no C++
  // stub: call it by name. HealthCheckRequest{service: ""} encodes to no
  // bytes; the response is HealthCheckResponse{status = 1 (SERVING)}.
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::string bytes,
      RawCall(channel(), "/grpc.health.v1.Health/Check", /*request=*/""));
  google::protobuf::UnknownFieldSet fields;
  ASSERT_TRUE(fields.ParseFromString(bytes));
  ASSERT_EQ(fields.field_count(), 1);
  EXPECT_EQ(fields.field(0).number(), 1);
  EXPECT_EQ(fields.field(0).varint(), 1u) << "1 is SERVING";
}

TEST_F(JobsApiTest, ServerReflectionListsTheFerryServices) {
  // Debian ships the reflection service (libgrpc++_reflection) but not its
  // proto or stub headers. Its message types are compiled into that
  // library, so their descriptors are in the generated pool.
  const google::protobuf::DescriptorPool* pool =
      google::protobuf::DescriptorPool::generated_pool();
  const google::protobuf::Descriptor* request_type =
      pool->FindMessageTypeByName(
          "grpc.reflection.v1alpha.ServerReflectionRequest");
  const google::protobuf::Descriptor* response_type =
      pool->FindMessageTypeByName(
          "grpc.reflection.v1alpha.ServerReflectionResponse");
  // Missing types would make the test prove nothing: fail, not skip.
  ASSERT_NE(request_type, nullptr) << "reflection types are not linked in";
  ASSERT_NE(response_type, nullptr) << "reflection types are not linked in";
  google::protobuf::DynamicMessageFactory factory(pool);
  std::unique_ptr<google::protobuf::Message> request(
      factory.GetPrototype(request_type)->New());
  request->GetReflection()->SetString(
      request.get(), request_type->FindFieldByName("list_services"), "*");
  std::string serialized;
  ASSERT_TRUE(request->SerializeToString(&serialized));

  // ServerReflectionInfo is a bidi stream: one request, one response.
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::string bytes,
      RawCall(channel(),
              "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
              serialized));
  std::unique_ptr<google::protobuf::Message> response(
      factory.GetPrototype(response_type)->New());
  ASSERT_TRUE(response->ParseFromString(bytes));

  const google::protobuf::FieldDescriptor* list_field =
      response_type->FindFieldByName("list_services_response");
  ASSERT_NE(list_field, nullptr);
  const google::protobuf::Message& list =
      response->GetReflection()->GetMessage(*response, list_field);
  const google::protobuf::FieldDescriptor* service_field =
      list.GetDescriptor()->FindFieldByName("service");
  std::vector<std::string> services;
  for (int i = 0; i < list.GetReflection()->FieldSize(list, service_field);
       ++i) {
    const google::protobuf::Message& service =
        list.GetReflection()->GetRepeatedMessage(list, service_field, i);
    services.push_back(service.GetReflection()->GetString(
        service, service.GetDescriptor()->FindFieldByName("name")));
  }
  EXPECT_THAT(services,
              ::testing::IsSupersetOf({"ferry.v1.Jobs", "ferry.v1.Workers"}));
}

// -------------------------------------------------------------- bad input

struct BadSpec {
  std::string what;
  std::function<void(v1::JobSpec&)> spoil;
};

TEST_F(JobsApiTest, InvalidSpecIsRejectedAsInvalidArgumentAndChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(Seed());
  const World before = Snapshot();
  const std::vector<BadSpec> cases = {
      {"empty queue", [](v1::JobSpec& s) { s.set_queue(""); }},
      {"queue with a space", [](v1::JobSpec& s) { s.set_queue("my queue"); }},
      {"queue with a slash", [](v1::JobSpec& s) { s.set_queue("a/b"); }},
      {"queue starting with a dash", [](v1::JobSpec& s) { s.set_queue("-q"); }},
      {"queue of 129 characters",
       [](v1::JobSpec& s) { s.set_queue(std::string(129, 'q')); }},
      {"empty kind", [](v1::JobSpec& s) { s.set_kind(""); }},
      {"33 labels",
       [](v1::JobSpec& s) {
         for (int i = 0; i < 33; ++i) {
           (*s.mutable_labels())[absl::StrCat("k", i)] = "v";
         }
       }},
      {"label key with a space",
       [](v1::JobSpec& s) { (*s.mutable_labels())["bad key"] = "v"; }},
      {"label key of 64 characters",
       [](v1::JobSpec& s) {
         (*s.mutable_labels())[std::string(64, 'k')] = "v";
       }},
      {"priority 1001", [](v1::JobSpec& s) { s.set_priority(1001); }},
      {"priority -1001", [](v1::JobSpec& s) { s.set_priority(-1001); }},
      {"run_at and delay both set",
       [this](v1::JobSpec& s) {
         *s.mutable_run_at() = TimestampProto(Now() + absl::Seconds(10));
         *s.mutable_delay() = DurationProto(absl::Seconds(10));
       }},
      {"lease_ttl under a second",
       [](v1::JobSpec& s) {
         *s.mutable_lease_ttl() = DurationProto(absl::Milliseconds(999));
       }},
      {"negative delay",
       [](v1::JobSpec& s) {
         *s.mutable_delay() = DurationProto(absl::Seconds(-1));
       }},
      {"idempotency key of 257 bytes",
       [](v1::JobSpec& s) { s.set_idempotency_key(std::string(257, 'i')); }},
  };
  for (const BadSpec& bad : cases) {
    SCOPED_TRACE(bad.what);
    v1::JobSpec spec = Spec("q", "k", "p");
    bad.spoil(spec);
    EXPECT_THAT(Submit(spec), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(SubmitBatch({Spec("q", "k", "fine"), spec}),
                StatusIs(absl::StatusCode::kInvalidArgument));
  }
  ExpectUnchanged(before);
}

TEST_F(JobsApiTest, NamesAtTheirLimitsAreAccepted) {
  v1::JobSpec spec = Spec(std::string(128, 'q'), "k.v1:x-y_z", "p");
  (*spec.mutable_labels())[std::string(63, 'k')] = "v";
  for (int i = 0; i < 31; ++i)
    (*spec.mutable_labels())[absl::StrCat("l", i)] = "";
  spec.set_priority(-1000);
  *spec.mutable_lease_ttl() = DurationProto(absl::Seconds(1));
  EXPECT_THAT(Submit(spec), IsOk());
}

class SmallPayloadTest : public JobsApiTest {
 protected:
  SmallPayloadTest() { options_.broker.policy.max_payload_bytes = 64; }
};

TEST_F(SmallPayloadTest, PayloadOverTheLimitIsRejectedAndChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(Seed());
  const World before = Snapshot();
  EXPECT_THAT(
      Submit("q", "k", std::string(65, 'x')),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("payload")));
  ExpectUnchanged(before);
  EXPECT_THAT(Submit("q", "k", std::string(64, 'x')), IsOk());
}

TEST_F(JobsApiTest, UnknownJobIdIsNotFound) {
  ASSERT_NO_FATAL_FAILURE(Seed());
  const World before = Snapshot();
  const std::string unknown = "999999";
  EXPECT_THAT(Get(unknown), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(Cancel(unknown), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(Retry(unknown), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(Wait(unknown, absl::Seconds(1)),
              StatusIs(absl::StatusCode::kNotFound));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  v1::WatchRequest watch;
  watch.set_job_id(unknown);
  auto reader = jobs().Watch(&ctx, watch);
  v1::WatchResponse update;
  EXPECT_FALSE(reader->Read(&update));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  ExpectUnchanged(before);
}

TEST_F(JobsApiTest, MalformedJobIdIsInvalidArgument) {
  ASSERT_NO_FATAL_FAILURE(Seed());
  const World before = Snapshot();
  for (const std::string id : {"abc", "-1", "0", "", "12abc"}) {
    SCOPED_TRACE(absl::StrCat("job_id \"", id, "\""));
    EXPECT_THAT(Get(id), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(Cancel(id), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(Retry(id), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(Wait(id, absl::Seconds(1)),
                StatusIs(absl::StatusCode::kInvalidArgument));
  }
  ExpectUnchanged(before);
}

TEST_F(JobsApiTest, CancelOfAFinishedJobFailsPrecondition) {
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Assignment lease, LeaseOne("q"));
  ASSERT_THAT(Complete(lease.lease_token(), "done"), IsOk());
  const World before = Snapshot();
  EXPECT_THAT(Cancel(job.id()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ExpectUnchanged(before);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job still, Get(job.id()));
  EXPECT_EQ(still.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(still.result(), "done");
}

TEST_F(JobsApiTest, RetryOfAQueuedJobFailsPrecondition) {
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  const World before = Snapshot();
  EXPECT_THAT(Retry(job.id()), StatusIs(absl::StatusCode::kFailedPrecondition));
  ExpectUnchanged(before);
}

TEST_F(JobsApiTest, PurgeOfRunningJobsFailsPreconditionAndNeedsAState) {
  ASSERT_NO_FATAL_FAILURE(Seed());
  ASSERT_THAT(LeaseOne("q"), IsOk());
  ASSERT_THAT(Submit("q", "k", "queued"), IsOk());
  const World before = Snapshot();
  EXPECT_THAT(Purge("q", v1::JOB_STATE_RUNNING),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(Purge("q", v1::JOB_STATE_UNSPECIFIED),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Purge("q", static_cast<v1::JobState>(42)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Purge("", v1::JOB_STATE_QUEUED),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ExpectUnchanged(before);
}

TEST_F(JobsApiTest, PageTokenNotIssuedByTheBrokerIsInvalidArgument) {
  ASSERT_NO_FATAL_FAILURE(Seed());
  const World before = Snapshot();
  for (const std::string token : {"xyz", "0", "-5", "1.5"}) {
    SCOPED_TRACE(token);
    v1::ListRequest request;
    request.set_page_token(token);
    EXPECT_THAT(List(request), StatusIs(absl::StatusCode::kInvalidArgument));
  }
  ExpectUnchanged(before);
}

TEST_F(JobsApiTest, WaitCallCancelledByItsCallerIsNoLongerWatched) {
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  Tick();  // the first retention run: the next tick is then a minute out
  ASSERT_TRUE(Eventually([&] {
    return server().broker()->NextTickTime() > Now() + absl::Seconds(59);
  }));
  v1::WaitRequest request;
  request.set_job_id(job.id());
  *request.mutable_timeout() = DurationProto(absl::Seconds(50));
  ASSERT_NO_FATAL_FAILURE(
      (CancelWhileRegistered<v1::WaitRequest, v1::WaitResponse>(
          request, Now() + absl::Seconds(50),
          [this](auto* ctx, auto* req, auto* resp, auto done) {
            jobs().async()->Wait(ctx, req, resp, std::move(done));
          })));
}

TEST_F(JobsApiTest, WaitLongerThanAnHourIsInvalidArgument) {
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  const World before = Snapshot();
  EXPECT_THAT(Wait(job.id(), absl::Hours(1) + absl::Seconds(1)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Wait(job.id(), absl::Seconds(-1)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // nanos out of range would read as 1s + 2s: refused, not reinterpreted.
  v1::WaitRequest bad;
  bad.set_job_id(job.id());
  bad.mutable_timeout()->set_seconds(1);
  bad.mutable_timeout()->set_nanos(2000000000);
  EXPECT_THAT(Call(jobs(), &v1::Jobs::Stub::Wait, bad),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("timeout is not a valid Duration")));
  ExpectUnchanged(before);
}

// -------------------------------------------------------- unary worker API

TEST_F(JobsApiTest, UnaryLeaseWithoutWaitOnAnEmptyQueueReturnsNothing) {
  v1::LeaseRequest request;
  request.set_worker_id("unary");
  request.add_queues("empty");
  *request.mutable_wait() = DurationProto(absl::ZeroDuration());
  FERRY_ASSERT_OK_AND_ASSIGN(
      v1::LeaseResponse response,
      Call(workers(), &v1::Workers::Stub::Lease, request));
  EXPECT_THAT(response.assignments(), IsEmpty());
}

TEST_F(JobsApiTest, LeaseCallCancelledWhileWaitingHoldsNoJob) {
  // The broker's next tick is its first retention run, a minute out, until
  // the Lease call below registers a nearer one.
  Tick();
  ASSERT_TRUE(Eventually([&] {
    return server().broker()->NextTickTime() > Now() + absl::Seconds(59);
  }));
  v1::LeaseRequest request;
  request.set_worker_id("gone");
  request.add_queues("q");
  *request.mutable_wait() = DurationProto(absl::Seconds(30));
  ASSERT_NO_FATAL_FAILURE(
      (CancelWhileRegistered<v1::LeaseRequest, v1::LeaseResponse>(
          request, Now() + absl::Seconds(30),
          [this](auto* ctx, auto* req, auto* resp, auto done) {
            workers().async()->Lease(ctx, req, resp, std::move(done));
          })));

  // So the next job waits for a live worker instead of going to it.
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job stored, Get(job.id()));
  EXPECT_EQ(stored.state(), v1::JOB_STATE_QUEUED);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Assignment lease, LeaseOne("q"));
  EXPECT_EQ(lease.job().id(), job.id());
  EXPECT_EQ(lease.job().attempt(), 1u);
}

// Payloads of megabytes, so that a few fill a Lease response.
class LargeLeaseTest : public JobsApiTest {
 protected:
  LargeLeaseTest() { options_.broker.policy.max_payload_bytes = 3 << 20; }

  // A Lease call on "q". Jobs put back after a call ended are ready only
  // once that is written: `wait` lets the call wait for them.
  absl::StatusOr<v1::LeaseResponse> Lease(
      int max_jobs, absl::Duration wait = absl::ZeroDuration()) {
    v1::LeaseRequest request;
    request.set_worker_id("w");
    request.add_queues("q");
    request.set_max_jobs(max_jobs);
    *request.mutable_wait() = DurationProto(wait);
    return Call(workers(), &v1::Workers::Stub::Lease, request);
  }
};

TEST_F(LargeLeaseTest, LeaseResponseStopsAtItsByteLimitAndLeavesTheRestQueued) {
  // One job of 2 MiB fits under the 3 MiB default limit; two do not.
  for (int i = 0; i < 3; ++i) {
    ASSERT_THAT(Submit("q", "k", std::string(2 << 20, 'x')), IsOk());
  }
  FERRY_ASSERT_OK_AND_ASSIGN(v1::LeaseResponse response, Lease(3));
  EXPECT_EQ(response.assignments_size(), 1);
  // The two granted past the limit went back, their attempts undone.
  for (int i = 0; i < 2; ++i) {
    FERRY_ASSERT_OK_AND_ASSIGN(response, Lease(1, absl::Seconds(10)));
    ASSERT_EQ(response.assignments_size(), 1);
    EXPECT_EQ(response.assignments(0).job().attempt(), 1u);
  }
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo stats, Stats("q"));
  EXPECT_THAT(Counts(stats), ElementsAre(0, 0, 3, 0, 0, 0));
}

TEST_F(LargeLeaseTest, LeaseResponseThatCannotBeSentPutsItsJobsBack) {
  // No limit of the broker's own: the response outgrows what gRPC sends
  // (16 MiB here).
  options_.broker.max_lease_response_bytes = 64 << 20;
  ASSERT_NO_FATAL_FAILURE(Restart());
  constexpr int kJobs = 6;  // 18 MiB of payload in one response
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_THAT(Submit("q", "k", std::string(3 << 20, 'x')), IsOk());
  }
  EXPECT_THAT(Lease(kJobs), StatusIs(absl::StatusCode::kResourceExhausted));

  // The caller never saw the leases: the jobs go back, attempts undone,
  // for the next call.
  FERRY_ASSERT_OK_AND_ASSIGN(v1::LeaseResponse next,
                             Lease(1, absl::Seconds(10)));
  ASSERT_EQ(next.assignments_size(), 1);
  EXPECT_EQ(next.assignments(0).job().attempt(), 1u);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo stats, Stats("q"));
  EXPECT_THAT(Counts(stats), ElementsAre(0, kJobs - 1, 1, 0, 0, 0));
}

TEST_F(JobsApiTest, UnaryLeaseHeartbeatAndCompleteRunAJobToSuccess) {
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "input"));
  const absl::Time leased_at = Now();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Assignment lease, LeaseOne("q"));
  EXPECT_EQ(lease.job().id(), job.id());
  EXPECT_EQ(lease.job().payload(), "input");
  EXPECT_EQ(lease.job().attempt(), 1u);
  EXPECT_EQ(FromProto(lease.lease_deadline()), leased_at + kDefaultTtl);

  Advance(absl::Seconds(20));
  v1::HeartbeatRequest heartbeat;
  heartbeat.set_lease_token(lease.lease_token());
  heartbeat.mutable_progress()->set_percent(70);
  heartbeat.mutable_progress()->set_message("nearly");
  FERRY_ASSERT_OK_AND_ASSIGN(
      v1::HeartbeatResponse extended,
      Call(workers(), &v1::Workers::Stub::Heartbeat, heartbeat));
  EXPECT_EQ(FromProto(extended.lease_deadline()), Now() + kDefaultTtl);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job running, Get(job.id()));
  EXPECT_EQ(FromProto(running.lease_deadline()), Now() + kDefaultTtl);
  EXPECT_EQ(running.progress().percent(), 70u);
  EXPECT_EQ(running.worker_id(), "unary-worker");

  // Past the original deadline, the extended lease is still live.
  Advance(absl::Seconds(20));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::CompleteResponse completed,
                             Complete(lease.lease_token(), "output"));
  EXPECT_EQ(completed.state(), v1::JOB_STATE_SUCCEEDED);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job done, Get(job.id()));
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.result(), "output");
  EXPECT_EQ(done.attempt(), 1u);
}

TEST_F(JobsApiTest, UnaryCompleteWithAnUnknownTokenFailsPrecondition) {
  ASSERT_THAT(Submit("q", "k", "p"), IsOk());
  ASSERT_THAT(LeaseOne("q"), IsOk());
  const World before = Snapshot();
  EXPECT_THAT(Complete("00000000000000000000000000000000", "forged"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ExpectUnchanged(before);
}

TEST_F(JobsApiTest, UnaryCompleteAfterTheLeaseExpiredFailsPrecondition) {
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Assignment lease, LeaseOne("q"));
  Advance(kDefaultTtl);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job expired, Get(job.id()));
  ASSERT_EQ(expired.state(), v1::JOB_STATE_SCHEDULED);
  const World before = Snapshot();
  EXPECT_THAT(Complete(lease.lease_token(), "late"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ExpectUnchanged(before);
}

TEST_F(JobsApiTest,
       UnaryCompleteWithATokenFromAnEarlierAttemptFailsPrecondition) {
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Assignment first, LeaseOne("q"));
  Advance(kDefaultTtl);
  Advance(absl::Seconds(1));  // past the backoff: QUEUED again
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Assignment second, LeaseOne("q"));
  ASSERT_EQ(second.job().attempt(), 2u);
  const World before = Snapshot();
  EXPECT_THAT(Complete(first.lease_token(), "stale"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ExpectUnchanged(before);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::CompleteResponse done,
                             Complete(second.lease_token(), "fresh"));
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job finished, Get(job.id()));
  EXPECT_EQ(finished.result(), "fresh");
}

TEST_F(JobsApiTest, UnaryHeartbeatAfterTheLeaseExpiredFailsPrecondition) {
  ASSERT_THAT(Submit("q", "k", "p"), IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Assignment lease, LeaseOne("q"));
  Advance(kDefaultTtl);
  const World before = Snapshot();
  EXPECT_THAT(Heartbeat(lease.lease_token()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ExpectUnchanged(before);
}

TEST_F(JobsApiTest, UnaryLeaseWithBadArgumentsIsInvalidAndLeasesNothing) {
  ASSERT_NO_FATAL_FAILURE(Seed());
  const World before = Snapshot();
  auto request = [] {
    v1::LeaseRequest r;
    r.set_worker_id("w");
    r.add_queues("q");
    return r;
  };
  std::vector<std::pair<v1::LeaseRequest, std::string>> cases;
  cases.emplace_back(request(), "worker_id");
  cases.back().first.clear_worker_id();
  cases.emplace_back(request(), "queues must name 1 to 64");
  cases.back().first.clear_queues();
  cases.emplace_back(request(), "queues must name 1 to 64");
  for (int i = 0; i < 64; ++i) {
    cases.back().first.add_queues(absl::StrCat("q", i));
  }
  cases.emplace_back(request(), "queue");
  cases.back().first.add_queues("no spaces");
  cases.emplace_back(request(), "max_jobs must be at most 100");
  cases.back().first.set_max_jobs(101);
  cases.emplace_back(request(), "wait must be between 0 and 60 seconds");
  *cases.back().first.mutable_wait() = DurationProto(absl::Seconds(61));
  cases.emplace_back(request(), "wait must be between 0 and 60 seconds");
  *cases.back().first.mutable_wait() = DurationProto(absl::Seconds(-1));
  cases.emplace_back(request(), "wait is not a valid Duration");
  cases.back().first.mutable_wait()->set_seconds(1);
  cases.back().first.mutable_wait()->set_nanos(-5);
  for (const auto& [bad, message] : cases) {
    EXPECT_THAT(
        Call(workers(), &v1::Workers::Stub::Lease, bad),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(message)))
        << bad.DebugString();
  }
  ExpectUnchanged(before);
}

TEST_F(JobsApiTest, UnaryHeartbeatWithBadArgumentsIsInvalidAndChangesNothing) {
  ASSERT_THAT(Submit("q", "k", "p"), IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Assignment lease, LeaseOne("q"));
  const World before = Snapshot();
  v1::HeartbeatRequest no_token;
  EXPECT_THAT(Call(workers(), &v1::Workers::Stub::Heartbeat, no_token),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("lease_token is required")));
  v1::HeartbeatRequest over;
  over.set_lease_token(lease.lease_token());
  over.mutable_progress()->set_percent(101);
  EXPECT_THAT(
      Call(workers(), &v1::Workers::Stub::Heartbeat, over),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("progress.percent must be between 0 and 100")));
  ExpectUnchanged(before);
}

TEST_F(JobsApiTest, UnaryCompleteWithoutAnOutcomeIsInvalidArgument) {
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "p"));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Assignment lease, LeaseOne("q"));
  const World before = Snapshot();
  v1::CompleteRequest request;
  request.mutable_result()->set_lease_token(lease.lease_token());
  EXPECT_THAT(Call(workers(), &v1::Workers::Stub::Complete, request),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ExpectUnchanged(before);
  // The lease is intact: a proper result still succeeds.
  EXPECT_THAT(Complete(lease.lease_token(), "ok"), IsOk());
}

}  // namespace
}  // namespace ferry::testing

namespace ferry::testing {
namespace {

class QueueDefaultsTest : public JobsApiTest {
 protected:
  QueueDefaultsTest() {
    JobPolicy slow = options_.broker.policy;
    slow.lease_ttl = absl::Minutes(5);
    slow.max_attempts = 9;
    options_.broker.queue_policies["slow"] = slow;
  }
};

TEST_F(QueueDefaultsTest, JobsInAQueueWithItsOwnDefaultsGetThem) {
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job slow, Submit("slow", "k", "p"));
  EXPECT_EQ(FromProto(slow.lease_ttl()), absl::Minutes(5));
  EXPECT_EQ(slow.retry().max_attempts(), 9u);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job other, Submit("other", "k", "p"));
  EXPECT_EQ(FromProto(other.lease_ttl()), options_.broker.policy.lease_ttl);
  EXPECT_EQ(other.retry().max_attempts(),
            static_cast<uint32_t>(options_.broker.policy.max_attempts));
}

TEST_F(QueueDefaultsTest, AJobsOwnSettingsWinOverItsQueueDefaults) {
  v1::JobSpec spec = Spec("slow", "k", "p");
  *spec.mutable_lease_ttl() = DurationProto(absl::Seconds(7));
  spec.mutable_retry()->set_max_attempts(2);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse submitted, Submit(spec));
  EXPECT_EQ(FromProto(submitted.job().lease_ttl()), absl::Seconds(7));
  EXPECT_EQ(submitted.job().retry().max_attempts(), 2u);
}

}  // namespace
}  // namespace ferry::testing
