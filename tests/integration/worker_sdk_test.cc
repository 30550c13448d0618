// The C++ worker SDK (ferry::Worker) against a real in-process broker over
// loopback. The broker runs on a FakeClock that moves only when a test calls
// Advance(); the worker has a FakeClock of its own (worker_clock_), so its
// heartbeats, job timeouts and drain deadline also move only when a test
// says so. Real time only paces the SDK's reconnect backoff and the broker's
// shutdown grace, both kept short.
// Every wait is for an event (a handler starting, a job changing state),
// bounded by kEventTimeout.

#include <atomic>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ferry/v1/jobs.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"
#include "tests/fake_clock.h"
#include "tests/server_fixture.h"
#include "tests/status_matchers.h"
#include "tests/test_worker.h"
#include "worker/worker.h"

namespace ferry {

inline void PrintTo(StopReason reason, std::ostream* os) {
  switch (reason) {
    case StopReason::kNone:
      *os << "kNone";
      return;
    case StopReason::kCancelled:
      *os << "kCancelled";
      return;
    case StopReason::kLeaseLost:
      *os << "kLeaseLost";
      return;
    case StopReason::kTimeout:
      *os << "kTimeout";
      return;
    case StopReason::kShutdown:
      *os << "kShutdown";
      return;
  }
  *os << "StopReason(" << static_cast<int>(reason) << ")";
}

namespace testing {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

// The broker's default lease TTL (JobPolicy).
constexpr absl::Duration kDefaultTtl = absl::Seconds(30);

class WorkerSdkTest : public ServerTest {
 protected:
  WorkerSdkTest() {
    // On a broker shutdown the SDK keeps its stream open while a handler
    // runs (to send the result); the broker cuts it after this grace.
    options_.shutdown_grace = absl::Milliseconds(300);
  }

  void TearDown() override {
    StopWorker();
    ServerTest::TearDown();
  }

  // ---- the worker ----

  WorkerOptions Options() {
    WorkerOptions options;
    options.broker = server().address();
    options.queues = {"q"};
    options.concurrency = 1;
    options.worker_id = "sdk-worker";
    options.reconnect_initial = absl::Milliseconds(10);
    options.reconnect_max = absl::Milliseconds(200);
    options.clock = &worker_clock_;
    return options;
  }

  // A worker to register handlers on before StartWorker().
  Worker& NewWorker(WorkerOptions options) {
    worker_ = std::make_unique<Worker>(std::move(options));
    return *worker_;
  }
  Worker& NewWorker() { return NewWorker(Options()); }

  // Calls Run() on a thread of its own.
  void StartWorker() {
    run_thread_ = std::thread([this] {
      run_status_ = worker_->Run();
      run_returned_.Notify();
    });
  }

  // What Run() returned, once it did within kEventTimeout.
  std::optional<absl::Status> AwaitRunReturned() {
    if (!run_returned_.WaitForNotificationWithTimeout(kEventTimeout)) {
      return std::nullopt;
    }
    return run_status_;
  }

  // Stops the worker whatever state it is in: releases blocked handlers,
  // moves the worker's clock past its drain timeout and final deadline,
  // waits for Run() to return.
  void StopWorker() {
    Release();
    if (worker_ == nullptr) return;
    worker_->Stop();
    worker_clock_.Advance(absl::Hours(1));
    if (run_thread_.joinable()) {
      EXPECT_TRUE(AwaitRunReturned().has_value())
          << "Run() did not return after Stop()";
      run_thread_.join();
    }
    worker_.reset();
  }

  Worker& worker() { return *worker_; }
  // Whether Run() has returned yet (no waiting).
  bool RunReturned() const { return run_returned_.HasBeenNotified(); }

  // ---- handlers ----
  // They record into the fixture, which outlives the worker, and block only
  // on the fixture's release_, which StopWorker() always releases.

  void Release() {
    if (!release_.HasBeenNotified()) release_.Notify();
  }

