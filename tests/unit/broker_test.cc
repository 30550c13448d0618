// The broker core over a real SqliteStore (in a temporary directory) and a
// FakeClock: dispatch and credits, leases and their expiry, fencing, retries,
// delayed jobs, cancel, pause, restart, retention, purge, watchers, the unary
// worker API and drain. No gRPC: worker streams and watchers are fake sinks
// that record what the broker sends them. Time moves only through the clock
// and Tick(); nothing sleeps.

#include "server/core/broker.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "ferry/v1/job.pb.h"
#include "ferry/v1/workers.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/time_util.h"
#include "server/convert.h"
#include "server/validate.h"
#include "storage/store.h"
#include "tests/fake_clock.h"
#include "tests/faulty_store.h"
#include "tests/log_capture.h"
#include "tests/poll.h"
#include "tests/status_matchers.h"
#include "tests/store_test_util.h"

namespace ferry::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Optional;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAreArray;

constexpr absl::Duration kTtl = absl::Seconds(30);
constexpr absl::Duration kInitialBackoff = absl::Seconds(1);

// ------------------------------------------------------------------ fakes

// A worker stream: records what the broker pushes. Push and Close come from
// any thread (often the store's writer thread); Kick has nothing to send.
class FakeWorkerSink final : public WorkerSink {
 public:
  // Kept as the wire messages they become (server/convert.h), so tests
  // read what a worker would.
  void Push(WorkerEvent event) override {
    absl::MutexLock lock(&mu_);
    if (!closed_) messages_.push_back(ToServerMessage(std::move(event)));
  }
  void Close(absl::Status status) override {
    absl::MutexLock lock(&mu_);
    if (!closed_) close_status_ = std::move(status);
    closed_ = true;
  }
  void Kick() override {}

  std::vector<v1::ServerMessage> Messages() const {
    absl::MutexLock lock(&mu_);
    return messages_;
  }
  std::optional<absl::Status> CloseStatus() const {
    absl::MutexLock lock(&mu_);
    return close_status_;
  }

  std::vector<v1::Assignment> Assignments() const {
    return Collect(v1::ServerMessage::kAssignment,
                   &v1::ServerMessage::assignment);
  }
  std::vector<v1::LeaseLost> LeaseLosts() const {
    return Collect(v1::ServerMessage::kLeaseLost,
                   &v1::ServerMessage::lease_lost);
  }
  std::vector<v1::ResultAck> ResultAcks() const {
    return Collect(v1::ServerMessage::kResultAck,
                   &v1::ServerMessage::result_ack);
  }
  std::vector<v1::Cancel> Cancels() const {
    return Collect(v1::ServerMessage::kCancel, &v1::ServerMessage::cancel);
  }
  std::vector<v1::Drain> Drains() const {
    return Collect(v1::ServerMessage::kDrain, &v1::ServerMessage::drain);
  }

 private:
  template <typename M>
  std::vector<M> Collect(v1::ServerMessage::MsgCase kind,
                         const M& (v1::ServerMessage::*get)() const) const {
    std::vector<M> out;
    for (const v1::ServerMessage& msg : Messages()) {
      if (msg.msg_case() == kind) out.push_back((msg.*get)());
    }
    return out;
  }

  mutable absl::Mutex mu_;
  std::vector<v1::ServerMessage> messages_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Status> close_status_ ABSL_GUARDED_BY(mu_);
};

// What the broker reported through its observer seam, as lines like
// "changed 1 RUNNING", in the order reported.
class RecordingObserver final : public BrokerObserver {
 public:
  void JobChanged(const JobRecord& job) override {
    Add(absl::StrCat("changed ", job.id, " ", JobStateName(job.state)));
  }
  void JobsPromoted(const std::vector<JobKey>& jobs) override {
    for (const JobKey& key : jobs) Add(absl::StrCat("promoted ", key.id));
  }
  void JobDispatched(const JobRecord& job,
                     absl::string_view worker_id) override {
    Add(absl::StrCat("dispatched ", job.id, " to ", worker_id, " attempt ",
                     job.attempt));
  }
  void LeaseRefused(absl::string_view worker_id,
                    absl::string_view why) override {
    Add(absl::StrCat("refused ", worker_id, ": ", why));
  }
  void LeaseExpired(int64_t job_id, absl::string_view queue,
                    absl::string_view worker_id, int32_t attempt) override {
    Add(absl::StrCat("expired ", job_id, " in ", queue, " of ", worker_id,
                     " attempt ", attempt));
  }

  std::vector<std::string> Events() const {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  void Add(std::string event) {
    absl::MutexLock lock(&mu_);
    events_.push_back(std::move(event));
  }
  mutable absl::Mutex mu_;
  std::vector<std::string> events_ ABSL_GUARDED_BY(mu_);
};

// A watcher: records every job it is sent and how it was closed.
class RecordingJobSink final : public JobSink {
 public:
  void Push(JobRecord job) override {
    absl::MutexLock lock(&mu_);
    if (!closed_) jobs_.push_back(std::move(job));
  }
  void Close(absl::Status status) override {
    absl::MutexLock lock(&mu_);
    if (!closed_) close_status_ = std::move(status);
    closed_ = true;
  }
  void Kick() override {}

  std::vector<JobState> States() const {
    absl::MutexLock lock(&mu_);
    std::vector<JobState> states;
    for (const JobRecord& job : jobs_) states.push_back(job.state);
    return states;
  }
  // The payload bytes the sink holds, over every update it got.
  size_t PayloadBytes() const {
    absl::MutexLock lock(&mu_);
    size_t bytes = 0;
    for (const JobRecord& job : jobs_) bytes += job.payload.size();
    return bytes;
  }
  std::vector<int32_t> Progress() const {
    absl::MutexLock lock(&mu_);
    std::vector<int32_t> percents;
    for (const JobRecord& job : jobs_) percents.push_back(job.progress_percent);
    return percents;
  }
  std::optional<absl::Status> CloseStatus() const {
    absl::MutexLock lock(&mu_);
    return close_status_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<JobRecord> jobs_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Status> close_status_ ABSL_GUARDED_BY(mu_);
};

// The result of an asynchronous broker call, for calls whose completion is
// the point of the test (Sync() would wait for it).
template <typename T>
class Pending {
 public:
  ResultCallback<T> Callback() {
    return [state = state_](absl::StatusOr<T> result) {
      state->result = std::move(result);
      state->done.Notify();
    };
  }
  bool done() const { return state_->done.HasBeenNotified(); }
  const absl::StatusOr<T>& result() const { return state_->result; }

 private:
  struct State {
    absl::Notification done;
    absl::StatusOr<T> result = absl::UnknownError("not completed");
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// An assignment as the unary Lease call sends it.
v1::Assignment Wire(const Assignment& assignment) {
  v1::Assignment wire;
  ToProto(assignment, &wire);
  return wire;
}

// A unary Lease call that completed OK with one assignment: of job `id`.
void ExpectLeasedOnly(const Pending<std::vector<Assignment>>& leased,
                      int64_t id) {
  ASSERT_TRUE(leased.done());
  ASSERT_THAT(leased.result(), IsOk());
  ASSERT_THAT(*leased.result(), SizeIs(1));
  EXPECT_EQ(leased.result()->front().job.id, id);
}

// ---------------------------------------------------------------- fixture

struct Worker {
  uint64_t session = 0;
  std::shared_ptr<FakeWorkerSink> sink;
};

enum class Retryable { kNo, kYes };

Outcome Succeed(absl::string_view output) {
  Outcome outcome;
  outcome.success = true;
  outcome.output = std::string(output);
  return outcome;
}

Outcome Fail(absl::string_view error, Retryable retryable) {
  Outcome outcome;
  outcome.success = false;
  outcome.error = std::string(error);
  outcome.retryable = retryable == Retryable::kYes;
  return outcome;
}

std::vector<int64_t> AssignedIds(const Worker& worker) {
  std::vector<int64_t> ids;
  for (const v1::Assignment& a : worker.sink->Assignments()) {
    ids.push_back(ParseJobId(a.job().id()).value_or(-1));
  }
  return ids;
}

class BrokerTest : public ::testing::Test {
 protected:
  BrokerTest() {
    options_.policy.lease_ttl = kTtl;
    options_.policy.initial_backoff = kInitialBackoff;
    options_.policy.max_backoff = absl::Minutes(1);
    options_.policy.max_attempts = 5;
  }

  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    ASSERT_NO_FATAL_FAILURE(OpenStore());
    ASSERT_NO_FATAL_FAILURE(StartBroker());
  }

  // The broker goes first: its callbacks must not outlive it.
  void TearDown() override {
    StopBroker();
    store_.reset();
  }

  void OpenStore() {
    FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> sqlite,
                               OpenTempSqliteStore(dir_.path()));
    store_ = std::make_unique<FaultyStore>(std::move(sqlite));
  }
  void StartBroker() {
    broker_ =
        std::make_unique<Broker>(store_.get(), &clock_, options_, &observer_);
    ASSERT_THAT(broker_->Start(), IsOk());
  }
  void StopBroker() {
    if (broker_ == nullptr) return;
    Settle();
    broker_.reset();
  }
  // As ferryd restarting: a new broker (with options_) over the same
  // database, reopened. Sessions and watchers of the old one are gone.
  void RestartBroker() {
    StopBroker();
    store_.reset();
    ASSERT_NO_FATAL_FAILURE(OpenStore());
    ASSERT_NO_FATAL_FAILURE(StartBroker());
  }

  // Waits until every write the broker queued, and the writes their
  // callbacks queued in turn, have completed (a submit's callback may
  // lease, a lease's may release, a promotion's dispatches, a purge goes
  // batch after batch).
  void Settle() {
    ASSERT_TRUE(store_->Quiesce(kCallbackTimeout))
        << "store writes did not settle within " << kCallbackTimeout;
  }

