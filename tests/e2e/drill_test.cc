// Reliability drills with the real ferryd: killed with SIGKILL again and
// again under load, restarted on the same database each time, with every
// client-visible event recorded and held against the final database by
// the history checker (tests/tools/history.h).
//
// FERRY_DRILL_KILLS sets the number of kills (default 20; the long drill
// in docs/reliability.md runs 100).

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "ferry/v1/jobs.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "storage/sqlite/sqlite_store.h"
#include "tests/e2e/recording_workers.h"
#include "tests/e2e/subprocess.h"
#include "tests/poll.h"
#include "tests/status_matchers.h"
#include "tests/store_test_util.h"
#include "tests/temp_dir.h"
#include "tests/tools/history.h"

namespace ferry::testing {
namespace {

int KillsToRun() {
  int kills = 20;
  if (const char* env = std::getenv("FERRY_DRILL_KILLS")) {
    if (!absl::SimpleAtoi(env, &kills) || kills < 1) kills = 20;
  }
  return kills;
}

TEST(DrillTest, KilledAgainAndAgainUnderLoadLosesNothingAndFencesEveryResult) {
  const int kills = KillsToRun();
  constexpr int kWorkers = 2;
  constexpr int kConcurrency = 8;
  ScopedTempDir dir;
  const std::string db = dir.path() + "/data/ferry.db";
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Ferryd> ferryd,
                             Ferryd::Start(FERRYD_PATH, db));
  const std::string address = ferryd->address();
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<history::Recorder> recorder,
      history::Recorder::Open(dir.path() + "/history", "drill"));

  absl::Mutex mu;
  int64_t acked = 0;  // results acknowledged, all workers
  RecordingWorkers workers(recorder.get(), address, "drill", "drill", kWorkers,
                           kConcurrency, [&](const v1::ResultAck&) {
                             absl::MutexLock lock(&mu);
                             ++acked;
                           });

  // Producers submit until told to stop, each call waiting (bounded) for
  // a broker to come back; every tenth job carries an idempotency key that
  // is sent twice.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> submits_acked{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < 2; ++p) {
    producers.emplace_back([&, p] {
      auto jobs = v1::Jobs::NewStub(
          grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
      for (int i = 0; i < 100000 && !stop.load(); ++i) {
        const std::string ref = absl::StrCat("p", p, "-", i);
        v1::SubmitRequest request;
        request.mutable_job()->set_queue("drill");
        request.mutable_job()->set_kind("k");
        const std::string key =
            i % 10 == 0 ? absl::StrCat("key-", p, "-", i / 10) : "";
        request.mutable_job()->set_idempotency_key(key);
        for (int send = 0; send < (key.empty() ? 1 : 2); ++send) {
          grpc::ClientContext ctx;
          ctx.set_wait_for_ready(true);
          ctx.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(10));
          v1::SubmitResponse response;
          recorder->SubmitSent(ref, "drill", key);
          grpc::Status status = jobs->Submit(&ctx, request, &response);
          if (!status.ok()) {
            recorder->SubmitFailed(ref, status.error_message());
            continue;
          }
          recorder->SubmitOk(ref, history::IdOf(response.job().id()));
          ++submits_acked;
        }
      }
    });
  }

  // Kill at a moment that moves on with the load: after each restart, wait
  // for some more results, then kill again.
  int64_t next = 0;
  for (int kill = 0; kill < kills && !HasFailure(); ++kill) {
    next += 25 + (kill * 7) % 40;  // 25..64 more results per round
    {
      absl::MutexLock lock(&mu);
      auto enough = [&] { return acked >= next; };
      ASSERT_TRUE(
          mu.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(60)))
          << "no progress after kill " << kill << ": " << acked << " acked";
    }
    ferryd->process().Signal(SIGKILL);
    ASSERT_THAT(ferryd->process().Wait(absl::Seconds(30)),
                IsOkAndHolds(128 + SIGKILL));
    FERRY_ASSERT_OK_AND_ASSIGN(
        ferryd, Ferryd::Start(FERRYD_PATH, db, {"--listen=" + address}));
  }
  stop = true;
  for (std::thread& t : producers) t.join();
  workers.Stop();
  ferryd->process().Signal(SIGTERM);
  ASSERT_THAT(ferryd->process().Wait(absl::Seconds(30)), IsOkAndHolds(0));

  recorder.reset();
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<history::Event> events,
                             history::ReadHistory({dir.path() + "/history"}));
  SqliteOptions sqlite;
  sqlite.path = db;
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteStore> store,
                             OpenSqliteStore(sqlite));
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<history::FinalJob> jobs,
                             history::ReadFinalJobs(*store));
  const history::Report report = history::Check(events, jobs);
  const std::string summary =
      absl::StrCat("kills=", kills, " ", history::FormatReport(report));
  std::printf("drill: %s", summary.c_str());
  RecordProperty("drill", summary);
  EXPECT_THAT(report.violations, ::testing::IsEmpty()) << summary;
  EXPECT_EQ(report.submits_acked, submits_acked.load());
  EXPECT_GT(report.results_accepted, 25 * kills) << summary;
  // A job runs again only if its lease was live at a kill and did not
  // survive it: at most every slot of every worker, per kill.
  EXPECT_LE(report.jobs_run_more_than_once,
            static_cast<int64_t>(kills) * kWorkers * kConcurrency)
      << summary;
}

