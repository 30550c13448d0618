// SqliteStore beyond the Store contract: opening, locking, refusing files it
// must not serve, and its SQLite settings. The contract itself is in
// store_contract_test.cc.

#include "storage/sqlite/sqlite_store.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/store.h"
#include "tests/fake_clock.h"
#include "tests/faulty_vfs.h"
#include "tests/status_matchers.h"
#include "tests/store_test_util.h"

namespace ferry::testing {
namespace {

using ::testing::AllOf;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// Runs `sql` on `path` through a plain SQLite connection, as another program
// would; returns the first column of the last row, if any.
absl::StatusOr<std::string> RawSql(const std::string& path,
                                   const std::string& sql) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  std::string last;
  char* error = nullptr;
  if (rc == SQLITE_OK) {
    rc = sqlite3_exec(
        db, sql.c_str(),
        [](void* out, int columns, char** values, char**) {
          if (columns > 0 && values[0] != nullptr) {
            *static_cast<std::string*>(out) = values[0];
          }
          return 0;
        },
        &last, &error);
  }
  absl::Status status;
  if (rc != SQLITE_OK) {
    status = absl::InternalError(
        absl::StrCat("sqlite (", rc, ") on ", path, ": ",
                     error != nullptr ? error : sqlite3_errmsg(db)));
  }
  sqlite3_free(error);
  sqlite3_close_v2(db);
  if (!status.ok()) return status;
  return last;
}

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()); }

  absl::StatusOr<std::unique_ptr<Store>> Open(
      SqliteOptions::Sync sync = SqliteOptions::Sync::kFull) {
    SqliteOptions options;
    options.path = path_;
    options.sync = sync;
    return OpenSqliteStore(options);
  }

  absl::StatusOr<std::unique_ptr<SqliteStore>> OpenWithCache(
      int64_t cache_kib) {
    SqliteOptions options;
    options.path = path_;
    options.cache_kib = cache_kib;
    return OpenSqliteStore(options);
  }

  // Creates a Ferry database with one job in it, and closes it.
  void MakeFerryDatabase() {
    FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open());
    ASSERT_THAT(Create(*store, MakeJob("q", clock_.Now())), IsOk());
  }

  void MakeDamagedFerryDatabase() {
    ASSERT_NO_FATAL_FAILURE(MakeFerryDatabase());
    ASSERT_NO_FATAL_FAILURE(DamageJobsTable(path_));
  }

  ScopedTempDir dir_;
  const std::string path_ = dir_.path() + "/ferry.db";
  FakeClock clock_;
};

TEST_F(SqliteStoreTest, OnCommitHearsEveryCommittedWriteOnce) {
  absl::Mutex mu;
  int writes = 0;
  int groups = 0;
  SqliteOptions options;
  options.path = path_;
  options.clock = &clock_;
  options.on_commit = [&](int n, absl::Duration took) {
    absl::MutexLock lock(&mu);
    writes += n;
    ++groups;
    EXPECT_EQ(took, absl::ZeroDuration()) << "the fake clock stood still";
  };
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store,
                             OpenSqliteStore(options));
  const int64_t before = store->CommitCount();
  for (int i = 0; i < 5; ++i) {
    ASSERT_THAT(Create(*store, MakeJob("q", clock_.Now())), IsOk());
  }
  store->Flush();
  absl::MutexLock lock(&mu);
  // Flush commits an empty write of its own; opening may commit too.
  EXPECT_EQ(groups, store->CommitCount());
  EXPECT_GE(writes, 5);
  EXPECT_EQ(store->CommitCount() - before, 6) << "five creates, one flush";
}

TEST_F(SqliteStoreTest, SecondOpenOfTheSameFileIsRefusedWhileTheFirstIsOpen) {
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> first, Open());
  EXPECT_THAT(Open(), StatusIs(absl::StatusCode::kFailedPrecondition,
                               AllOf(HasSubstr("in use"), HasSubstr(path_))));
  // The first store is unharmed, and its lock goes with it.
  EXPECT_THAT(Create(*first, MakeJob("q", clock_.Now())), IsOk());
  first.reset();
  EXPECT_THAT(Open(), IsOk());
}

TEST_F(SqliteStoreTest, LockFileLeftByADeadProcessDoesNotBlockOpening) {
  WriteFile(path_ + ".lock", "12345\n");
  EXPECT_THAT(Open(), IsOk());
}

TEST_F(SqliteStoreTest, EmptyFileBecomesANewDatabase) {
  WriteFile(path_, "");
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open());
  EXPECT_THAT(Create(*store, MakeJob("q", clock_.Now())), IsOk());
}