  // Waits until job `id` as stored satisfies `done`; false after
  // kCallbackTimeout. For a write whose commit happens on the writer thread
  // while its callback waits behind a WriterGate: no event marks the
  // commit, so this polls the database.
  bool AwaitStored(int64_t id,
                   const std::function<bool(const JobRecord&)>& done) {
    return PollUntil(
        [&] {
          absl::StatusOr<JobRecord> job = store_->GetJob(id, false);
          return job.ok() && done(*job);
        },
        kCallbackTimeout, absl::Milliseconds(1));
  }

  void Tick() {
    broker_->Tick();
    Settle();
  }

  // ---- jobs ----

  static v1::JobSpec Spec(absl::string_view queue = "q") {
    v1::JobSpec spec;
    spec.set_queue(std::string(queue));
    spec.set_kind("resize");
    spec.set_payload("payload");
    return spec;
  }

  JobRecord Record(const v1::JobSpec& spec) {
    absl::StatusOr<JobRecord> job =
        JobFromSpec(spec, options_.policy, clock_.Now());
    EXPECT_THAT(job, IsOk());
    return job.value_or(JobRecord());
  }

  std::vector<int64_t> SubmitAll(std::vector<JobRecord> jobs) {
    absl::StatusOr<std::vector<CreateResult>> results =
        Sync<std::vector<CreateResult>>([&](auto done) {
          broker_->Submit(std::move(jobs), std::move(done));
        });
    EXPECT_THAT(results, IsOk());
    Settle();
    std::vector<int64_t> ids;
    if (!results.ok()) return ids;
    for (const CreateResult& result : *results) ids.push_back(result.job.id);
    return ids;
  }

  int64_t Submit(const v1::JobSpec& spec) {
    std::vector<JobRecord> jobs;
    jobs.push_back(Record(spec));
    std::vector<int64_t> ids = SubmitAll(std::move(jobs));
    EXPECT_THAT(ids, SizeIs(1));
    return ids.empty() ? 0 : ids.front();
  }

  JobRecord Job(int64_t id) {
    absl::StatusOr<JobRecord> job = broker_->Get(id, /*with_payload=*/true);
    EXPECT_THAT(job, IsOk()) << "job " << id;
    return job.value_or(JobRecord());
  }

  bool Exists(int64_t id) {
    absl::StatusOr<JobRecord> job = broker_->Get(id, /*with_payload=*/false);
    EXPECT_TRUE(job.ok() || absl::IsNotFound(job.status())) << job.status();
    return job.ok();
  }

  absl::StatusOr<JobRecord> CancelJob(int64_t id) {
    absl::StatusOr<JobRecord> job = Sync<JobRecord>([&](auto done) {
      broker_->Cancel(id, "no longer needed", std::move(done));
    });
    Settle();
    return job;
  }

  absl::StatusOr<JobRecord> RetryJob(int64_t id) {
    absl::StatusOr<JobRecord> job = Sync<JobRecord>(
        [&](auto done) { broker_->Retry(id, std::move(done)); });
    Settle();
    return job;
  }

  absl::StatusOr<bool> SetPaused(absl::string_view queue, bool paused) {
    absl::StatusOr<bool> changed = Sync<bool>([&](auto done) {
      broker_->SetPaused(std::string(queue), paused, std::move(done));
    });
    Settle();
    return changed;
  }

  absl::StatusOr<int64_t> Purge(absl::string_view queue, JobState state) {
    absl::StatusOr<int64_t> purged = Sync<int64_t>([&](auto done) {
      broker_->Purge(std::string(queue), state, std::move(done));
    });
    Settle();
    return purged;
  }

  // How long the oldest due job of `queue` has waited, per QueueStats.
  absl::Duration OldestQueuedAge(absl::string_view queue) {
    absl::StatusOr<std::vector<QueueSnapshot>> stats =
        broker_->QueueStats(queue);
    EXPECT_THAT(stats, IsOk());
    if (!stats.ok() || stats->size() != 1) {
      ADD_FAILURE() << "no stats for queue " << queue;
      return absl::InfiniteDuration();
    }
    return stats->front().oldest_queued_age;
  }

  // ---- workers ----

  static WorkerIdentity Identity(absl::string_view worker_id,
                                 std::vector<std::string> queues = {"q"}) {
    WorkerIdentity identity;
    identity.worker_id = std::string(worker_id);
    identity.hostname = "host-1";
    identity.pid = 42;
    identity.version = "test";
    identity.queues = std::move(queues);
    return identity;
  }

  Worker Connect(absl::string_view worker_id, int64_t credits,
                 std::vector<HeldLease> held = {},
                 std::vector<std::string> queues = {"q"}) {
    Worker worker;
    worker.sink = std::make_shared<FakeWorkerSink>();
    absl::StatusOr<uint64_t> session =
        broker_->OpenSession(Identity(worker_id, std::move(queues)),
                             std::move(held), credits, worker.sink);
    EXPECT_THAT(session, IsOk());
    worker.session = session.value_or(0);
    Settle();
    return worker;
  }

  void AddCredit(const Worker& worker, int64_t credits) {
    broker_->AddCredit(worker.session, credits);
    Settle();
  }

  // Jobs whose leases went to a caller that left: QUEUED with the attempt
  // undone, and the next worker to connect gets them.
  void ExpectPutBack(const std::vector<int64_t>& ids) {
    for (int64_t id : ids) {
      JobRecord job = Job(id);
      EXPECT_EQ(job.state, JobState::kQueued) << id;
      EXPECT_EQ(job.attempt, 0) << id;
    }
    Worker next = Connect("w2", static_cast<int64_t>(ids.size()));
    EXPECT_THAT(AssignedIds(next), UnorderedElementsAreArray(ids));
  }

  void Heartbeat(const Worker& worker, const std::string& token) {
    v1::Heartbeat heartbeat;
    heartbeat.add_lease_tokens(token);
    broker_->Heartbeat(worker.session, FromProto(heartbeat));
    Settle();
  }

  void Complete(const Worker& worker, const std::string& token,
                Outcome outcome) {
    broker_->Complete(worker.session, token, std::move(outcome));
    Settle();
  }

  // The token of the worker's only assignment, or "" (and a failure).
  static std::string OnlyToken(const Worker& worker) {
    std::vector<v1::Assignment> assigned = worker.sink->Assignments();
    EXPECT_THAT(assigned, SizeIs(1));
    return assigned.empty() ? "" : assigned.back().lease_token();
  }

  // Declared first so that it outlives the store.
  ScopedTempDir dir_;
  FakeClock clock_;
  BrokerOptions options_;
  RecordingObserver observer_;
  std::unique_ptr<FaultyStore> store_;
  std::unique_ptr<Broker> broker_;
};

// Expects `assignment` to be the first attempt of job `id` (payload
// "payload"), leased at `leased_at` for kTtl.
void ExpectFirstAttempt(const v1::Assignment& assignment, int64_t id,
                        absl::Time leased_at) {
  EXPECT_EQ(assignment.job().id(), FormatJobId(id));
  EXPECT_EQ(assignment.job().payload(), "payload");
  EXPECT_EQ(assignment.job().state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(assignment.job().attempt(), 1u);
  EXPECT_THAT(assignment.lease_token(), SizeIs(32));  // 16 random bytes
  EXPECT_EQ(FromProto(assignment.lease_deadline()), leased_at + kTtl);
}

// ------------------------------------------------------------ dispatch

TEST_F(BrokerTest, OpenSessionSendsAWelcome) {
  Worker worker = Connect("w1", 0);
  std::vector<v1::ServerMessage> messages = worker.sink->Messages();
  ASSERT_THAT(messages, SizeIs(1));
  ASSERT_TRUE(messages[0].has_welcome());
  EXPECT_THAT(messages[0].welcome().session_id(), Not(IsEmpty()));
  EXPECT_EQ(FromProto(messages[0].welcome().lease_ttl()), kTtl);
  EXPECT_EQ(FromProto(messages[0].welcome().heartbeat_interval()), kTtl / 3);
}

TEST_F(BrokerTest, SubmittedJobGoesStraightToAWaitingSession) {
  Worker worker = Connect("w1", 1);
  const absl::Time now = clock_.Now();
  const int64_t id = Submit(Spec());

  std::vector<v1::Assignment> assigned = worker.sink->Assignments();
  ASSERT_THAT(assigned, SizeIs(1));
  ExpectFirstAttempt(assigned[0], id, now);
  JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kRunning);
  EXPECT_EQ(job.attempt, 1);
  EXPECT_EQ(job.worker_id, "w1");
  EXPECT_EQ(job.lease_token, assigned[0].lease_token());
  EXPECT_EQ(job.lease_deadline, now + kTtl);
}

TEST_F(BrokerTest, QueuedJobGoesToASessionThatConnectsLater) {
  const int64_t id = Submit(Spec());
  EXPECT_EQ(Job(id).state, JobState::kQueued);
  clock_.Advance(absl::Seconds(5));
  const absl::Time now = clock_.Now();

  Worker worker = Connect("w1", 1);

  std::vector<v1::Assignment> assigned = worker.sink->Assignments();
  ASSERT_THAT(assigned, SizeIs(1));
  ExpectFirstAttempt(assigned[0], id, now);
  EXPECT_EQ(Job(id).state, JobState::kRunning);
  EXPECT_EQ(Job(id).lease_token, assigned[0].lease_token());
}

TEST_F(BrokerTest, NeverAssignsMoreJobsThanCredits) {
  Worker worker = Connect("w1", 2);
  std::vector<int64_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Submit(Spec()));
  EXPECT_THAT(AssignedIds(worker), ElementsAre(ids[0], ids[1]));
  EXPECT_EQ(Job(ids[2]).state, JobState::kQueued);

