// Simulated power loss (tests/power_loss_vfs.h): a store workload runs once
// with every write, truncate, fsync and delete logged; then, for every
// point of that log, the disk as power loss would leave it (only what was
// fsynced; in the torn mode also part of the last write) is written out
// and opened with the real VFS. The database must open and pass its
// integrity check, and with --sync=full every change acknowledged before
// that point must be there. With --sync=normal the test measures what is
// lost instead (docs/reliability.md).

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/sqlite/sqlite_store.h"
#include "tests/power_loss_vfs.h"
#include "tests/status_matchers.h"
#include "tests/store_test_util.h"
#include "tests/temp_dir.h"

namespace ferry::testing {
namespace {

// Jobs created, leased and finished: about 1,000 logged operations, each
// a crash point.
constexpr int kJobs = 45;

// A change the store acknowledged, and the log length when it did.
struct Ack {
  int64_t ops;
  int64_t job_id;
  JobState at_least;
};

int Rank(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return 0;
    case JobState::kRunning:
      return 1;
    case JobState::kSucceeded:
      return 2;
    default:
      return -1;
  }
}

struct Figures {
  int64_t points = 0;
  int64_t acked_checked = 0;  // (point, acknowledged change) pairs
  int64_t acked_lost = 0;
  int64_t worst_point_lost = 0;  // most acknowledged changes lost at one point
  std::vector<std::string> failures;  // opens or checks that failed
};

class PowerLossTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(RecordingVfs::Install()); }

  // Creates, leases and finishes `jobs` jobs one change at a time.
  void RunWorkload(SqliteOptions::Sync sync, int jobs) {
    SqliteOptions options;
    options.path = dir_.path() + "/run/ferry.db";
    options.sync = sync;
    std::filesystem::create_directories(dir_.path() + "/run");
    RecordingVfs::Start();
    {
      FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteStore> store,
                                 OpenSqliteStore(options));
      const absl::Time now = absl::FromUnixSeconds(1700000000);
      for (int i = 0; i < jobs; ++i) {
        FERRY_ASSERT_OK_AND_ASSIGN(CreateResult created,
                                   Create(*store, MakeJob("q", now)));
        const int64_t id = created.job.id;
        acks_.push_back({RecordingVfs::Ops(), id, JobState::kQueued});
        const std::string token = absl::StrCat("t", id);
        ASSERT_THAT(Lease(*store, id, token, "w", now), IsOk());
        acks_.push_back({RecordingVfs::Ops(), id, JobState::kRunning});
        ASSERT_THAT(Finish(*store, id, token, Succeeded(now, "r")), IsOk());
        acks_.push_back({RecordingVfs::Ops(), id, JobState::kSucceeded});
      }
    }
    RecordingVfs::Stop();
  }

  // Power fails before each logged operation in turn.
  Figures CrashEverywhere(bool torn) {
    Figures figures;
    const int64_t total = RecordingVfs::Ops();
    const std::string run = dir_.path() + "/run/";
    for (int64_t k = 0; k <= total; ++k) {
      ++figures.points;
      const std::string disk = absl::StrCat(dir_.path(), "/crash-", k);
      std::filesystem::create_directories(disk);
      for (const auto& [path, content] : RecordingVfs::DiskAt(k, torn)) {
        if (path.rfind(run, 0) != 0) continue;
        const std::string name = path.substr(run.size());
        if (name.size() > 4 && name.substr(name.size() - 4) == "-shm") continue;
        WriteFile(disk + "/" + name, content);
      }
      int64_t lost_here = 0;
      {
        SqliteOptions options;
        options.path = disk + "/ferry.db";
        absl::StatusOr<std::unique_ptr<SqliteStore>> store =
            OpenSqliteStore(options);  // runs the integrity check
        if (!store.ok()) {
          figures.failures.push_back(
              absl::StrCat("point ", k, ": ", store.status().ToString()));
          std::filesystem::remove_all(disk);
          continue;
        }
        ListFilter all;
        all.limit = 1000;
        absl::StatusOr<std::vector<JobRecord>> jobs = (*store)->ListJobs(all);
        if (!jobs.ok()) {
          figures.failures.push_back(
              absl::StrCat("point ", k, ": ", jobs.status().ToString()));
          continue;
        }
        std::map<int64_t, JobState> state;
        for (const JobRecord& job : *jobs) state[job.id] = job.state;
        for (const Ack& ack : acks_) {
          if (ack.ops > k) break;
          ++figures.acked_checked;
          auto it = state.find(ack.job_id);
          if (it == state.end() || Rank(it->second) < Rank(ack.at_least)) {
            ++lost_here;
          }
        }
      }
      figures.acked_lost += lost_here;
      figures.worst_point_lost = std::max(figures.worst_point_lost, lost_here);
      std::filesystem::remove_all(disk);
    }
    return figures;
  }

  void Report(const std::string& name, const Figures& f) {
    const std::string line = absl::StrCat(
        name, ": crash_points=", f.points, " log_ops=", RecordingVfs::Ops(),
        " acked_changes=", acks_.size(), " acked_checks=", f.acked_checked,
        " acked_lost=", f.acked_lost, " worst_point_lost=", f.worst_point_lost,
        " failed_opens=", f.failures.size());
    std::printf("%s\n", line.c_str());
    RecordProperty(name, line);
  }

  ScopedTempDir dir_;
  std::vector<Ack> acks_;
};

TEST_F(PowerLossTest, FullSyncLosesNoAcknowledgedChangeAtAnyPoint) {
  RunWorkload(SqliteOptions::Sync::kFull, kJobs);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_GE(RecordingVfs::Ops(), 1000) << "too few crash points";
  for (bool torn : {false, true}) {
    const Figures f = CrashEverywhere(torn);
    Report(torn ? "full_torn" : "full", f);
    EXPECT_THAT(f.failures, ::testing::IsEmpty());
    EXPECT_EQ(f.acked_lost, 0);
    EXPECT_GT(f.acked_checked, 0);
  }
}

TEST_F(PowerLossTest, NormalSyncAlwaysOpensAndSaysWhatItLoses) {
  // synchronous=NORMAL in WAL mode fsyncs only at checkpoints: a power
  // loss may take the commits since the last one. The figures say how
  // many; the database must still open and pass its check.
  RunWorkload(SqliteOptions::Sync::kNormal, kJobs);
  ASSERT_FALSE(HasFatalFailure());
  const Figures f = CrashEverywhere(/*torn=*/false);
  Report("normal", f);
  EXPECT_THAT(f.failures, ::testing::IsEmpty());
}

}  // namespace
}  // namespace ferry::testing
