// WritePipeline over a fake database: how writes are grouped into
// transactions, what a failure fails, the order of completions, and
// quiescing and shutting down. The SQLite store's own use of it is covered
// by store_contract_test.cc and sqlite_store_test.cc (a real failed fsync).

#include "storage/write_pipeline.h"

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fake_clock.h"
#include "tests/status_matchers.h"

namespace ferry::testing {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Not;

// Bounds a wait that only a bug makes long.
constexpr absl::Duration kTimeout = absl::Seconds(60);

// A database of rows (strings) with transactions and savepoints. It logs
// every command and every row written, in order, and fails the commands a
// test picks. Thread-safe: the pipeline's writer drives it while the test
// reads it.
class FakeDatabase final : public TransactionBackend {
 public:
  absl::Status Begin() override {
    absl::MutexLock lock(&mu_);
    FERRY_RETURN_IF_ERROR(RunLocked("BEGIN"));
    in_transaction_ = true;
    return absl::OkStatus();
  }
  absl::Status Savepoint() override {
    absl::MutexLock lock(&mu_);
    FERRY_RETURN_IF_ERROR(RunLocked("SAVEPOINT"));
    savepoint_ = uncommitted_.size();
    return absl::OkStatus();
  }
  absl::Status ReleaseSavepoint() override {
    absl::MutexLock lock(&mu_);
    return RunLocked("RELEASE");
  }
  absl::Status RollbackToSavepoint() override {
    absl::MutexLock lock(&mu_);
    FERRY_RETURN_IF_ERROR(RunLocked("ROLLBACK TO"));
    uncommitted_.resize(savepoint_);
    return absl::OkStatus();
  }
  absl::Status Commit() override {
    absl::MutexLock lock(&mu_);
    // Decided before a hold, so that a test can set the next group's
    // failure while this commit waits.
    absl::Status status = RunLocked("COMMIT");
    if (hold_next_commit_) {
      hold_next_commit_ = false;
      holding_ = true;
      mu_.Await(absl::Condition(
          +[](bool* holding) { return !*holding; }, &holding_));
    }
    FERRY_RETURN_IF_ERROR(status);
    committed_.insert(committed_.end(), uncommitted_.begin(),
                      uncommitted_.end());
    uncommitted_.clear();
    in_transaction_ = false;
    ++commits_;
    return absl::OkStatus();
  }
  void Rollback() override {
    absl::MutexLock lock(&mu_);
    if (!RunLocked("ROLLBACK").ok()) return;  // the transaction stays open
    uncommitted_.clear();
    in_transaction_ = false;
  }
  bool InTransaction() const override {
    absl::MutexLock lock(&mu_);
    return in_transaction_;
  }

  // ---- what writes do (on the writer thread) ----

  // Adds a row to the open transaction.
  void Insert(absl::string_view row) {
    absl::MutexLock lock(&mu_);
    log_.push_back(absl::StrCat("insert ", row));
    uncommitted_.emplace_back(row);
  }
  // Rolls back the whole transaction, as SQLite does on some I/O errors.
  void AbortTransaction() {
    absl::MutexLock lock(&mu_);
    log_.push_back("abort");
    uncommitted_.clear();
    in_transaction_ = false;
  }

  // ---- what tests do ----

  // The next run of `command` ("BEGIN", "COMMIT", "ROLLBACK", ...) fails
  // with `error`.
  void FailNext(absl::string_view command, absl::Status error) {
    absl::MutexLock lock(&mu_);
    failures_[std::string(command)] = std::move(error);
  }
  // The next Commit, once it has decided its outcome, waits until
  // ReleaseCommit().
  void HoldNextCommit() {
    absl::MutexLock lock(&mu_);
    hold_next_commit_ = true;
  }
  // Waits until a commit is held; false after kTimeout.
  bool AwaitHeldCommit() {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&holding_), kTimeout);
  }
  void ReleaseCommit() {
    absl::MutexLock lock(&mu_);
    holding_ = false;
  }
  // Waits until `n` transactions have committed; false after kTimeout.
  bool AwaitCommits(int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return commits_ >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), kTimeout);
  }
  // Commands and inserts since the last call, in order.
  std::vector<std::string> TakeLog() {
    absl::MutexLock lock(&mu_);
    return std::exchange(log_, {});
  }
  std::vector<std::string> Committed() {
    absl::MutexLock lock(&mu_);
    return committed_;
  }

 private:
  absl::Status RunLocked(const std::string& command)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (auto it = failures_.find(command); it != failures_.end()) {
      absl::Status error = std::move(it->second);
      failures_.erase(it);
      log_.push_back(absl::StrCat(command, " failed"));
      return error;
    }
    log_.push_back(command);
    return absl::OkStatus();
  }

  mutable absl::Mutex mu_;
  std::vector<std::string> log_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> committed_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> uncommitted_ ABSL_GUARDED_BY(mu_);
  size_t savepoint_ ABSL_GUARDED_BY(mu_) = 0;
  bool in_transaction_ ABSL_GUARDED_BY(mu_) = false;
  int commits_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, absl::Status> failures_ ABSL_GUARDED_BY(mu_);
  bool hold_next_commit_ ABSL_GUARDED_BY(mu_) = false;
  bool holding_ ABSL_GUARDED_BY(mu_) = false;
};

