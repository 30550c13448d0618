#ifndef FERRY_STORAGE_WRITE_PIPELINE_H_
#define FERRY_STORAGE_WRITE_PIPELINE_H_

// Group commit, for any database with transactions and savepoints: the
// write half of a Store, apart from its SQL.
//
// Callers queue writes with a completion. One writer thread takes
// everything pending, applies it in one transaction and commits once; one
// completion thread then runs the group's callbacks in queue order while the
// writer starts the next transaction. A backend (SQLite today, PostgreSQL
// later) supplies the transaction commands through TransactionBackend and
// the writes themselves as closures over its own write connection (which
// only the writer thread then uses).
//
//   SqliteTransactions transactions(&db);  // a TransactionBackend over db
//   WritePipeline pipeline(&transactions);
//   pipeline.Enqueue<int64_t>([&db]() { return InsertRow(db); },
//                             [](absl::StatusOr<int64_t> id) { ... });
//
// The SQLite store is the example: storage/sqlite/sqlite_store.cc.

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "storage/store.h"

namespace ferry {

// The transaction commands of one write connection. WritePipeline calls
// them from its writer thread only, one at a time; they need not be
// thread-safe. Each returns the backend's error, mapped as Store documents
// (UNAVAILABLE, RESOURCE_EXHAUSTED, ...).
class TransactionBackend {
 public:
  virtual ~TransactionBackend() = default;

  // Opens the group's transaction, taking the write lock now (SQLite:
  // BEGIN IMMEDIATE).
  virtual absl::Status Begin() = 0;
  // Marks the point one write's changes can be undone to, and forgets it
  // again (its changes then stay in the transaction).
  virtual absl::Status Savepoint() = 0;
  virtual absl::Status ReleaseSavepoint() = 0;
  // Undoes the changes made since Savepoint(); the savepoint stays, to be
  // released.
  virtual absl::Status RollbackToSavepoint() = 0;
  virtual absl::Status Commit() = 0;
  // Abandons the transaction. Best effort: the group's error is already
  // decided, so a failure here is not reported (InTransaction() may then
  // stay true, and the next group rolls back first).
  virtual void Rollback() = 0;
  // True while a transaction is open: false before Begin, after Commit,
  // and once the transaction was rolled back whole, whether by the
  // database itself (SQLite does on some I/O errors and a full disk) or by
  // a write that gave up on its group.
  virtual bool InTransaction() const = 0;
};

// How a failed write is undone while the rest of its group stays.
enum class Undo {
  // By the backend: the write is one statement, and a statement that fails
  // changes nothing (SQLite). No savepoint is spent on it. Not for a
  // backend where a failed statement aborts the transaction (PostgreSQL):
  // there every write that can fail needs kBySavepoint.
  kByBackend,
  // By a savepoint around it: the write may change rows and then fail.
  kBySavepoint,
};

// A write: runs on the writer thread, inside the group's transaction.
template <typename T>
using WriteFn = absl::AnyInvocable<absl::StatusOr<T>()>;

// Queues writes and commits them in groups; see the top of this file.
// Thread-safe.
//
// Semantics, per write:
//  - A write that returns an error has its changes undone (see Undo) and
//    its callback gets that error; the other writes of its group commit.
//  - If the group's transaction fails (Begin, a savepoint command, Commit,
//    or a write's error that ended the whole transaction), every write of
//    the group gets that error, even one that had failed on its own: that
//    failure may have come from a write rolled back with it.
//  - Callbacks run on the completion thread, one at a time, in the order
//    the writes were queued. They must not block, and may queue more
//    writes. The next group may commit while they run.
class WritePipeline {
 public:
  // `backend` is not owned and must outlive the pipeline (or its
  // Shutdown). `on_commit` (may be empty) hears of each committed group,
  // timed by `clock` (not owned; outlives the pipeline). Starts the writer
  // and completion threads.
  explicit WritePipeline(TransactionBackend* backend,
                         CommitListener on_commit = nullptr,
                         const Clock* clock = SystemClock::Get());
  // Shutdown().
  ~WritePipeline();

  WritePipeline(const WritePipeline&) = delete;
  WritePipeline& operator=(const WritePipeline&) = delete;