  // Counts itself in and out of running_now_, recording the most at once,
  // and waits for Release() before it returns `output`.
  Handler BlockingHandler(std::string output) {
    return [this, output](JobContext& ctx) {
      const int now = ++running_now_;
      int most = max_running_.load();
      while (now > most && !max_running_.compare_exchange_weak(most, now)) {
      }
      ++started_;
      const bool released =
          release_.WaitForNotificationWithTimeout(absl::Seconds(30));
      --running_now_;
      if (!released) return JobOutcome::Failure("never released");
      return JobOutcome::Success(output);
    };
  }

  // Waits for the job to be stopped, records why, then returns `outcome`.
  Handler StopWatchingHandler(JobOutcome outcome) {
    return [this, outcome](JobContext& ctx) {
      ++started_;
      ctx.WaitForStop(absl::Seconds(30));
      seen_reason_ = ctx.reason();
      if (!saw_stop_.HasBeenNotified()) saw_stop_.Notify();
      return outcome;
    };
  }

  // True once `n` handlers have started (within kEventTimeout).
  bool AwaitStarted(int n) {
    return Eventually([&] { return started_.load() >= n; }, kEventTimeout);
  }

  // The reason the stop-watching handler saw, once it saw one.
  std::optional<StopReason> AwaitStopSeen() {
    if (!saw_stop_.WaitForNotificationWithTimeout(kEventTimeout)) return {};
    return seen_reason_.load();
  }

  // ---- jobs ----

  // Polls Get until `done` holds for the job (within kEventTimeout) and
  // returns the job as last seen, for the test to check and print.
  v1::Job AwaitJob(const std::string& id,
                   const std::function<bool(const v1::Job&)>& done) {
    v1::Job last;
    const bool ok = Eventually([&] {
      absl::StatusOr<v1::Job> job = Get(id);
      if (!job.ok()) return false;
      last = *std::move(job);
      return done(last);
    });
    if (!ok) {
      v1::Job shown = last;  // a payload of megabytes would flood the log
      if (shown.payload().size() > 1024) {
        shown.set_payload(absl::StrCat("<", last.payload().size(), " bytes>"));
      }
      ADD_FAILURE() << "job " << id << " never got there; last seen:\n"
                    << shown.DebugString();
    }
    return last;
  }

  v1::Job AwaitState(const std::string& id, v1::JobState state) {
    return AwaitJob(id,
                    [state](const v1::Job& j) { return j.state() == state; });
  }

  // ---- the broker ----

  // Restarts the broker on the port it has now: the SDK dials a fixed
  // address, as it would a real ferryd. Someone could take the port in the
  // instant between; then this tries again, a few times, before it fails.
  void RestartOnTheSamePort() {
    options_.listen = absl::StrCat("127.0.0.1:", server().port());
    std::vector<std::string> errors;
    for (int attempt = 0; attempt < 5; ++attempt) {
      ::testing::TestPartResultArray failures;
      {
        ::testing::ScopedFakeTestPartResultReporter intercept(
            ::testing::ScopedFakeTestPartResultReporter::
                INTERCEPT_ONLY_CURRENT_THREAD,
            &failures);
        Restart();
      }
      if (failures.size() == 0) return;
      for (int i = 0; i < failures.size(); ++i) {
        errors.push_back(failures.GetTestPartResult(i).message());
      }
    }
    for (const std::string& error : errors) ADD_FAILURE() << error;
    FAIL() << "could not restart the broker on " << options_.listen;
  }

  FakeClock worker_clock_;
  absl::Notification release_;
  std::atomic<int> started_{0};
  std::atomic<int> running_now_{0};
  std::atomic<int> max_running_{0};
  std::atomic<StopReason> seen_reason_{StopReason::kNone};
  absl::Notification saw_stop_;

 private:
  std::unique_ptr<Worker> worker_;
  std::thread run_thread_;
  absl::Notification run_returned_;
  absl::Status run_status_;
};

// ---- results ----

TEST_F(WorkerSdkTest, HandlerOutputBecomesTheResultOfASucceededJob) {
  auto seen = std::make_shared<std::string>();
  NewWorker().Handle("echo", [seen](JobContext& ctx) {
    *seen = absl::StrCat(ctx.id(), " ", ctx.kind(), " ", ctx.job().queue());
    return JobOutcome::Success(
        absl::StrCat("echo:", ctx.payload(), " attempt=", ctx.attempt()));
  });
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "echo", "hello"));