const absl::Status kRefused = absl::FailedPreconditionError("refused");
const absl::Status kBusy = absl::UnavailableError("database is locked");
const absl::Status kDiskFull = absl::ResourceExhaustedError("disk is full");

class WritePipelineTest : public ::testing::Test {
 protected:
  // Queues a write named `name` that does `write`; its result, and the
  // order it completed in, are recorded under `name`.
  void Enqueue(const std::string& name, WriteFn<std::string> write,
               Undo undo = Undo::kByBackend) {
    pipeline_.Enqueue<std::string>(
        std::move(write),
        [this, name](absl::StatusOr<std::string> result) {
          absl::MutexLock lock(&mu_);
          completed_.push_back(name);
          results_[name] = result.status();
        },
        undo);
  }

  // Writes row `name` and succeeds.
  void Insert(const std::string& name, Undo undo = Undo::kByBackend) {
    Enqueue(
        name,
        [this, name]() -> absl::StatusOr<std::string> {
          db_.Insert(name);
          return name;
        },
        undo);
  }
  // Writes row `name`, then fails: only a savepoint can undo it.
  void InsertThenFail(const std::string& name) {
    Enqueue(
        name,
        [this, name]() -> absl::StatusOr<std::string> {
          db_.Insert(name);
          return kRefused;
        },
        Undo::kBySavepoint);
  }
  // Fails without writing, as a single statement that matched nothing.
  void Refuse(const std::string& name) {
    Enqueue(name, []() -> absl::StatusOr<std::string> { return kRefused; });
  }
  // Fails and takes the whole transaction with it, as an I/O error does.
  void Abort(const std::string& name, Undo undo) {
    Enqueue(
        name,
        [this]() -> absl::StatusOr<std::string> {
          db_.AbortTransaction();
          return kDiskFull;
        },
        undo);
  }

  // Queues a write named "first" and holds its group's commit, so that
  // the writes queued until Release() form the next group.
  // REQUIRES: the pipeline is idle.
  void StartHeldGroup() {
    db_.HoldNextCommit();
    Insert("first");
    ASSERT_TRUE(db_.AwaitHeldCommit());
  }
  void Release() { db_.ReleaseCommit(); }

  void Settle() { ASSERT_TRUE(pipeline_.Quiesce(kTimeout)); }

  absl::Status ResultOf(const std::string& name) {
    absl::MutexLock lock(&mu_);
    auto it = results_.find(name);
    if (it == results_.end()) return absl::UnknownError("not completed");
    return it->second;
  }
  std::vector<std::string> CompletionOrder() {
    absl::MutexLock lock(&mu_);
    return completed_;
  }

  // What the commit listener heard: "WRITES in DURATION" per group.
  std::vector<std::string> Commits() {
    absl::MutexLock lock(&mu_);
    return commits_;
  }

  FakeDatabase db_;
  FakeClock clock_;
  absl::Mutex mu_;
  std::vector<std::string> completed_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> results_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> commits_ ABSL_GUARDED_BY(mu_);
  // Last: stopped before what its callbacks touch goes away.
  WritePipeline pipeline_{&db_,
                          [this](int writes, absl::Duration took) {
                            absl::MutexLock lock(&mu_);
                            commits_.push_back(absl::StrCat(
                                writes, " in ", absl::FormatDuration(took)));
                          },
                          &clock_};
};