  AddCredit(worker, 1);
  EXPECT_THAT(AssignedIds(worker), ElementsAre(ids[0], ids[1], ids[2]));

  AddCredit(worker, 10);
  EXPECT_THAT(AssignedIds(worker), SizeIs(5));
  const int64_t later = Submit(Spec());
  EXPECT_THAT(AssignedIds(worker), SizeIs(6));
  EXPECT_EQ(AssignedIds(worker).back(), later);
}

TEST_F(BrokerTest, CreditsOfTwoSessionsAreUsedRoundRobin) {
  Worker a = Connect("wa", 2);
  Worker b = Connect("wb", 2);
  std::vector<int64_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Submit(Spec()));

  EXPECT_THAT(AssignedIds(a), ElementsAre(ids[0], ids[2]));
  EXPECT_THAT(AssignedIds(b), ElementsAre(ids[1], ids[3]));
  EXPECT_EQ(Job(ids[4]).state, JobState::kQueued);

  AddCredit(b, 1);
  EXPECT_THAT(AssignedIds(b), ElementsAre(ids[1], ids[3], ids[4]));
  EXPECT_THAT(AssignedIds(a), SizeIs(2));
}

TEST_F(BrokerTest, DispatchesHigherPriorityFirstThenOlderRunAtThenLowerId) {
  const absl::Time now = clock_.Now();
  // run_at older than the submit, as for a job promoted or retried late.
  JobRecord recent = Record(Spec());
  recent.run_at = now - absl::Seconds(1);
  JobRecord old = Record(Spec());
  old.run_at = now - absl::Seconds(5);
  v1::JobSpec urgent_spec = Spec();
  urgent_spec.set_priority(5);
  JobRecord urgent = Record(urgent_spec);
  JobRecord old_twin = Record(Spec());
  old_twin.run_at = now - absl::Seconds(5);
  v1::JobSpec idle_spec = Spec();
  idle_spec.set_priority(-5);
  JobRecord idle = Record(idle_spec);
  idle.run_at = now - absl::Hours(1);
  std::vector<int64_t> ids = SubmitAll({recent, old, urgent, old_twin, idle});
  ASSERT_THAT(ids, SizeIs(5));

  Worker worker = Connect("w1", 5);

  EXPECT_THAT(AssignedIds(worker),
              ElementsAre(ids[2], ids[1], ids[3], ids[0], ids[4]));
}

TEST_F(BrokerTest, DelayedJobIsAssignedOnlyOnceItIsDueAndTickRuns) {
  const absl::Time submitted = clock_.Now();
  v1::JobSpec spec = Spec();
  spec.mutable_delay()->set_seconds(10);
  const int64_t id = Submit(spec);
  EXPECT_EQ(Job(id).state, JobState::kScheduled);
  Worker worker = Connect("w1", 1);

  clock_.Advance(absl::Seconds(9));
  Tick();
  EXPECT_THAT(worker.sink->Assignments(), IsEmpty());
  EXPECT_EQ(Job(id).state, JobState::kScheduled);

  clock_.Advance(absl::Seconds(1));
  Settle();
  EXPECT_THAT(worker.sink->Assignments(), IsEmpty()) << "before Tick";
  Tick();

  std::vector<v1::Assignment> assigned = worker.sink->Assignments();
  ASSERT_THAT(assigned, SizeIs(1));
  ExpectFirstAttempt(assigned[0], id, clock_.Now());
  EXPECT_EQ(Job(id).run_at, submitted + absl::Seconds(10));
}

// ---------------------------------------------------- leases and retries

TEST_F(BrokerTest, HeartbeatsKeepALeaseAlivePastItsTtl) {
  Worker worker = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  const std::string token = OnlyToken(worker);

  for (int i = 0; i < 3; ++i) {
    clock_.Advance(kTtl - absl::Seconds(10));
    Heartbeat(worker, token);
    Tick();
    EXPECT_EQ(Job(id).lease_deadline, clock_.Now() + kTtl) << "round " << i;
  }

  EXPECT_THAT(worker.sink->LeaseLosts(), IsEmpty());
  JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kRunning);
  EXPECT_EQ(job.attempt, 1);
  EXPECT_EQ(job.lease_token, token);
}

TEST_F(BrokerTest, StreamsPastMaxSessionsAreRefusedUntilOneCloses) {
  options_.max_sessions = 2;
  ASSERT_NO_FATAL_FAILURE(RestartBroker());
  Worker first = Connect("w1", 0);
  Worker second = Connect("w2", 0);
  auto sink = std::make_shared<FakeWorkerSink>();
  EXPECT_THAT(broker_->OpenSession(Identity("w3"), {}, 0, sink),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("at most 2 worker streams")));
  EXPECT_THAT(sink->Messages(), IsEmpty()) << "not even a Welcome";
  EXPECT_THAT(broker_->ListWorkers(), SizeIs(2));

  broker_->CloseSession(first.session);
  EXPECT_THAT(broker_->OpenSession(Identity("w3"), {}, 0, sink), IsOk());
}

TEST_F(BrokerTest, BogusTokensAreRefusedCountedAndLoggedTenASecond) {
  Worker worker = Connect("w1", 0);
  LogCapture log;
  v1::Heartbeat heartbeat;
  for (int i = 0; i < 50; ++i) heartbeat.add_lease_tokens(absl::StrCat("b", i));
  broker_->Heartbeat(worker.session, FromProto(heartbeat));

  EXPECT_THAT(worker.sink->LeaseLosts(), SizeIs(50));
  int refused = 0;
  for (const std::string& event : observer_.Events()) {
    refused += absl::StartsWith(event, "refused w1: unknown lease") ? 1 : 0;
  }
  EXPECT_EQ(refused, 50);
  const std::vector<std::string> lines = log.Lines();
  ASSERT_THAT(lines, SizeIs(10)) << log.Text();
  EXPECT_THAT(lines[0], HasSubstr("lease refused worker_id=w1"));

  // A second later the next refusal is logged and says what was dropped.
  clock_.Advance(absl::Seconds(1));
  broker_->Heartbeat(worker.session, FromProto(heartbeat));
  ASSERT_THAT(log.Lines(), SizeIs(20)) << log.Text();
  EXPECT_THAT(log.Lines()[10], HasSubstr("suppressed_before=40"));
}

TEST_F(BrokerTest, AHostnameWithANewlineCannotForgeALogLine) {
  LogCapture log;
  WorkerIdentity identity = Identity("w1");
  identity.hostname = "box\n[info] job succeeded job_id=999 \"forged\"";
  auto sink = std::make_shared<FakeWorkerSink>();
  EXPECT_THAT(broker_->OpenSession(identity, {}, 0, sink), IsOk());
  Settle();

  const std::string text = log.Text();
  EXPECT_THAT(text, HasSubstr("hostname=\"box\\n[info] job succeeded "
                              "job_id=999 \\\"forged\\\"\""));
  EXPECT_THAT(text, Not(HasSubstr("\n[info] job succeeded")));
}

TEST_F(BrokerTest, ObserverSeesEachChangeDispatchExpiryAndPromotion) {
  Worker worker = Connect("w1", 1);
  v1::JobSpec spec = Spec();
  spec.mutable_retry()->set_max_attempts(2);
  const int64_t id = Submit(spec);
  ASSERT_FALSE(OnlyToken(worker).empty());
  clock_.Advance(kTtl);
  Tick();  // the lease expires: a retry is scheduled
  clock_.Advance(absl::Minutes(1));
  Tick();  // the retry is due

  const std::string job = absl::StrCat(id);
  EXPECT_THAT(observer_.Events(),
              ElementsAre("changed " + job + " RUNNING",
                          "dispatched " + job + " to w1 attempt 1",
                          "expired " + job + " in q of w1 attempt 1",
                          "changed " + job + " SCHEDULED", "promoted " + job));
}

TEST_F(BrokerTest, ExpiredLeaseIsRetriedAfterBackoffUntilAttemptsRunOut) {
  Worker worker = Connect("w1", 1);
  v1::JobSpec spec = Spec();
  spec.mutable_retry()->set_max_attempts(2);
  const int64_t id = Submit(spec);
  const std::string first = OnlyToken(worker);

  clock_.Advance(kTtl - absl::Seconds(1));
  Tick();
  EXPECT_EQ(Job(id).state, JobState::kRunning) << "expired early";

  clock_.Advance(absl::Seconds(1));
  const absl::Time expired_at = clock_.Now();
  Tick();
  std::vector<v1::LeaseLost> lost = worker.sink->LeaseLosts();
  ASSERT_THAT(lost, SizeIs(1));
  EXPECT_EQ(lost[0].lease_token(), first);
  EXPECT_EQ(lost[0].job_id(), FormatJobId(id));
  JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kScheduled);
  EXPECT_EQ(job.attempt, 1);
  EXPECT_GE(job.run_at, expired_at + kInitialBackoff / 2);
  EXPECT_LE(job.run_at, expired_at + kInitialBackoff);
  EXPECT_THAT(job.last_error, HasSubstr("lease expired"));
  EXPECT_THAT(job.lease_token, IsEmpty());

  // Not before the backoff has passed.
  AddCredit(worker, 1);
  EXPECT_THAT(worker.sink->Assignments(), SizeIs(1));

  clock_.Advance(kInitialBackoff);
  Tick();
  std::vector<v1::Assignment> assigned = worker.sink->Assignments();
  ASSERT_THAT(assigned, SizeIs(2));
  EXPECT_EQ(assigned[1].job().id(), FormatJobId(id));
  EXPECT_EQ(assigned[1].job().attempt(), 2u);
  EXPECT_NE(assigned[1].lease_token(), first);
  EXPECT_EQ(Job(id).attempt, 2);

  clock_.Advance(kTtl);
  Tick();
  EXPECT_THAT(worker.sink->LeaseLosts(), SizeIs(2));
  job = Job(id);
  EXPECT_EQ(job.state, JobState::kFailed);
  EXPECT_EQ(job.attempt, 2);
  EXPECT_EQ(job.finished_at, clock_.Now());
}