  v1::Job done = AwaitState(job.id(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.result(), "echo:hello attempt=1");
  EXPECT_EQ(done.attempt(), 1u);
  EXPECT_EQ(done.worker_id(), "sdk-worker");
  EXPECT_EQ(*seen, absl::StrCat(job.id(), " echo q"));
}

// Payloads over gRPC's default 4 MiB receive limit.
class LargePayloadWorkerTest : public WorkerSdkTest {
 protected:
  LargePayloadWorkerTest() {
    options_.broker.policy.max_payload_bytes = 6 << 20;
  }
};

TEST_F(LargePayloadWorkerTest, WorkerTakesAJobLargerThanFourMebibytes) {
  auto seen = std::make_shared<std::atomic<size_t>>(0);
  NewWorker().Handle("big", [seen](JobContext& ctx) {
    seen->store(ctx.payload().size());
    return JobOutcome::Success("done");
  });
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job,
                             Submit("q", "big", std::string(5 << 20, 'x')));
  v1::Job done = AwaitJob(job.id(), [](const v1::Job& j) {
    return j.state() == v1::JOB_STATE_SUCCEEDED || j.attempt() > 1;
  });
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.attempt(), 1u);
  EXPECT_EQ(seen->load(), size_t{5} << 20);
}

TEST_F(WorkerSdkTest, OutputTooLargeForTheBrokerFailsTheJobWithoutBreaking) {
  // Over what ferryd can read at all (16 MiB here): sent, it would break
  // the stream on every resend and the job would stay RUNNING.
  NewWorker().Handle("huge", [](JobContext&) {
    return JobOutcome::Success(std::string(17 << 20, 'x'));
  });
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "huge", ""));
  v1::Job done = AwaitState(job.id(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(done.attempt(), 1u);
  EXPECT_THAT(done.last_error(),
              HasSubstr("over the broker's limit of 1048576"));
}

TEST_F(WorkerSdkTest, ProgressReportedByAHandlerIsVisibleThroughGet) {
  Handler blocking = BlockingHandler("done");
  NewWorker().Handle("long", [blocking](JobContext& ctx) {
    ctx.ReportProgress(40, "halfway");
    return blocking(ctx);
  });
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "long", ""));
  ASSERT_TRUE(AwaitStarted(1));

  // Sent promptly, not at the next heartbeat (the worker's clock stands
  // still, so no heartbeat would ever be due).
  v1::Job running = AwaitJob(
      job.id(), [](const v1::Job& j) { return j.progress().percent() == 40; });
  EXPECT_EQ(running.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(running.progress().percent(), 40u);
  EXPECT_EQ(running.progress().message(), "halfway");

  Release();
  v1::Job done = AwaitState(job.id(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.result(), "done");
}

TEST_F(WorkerSdkTest, CancellingARunningJobStopsItsHandlerWithCancelled) {
  NewWorker().Handle("long", StopWatchingHandler(JobOutcome::Success("late")));
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "long", ""));
  ASSERT_TRUE(AwaitStarted(1));

  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job cancelled,
                             Cancel(job.id(), "no longer needed"));
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
  std::optional<StopReason> reason = AwaitStopSeen();
  ASSERT_TRUE(reason.has_value()) << "the handler was never stopped";
  EXPECT_EQ(*reason, StopReason::kCancelled);

  // The handler's "success" after the cancel changes nothing.
  ASSERT_TRUE(Eventually([&] { return worker().running() == 0; }));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job after, Get(job.id()));
  EXPECT_EQ(after.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(after.result(), IsEmpty());
  EXPECT_EQ(after.last_error(), "no longer needed");
}