TEST_F(WritePipelineTest, ItsListenerHearsEachCommittedGroupsSizeAndTime) {
  ASSERT_NO_FATAL_FAILURE(StartHeldGroup());
  clock_.Advance(absl::Milliseconds(5));  // the held commit takes 5ms
  Insert("a");
  Insert("b");
  Insert("c");
  Release();
  Settle();
  db_.FailNext("COMMIT", absl::UnavailableError("disk gone"));
  Insert("lost");
  Settle();
  EXPECT_THAT(ResultOf("lost"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(Commits(), ElementsAre("1 in 5ms", "3 in 0")) << "no failed one";
}

TEST_F(WritePipelineTest, WritesQueuedDuringACommitShareTheNextTransaction) {
  ASSERT_NO_FATAL_FAILURE(StartHeldGroup());
  Insert("a");
  Insert("b");
  Insert("c");
  Release();
  Settle();

  EXPECT_THAT(db_.TakeLog(),
              ElementsAre("BEGIN", "insert first", "COMMIT", "BEGIN",
                          "insert a", "insert b", "insert c", "COMMIT"));
  EXPECT_EQ(pipeline_.CommitCount(), 2);
  EXPECT_THAT(db_.Committed(), ElementsAre("first", "a", "b", "c"));
  for (const char* name : {"first", "a", "b", "c"}) {
    EXPECT_THAT(ResultOf(name), IsOk()) << name;
  }
}

TEST_F(WritePipelineTest, FailedWriteInASavepointUndoesOnlyItself) {
  ASSERT_NO_FATAL_FAILURE(StartHeldGroup());
  Insert("a");
  InsertThenFail("b");
  Insert("c", Undo::kBySavepoint);
  Release();
  Settle();

  EXPECT_THAT(ResultOf("a"), IsOk());
  EXPECT_THAT(ResultOf("b"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(ResultOf("c"), IsOk());
  EXPECT_THAT(db_.Committed(), ElementsAre("first", "a", "c"));
  EXPECT_THAT(
      db_.TakeLog(),
      ElementsAre("BEGIN", "insert first", "COMMIT", "BEGIN", "insert a",
                  "SAVEPOINT", "insert b", "ROLLBACK TO", "RELEASE",
                  "SAVEPOINT", "insert c", "RELEASE", "COMMIT"));
}

TEST_F(WritePipelineTest, FailedSingleStatementWriteFailsOnlyItself) {
  ASSERT_NO_FATAL_FAILURE(StartHeldGroup());
  Insert("a");
  Refuse("b");
  Insert("c");
  Release();
  Settle();

  EXPECT_THAT(ResultOf("a"), IsOk());
  EXPECT_THAT(ResultOf("b"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(ResultOf("c"), IsOk());
  EXPECT_THAT(db_.Committed(), ElementsAre("first", "a", "c"));
  EXPECT_THAT(db_.TakeLog(), Not(Contains("SAVEPOINT")));
  EXPECT_EQ(pipeline_.CommitCount(), 2);
}

TEST_F(WritePipelineTest, FailedCommitFailsEveryWriteOfTheGroupWithItsError) {
  ASSERT_NO_FATAL_FAILURE(StartHeldGroup());
  db_.FailNext("COMMIT", kBusy);  // the next group's
  Insert("a");
  Refuse("b");
  InsertThenFail("c");
  Release();
  Settle();

  EXPECT_THAT(ResultOf("first"), IsOk());
  // b and c may have failed only because of a write rolled back with them:
  // they report the transaction's error, like a.
  for (const char* name : {"a", "b", "c"}) {
    EXPECT_THAT(ResultOf(name), StatusIs(absl::StatusCode::kUnavailable))
        << name;
  }
  EXPECT_THAT(db_.TakeLog(),
              ElementsAre("BEGIN", "insert first", "COMMIT", "BEGIN",
                          "insert a", "SAVEPOINT", "insert c", "ROLLBACK TO",
                          "RELEASE", "COMMIT failed", "ROLLBACK"));
  EXPECT_THAT(db_.Committed(), ElementsAre("first"));
  EXPECT_EQ(pipeline_.CommitCount(), 1);
}

TEST_F(WritePipelineTest, WriteThatEndsTheTransactionFailsTheWholeGroup) {
  for (Undo undo : {Undo::kByBackend, Undo::kBySavepoint}) {
    const std::string prefix =
        undo == Undo::kByBackend ? "by backend " : "by savepoint ";
    SCOPED_TRACE(prefix);
    ASSERT_NO_FATAL_FAILURE(StartHeldGroup());
    (void)db_.TakeLog();
    Insert(prefix + "a");
    Abort(prefix + "b", undo);
    Insert(prefix + "c");
    Release();
    Settle();

    // c never ran, and reports why.
    for (const char* name : {"a", "b", "c"}) {
      EXPECT_THAT(ResultOf(prefix + name),
                  StatusIs(absl::StatusCode::kResourceExhausted))
          << name;
    }
    std::vector<std::string> log = db_.TakeLog();
    EXPECT_THAT(log, Contains("abort"));
    EXPECT_THAT(log, Not(Contains(absl::StrCat("insert ", prefix, "c"))));
    EXPECT_THAT(log, Not(Contains("ROLLBACK TO")));
    EXPECT_THAT(log, Not(Contains("COMMIT")));
  }
  EXPECT_THAT(db_.Committed(), ElementsAre("first", "first"));
  EXPECT_EQ(pipeline_.CommitCount(), 2);
}

TEST_F(WritePipelineTest, FailedBeginFailsTheGroupAndTheNextGroupCommits) {
  db_.FailNext("BEGIN", kBusy);
  Insert("a");
  Settle();
  Insert("b");
  Settle();

  EXPECT_THAT(ResultOf("a"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(ResultOf("b"), IsOk());
  EXPECT_THAT(db_.TakeLog(),
              ElementsAre("BEGIN failed", "BEGIN", "insert b", "COMMIT"));
}

TEST_F(WritePipelineTest, FailedSavepointCommandFailsTheGroup) {
  ASSERT_NO_FATAL_FAILURE(StartHeldGroup());
  (void)db_.TakeLog();
  db_.FailNext("RELEASE", kBusy);
  Insert("a");
  Insert("b", Undo::kBySavepoint);
  Insert("c");
  Release();
  Settle();

  for (const char* name : {"a", "b", "c"}) {
    EXPECT_THAT(ResultOf(name), StatusIs(absl::StatusCode::kUnavailable))
        << name;
  }
  EXPECT_THAT(db_.TakeLog(),
              ElementsAre("BEGIN", "insert a", "SAVEPOINT", "insert b",
                          "RELEASE failed", "ROLLBACK"));
  EXPECT_THAT(db_.Committed(), ElementsAre("first"));
}

TEST_F(WritePipelineTest, TransactionLeftOpenIsRolledBackBeforeTheNextGroup) {
  db_.FailNext("COMMIT", kBusy);
  db_.FailNext("ROLLBACK", kBusy);
  Insert("a");
  Settle();
  ASSERT_TRUE(db_.InTransaction());  // the rollback after the commit failed
  (void)db_.TakeLog();
  Insert("b");
  Settle();

  EXPECT_THAT(ResultOf("a"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(ResultOf("b"), IsOk());
  EXPECT_THAT(db_.TakeLog(),
              ElementsAre("ROLLBACK", "BEGIN", "insert b", "COMMIT"));
  EXPECT_THAT(db_.Committed(), ElementsAre("b"));
}

TEST_F(WritePipelineTest, CallbacksRunInQueueOrderAcrossGroups) {
  ASSERT_NO_FATAL_FAILURE(StartHeldGroup());
  std::vector<std::string> queued = {"first"};
  for (int i = 0; i < 20; ++i) {
    if (i == 10) Release();
    queued.push_back(absl::StrCat("w", i));
    Insert(queued.back());
  }
  Settle();

  EXPECT_EQ(CompletionOrder(), queued);
  EXPECT_GE(pipeline_.CommitCount(), 2);
}

TEST_F(WritePipelineTest, NextGroupCommitsWhileCallbacksRun) {
  absl::Notification in_callback, release_callback;
  pipeline_.Enqueue<int>([]() -> absl::StatusOr<int> { return 1; },
                         [&](absl::StatusOr<int>) {
                           in_callback.Notify();
                           release_callback.WaitForNotification();
                         });
  ASSERT_TRUE(in_callback.WaitForNotificationWithTimeout(kTimeout));
  Insert("b");

  EXPECT_TRUE(db_.AwaitCommits(2));
  EXPECT_THAT(CompletionOrder(), IsEmpty());  // b waits its turn
  EXPECT_FALSE(pipeline_.Quiesce(absl::Milliseconds(10)));
  release_callback.Notify();
  Settle();
  EXPECT_THAT(CompletionOrder(), ElementsAre("b"));
}

// Each write's callback queues the next, five in all.
struct Chain {
  WritePipeline* pipeline;
  std::atomic<int> completed{0};
  void Next() {
    pipeline->Enqueue<int>([]() -> absl::StatusOr<int> { return 1; },
                           [this](absl::StatusOr<int>) {
                             if (++completed < 5) Next();
                           });
  }
};

TEST_F(WritePipelineTest, QuiesceWaitsForWritesQueuedByCallbacks) {
  Chain chain{&pipeline_};
  chain.Next();
  ASSERT_TRUE(pipeline_.Quiesce(kTimeout));
  EXPECT_EQ(chain.completed.load(), 5);
}

TEST_F(WritePipelineTest, ShutdownCompletesWritesQueuedByCallbacks) {
  Chain chain{&pipeline_};
  chain.Next();
  pipeline_.Shutdown();
  EXPECT_EQ(chain.completed.load(), 5);
  pipeline_.Shutdown();  // idempotent
}

TEST_F(WritePipelineTest, RunReturnsItsResultAfterEarlierWritesCompleted) {
  Insert("a");
  absl::StatusOr<int> result =
      pipeline_.Run<int>([]() -> absl::StatusOr<int> { return 7; });
  EXPECT_THAT(result, IsOk());
  EXPECT_EQ(*result, 7);
  EXPECT_THAT(CompletionOrder(), ElementsAre("a"));
}

TEST_F(WritePipelineTest, FlushReturnsAfterEarlierWritesCompleted) {
  Insert("a");
  Insert("b");
  pipeline_.Flush();
  EXPECT_THAT(CompletionOrder(), ElementsAre("a", "b"));
}

}  // namespace
}  // namespace ferry::testing