TEST_F(BrokerTest, ResultWithAStaleTokenGetsLeaseLostAndChangesNothing) {
  Worker slow = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  const std::string stale = OnlyToken(slow);
  clock_.Advance(kTtl);
  Tick();  // the lease expires; the job waits out its backoff
  clock_.Advance(kInitialBackoff);
  Tick();
  Worker other = Connect("w2", 1);
  const std::string current = OnlyToken(other);
  ASSERT_NE(current, stale);

  // The first worker finishes late and reports.
  Complete(slow, stale, Succeed("late"));

  std::vector<v1::LeaseLost> lost = slow.sink->LeaseLosts();
  EXPECT_THAT(lost, SizeIs(2)) << "one at expiry, one for the late result";
  if (lost.size() == 2) {
    EXPECT_EQ(lost[1].lease_token(), stale);
  }
  EXPECT_THAT(slow.sink->ResultAcks(), IsEmpty())
      << "an expired lease's result was acknowledged as if it were stored";
  JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kRunning);
  EXPECT_EQ(job.attempt, 2);
  EXPECT_EQ(job.lease_token, current);
  EXPECT_EQ(job.worker_id, "w2");
  EXPECT_THAT(job.result, IsEmpty());

  // The current holder is unaffected.
  Complete(other, current, Succeed("on time"));
  EXPECT_EQ(Job(id).state, JobState::kSucceeded);
  EXPECT_EQ(Job(id).result, "on time");
}

TEST_F(BrokerTest, ResultFromAnotherWorkersSessionIsRejected) {
  Worker owner = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  const std::string token = OnlyToken(owner);
  Worker thief = Connect("w2", 0);

  Complete(thief, token, Succeed("not mine"));
  Heartbeat(thief, token);

  std::vector<v1::LeaseLost> lost = thief.sink->LeaseLosts();
  ASSERT_THAT(lost, SizeIs(2));
  EXPECT_EQ(lost[0].lease_token(), token);
  EXPECT_THAT(thief.sink->ResultAcks(), IsEmpty());
  JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kRunning);
  EXPECT_EQ(job.lease_token, token);
  EXPECT_EQ(job.worker_id, "w1");

  Complete(owner, token, Succeed("mine"));
  EXPECT_THAT(owner.sink->ResultAcks(), SizeIs(1));
  EXPECT_EQ(Job(id).state, JobState::kSucceeded);
  EXPECT_EQ(Job(id).result, "mine");
}

TEST_F(BrokerTest, SameWorkerReconnectingAdoptsItsLeaseThroughHeldLeases) {
  Worker old_stream = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  const std::string token = OnlyToken(old_stream);
  clock_.Advance(absl::Seconds(20));

  // The old stream is not closed yet: the broker has not noticed it died.
  Worker new_stream =
      Connect("w1", 0, {HeldLease{id, token}, HeldLease{id + 100, "bogus"}});

  std::vector<v1::LeaseLost> lost = new_stream.sink->LeaseLosts();
  ASSERT_THAT(lost, SizeIs(1)) << "only the unknown lease is lost";
  EXPECT_EQ(lost[0].lease_token(), "bogus");
  EXPECT_EQ(Job(id).lease_deadline, clock_.Now() + kTtl);
  std::vector<WorkerSnapshot> workers = broker_->ListWorkers();  // by age
  ASSERT_THAT(workers, SizeIs(2));
  EXPECT_EQ(workers[0].leases, 0) << "the old stream";
  EXPECT_EQ(workers[1].leases, 1) << "the new stream";
  broker_->CloseSession(old_stream.session);

  Complete(new_stream, token, Succeed("done"));
  std::vector<v1::ResultAck> acks = new_stream.sink->ResultAcks();
  ASSERT_THAT(acks, SizeIs(1));
  EXPECT_EQ(acks[0].lease_token(), token);
  EXPECT_EQ(acks[0].job_id(), FormatJobId(id));
  EXPECT_EQ(acks[0].state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Job(id).state, JobState::kSucceeded);
  EXPECT_EQ(Job(id).attempt, 1);
}

TEST_F(BrokerTest, SameWorkerReconnectingAdoptsItsLeaseThroughAHeartbeat) {
  Worker old_stream = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  const std::string token = OnlyToken(old_stream);
  broker_->CloseSession(old_stream.session);
  clock_.Advance(absl::Seconds(20));

  Worker new_stream = Connect("w1", 0);
  Heartbeat(new_stream, token);

  EXPECT_THAT(new_stream.sink->LeaseLosts(), IsEmpty());
  EXPECT_EQ(Job(id).lease_deadline, clock_.Now() + kTtl);
  clock_.Advance(kTtl - absl::Seconds(1));
  Tick();
  EXPECT_EQ(Job(id).state, JobState::kRunning);

  Complete(new_stream, token, Succeed("done"));
  EXPECT_THAT(new_stream.sink->ResultAcks(), SizeIs(1));
  EXPECT_EQ(Job(id).state, JobState::kSucceeded);
}

TEST_F(BrokerTest, SuccessfulResultSucceedsTheJobAndIsAcknowledged) {
  Worker worker = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  const std::string token = OnlyToken(worker);
  clock_.Advance(absl::Seconds(3));

  Complete(worker, token, Succeed("output"));

  std::vector<v1::ResultAck> acks = worker.sink->ResultAcks();
  ASSERT_THAT(acks, SizeIs(1));
  EXPECT_EQ(acks[0].lease_token(), token);
  EXPECT_EQ(acks[0].job_id(), FormatJobId(id));
  EXPECT_EQ(acks[0].state(), v1::JOB_STATE_SUCCEEDED);
  JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kSucceeded);
  EXPECT_EQ(job.result, "output");
  EXPECT_EQ(job.attempt, 1);
  EXPECT_EQ(job.finished_at, clock_.Now());
  EXPECT_THAT(job.lease_token, IsEmpty());
}

TEST_F(BrokerTest, DuplicateResultAfterSuccessIsAcknowledgedAgain) {
  Worker worker = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  const std::string token = OnlyToken(worker);
  Complete(worker, token, Succeed("first"));

  // Resent, say after a reconnect that lost the first ack.
  Complete(worker, token, Succeed("second"));

  EXPECT_THAT(worker.sink->LeaseLosts(), IsEmpty());
  std::vector<v1::ResultAck> acks = worker.sink->ResultAcks();
  ASSERT_THAT(acks, SizeIs(2));
  EXPECT_EQ(acks[1].lease_token(), token);
  EXPECT_EQ(acks[1].state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Job(id).result, "first");
}

TEST_F(BrokerTest, ResultResentAfterARestartIsAcknowledgedNotLost) {
  Worker before = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  const std::string token = OnlyToken(before);
  Complete(before, token, Succeed("first"));
  ASSERT_THAT(before.sink->ResultAcks(), SizeIs(1));

  // The ack never reached the worker; the broker restarts meanwhile.
  ASSERT_NO_FATAL_FAILURE(RestartBroker());
  Worker after = Connect("w1", 0, {HeldLease{id, token}});
  EXPECT_THAT(after.sink->LeaseLosts(), IsEmpty());
  Complete(after, token, Succeed("second"));

  EXPECT_THAT(after.sink->LeaseLosts(), IsEmpty());
  std::vector<v1::ResultAck> acks = after.sink->ResultAcks();
  ASSERT_THAT(acks, SizeIs(1));
  EXPECT_EQ(acks[0].lease_token(), token);
  EXPECT_EQ(acks[0].state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Job(id).result, "first");
}

TEST_F(BrokerTest, ExpiredLeaseHeldAcrossARestartIsLost) {
  Worker before = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  const std::string token = OnlyToken(before);
  clock_.Advance(kTtl);
  Tick();
  ASSERT_EQ(Job(id).state, JobState::kScheduled);

  ASSERT_NO_FATAL_FAILURE(RestartBroker());
  Worker after = Connect("w1", 0, {HeldLease{id, token}});
  Complete(after, token, Succeed("late"));

  EXPECT_THAT(after.sink->LeaseLosts(), SizeIs(2));
  EXPECT_THAT(after.sink->ResultAcks(), IsEmpty());
  EXPECT_EQ(Job(id).state, JobState::kScheduled);
}

TEST_F(BrokerTest, PassesInFlightDoNotWakeTheTicker) {
  v1::JobSpec later = Spec();
  *later.mutable_delay() = DurationProto(absl::Seconds(10));
  const int64_t id = Submit(later);
  ASSERT_EQ(Job(id).state, JobState::kScheduled);
  // Each pass's time is past while it waits at the gate, but a tick could
  // do nothing for it until it lands.
  {
    WriterGate gate(*store_);
    ASSERT_TRUE(gate.WaitHeld());
    broker_->Tick();  // the first retention pass, due at start
    EXPECT_GT(broker_->NextTickTime(), clock_.Now());
  }
  Settle();
  clock_.Advance(absl::Seconds(10));  // the job is due; retention is not
  {
    WriterGate gate(*store_);
    ASSERT_TRUE(gate.WaitHeld());
    broker_->Tick();  // its promotion
    EXPECT_GT(broker_->NextTickTime(), clock_.Now());
  }
  Settle();
  EXPECT_EQ(Job(id).state, JobState::kQueued);
}