TEST_F(SqliteStoreTest, FileOfGarbageIsDataLossNamingThePath) {
  std::string garbage = "this is not a database, it is a shopping list\n";
  for (int i = 0; garbage.size() < 16384; ++i) {
    garbage.push_back(static_cast<char>((i * 7919 + 13) & 0xff));
  }
  WriteFile(path_, garbage);

  EXPECT_THAT(Open(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path_)));
  EXPECT_EQ(ReadFile(path_), garbage) << "the file was modified";
  // Refusing released the lock: the answer is the same the second time.
  EXPECT_THAT(Open(), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(SqliteStoreTest, DatabaseWithSomeoneElsesTablesIsDataLoss) {
  ASSERT_THAT(RawSql(path_,
                     "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total);"
                     "INSERT INTO invoices (total) VALUES (42);"),
              IsOk());

  EXPECT_THAT(Open(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path_)));
  EXPECT_THAT(RawSql(path_, "SELECT total FROM invoices"),
              IsOkAndHolds(std::string("42")));
  EXPECT_THAT(
      RawSql(path_, "SELECT count(*) FROM sqlite_master WHERE name = 'jobs'"),
      IsOkAndHolds(std::string("0")));
}

TEST_F(SqliteStoreTest, DatabaseOfAnotherApplicationIsDataLoss) {
  ASSERT_THAT(RawSql(path_, "PRAGMA application_id = 1234;"), IsOk());
  EXPECT_THAT(Open(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path_)));
}

TEST_F(SqliteStoreTest, DamagedFerryDatabaseIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(MakeDamagedFerryDatabase());

  // The check runs beside the start-up load (the schema is current); its
  // verdict comes before anything is served.
  absl::StatusOr<std::unique_ptr<Store>> store = Open();
  ASSERT_THAT(store, IsOk());
  EXPECT_THAT((*store)->AwaitStartupCheck(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path_)));
}

TEST_F(SqliteStoreTest, DamagedDatabaseIsNotCheckedWhenTheCheckIsOff) {
  ASSERT_NO_FATAL_FAILURE(MakeDamagedFerryDatabase());

  SqliteOptions options;
  options.path = path_;
  options.check_integrity = false;
  absl::StatusOr<std::unique_ptr<Store>> store = OpenSqliteStore(options);
  ASSERT_THAT(store, IsOk());
  EXPECT_THAT((*store)->AwaitStartupCheck(), IsOk());
}

TEST_F(SqliteStoreTest, SchemaNewerThanThisBinaryIsFailedPrecondition) {
  ASSERT_NO_FATAL_FAILURE(MakeFerryDatabase());
  ASSERT_THAT(RawSql(path_, "PRAGMA user_version = 99;"), IsOk());

  EXPECT_THAT(Open(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(path_), HasSubstr("version 99"))));
  // Refusing released the lock: not "in use" the second time.
  EXPECT_THAT(Open(), StatusIs(absl::StatusCode::kFailedPrecondition,
                               HasSubstr("version 99")));
  EXPECT_THAT(RawSql(path_, "PRAGMA user_version"),
              IsOkAndHolds(std::string("99")));
}

// The file's permission bits; -1 if it does not exist.
int ModeOf(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 07777)
                                      : -1;
}

TEST_F(SqliteStoreTest, ANewDatabaseAndItsFilesAreReadableByTheOwnerOnly) {
  const mode_t old_umask = umask(022);  // what a shell usually has
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open());
  umask(old_umask);
  ASSERT_THAT(Create(*store, MakeJob("q", clock_.Now())), IsOk());
  for (const std::string& file :
       {path_, path_ + "-wal", path_ + "-shm", path_ + ".lock"}) {
    EXPECT_EQ(ModeOf(file), 0600) << file;
  }
}

TEST_F(SqliteStoreTest, ALockFileThatIsASymlinkIsRefused) {
  const std::string elsewhere = dir_.path() + "/elsewhere";
  ASSERT_EQ(symlink(elsewhere.c_str(), (path_ + ".lock").c_str()), 0);
  EXPECT_THAT(Open(), StatusIs(absl::StatusCode::kUnavailable,
                               HasSubstr("cannot create lock file")));
  EXPECT_EQ(ModeOf(elsewhere), -1) << "nothing was created through the link";
}

TEST_F(SqliteStoreTest, AVersionOneDatabaseGetsQueueScopedIdempotencyKeys) {
  {
    FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open());
    JobRecord job = MakeJob("billing", clock_.Now());
    job.idempotency_key = "order-42";
    ASSERT_THAT(Create(*store, job), IsOk());
  }
  {
    // Back to migration 1's index and version, as a file of that release.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db,
                           "DROP INDEX jobs_by_queue_idempotency_key;"
                           "CREATE UNIQUE INDEX jobs_by_idempotency_key ON "
                           "jobs(idempotency_key) WHERE idempotency_key IS "
                           "NOT NULL; PRAGMA user_version = 1;",
                           nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open());
  JobRecord again = MakeJob("billing", clock_.Now());
  again.idempotency_key = "order-42";
  EXPECT_THAT(Create(*store, again),
              IsOkAndHolds(Field(&CreateResult::created, false)))
      << "the old row still answers for its key";
  JobRecord other = MakeJob("emails", clock_.Now());
  other.idempotency_key = "order-42";
  EXPECT_THAT(Create(*store, other),
              IsOkAndHolds(Field(&CreateResult::created, true)));
}