TEST_F(WorkerSdkTest, ConcurrencyNeverExceedsTheSlots) {
  WorkerOptions options = Options();
  options.concurrency = 3;
  NewWorker(options).Handle("k", BlockingHandler("ok"));
  StartWorker();
  std::vector<v1::JobSpec> specs(10, Spec("q", "k"));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitBatchResponse batch, SubmitBatch(specs));

  ASSERT_TRUE(AwaitStarted(3));
  // Three run and the rest wait in the queue: the worker granted the
  // broker three credits and will grant another only when a slot frees.
  EXPECT_EQ(worker().running(), 3);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::QueueInfo stats, Stats("q"));
  EXPECT_EQ(stats.running(), 3u);
  EXPECT_EQ(stats.queued(), 7u);
  EXPECT_EQ(started_.load(), 3);

  Release();
  for (const v1::SubmitResponse& submitted : batch.results()) {
    v1::Job done = AwaitState(submitted.job().id(), v1::JOB_STATE_SUCCEEDED);
    EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
    EXPECT_EQ(done.attempt(), 1u);
  }
  EXPECT_EQ(started_.load(), 10);
  EXPECT_EQ(max_running_.load(), 3);
}

TEST_F(WorkerSdkTest, InlineHandlersRunOneAtATimeWithTheCreditsPrefetched) {
  WorkerOptions options = Options();
  options.concurrency = 3;
  options.inline_handlers = true;
  NewWorker(options).Handle("k", BlockingHandler("ok"));
  StartWorker();
  std::vector<v1::JobSpec> specs(10, Spec("q", "k"));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitBatchResponse batch, SubmitBatch(specs));

  // Three credits: three jobs leased to the worker, but the handler runs on
  // the connection's thread, so only one has started.
  ASSERT_TRUE(AwaitStarted(1));
  v1::QueueInfo stats;
  ASSERT_TRUE(Eventually([&] {
    absl::StatusOr<v1::QueueInfo> now = Stats("q");
    if (now.ok()) stats = *now;
    return now.ok() && stats.running() == 3;
  })) << stats.DebugString();
  EXPECT_EQ(stats.queued(), 7u);
  EXPECT_EQ(started_.load(), 1);
  // The other two wait, unread, on the stream.
  EXPECT_EQ(worker().running(), 1);

  Release();
  for (const v1::SubmitResponse& submitted : batch.results()) {
    v1::Job done = AwaitState(submitted.job().id(), v1::JOB_STATE_SUCCEEDED);
    EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
    EXPECT_EQ(done.result(), "ok");
  }
  EXPECT_EQ(started_.load(), 10);
  EXPECT_EQ(max_running_.load(), 1);
}

// ---- leases ----

TEST_F(WorkerSdkTest, LostLeaseStopsTheHandlerWithLeaseLost) {
  NewWorker().Handle("long", StopWatchingHandler(JobOutcome::Success("late")));
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "long", ""));
  ASSERT_TRUE(AwaitStarted(1));

  // The worker's clock stands still, so it sends no heartbeat: the broker
  // expires the lease once its own clock passes the TTL.
  Advance(kDefaultTtl + absl::Seconds(1));
  std::optional<StopReason> reason = AwaitStopSeen();
  ASSERT_TRUE(reason.has_value()) << "the handler was never stopped";
  EXPECT_EQ(*reason, StopReason::kLeaseLost);

  ASSERT_TRUE(Eventually([&] { return worker().running() == 0; }));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job after, Get(job.id()));
  // The expiry counted as a failed attempt; the late "success" did not.
  EXPECT_EQ(after.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(after.attempt(), 1u);
  EXPECT_THAT(after.last_error(), HasSubstr("lease expired"));
  EXPECT_THAT(after.result(), IsEmpty());
}