TEST_F(BrokerTest, FailedPromotionIsRetriedAfterAPauseNotAtOnce) {
  v1::JobSpec later = Spec();
  *later.mutable_delay() = DurationProto(absl::Seconds(10));
  const int64_t id = Submit(later);
  clock_.Advance(absl::Seconds(10));
  store_->FailNext(FaultyStore::Write::kPromote,
                   absl::UnavailableError("disk I/O error"));
  Tick();
  ASSERT_EQ(Job(id).state, JobState::kScheduled);
  // A ticker asking at once would hit the failing disk in a loop.
  EXPECT_GT(broker_->NextTickTime(), clock_.Now());

  clock_.Advance(absl::Seconds(1));
  EXPECT_LE(broker_->NextTickTime(), clock_.Now());
  Tick();
  EXPECT_EQ(Job(id).state, JobState::kQueued);
}

TEST_F(BrokerTest, ResultResentWhileTheFirstIsStoredIsAcknowledgedOnNewStream) {
  Worker old_stream = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  const std::string token = OnlyToken(old_stream);
  auto sink = std::make_shared<FakeWorkerSink>();
  {
    WriterGate gate(*store_);
    ASSERT_TRUE(gate.WaitHeld());
    // The result is being written when the stream breaks; the worker
    // reconnects, still holding the lease, and sends the result again.
    broker_->Complete(old_stream.session, token, Succeed("done"));
    broker_->CloseSession(old_stream.session);
    absl::StatusOr<uint64_t> session =
        broker_->OpenSession(Identity("w1"), {HeldLease{id, token}}, 0, sink);
    ASSERT_THAT(session, IsOk());
    broker_->Complete(*session, token, Succeed("done"));
  }
  Settle();

  EXPECT_THAT(sink->LeaseLosts(), IsEmpty())
      << "told the lease is lost while its result is being stored";
  std::vector<v1::ResultAck> acks = sink->ResultAcks();
  ASSERT_THAT(acks, SizeIs(1));
  EXPECT_EQ(acks[0].state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_THAT(old_stream.sink->ResultAcks(), IsEmpty());
  EXPECT_EQ(Job(id).state, JobState::kSucceeded);
}

TEST_F(BrokerTest, RetryableFailureSchedulesARetryWithBackoff) {
  Worker worker = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  const std::string token = OnlyToken(worker);
  clock_.Advance(absl::Seconds(2));
  const absl::Time failed_at = clock_.Now();

  Complete(worker, token, Fail("disk full", Retryable::kYes));

  std::vector<v1::ResultAck> acks = worker.sink->ResultAcks();
  ASSERT_THAT(acks, SizeIs(1));
  EXPECT_EQ(acks[0].state(), v1::JOB_STATE_SCHEDULED);
  JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kScheduled);
  EXPECT_EQ(job.last_error, "disk full");
  EXPECT_GE(job.run_at, failed_at + kInitialBackoff / 2);
  EXPECT_LE(job.run_at, failed_at + kInitialBackoff);

  AddCredit(worker, 1);
  clock_.Advance(kInitialBackoff);
  Tick();
  std::vector<v1::Assignment> assigned = worker.sink->Assignments();
  ASSERT_THAT(assigned, SizeIs(2));
  EXPECT_EQ(assigned[1].job().attempt(), 2u);
}

TEST_F(BrokerTest, NonRetryableFailureFailsTheJobWithAttemptsLeft) {
  Worker worker = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  Complete(worker, OnlyToken(worker), Fail("bad input", Retryable::kNo));

  std::vector<v1::ResultAck> acks = worker.sink->ResultAcks();
  ASSERT_THAT(acks, SizeIs(1));
  EXPECT_EQ(acks[0].state(), v1::JOB_STATE_FAILED);
  JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kFailed);
  EXPECT_EQ(job.attempt, 1);
  EXPECT_EQ(job.last_error, "bad input");
}

TEST_F(BrokerTest, RetryRequeuesAFailedJobWithAttemptsReset) {
  Worker worker = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  Complete(worker, OnlyToken(worker), Fail("bad input", Retryable::kNo));
  ASSERT_EQ(Job(id).state, JobState::kFailed);

  absl::StatusOr<JobRecord> retried = RetryJob(id);
  ASSERT_THAT(retried, IsOk());
  EXPECT_EQ(retried->state, JobState::kQueued);
  EXPECT_EQ(retried->attempt, 0);
  EXPECT_EQ(Job(id).state, JobState::kQueued);

  AddCredit(worker, 1);
  std::vector<v1::Assignment> assigned = worker.sink->Assignments();
  ASSERT_THAT(assigned, SizeIs(2));
  EXPECT_EQ(assigned[1].job().id(), FormatJobId(id));
  EXPECT_EQ(assigned[1].job().attempt(), 1u);
  EXPECT_EQ(Job(id).attempt, 1);
}

// ------------------------------------------------------------------ cancel

TEST_F(BrokerTest, CancelledQueuedJobIsNeverDispatched) {
  const int64_t id = Submit(Spec());
  absl::StatusOr<JobRecord> cancelled = CancelJob(id);
  ASSERT_THAT(cancelled, IsOk());
  EXPECT_EQ(cancelled->state, JobState::kCancelled);

  clock_.Advance(absl::Seconds(10));
  EXPECT_EQ(OldestQueuedAge("q"), absl::ZeroDuration());
  Worker worker = Connect("w1", 1);
  EXPECT_THAT(worker.sink->Assignments(), IsEmpty());
  EXPECT_EQ(Job(id).state, JobState::kCancelled);

  // The credit was free all along.
  const int64_t next = Submit(Spec());
  EXPECT_THAT(AssignedIds(worker), ElementsAre(next));
}

TEST_F(BrokerTest, CancellingARunningJobTellsItsWorkerAndRefusesItsResult) {
  Worker worker = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  const std::string token = OnlyToken(worker);

  ASSERT_THAT(CancelJob(id), IsOk());

  std::vector<v1::Cancel> cancels = worker.sink->Cancels();
  ASSERT_THAT(cancels, SizeIs(1));
  EXPECT_EQ(cancels[0].lease_token(), token);
  EXPECT_EQ(cancels[0].job_id(), FormatJobId(id));
  EXPECT_EQ(cancels[0].reason(), "no longer needed");

  Complete(worker, token, Succeed("too late"));
  std::vector<v1::LeaseLost> lost = worker.sink->LeaseLosts();
  ASSERT_THAT(lost, SizeIs(1));
  EXPECT_EQ(lost[0].lease_token(), token);
  EXPECT_THAT(worker.sink->ResultAcks(), IsEmpty());
  JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kCancelled);
  EXPECT_THAT(job.result, IsEmpty());
}

// ------------------------------------------------------- pause and restart

TEST_F(BrokerTest, PausedQueueDispatchesNothingEvenAfterARestart) {
  ASSERT_THAT(SetPaused("q", true), IsOkAndHolds(true));
  Worker before = Connect("w1", 1);
  const int64_t id = Submit(Spec());
  EXPECT_THAT(before.sink->Assignments(), IsEmpty());
  EXPECT_EQ(Job(id).state, JobState::kQueued);

  ASSERT_NO_FATAL_FAILURE(RestartBroker());
  Worker after = Connect("w1", 1);
  EXPECT_THAT(after.sink->Assignments(), IsEmpty());
  absl::StatusOr<std::vector<QueueSnapshot>> stats = broker_->QueueStats("q");
  ASSERT_THAT(stats, IsOk());
  ASSERT_THAT(*stats, SizeIs(1));
  EXPECT_TRUE((*stats)[0].paused);

  ASSERT_THAT(SetPaused("q", false), IsOkAndHolds(true));
  EXPECT_THAT(AssignedIds(after), ElementsAre(id));
}

TEST_F(BrokerTest, RestartGivesLeasesAFullTtlAndReconnectedWorkersFinishThem) {
  Worker before = Connect("w1", 2);
  const absl::Time leased_at = clock_.Now();
  const int64_t first = Submit(Spec());
  const int64_t second = Submit(Spec());
  const int64_t queued = Submit(Spec());
  std::vector<v1::Assignment> assigned = before.sink->Assignments();
  ASSERT_THAT(assigned, SizeIs(2));
  ASSERT_EQ(Job(first).lease_deadline, leased_at + kTtl);

  clock_.Advance(absl::Seconds(20));
  ASSERT_NO_FATAL_FAILURE(RestartBroker());
  const absl::Time restart = clock_.Now();

  EXPECT_EQ(Job(first).state, JobState::kRunning);
  EXPECT_EQ(Job(first).lease_deadline, restart + kTtl);
  EXPECT_EQ(Job(second).lease_deadline, restart + kTtl);
  // Past the stored deadline, within a TTL of the restart: still leased.
  clock_.Advance(kTtl - absl::Seconds(1));
  Tick();
  EXPECT_EQ(Job(first).state, JobState::kRunning);
  EXPECT_EQ(Job(second).state, JobState::kRunning);

  Worker after = Connect("w1", 1,
                         {HeldLease{first, assigned[0].lease_token()},
                          HeldLease{second, assigned[1].lease_token()}});
  EXPECT_THAT(after.sink->LeaseLosts(), IsEmpty());
  EXPECT_THAT(AssignedIds(after), ElementsAre(queued));

  Complete(after, assigned[0].lease_token(), Succeed("one"));
  Complete(after, assigned[1].lease_token(), Succeed("two"));
  EXPECT_THAT(after.sink->ResultAcks(), SizeIs(2));
  for (int64_t id : {first, second}) {
    JobRecord job = Job(id);
    EXPECT_EQ(job.state, JobState::kSucceeded) << "job " << id;
    EXPECT_EQ(job.attempt, 1) << "job " << id;
  }
}

TEST_F(BrokerTest, RestartNeverShortensAStoredLeaseDeadline) {
  Worker before = Connect("w1", 1);
  const absl::Time leased_at = clock_.Now();
  const int64_t id = Submit(Spec());
  ASSERT_THAT(before.sink->Assignments(), SizeIs(1));

  clock_.Set(leased_at - absl::Minutes(1));  // the clock stepped back
  ASSERT_NO_FATAL_FAILURE(RestartBroker());

  EXPECT_EQ(Job(id).lease_deadline, leased_at + kTtl);
}