// Gets job `id` from `ferryd`; an empty Job if the call fails.
v1::Job GetJob(Ferryd& ferryd, const std::string& id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GetRequest request;
  request.set_job_id(id);
  v1::GetResponse response;
  if (!ferryd.jobs().Get(&ctx, request, &response).ok()) return v1::Job();
  return response.job();
}

TEST(DrillTest, AWorkerStoppedPastItsLeaseCannotStoreItsResult) {
  // The zombie: a real ferry-worker is stopped (SIGSTOP) while its job
  // runs, its lease runs out, another worker runs the job to the end, and
  // then the first one is continued with its old result in hand. Ferry
  // must keep the second worker's result.
  ScopedTempDir dir;
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Ferryd> ferryd,
      Ferryd::Start(FERRYD_PATH, dir.path() + "/data/ferry.db"));
  const std::string flag = dir.path() + "/go";
  // The first worker's handler waits (bounded) for the test's go-ahead,
  // then answers "w1".
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> zombie,
      Subprocess::Start({FERRY_WORKER_PATH, "--broker=" + ferryd->address(),
                         "--queues=z", "--worker_id=w1", "--", "/bin/sh", "-c",
                         "for i in $(seq 600); do [ -e " + flag +
                             " ] && break; sleep 0.05; done; echo w1"}));
  ASSERT_THAT(zombie->WaitForLine("connected broker=", absl::Seconds(30)),
              IsOk());

  v1::SubmitRequest submit;
  submit.mutable_job()->set_queue("z");
  submit.mutable_job()->set_kind("k");
  submit.mutable_job()->mutable_lease_ttl()->set_seconds(2);
  submit.mutable_job()->mutable_retry()->mutable_initial_backoff()->set_nanos(
      100000000);
  v1::SubmitResponse submitted;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(10));
    ASSERT_TRUE(ferryd->jobs().Submit(&ctx, submit, &submitted).ok());
  }
  const std::string id = submitted.job().id();
  ASSERT_TRUE(PollUntil(
      [&] {
        v1::Job job = GetJob(*ferryd, id);
        return job.state() == v1::JOB_STATE_RUNNING && job.worker_id() == "w1";
      },
      absl::Seconds(30), absl::Milliseconds(20)));

  zombie->Signal(SIGSTOP);
  // Its handler may finish now; the stopped worker can neither send the
  // result nor heartbeat the lease.
  std::fclose(std::fopen(flag.c_str(), "w"));
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> healthy,
      Subprocess::Start({FERRY_WORKER_PATH, "--broker=" + ferryd->address(),
                         "--queues=z", "--worker_id=w2", "--", "/bin/echo",
                         "w2"}));
  v1::Job done;
  ASSERT_TRUE(PollUntil(
      [&] {
        done = GetJob(*ferryd, id);
        return done.state() == v1::JOB_STATE_SUCCEEDED;
      },
      absl::Seconds(60), absl::Milliseconds(20)))
      << "the job was not run again after its lease ran out: "
      << done.ShortDebugString();
  EXPECT_EQ(done.attempt(), 2u);
  EXPECT_EQ(done.result(), "w2\n");

  // Continued, the first worker learns its lease is gone (LeaseLost) or
  // sends its result and has it refused; either way nothing changes.
  zombie->Signal(SIGCONT);
  const std::string lost = absl::StrCat("lease lost job_id=", id);
  const std::string refused =
      absl::StrCat("result refused by the broker job_id=", id);
  EXPECT_TRUE(PollUntil(
      [&] {
        const std::string out = zombie->Output();
        return out.find(lost) != std::string::npos ||
               out.find(refused) != std::string::npos;
      },
      absl::Seconds(30), absl::Milliseconds(20)))
      << zombie->Output();
  RecordProperty("zombie", zombie->Output().find(refused) != std::string::npos
                               ? "result sent and refused"
                               : "told its lease was lost; sent nothing");
  const v1::Job after = GetJob(*ferryd, id);
  EXPECT_EQ(after.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(after.result(), "w2\n") << "the zombie's result was stored";
  EXPECT_EQ(after.attempt(), 2u);
}

}  // namespace
}  // namespace ferry::testing