  // Queues `apply`; `done` gets its result once its group has committed,
  // or the error that failed it. Never blocks on the database.
  // REQUIRES: Shutdown() has not returned (a write queued later never
  // completes).
  template <typename T>
  void Enqueue(WriteFn<T> apply, ResultCallback<T> done,
               Undo undo = Undo::kByBackend) {
    Push(std::make_unique<TypedWrite<T>>(std::move(apply), std::move(done),
                                         undo));
  }

  // Runs `apply` on the writer thread, in a group after every write queued
  // before the call, and waits for its result (the group's error if that
  // failed). Not from a callback: it would wait for itself.
  template <typename T>
  absl::StatusOr<T> Run(WriteFn<T> apply) {
    absl::Notification done;
    absl::StatusOr<T> result;
    Enqueue<T>(std::move(apply), [&](absl::StatusOr<T> r) {
      result = std::move(r);
      done.Notify();
    });
    done.WaitForNotification();
    return result;
  }

  // Returns after every write queued before the call has completed (it
  // queues an empty write, so it may commit a transaction). Not from a
  // callback.
  void Flush();

  // Store::Quiesce: true once no write is pending, being committed, or
  // having its callback run; false after `timeout`.
  bool Quiesce(absl::Duration timeout);

  // Completes every queued write, and every write their callbacks queue in
  // turn, then stops both threads. Idempotent; called by the destructor.
  // Not from a callback.
  void Shutdown();

  // Transactions committed (not counting failed ones).
  int64_t CommitCount() const {
    return commits_.load(std::memory_order_relaxed);
  }

 private:
  // A queued write: applied inside the group transaction, completed after
  // it commits (or fails).
  class Write {
   public:
    explicit Write(Undo undo) : undo_(undo) {}
    virtual ~Write() = default;
    // Returns the write's own error, if any.
    virtual absl::Status Apply() = 0;
    // `commit` is the group transaction's outcome.
    virtual void Complete(const absl::Status& commit) = 0;
    Undo undo() const { return undo_; }

   private:
    const Undo undo_;
  };

  template <typename T>
  class TypedWrite final : public Write {
   public:
    TypedWrite(WriteFn<T> apply, ResultCallback<T> done, Undo undo)
        : Write(undo), apply_(std::move(apply)), done_(std::move(done)) {}

    absl::Status Apply() override {
      result_ = apply_();
      return result_.status();
    }
    void Complete(const absl::Status& commit) override {
      // When the transaction failed, every write in it reports why: one
      // that succeeded did not happen, one the failure never reached did
      // not run, and one that failed may have failed only because of an
      // earlier write that was rolled back with it (a finish refused after
      // a cancel, say).
      if (!commit.ok()) result_ = commit;
      std::move(done_)(std::move(result_));
    }

   private:
    WriteFn<T> apply_;
    ResultCallback<T> done_;
    absl::StatusOr<T> result_ = absl::UnknownError("not applied");
  };

  struct Group {
    std::vector<std::unique_ptr<Write>> writes;
    absl::Status commit;
  };

  void Push(std::unique_ptr<Write> write);

  bool WriterHasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool CompleterHasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void WriterLoop();
  void CompletionLoop();
  // Applies `writes` in one transaction; returns the transaction's outcome.
  absl::Status CommitGroup(std::vector<std::unique_ptr<Write>>& writes);

  TransactionBackend* const backend_;  // used only by the writer thread
  const CommitListener on_commit_;
  const Clock* const clock_;
  std::atomic<int64_t> commits_{0};

  absl::Mutex mu_;
  std::vector<std::unique_ptr<Write>> pending_ ABSL_GUARDED_BY(mu_);
  std::deque<Group> committed_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool writer_done_ ABSL_GUARDED_BY(mu_) = false;
  bool committing_ ABSL_GUARDED_BY(mu_) = false;  // a group is off pending_

  // Joined by Shutdown, on the owner's thread.
  std::thread writer_thread_;
  std::thread completion_thread_;
};

}  // namespace ferry

#endif  // FERRY_STORAGE_WRITE_PIPELINE_H_