TEST_F(BrokerTest, ClosingASessionBeforeItsLeaseIsStoredRequeuesTheJob) {
  const int64_t id = Submit(Spec());
  Worker leaving = Connect("w1", 0);
  {
    WriterGate gate(*store_);
    ASSERT_TRUE(gate.WaitHeld());
    broker_->AddCredit(leaving.session, 1);  // the lease write waits
    broker_->CloseSession(leaving.session);
  }
  Settle();

  EXPECT_THAT(leaving.sink->Assignments(), IsEmpty());
  JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kQueued);
  EXPECT_EQ(job.attempt, 0);
  EXPECT_THAT(job.lease_token, IsEmpty());

  Worker next = Connect("w2", 1);
  std::vector<v1::Assignment> assigned = next.sink->Assignments();
  ASSERT_THAT(assigned, SizeIs(1));
  EXPECT_EQ(assigned[0].job().id(), FormatJobId(id));
  EXPECT_EQ(assigned[0].job().attempt(), 1u);
}

TEST_F(BrokerTest, ALeaseWhoseReleaseFailedInStorageStillExpires) {
  const int64_t id = Submit(Spec());
  Worker leaving = Connect("w1", 0);
  store_->FailNext(FaultyStore::Write::kRelease,
                   absl::UnavailableError("disk I/O error"));
  {
    WriterGate gate(*store_);
    ASSERT_TRUE(gate.WaitHeld());
    broker_->AddCredit(leaving.session, 1);  // the lease write waits
    broker_->CloseSession(leaving.session);
  }
  Settle();
  // Not put back: on disk the attempt still runs under the lease.
  ASSERT_EQ(Job(id).state, JobState::kRunning);

  // The broker still knows the lease, so it ends when the lease expires.
  clock_.Advance(kTtl);
  Tick();
  JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kScheduled);
  EXPECT_EQ(job.attempt, 1);
  EXPECT_THAT(job.last_error, HasSubstr("lease expired"));
}

TEST_F(BrokerTest, CreditOfAFailedLeaseIsNotReturnedAfterAReset) {
  v1::JobSpec keyed = Spec();
  keyed.set_idempotency_key("once");
  ASSERT_THAT(CancelJob(Submit(keyed)), IsOk());  // the queue is empty again
  Worker worker = Connect("w1", 1);
  Pending<std::vector<CreateResult>> duplicate;
  {
    WriterGate gate(*store_);
    ASSERT_TRUE(gate.WaitHeld());
    // Leased to the worker as it is stored (its one credit), then found to
    // be a duplicate; meanwhile the worker withdraws its credits.
    broker_->Submit({Record(keyed)}, duplicate.Callback());
    broker_->AddCredit(worker.session, 0, /*reset=*/true);
  }
  Settle();
  ASSERT_TRUE(duplicate.done());

  // The failed lease's credit predates the reset: the worker holds none.
  const int64_t next = Submit(Spec());
  EXPECT_EQ(Job(next).state, JobState::kQueued);
  EXPECT_THAT(worker.sink->Assignments(), IsEmpty());
}

TEST_F(BrokerTest, StreamClosedForAnUnstoredResultTakesNoMoreJobs) {
  Worker worker = Connect("w1", 2);
  const int64_t first = Submit(Spec());
  const std::string token = OnlyToken(worker);
  store_->FailNext(FaultyStore::Write::kFinish,
                   absl::UnavailableError("disk I/O error"));
  Complete(worker, token, Succeed("done"));
  // The stream is being closed so that the worker resends the result...
  EXPECT_THAT(worker.sink->CloseStatus(),
              Optional(StatusIs(absl::StatusCode::kUnavailable,
                                HasSubstr("could not store the result"))));
  // ...and its session ends with it: a job now would be leased to a
  // stream that drops it, its attempt lost when the lease expired.
  const int64_t next = Submit(Spec());
  EXPECT_EQ(Job(next).state, JobState::kQueued);
  EXPECT_EQ(Job(first).state, JobState::kRunning);  // kept for the resend
  EXPECT_THAT(broker_->ListWorkers(), IsEmpty());
}

TEST_F(BrokerTest, ClosingASessionBeforeADirectSubmitLeaseIsStoredQueuesIt) {
  Worker leaving = Connect("w1", 1);
  Pending<std::vector<CreateResult>> submitted;
  {
    WriterGate gate(*store_);
    ASSERT_TRUE(gate.WaitHeld());
    broker_->Submit({Record(Spec())}, submitted.Callback());
    broker_->CloseSession(leaving.session);
  }
  Settle();

  ASSERT_TRUE(submitted.done());
  ASSERT_THAT(submitted.result(), IsOk());
  ASSERT_THAT(*submitted.result(), SizeIs(1));
  const int64_t id = submitted.result()->front().job.id;
  EXPECT_THAT(leaving.sink->Assignments(), IsEmpty());
  JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kQueued);
  EXPECT_EQ(job.attempt, 0);

  Worker next = Connect("w2", 1);
  EXPECT_THAT(AssignedIds(next), ElementsAre(id));
}

// ------------------------------------------------------- retention, purge

TEST_F(BrokerTest, RetentionDeletesOldTerminalJobsInSmallBatchesOnTick) {
  options_.retention = absl::Hours(1);
  options_.delete_batch = 2;
  ASSERT_NO_FATAL_FAILURE(RestartBroker());

  // Five old terminal jobs, one of each way to end and three cancels.
  Worker worker = Connect("w1", 2);
  std::vector<int64_t> old;
  old.push_back(Submit(Spec()));
  old.push_back(Submit(Spec()));
  std::vector<v1::Assignment> assigned = worker.sink->Assignments();
  ASSERT_THAT(assigned, SizeIs(2));
  Complete(worker, assigned[0].lease_token(), Succeed("ok"));
  Complete(worker, assigned[1].lease_token(), Fail("no", Retryable::kNo));
  for (int i = 0; i < 3; ++i) {
    old.push_back(Submit(Spec()));
    ASSERT_THAT(CancelJob(old.back()), IsOk());
  }
  // And jobs that must stay: live ones, and a recently finished one.
  v1::JobSpec long_lease = Spec();
  long_lease.mutable_lease_ttl()->set_seconds(24 * 3600);
  AddCredit(worker, 1);
  const int64_t running = Submit(long_lease);
  ASSERT_EQ(Job(running).state, JobState::kRunning);
  const int64_t queued = Submit(Spec());
  ASSERT_EQ(Job(queued).state, JobState::kQueued);
  v1::JobSpec delayed = Spec();
  delayed.mutable_delay()->set_seconds(24 * 3600);
  const int64_t scheduled = Submit(delayed);
  clock_.Advance(absl::Minutes(30));
  const int64_t recent = Submit(Spec());
  ASSERT_THAT(CancelJob(recent), IsOk());

  clock_.Advance(absl::Minutes(30) + absl::Seconds(1));
  auto old_left = [&] {
    int left = 0;
    for (int64_t id : old) left += Exists(id) ? 1 : 0;
    return left;
  };
  Tick();
  EXPECT_EQ(old_left(), 3);
  Tick();
  EXPECT_EQ(old_left(), 1);
  Tick();
  EXPECT_EQ(old_left(), 0);

  for (int64_t id : {queued, scheduled, running, recent}) {
    EXPECT_TRUE(Exists(id)) << "job " << id;
  }
}

TEST_F(BrokerTest, PurgeOfQueuedJobsRemovesThemFromDispatch) {
  options_.delete_batch = 2;
  ASSERT_NO_FATAL_FAILURE(RestartBroker());
  std::vector<int64_t> queued;
  for (int i = 0; i < 3; ++i) queued.push_back(Submit(Spec()));
  const int64_t elsewhere = Submit(Spec("other"));
  v1::JobSpec delayed = Spec();
  delayed.mutable_delay()->set_seconds(60);
  const int64_t scheduled = Submit(delayed);

  EXPECT_THAT(Purge("q", JobState::kQueued), IsOkAndHolds(3));

  for (int64_t id : queued) EXPECT_FALSE(Exists(id)) << "job " << id;
  EXPECT_TRUE(Exists(elsewhere));
  EXPECT_TRUE(Exists(scheduled));
  clock_.Advance(absl::Seconds(10));
  EXPECT_EQ(OldestQueuedAge("q"), absl::ZeroDuration());
  EXPECT_EQ(OldestQueuedAge("other"), absl::Seconds(10));
  Worker worker = Connect("w1", 5);
  EXPECT_THAT(worker.sink->Assignments(), IsEmpty());
  const int64_t fresh = Submit(Spec());
  EXPECT_THAT(AssignedIds(worker), ElementsAre(fresh));
}

// ---------------------------------------------------------------- watchers

TEST_F(BrokerTest, WatchSeesTheCurrentStateThenEachChangeUntilTerminal) {
  v1::JobSpec spec = Spec();
  spec.mutable_delay()->set_seconds(10);
  const int64_t id = Submit(spec);
  auto watcher = std::make_shared<RecordingJobSink>();
  ASSERT_THAT(broker_->Watch(id, watcher, absl::InfiniteFuture()), IsOk());
  EXPECT_THAT(watcher->States(), ElementsAre(JobState::kScheduled));

  Worker worker = Connect("w1", 1);
  clock_.Advance(absl::Seconds(10));
  Tick();
  EXPECT_THAT(
      watcher->States(),
      ElementsAre(JobState::kScheduled, JobState::kQueued, JobState::kRunning));
  EXPECT_EQ(watcher->CloseStatus(), std::nullopt);

  Complete(worker, OnlyToken(worker), Succeed("done"));

  EXPECT_THAT(watcher->States(),
              ElementsAre(JobState::kScheduled, JobState::kQueued,
                          JobState::kRunning, JobState::kSucceeded));
  EXPECT_THAT(watcher->CloseStatus(), Optional(absl::OkStatus()));
}