TEST_F(SqliteStoreTest, MissingDirectoryIsUnavailable) {
  SqliteOptions options;
  options.path = dir_.path() + "/no/such/dir/ferry.db";
  EXPECT_THAT(OpenSqliteStore(options),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr(dir_.path() + "/no/such/dir/ferry.db")));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/no"));
}

TEST_F(SqliteStoreTest, ReadOnlyFileIsUnavailable) {
  ASSERT_NO_FATAL_FAILURE(MakeFerryDatabase());
  ASSERT_EQ(chmod(path_.c_str(), 0444), 0);
  if (geteuid() == 0 || access(path_.c_str(), W_OK) == 0) {
    GTEST_SKIP() << "running as root (or with CAP_DAC_OVERRIDE): file "
                    "permissions are not enforced, so a 0444 file is still "
                    "writable";
  }
  EXPECT_THAT(Open(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(path_)));
}

TEST_F(SqliteStoreTest, WalModeIsInEffect) {
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open());
  ASSERT_THAT(Create(*store, MakeJob("q", clock_.Now())), IsOk());

  // Committed pages sit in the write-ahead log until a checkpoint.
  EXPECT_TRUE(std::filesystem::exists(path_ + "-wal"));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
            SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW) << sqlite3_errmsg(db);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)),
               "wal");
  sqlite3_finalize(stmt);
  sqlite3_close_v2(db);
}

// synchronous is a per-connection setting that no other connection can
// observe; what we can check is that the store works, durably, in both modes.
TEST_F(SqliteStoreTest, StoreWorksWithEitherSyncMode) {
  for (SqliteOptions::Sync sync :
       {SqliteOptions::Sync::kFull, SqliteOptions::Sync::kNormal}) {
    SCOPED_TRACE(sync == SqliteOptions::Sync::kFull ? "FULL" : "NORMAL");
    int64_t id = 0;
    {
      FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open(sync));
      FERRY_ASSERT_OK_AND_ASSIGN(CreateResult created,
                                 Create(*store, MakeJob("q", clock_.Now())));
      id = created.job.id;
      ASSERT_THAT(Lease(*store, id, "tok", "w1", clock_.Now()), IsOk());
      ASSERT_THAT(Finish(*store, id, "tok", Succeeded(clock_.Now(), "result")),
                  IsOk());
    }
    FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> reopened, Open(sync));
    FERRY_ASSERT_OK_AND_ASSIGN(JobRecord job,
                               reopened->GetJob(id, /*with_payload=*/true));
    EXPECT_EQ(job.state, JobState::kSucceeded);
    EXPECT_EQ(job.result, "result");
  }
}

TEST_F(SqliteStoreTest, DestroyingTheStoreCompletesPendingWrites) {
  constexpr int kWrites = 200;
  struct Completions {
    std::atomic<int> ok{0};
    std::atomic<int> failed{0};
  };
  auto completions = std::make_shared<Completions>();
  {
    FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open());
    for (int i = 0; i < kWrites; ++i) {
      store->CreateJobs(
          {MakeJob("q", clock_.Now())}, [completions](auto result) {
            (result.ok() ? completions->ok : completions->failed).fetch_add(1);
          });
    }
    // No Flush, no waiting: the destructor must finish the work.
  }
  EXPECT_EQ(completions->ok.load(), kWrites);
  EXPECT_EQ(completions->failed.load(), 0);

  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> reopened, Open());
  ListFilter all;
  all.limit = kWrites + 10;
  EXPECT_THAT(reopened->ListJobs(all), IsOkAndHolds(SizeIs(kWrites)));
}

// Writes ~8 MiB of jobs (4 KiB payloads) in groups of 100; returns the
// writer's page cache size once they are committed.
absl::StatusOr<int64_t> CacheAfterWritingMegabytes(SqliteStore& store,
                                                   absl::Time now) {
  for (int group = 0; group < 20; ++group) {
    std::vector<JobRecord> jobs;
    for (int i = 0; i < 100; ++i) {
      jobs.push_back(MakeJob("q", now));
      jobs.back().payload = std::string(4096, 'x');
    }
    absl::StatusOr<std::vector<CreateResult>> created =
        CreateAll(store, std::move(jobs));
    if (!created.ok()) return created.status();
  }
  return store.WriterCacheBytes();
}