TEST_F(WorkerSdkTest, HeartbeatsKeepTheLeaseOfALongJobAlive) {
  NewWorker().Handle("long", BlockingHandler("finally"));
  StartWorker();
  v1::JobSpec spec = Spec("q", "long");
  const absl::Duration ttl = absl::Seconds(3);
  *spec.mutable_lease_ttl() = DurationProto(ttl);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse submit, Submit(spec));
  const std::string id = submit.job().id();
  ASSERT_TRUE(AwaitStarted(1));

  // The worker heartbeats a lease every ttl/3 of its own time; each
  // heartbeat moves the deadline to the broker's now + ttl.
  for (int beat = 0; beat < 3; ++beat) {
    clock().Advance(ttl * 2 / 3);
    worker_clock_.Advance(ttl / 3);
    const absl::Time expected = Now() + ttl;
    v1::Job running = AwaitJob(id, [&](const v1::Job& j) {
      return FromProto(j.lease_deadline()) == expected;
    });
    ASSERT_EQ(FromProto(running.lease_deadline()), expected)
        << "heartbeat " << beat << " did not extend the lease";
    Tick();
  }
  // Twice its TTL has passed since the lease began; it lives all the same.
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job running, Get(id));
  EXPECT_EQ(running.state(), v1::JOB_STATE_RUNNING);

  Release();
  v1::Job done = AwaitState(id, v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.result(), "finally");
  EXPECT_EQ(done.attempt(), 1u);
}

TEST_F(WorkerSdkTest, BrokerRestartMidJobEndsWithOneSuccessfulAttempt) {
  Handler blocking = BlockingHandler("survived the restart");
  auto runs = std::make_shared<std::atomic<int>>(0);
  NewWorker().Handle("long", [blocking, runs](JobContext& ctx) {
    ++*runs;
    return blocking(ctx);
  });
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "long", ""));
  ASSERT_TRUE(AwaitStarted(1));

  ASSERT_NO_FATAL_FAILURE(RestartOnTheSamePort());
  // The worker reconnects by itself and re-binds the lease it holds.
  ASSERT_TRUE(Eventually([&] {
    absl::StatusOr<std::vector<v1::WorkerInfo>> workers = ListWorkers();
    return workers.ok() && workers->size() == 1 &&
           (*workers)[0].worker_id() == "sdk-worker" &&
           (*workers)[0].leases() == 1;
  })) << "the worker did not reconnect with its lease";

  Release();
  v1::Job done = AwaitState(job.id(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.result(), "survived the restart");
  EXPECT_EQ(done.attempt(), 1u) << "the restart must not cause a re-run";
  EXPECT_EQ(runs->load(), 1);
}

// ---- failures ----