TEST_F(BrokerTest, WatchStartedBetweenACommitAndItsCallbackSeesItOnce) {
  const int64_t id = Submit(Spec());
  Worker worker = Connect("w1", 0);
  auto watcher = std::make_shared<RecordingJobSink>();
  {
    // Holds the callbacks: the lease below commits, but its callback (and
    // the broker's notification) waits behind the gate.
    WriterGate gate(*store_);
    ASSERT_TRUE(gate.WaitHeld());
    broker_->AddCredit(worker.session, 1);
    ASSERT_TRUE(AwaitStored(id, [](const JobRecord& job) {
      return job.state == JobState::kRunning;
    }));

    ASSERT_THAT(broker_->Watch(id, watcher, absl::InfiniteFuture()), IsOk());
  }
  Settle();

  EXPECT_THAT(worker.sink->Assignments(), SizeIs(1));
  EXPECT_THAT(watcher->States(), ElementsAre(JobState::kRunning));
}

TEST_F(BrokerTest,
       WatchStartedAfterTwoCommitsBeforeTheirCallbacksStaysInOrder) {
  const int64_t id = Submit(Spec());
  Worker worker = Connect("w1", 1);
  const std::string token = OnlyToken(worker);
  auto progress = [&](uint32_t percent) {
    v1::Heartbeat heartbeat;
    v1::ProgressUpdate* update = heartbeat.add_progress();
    update->set_lease_token(token);
    update->mutable_progress()->set_percent(percent);
    broker_->Heartbeat(worker.session, FromProto(heartbeat));
  };
  auto watcher = std::make_shared<RecordingJobSink>();
  {
    // Both progress writes commit; their callbacks wait behind the gate.
    WriterGate gate(*store_);
    ASSERT_TRUE(gate.WaitHeld());
    progress(10);
    clock_.Advance(absl::Seconds(1));
    progress(20);
    ASSERT_TRUE(AwaitStored(
        id, [](const JobRecord& job) { return job.progress_percent == 20; }));
    // The watch reads 20%; the 10% callback runs after it.
    ASSERT_THAT(broker_->Watch(id, watcher, absl::InfiniteFuture()), IsOk());
  }
  Settle();

  // Not 20, 10, 20: an update older than what the watcher has is dropped.
  EXPECT_THAT(watcher->Progress(), ElementsAre(20));
}

