// Disk faults at random points of a store workload (tests/faulty_vfs.h):
// before each change, with a seeded chance, every fsync fails (EIO) or
// every write fails as on a full disk, for that change only. A change that
// was acknowledged must be there after a reopen, exactly; a change that
// failed must have left nothing; and the store must take the next change
// once the disk is healthy again.

#include <cstdio>
#include <map>
#include <random>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/sqlite/sqlite_store.h"
#include "tests/faulty_vfs.h"
#include "tests/status_matchers.h"
#include "tests/store_test_util.h"
#include "tests/temp_dir.h"

namespace ferry::testing {
namespace {

enum class Fault { kNone, kSync, kFull };

void Inject(Fault fault) {
  FaultyVfs::FailSyncs(fault == Fault::kSync);
  FaultyVfs::FailWritesFull(fault == Fault::kFull);
}

TEST(FaultDrillTest, FailedCommitsLeaveNothingAndAcknowledgedOnesStay) {
  ASSERT_TRUE(FaultyVfs::Install());
  absl::Cleanup healthy = [] { Inject(Fault::kNone); };
  ScopedTempDir dir;
  SqliteOptions options;
  options.path = dir.path() + "/ferry.db";
  const absl::Time now = absl::FromUnixSeconds(1700000000);
  std::mt19937 random(20261203);
  std::uniform_int_distribution<int> percent(0, 99);

  // What each job must be after the reopen, from acknowledged changes only.
  struct Expected {
    JobState state;
    std::string token;
  };
  std::map<int64_t, Expected> expected;
  int64_t changes = 0, injected = 0, failed = 0, acknowledged = 0;
  int64_t failed_creates = 0;
  {
    FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteStore> store,
                               OpenSqliteStore(options));
    for (int step = 0; step < 3000; ++step) {
      ++changes;
      const int roll = percent(random);
      const Fault fault = roll < 10   ? Fault::kSync
                          : roll < 20 ? Fault::kFull
                                      : Fault::kNone;
      injected += fault != Fault::kNone;
      // The next change: finish a running job, lease a queued one, or
      // create one.
      int64_t running = 0, queued = 0;
      for (const auto& [id, job] : expected) {
        if (job.state == JobState::kRunning && running == 0) running = id;
        if (job.state == JobState::kQueued && queued == 0) queued = id;
      }
      Inject(fault);
      absl::Status status;
      if (running != 0 && step % 3 == 2) {
        status = Finish(*store, running, expected[running].token,
                        Succeeded(now, "r"))
                     .status();
        if (status.ok()) expected[running] = {JobState::kSucceeded, ""};
      } else if (queued != 0 && step % 3 == 1) {
        const std::string token = absl::StrCat("t", step);
        status = Lease(*store, queued, token, "w", now).status();
        if (status.ok()) expected[queued] = {JobState::kRunning, token};
      } else {
        absl::StatusOr<CreateResult> created =
            Create(*store, MakeJob("q", now));
        status = created.status();
        if (status.ok()) {
          expected[created->job.id] = {JobState::kQueued, ""};
        } else {
          ++failed_creates;
        }
      }
      Inject(Fault::kNone);
      if (status.ok()) {
        ++acknowledged;
        EXPECT_EQ(fault, Fault::kNone) << "an OK despite a disk fault";
      } else {
        ++failed;
        EXPECT_NE(fault, Fault::kNone) << status;
      }
    }
  }

  // Reopened with a healthy disk: exactly the acknowledged changes.
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteStore> store,
                             OpenSqliteStore(options));
  ListFilter all;
  all.limit = 100000;
  FERRY_ASSERT_OK_AND_ASSIGN(std::vector<JobRecord> jobs, store->ListJobs(all));
  EXPECT_EQ(jobs.size(), expected.size())
      << "a failed create left a job, or an acknowledged one is missing";
  for (const JobRecord& job : jobs) {
    auto it = expected.find(job.id);
    ASSERT_NE(it, expected.end()) << "job " << job.id << " was never acked";
    EXPECT_EQ(job.state, it->second.state) << "job " << job.id;
    if (job.state == JobState::kRunning) {
      EXPECT_EQ(job.lease_token, it->second.token) << "job " << job.id;
    }
  }
  const std::string figures =
      absl::StrCat("changes=", changes, " faults_injected=", injected,
                   " failed=", failed, " acknowledged=", acknowledged,
                   " failed_creates=", failed_creates, " jobs=", jobs.size());
  std::printf("fault drill: %s\n", figures.c_str());
  RecordProperty("figures", figures);
  EXPECT_GT(injected, 300);
}

}  // namespace
}  // namespace ferry::testing