TEST_F(WorkerSdkTest, NonRetryableFailureEndsTheJobFailed) {
  NewWorker().Handle("k", [](JobContext&) {
    return JobOutcome::Failure("bad input", /*retryable=*/false);
  });
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", ""));
  v1::Job failed = AwaitState(job.id(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed.last_error(), "bad input");
  EXPECT_EQ(failed.attempt(), 1u);
}

TEST_F(WorkerSdkTest, RetryableFailureSchedulesAnotherAttempt) {
  NewWorker().Handle(
      "k", [](JobContext&) { return JobOutcome::Failure("try later"); });
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", ""));
  v1::Job scheduled = AwaitState(job.id(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(scheduled.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(scheduled.last_error(), "try later");
  EXPECT_EQ(scheduled.attempt(), 1u);
}

TEST_F(WorkerSdkTest, ExceptionInAHandlerBecomesAFailure) {
  WorkerOptions options = Options();
  options.concurrency = 2;
  Worker& worker = NewWorker(options);
  worker.Handle("std", [](JobContext&) -> JobOutcome {
    throw std::runtime_error("boom");
  });
  worker.Handle("other", [](JobContext&) -> JobOutcome { throw 42; });
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job std_job, Submit("q", "std", ""));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job other_job, Submit("q", "other", ""));

  v1::Job failed = AwaitState(std_job.id(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(failed.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_THAT(failed.last_error(), HasSubstr("exception"));
  EXPECT_THAT(failed.last_error(), HasSubstr("boom"));
  v1::Job other = AwaitState(other_job.id(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(other.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_THAT(other.last_error(), HasSubstr("exception"));
}

TEST_F(WorkerSdkTest, JobOfAKindWithoutAHandlerFailsNamingTheKind) {
  NewWorker().Handle("known",
                     [](JobContext&) { return JobOutcome::Success(); });
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "mystery-kind", ""));
  v1::Job failed = AwaitState(job.id(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED) << "not retryable";
  EXPECT_EQ(failed.attempt(), 1u);
  EXPECT_THAT(failed.last_error(), HasSubstr("\"mystery-kind\""));
  EXPECT_THAT(failed.last_error(), HasSubstr("no handler"));
}

TEST_F(WorkerSdkTest, DefaultHandlerRunsKindsWithoutAHandlerOfTheirOwn) {
  Worker& worker = NewWorker();
  worker.Handle("known",
                [](JobContext&) { return JobOutcome::Success("known"); });
  worker.HandleDefault([](JobContext& ctx) {
    return JobOutcome::Success("default for " + ctx.kind());
  });
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job known, Submit("q", "known", ""));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job other, Submit("q", "other", ""));
  EXPECT_EQ(AwaitState(known.id(), v1::JOB_STATE_SUCCEEDED).result(), "known");
  EXPECT_EQ(AwaitState(other.id(), v1::JOB_STATE_SUCCEEDED).result(),
            "default for other");
}

TEST_F(WorkerSdkTest, JobTimeoutStopsTheHandlerAndFailsTheAttempt) {
  NewWorker().Handle("slow",
                     StopWatchingHandler(JobOutcome::Failure("interrupted")));
  StartWorker();
  v1::JobSpec spec = Spec("q", "slow");
  *spec.mutable_timeout() = DurationProto(absl::Seconds(5));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::SubmitResponse submit, Submit(spec));
  ASSERT_TRUE(AwaitStarted(1));

  worker_clock_.Advance(absl::Seconds(5));
  std::optional<StopReason> reason = AwaitStopSeen();
  ASSERT_TRUE(reason.has_value()) << "the handler was never stopped";
  EXPECT_EQ(*reason, StopReason::kTimeout);
  v1::Job failed = AwaitState(submit.job().id(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(failed.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_THAT(failed.last_error(), HasSubstr("timed out after 5s"));
  EXPECT_THAT(failed.last_error(), HasSubstr("interrupted"));
}

// ---- stopping ----

TEST_F(WorkerSdkTest, StopWaitsForTheRunningJobAndRunReturnsOk) {
  NewWorker().Handle("k", BlockingHandler("drained"));
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", ""));
  ASSERT_TRUE(AwaitStarted(1));

  worker().Stop();
  // Stop() does not block, and the job goes on running.
  EXPECT_EQ(worker().running(), 1);
  EXPECT_FALSE(RunReturned());

  Release();
  std::optional<absl::Status> status = AwaitRunReturned();
  ASSERT_TRUE(status.has_value()) << "Run() did not return after the drain";
  EXPECT_THAT(*status, IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job done, Get(job.id()));
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED)
      << "the result must be acknowledged before Run() returns";
  EXPECT_EQ(done.result(), "drained");
}

TEST_F(WorkerSdkTest, StoppingWorkerTakesNoNewJobs) {
  WorkerOptions options = Options();
  options.concurrency = 2;
  NewWorker(options).Handle("k", BlockingHandler("ok"));
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job first, Submit("q", "k", ""));
  ASSERT_TRUE(AwaitStarted(1));

  worker().Stop();
  // Stop() withdraws the unused credit (Credit{0, reset}) without waiting;
  // once the broker has it, the worker holds none.
  std::vector<v1::WorkerInfo> workers;
  ASSERT_TRUE(Eventually([&] {
    absl::StatusOr<std::vector<v1::WorkerInfo>> listed = ListWorkers();
    if (listed.ok()) workers = *listed;
    return workers.size() == 1 && workers[0].credits() == 0;
  })) << "the stopping worker still holds credit";
  // A job submitted now must wait for another worker. (The broker leases
  // a job to a waiting worker in the transaction that stores it, so the
  // Submit answer already tells.)
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job second, Submit("q", "k", ""));
  EXPECT_EQ(second.state(), v1::JOB_STATE_QUEUED)
      << "a stopping worker was given a new job";

  Release();
  std::optional<absl::Status> status = AwaitRunReturned();
  ASSERT_TRUE(status.has_value()) << "Run() did not return after the drain";
  EXPECT_THAT(*status, IsOk());
  EXPECT_EQ(AwaitState(first.id(), v1::JOB_STATE_SUCCEEDED).state(),
            v1::JOB_STATE_SUCCEEDED);
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job still, Get(second.id()));
  EXPECT_EQ(still.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(started_.load(), 1);
}

TEST_F(WorkerSdkTest, DrainTimeoutStopsAHandlerAndReportsARetryableFailure) {
  WorkerOptions options = Options();
  options.drain_timeout = absl::Seconds(2);
  NewWorker(options).Handle(
      "stubborn", StopWatchingHandler(JobOutcome::Failure("gave up")));
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "stubborn", ""));
  ASSERT_TRUE(AwaitStarted(1));

  worker().Stop();
  worker_clock_.Advance(options.drain_timeout);
  std::optional<StopReason> reason = AwaitStopSeen();
  ASSERT_TRUE(reason.has_value()) << "the handler was never stopped";
  EXPECT_EQ(*reason, StopReason::kShutdown);

  std::optional<absl::Status> status = AwaitRunReturned();
  ASSERT_TRUE(status.has_value()) << "Run() did not return";
  EXPECT_THAT(*status, IsOk());
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job after, Get(job.id()));
  EXPECT_EQ(after.state(), v1::JOB_STATE_SCHEDULED) << "failed, retryable";
  EXPECT_EQ(after.attempt(), 1u);
  EXPECT_THAT(after.last_error(), HasSubstr("drain timeout"));
}

TEST_F(WorkerSdkTest, HandlerSlowToStopIsStillReportedWithinStopGrace) {
  WorkerOptions options = Options();
  options.drain_timeout = absl::Seconds(2);
  options.stop_grace = absl::Seconds(15);  // a command's kill grace, say
  NewWorker(options).Handle("stubborn", [this](JobContext& ctx) {
    ++started_;
    ctx.WaitForStop(absl::Seconds(30));
    if (!saw_stop_.HasBeenNotified()) saw_stop_.Notify();
    // Takes its time to give up, as a command waiting for its SIGKILL.
    release_.WaitForNotificationWithTimeout(absl::Seconds(30));
    return JobOutcome::Failure("gave up");
  });
  StartWorker();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "stubborn", ""));
  ASSERT_TRUE(AwaitStarted(1));

  worker().Stop();
  worker_clock_.Advance(options.drain_timeout);
  ASSERT_TRUE(AwaitStopSeen().has_value()) << "the handler was never stopped";
  // Past the old fixed 5 s, within the 15 s grace: the worker must not
  // close. The heartbeat its loop sends after this (the lease's deadline
  // moves with the broker's clock) shows the loop has looked at the time.
  Advance(absl::Seconds(1));
  const absl::Time beat_deadline = Now() + kDefaultTtl;
  worker_clock_.Advance(absl::Seconds(10));
  AwaitJob(job.id(), [&](const v1::Job& j) {
    return FromProto(j.lease_deadline()) == beat_deadline;
  });
  Release();

  v1::Job after = AwaitState(job.id(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(after.attempt(), 1u);
  EXPECT_THAT(after.last_error(), HasSubstr("drain timeout"));
  std::optional<absl::Status> status = AwaitRunReturned();
  ASSERT_TRUE(status.has_value()) << "Run() did not return";
  EXPECT_THAT(*status, IsOk());
}

// ---- configuration ----

TEST_F(WorkerSdkTest, WorkerWithoutQueuesOrSlotsIsInvalid) {
  WorkerOptions no_queues = Options();
  no_queues.queues.clear();
  EXPECT_THAT(Worker(no_queues).Run(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("at least one queue")));
  WorkerOptions no_slots = Options();
  no_slots.concurrency = 0;
  EXPECT_THAT(
      Worker(no_slots).Run(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("concurrency")));
}

TEST_F(WorkerSdkTest, HelloTheBrokerRefusesEndsRunWithInvalidArgument) {
  WorkerOptions options = Options();
  options.queues = {"not a queue name!"};
  NewWorker(options);
  StartWorker();
  std::optional<absl::Status> status = AwaitRunReturned();
  ASSERT_TRUE(status.has_value()) << "Run() kept retrying a refused Hello";
  EXPECT_THAT(*status,
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("queue")));
}

}  // namespace
}  // namespace testing
}  // namespace ferry