TEST_F(BrokerTest, WatchAfterDrainIsUnavailable) {
  const int64_t id = Submit(Spec());
  broker_->Drain("shutting down");
  auto watcher = std::make_shared<RecordingJobSink>();
  EXPECT_THAT(
      broker_->Watch(id, watcher, absl::InfiniteFuture()),
      StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting down")));
  EXPECT_THAT(watcher->States(), IsEmpty());
}

TEST_F(BrokerTest, WatchersAreNotHandedThePayload) {
  const int64_t id = Submit(Spec());  // "payload"
  auto watcher = std::make_shared<RecordingJobSink>();
  ASSERT_THAT(broker_->Watch(id, watcher, absl::InfiniteFuture()), IsOk());
  Worker worker = Connect("w1", 1);  // the lease is read back with it
  ASSERT_THAT(watcher->States(),
              ElementsAre(JobState::kQueued, JobState::kRunning));
  // Sinks read it when they send it; a copy per watcher would only take
  // memory (up to --max_payload_bytes each).
  EXPECT_EQ(watcher->PayloadBytes(), 0u);
}

TEST_F(BrokerTest, WatchOfAFinishedJobSendsItAndCloses) {
  const int64_t id = Submit(Spec());
  ASSERT_THAT(CancelJob(id), IsOk());
  auto watcher = std::make_shared<RecordingJobSink>();
  ASSERT_THAT(broker_->Watch(id, watcher, absl::InfiniteFuture()), IsOk());
  EXPECT_THAT(watcher->States(), ElementsAre(JobState::kCancelled));
  EXPECT_THAT(watcher->CloseStatus(), Optional(absl::OkStatus()));
  EXPECT_THAT(broker_->Watch(id + 1, watcher, absl::InfiniteFuture()),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(BrokerTest, WatchClosesOkAtItsDeadlineOnTick) {
  const int64_t id = Submit(Spec());
  auto watcher = std::make_shared<RecordingJobSink>();
  ASSERT_THAT(broker_->Watch(id, watcher, clock_.Now() + absl::Seconds(10)),
              IsOk());

  clock_.Advance(absl::Seconds(9));
  Tick();
  EXPECT_EQ(watcher->CloseStatus(), std::nullopt);
  clock_.Advance(absl::Seconds(1));
  Tick();

  EXPECT_THAT(watcher->CloseStatus(), Optional(absl::OkStatus()));
  EXPECT_THAT(watcher->States(), ElementsAre(JobState::kQueued));
}

TEST_F(BrokerTest, PurgeClosesWatchersOfPurgedJobsWithNotFound) {
  const int64_t id = Submit(Spec());
  auto watcher = std::make_shared<RecordingJobSink>();
  ASSERT_THAT(broker_->Watch(id, watcher, absl::InfiniteFuture()), IsOk());

  ASSERT_THAT(Purge("q", JobState::kQueued), IsOkAndHolds(1));

  std::optional<absl::Status> closed = watcher->CloseStatus();
  ASSERT_TRUE(closed.has_value());
  EXPECT_THAT(*closed, StatusIs(absl::StatusCode::kNotFound));
}

// --------------------------------------------------------------- unary API

TEST_F(BrokerTest, UnaryLeaseWithNothingReadyAndNoWaitReturnsNoneAtOnce) {
  Pending<std::vector<Assignment>> leased;
  broker_->Lease(Identity("u1"), 1, clock_.Now(), leased.Callback());

  ASSERT_TRUE(leased.done());
  EXPECT_THAT(leased.result(), IsOkAndHolds(IsEmpty()));
}

TEST_F(BrokerTest, UnaryLeaseWaitingForAJobCompletesWhenOneIsSubmitted) {
  Pending<std::vector<Assignment>> leased;
  broker_->Lease(Identity("u1"), 1, clock_.Now() + absl::Seconds(10),
                 leased.Callback());
  Settle();
  EXPECT_FALSE(leased.done());

  const absl::Time now = clock_.Now();
  const int64_t id = Submit(Spec());

  ASSERT_TRUE(leased.done());
  ASSERT_THAT(leased.result(), IsOk());
  ASSERT_THAT(*leased.result(), SizeIs(1));
  ExpectFirstAttempt(Wire(leased.result()->front()), id, now);
  EXPECT_EQ(Job(id).worker_id, "u1");
}

TEST_F(BrokerTest, FailingLeaseWritesBackOffAndAnswerTheWaitingCall) {
  // A full disk: every lease write fails. A waiting worker and a ready job
  // once made the broker retry the write in a hot loop.
  const int64_t id = Submit(Spec());
  store_->FailAlways(FaultyStore::Write::kLease,
                     absl::ResourceExhaustedError("database or disk is full"));
  using Write = FaultyStore::Write;

  Pending<std::vector<Assignment>> first;
  broker_->Lease(Identity("u1"), 1, clock_.Now() + absl::Seconds(30),
                 first.Callback());
  Settle();
  ASSERT_TRUE(first.done()) << "the caller is told, not left waiting";
  EXPECT_THAT(first.result(), StatusIs(absl::StatusCode::kResourceExhausted,
                                       HasSubstr("could not store the lease")));
  EXPECT_EQ(store_->Attempts(Write::kLease), 1);

  // Backing off: a new call waits, and nothing is written.
  Pending<std::vector<Assignment>> second;
  broker_->Lease(Identity("u2"), 1, clock_.Now() + absl::Seconds(30),
                 second.Callback());
  Settle();
  EXPECT_FALSE(second.done());
  EXPECT_EQ(store_->Attempts(Write::kLease), 1);
  EXPECT_LE(broker_->NextTickTime(), clock_.Now() + absl::Milliseconds(100));

  // After the backoff, one more try; it fails, and the next wait doubles.
  clock_.Advance(absl::Milliseconds(100));
  Tick();
  EXPECT_EQ(store_->Attempts(Write::kLease), 2);
  ASSERT_TRUE(second.done());
  EXPECT_THAT(second.result(), StatusIs(absl::StatusCode::kResourceExhausted));

  // The disk has room again; the next try (after 200 ms) leases the job.
  store_->Heal(Write::kLease);
  Pending<std::vector<Assignment>> third;
  broker_->Lease(Identity("u3"), 1, clock_.Now() + absl::Seconds(30),
                 third.Callback());
  clock_.Advance(absl::Milliseconds(100));
  Tick();
  EXPECT_FALSE(third.done()) << "still backing off";
  EXPECT_EQ(store_->Attempts(Write::kLease), 2);
  clock_.Advance(absl::Milliseconds(100));
  Tick();
  ASSERT_TRUE(third.done());
  ASSERT_THAT(third.result(), IsOkAndHolds(SizeIs(1)));
  EXPECT_EQ(third.result()->front().job.id, id);
  EXPECT_EQ(store_->Attempts(Write::kLease), 3);
}

TEST_F(BrokerTest, UnaryLeaseTimesOutWithNoneOnTick) {
  Pending<std::vector<Assignment>> leased;
  broker_->Lease(Identity("u1"), 1, clock_.Now() + absl::Seconds(5),
                 leased.Callback());
  clock_.Advance(absl::Seconds(4));
  Tick();
  EXPECT_FALSE(leased.done());

  clock_.Advance(absl::Seconds(1));
  Tick();
  ASSERT_TRUE(leased.done());
  EXPECT_THAT(leased.result(), IsOkAndHolds(IsEmpty()));

  // The finished long-poll takes nothing more.
  const int64_t id = Submit(Spec());
  EXPECT_EQ(Job(id).state, JobState::kQueued);
}

TEST_F(BrokerTest, CancelledUnaryLeaseCompletesCancelledAndTakesNothing) {
  Pending<std::vector<Assignment>> leased;
  const uint64_t handle = broker_->Lease(
      Identity("u1"), 1, clock_.Now() + absl::Seconds(10), leased.Callback());
  ASSERT_NE(handle, 0u);
  broker_->CancelLease(handle);
  ASSERT_TRUE(leased.done());
  EXPECT_THAT(leased.result(), StatusIs(absl::StatusCode::kCancelled));

  const int64_t id = Submit(Spec());
  EXPECT_EQ(Job(id).state, JobState::kQueued);
  broker_->CancelLease(handle);  // already gone: nothing happens
}

TEST_F(BrokerTest, UnaryLeaseCancelledWhileItsLeasesAreStoredPutsThemBack) {
  const int64_t first = Submit(Spec());
  const int64_t second = Submit(Spec());
  Pending<std::vector<Assignment>> leased;
  {
    WriterGate gate(*store_);
    ASSERT_TRUE(gate.WaitHeld());
    const uint64_t handle = broker_->Lease(
        Identity("u1"), 2, clock_.Now() + absl::Seconds(10), leased.Callback());
    ASSERT_NE(handle, 0u);  // both lease writes wait behind the gate
    broker_->CancelLease(handle);
  }
  Settle();

  ASSERT_TRUE(leased.done());
  EXPECT_THAT(leased.result(), StatusIs(absl::StatusCode::kCancelled));
  ExpectPutBack({first, second});
}

TEST_F(BrokerTest, UnaryLeaseCancelledWithOneJobLeasedAndOneInFlightPutsBoth) {
  const int64_t first = Submit(Spec());
  Pending<std::vector<Assignment>> leased;
  Pending<std::vector<CreateResult>> submitted;
  uint64_t handle = 0;
  {
    WriterGate first_gate(*store_);
    ASSERT_TRUE(first_gate.WaitHeld());
    // `first` is leased to the call; its write's callback waits here.
    handle = broker_->Lease(Identity("u1"), 2, clock_.Now() + absl::Seconds(10),
                            leased.Callback());
    ASSERT_NE(handle, 0u);
    WriterGate second_gate(*store_);
    // The call still has a credit: this job is leased to it as stored.
    broker_->Submit({Record(Spec())}, submitted.Callback());
    first_gate.Open();
    // The first lease has landed (the call holds it, undelivered: the
    // second is still being written); the second waits at this gate.
    ASSERT_TRUE(second_gate.WaitHeld());
    EXPECT_FALSE(leased.done());
    broker_->CancelLease(handle);
  }
  Settle();

  ASSERT_TRUE(leased.done());
  EXPECT_THAT(leased.result(), StatusIs(absl::StatusCode::kCancelled));
  ASSERT_TRUE(submitted.done());
  ASSERT_THAT(submitted.result(), IsOk());
  ASSERT_THAT(*submitted.result(), SizeIs(1));
  const int64_t second = submitted.result()->front().job.id;
  ExpectPutBack({first, second});
}

TEST_F(BrokerTest, UnaryLeaseHandedADuplicateKeepsWaitingForTheNextJob) {
  v1::JobSpec keyed = Spec();
  keyed.set_idempotency_key("once");
  const int64_t first = Submit(keyed);
  ASSERT_THAT(CancelJob(first), IsOk());  // the queue is empty again

  Pending<std::vector<Assignment>> leased;
  broker_->Lease(Identity("u1"), 1, clock_.Now() + absl::Seconds(10),
                 leased.Callback());
  Settle();
  // Leased to the waiting call as it is stored, then found to be a
  // duplicate: the call gets its credit back and must still be waiting.
  EXPECT_EQ(Submit(keyed), first);
  EXPECT_FALSE(leased.done());

  const int64_t next = Submit(Spec());
  ExpectLeasedOnly(leased, next);
}

TEST_F(BrokerTest, UnaryLeaseWhoseLeaseIsBeingWrittenDoesNotWakeTheTicker) {
  const int64_t id = Submit(Spec());
  Tick();  // the first retention pass is due at start
  ASSERT_GT(broker_->NextTickTime(), clock_.Now());
  Pending<std::vector<Assignment>> leased;
  {
    WriterGate gate(*store_);
    ASSERT_TRUE(gate.WaitHeld());
    // No wait: the call's deadline is now, but its answer is the lease
    // write, held at the gate. A tick could do nothing for it, so the
    // ticker must not be told to run at once (it would spin).
    broker_->Lease(Identity("u1"), 1, clock_.Now(), leased.Callback());
    EXPECT_FALSE(leased.done());
    EXPECT_GT(broker_->NextTickTime(), clock_.Now());
  }
  Settle();
  ExpectLeasedOnly(leased, id);
}

TEST_F(BrokerTest, UnaryHeartbeatAndCompleteWorkByToken) {
  const int64_t id = Submit(Spec());
  Pending<std::vector<Assignment>> leased;
  broker_->Lease(Identity("u1"), 5, clock_.Now(), leased.Callback());
  Settle();
  ASSERT_TRUE(leased.done());
  ASSERT_THAT(leased.result(), IsOk());
  ASSERT_THAT(*leased.result(), SizeIs(1));
  const std::string token = leased.result()->front().lease_token;

  clock_.Advance(absl::Seconds(20));
  const ferry::Progress progress{40, "resizing"};
  absl::StatusOr<absl::Time> deadline = Sync<absl::Time>([&](auto done) {
    broker_->HeartbeatLease(token, progress, std::move(done));
  });
  Settle();
  EXPECT_THAT(deadline, IsOkAndHolds(clock_.Now() + kTtl));
  JobRecord job = Job(id);
  EXPECT_EQ(job.lease_deadline, clock_.Now() + kTtl);
  EXPECT_EQ(job.progress_percent, 40);
  EXPECT_EQ(job.progress_message, "resizing");

  // Past the first deadline: the heartbeat kept it.
  clock_.Advance(absl::Seconds(20));
  Tick();
  absl::StatusOr<JobState> state = Sync<JobState>([&](auto done) {
    broker_->CompleteLease(token, Succeed("small"), std::move(done));
  });
  Settle();
  EXPECT_THAT(state, IsOkAndHolds(JobState::kSucceeded));
  EXPECT_EQ(Job(id).state, JobState::kSucceeded);
  EXPECT_EQ(Job(id).result, "small");
}

TEST_F(BrokerTest, UnaryCallsWithAStaleTokenFailWithFailedPrecondition) {
  const int64_t id = Submit(Spec());
  Pending<std::vector<Assignment>> leased;
  broker_->Lease(Identity("u1"), 1, clock_.Now(), leased.Callback());
  Settle();
  ASSERT_TRUE(leased.done());
  ASSERT_THAT(leased.result(), IsOk());
  ASSERT_THAT(*leased.result(), SizeIs(1));
  const std::string token = leased.result()->front().lease_token;
  clock_.Advance(kTtl);
  Tick();
  ASSERT_EQ(Job(id).state, JobState::kScheduled);

  for (const std::string& stale : {token, std::string(32, '0')}) {
    SCOPED_TRACE(stale);
    EXPECT_THAT(Sync<absl::Time>([&](auto done) {
                  broker_->HeartbeatLease(stale, std::nullopt, std::move(done));
                }),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    EXPECT_THAT(Sync<JobState>([&](auto done) {
                  broker_->CompleteLease(stale, Succeed("late"),
                                         std::move(done));
                }),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    Settle();
  }
  JobRecord job = Job(id);
  EXPECT_EQ(job.state, JobState::kScheduled);
  EXPECT_THAT(job.result, IsEmpty());
}

// ------------------------------------------------------------------- drain

TEST_F(BrokerTest, DrainTellsSessionsAndStopsAllDispatch) {
  Worker worker = Connect("w1", 1);
  const int64_t running = Submit(Spec());
  const std::string token = OnlyToken(worker);
  const int64_t watched = Submit(Spec());
  auto watcher = std::make_shared<RecordingJobSink>();
  ASSERT_THAT(broker_->Watch(watched, watcher, absl::InfiniteFuture()), IsOk());

  broker_->Drain("shutting down");
  Settle();

  std::vector<v1::Drain> drains = worker.sink->Drains();
  ASSERT_THAT(drains, SizeIs(1));
  EXPECT_EQ(drains[0].reason(), "shutting down");
  std::optional<absl::Status> closed = watcher->CloseStatus();
  ASSERT_TRUE(closed.has_value());
  EXPECT_THAT(*closed, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(broker_->OpenSession(Identity("w2"), {}, 1,
                                   std::make_shared<FakeWorkerSink>()),
              StatusIs(absl::StatusCode::kUnavailable));
  Pending<std::vector<Assignment>> leased;
  broker_->Lease(Identity("u1"), 1, clock_.Now() + absl::Seconds(5),
                 leased.Callback());
  ASSERT_TRUE(leased.done());
  EXPECT_THAT(leased.result(), StatusIs(absl::StatusCode::kUnavailable));

  AddCredit(worker, 5);
  const int64_t later = Submit(Spec());
  EXPECT_THAT(AssignedIds(worker), ElementsAre(running));
  EXPECT_EQ(Job(watched).state, JobState::kQueued);
  EXPECT_EQ(Job(later).state, JobState::kQueued);

  // What runs may finish.
  Complete(worker, token, Succeed("done"));
  EXPECT_THAT(worker.sink->ResultAcks(), SizeIs(1));
  EXPECT_EQ(Job(running).state, JobState::kSucceeded);
}

}  // namespace
}  // namespace ferry::testing