TEST_F(SqliteStoreTest, FailedFsyncFailsEveryWriteOfItsGroupAndKeepsNone) {
  ASSERT_TRUE(FaultyVfs::Install());
  // Whatever happens below, later tests get a healthy disk.
  absl::Cleanup healthy = [] {
    FaultyVfs::FailSyncs(false);
    FaultyVfs::Release();
  };
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open());
  const absl::Time now = clock_.Now();
  FERRY_ASSERT_OK_AND_ASSIGN(CreateResult job,
                             Create(*store, MakeJob("q", now)));
  const int64_t id = job.job.id;
  ASSERT_THAT(Lease(*store, id, "t", "w", now), IsOk());

  // One commit stops in its fsync, so the two writes below wait behind it
  // and share the next transaction: the cancel succeeds in it, and so the
  // finish fails in it (the job is no longer running under "t")...
  FaultyVfs::HoldNextSync();
  auto held = std::make_shared<absl::StatusOr<std::vector<CreateResult>>>();
  store->CreateJobs({MakeJob("q", now)}, [held](auto r) { *held = r; });
  ASSERT_TRUE(FaultyVfs::AwaitHeld(kCallbackTimeout));
  struct Results {
    absl::StatusOr<CancelResult> cancel = absl::UnknownError("not run");
    absl::StatusOr<JobRecord> finish = absl::UnknownError("not run");
  };
  auto results = std::make_shared<Results>();
  store->CancelJob(id, "stop", now,
                   [results](auto r) { results->cancel = std::move(r); });
  store->FinishAttempt(id, "t", Succeeded(now, "done"),
                       [results](auto r) { results->finish = std::move(r); });
  // ...and then that transaction's fsync fails: none of it happened.
  FaultyVfs::FailSyncs(true);
  FaultyVfs::Release();
  ASSERT_TRUE(store->Quiesce(kCallbackTimeout));
  FaultyVfs::FailSyncs(false);

  EXPECT_FALSE(held->ok());
  ASSERT_FALSE(results->cancel.ok());
  EXPECT_THAT(results->cancel.status().message(),
              HasSubstr(absl::StrCat("(", path_, "): the disk failed")));
  // Not FAILED_PRECONDITION ("lease lost"), which was computed from the
  // cancel that was rolled back: the broker would forget a live lease.
  EXPECT_EQ(results->finish.status(), results->cancel.status());
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord still, store->GetJob(id, false));
  EXPECT_EQ(still.state, JobState::kRunning);
  EXPECT_EQ(still.lease_token, "t");

  // The store goes on once the disk does.
  FERRY_ASSERT_OK_AND_ASSIGN(JobRecord done,
                             Finish(*store, id, "t", Succeeded(now, "done")));
  EXPECT_EQ(done.state, JobState::kSucceeded);
}

TEST_F(SqliteStoreTest,
       FullDiskIsResourceExhaustedNamingTheFileAndKeepsNothing) {
  ASSERT_TRUE(FaultyVfs::Install());
  absl::Cleanup healthy = [] { FaultyVfs::FailWritesFull(false); };
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Open());
  const absl::Time now = clock_.Now();

  FaultyVfs::FailWritesFull(true);
  std::vector<JobRecord> jobs;
  for (int i = 0; i < 3; ++i) jobs.push_back(MakeJob("q", now));
  EXPECT_THAT(CreateAll(*store, std::move(jobs)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("full"), HasSubstr(path_),
                             HasSubstr("free space"))));
  FaultyVfs::FailWritesFull(false);

  EXPECT_THAT(store->CountJobs("q"), IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(Create(*store, MakeJob("q", now)), IsOk());
}

TEST_F(SqliteStoreTest, WriterPageCacheStaysWithinCacheKib) {
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteStore> store,
                             OpenWithCache(64));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t bytes,
                             CacheAfterWritingMegabytes(*store, clock_.Now()));
  EXPECT_GT(bytes, 0);
  EXPECT_LE(bytes, 256 * 1024);
}

TEST_F(SqliteStoreTest, CacheKibBelowOneIsInvalidAndCreatesNothing) {
  for (int64_t kib : {0, -5}) {
    EXPECT_THAT(OpenWithCache(kib),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("cache_kib must be positive")))
        << kib;
  }
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(SqliteStoreTest, WriterPageCacheGrowsToALargerCacheKib) {
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteStore> store,
                             OpenWithCache(64 * 1024));
  FERRY_ASSERT_OK_AND_ASSIGN(int64_t bytes,
                             CacheAfterWritingMegabytes(*store, clock_.Now()));
  EXPECT_GT(bytes, 4 * 1024 * 1024);
}

}  // namespace
}  // namespace ferry::testing
