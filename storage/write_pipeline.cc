#include "storage/write_pipeline.h"

#include <utility>

#include "base/status_macros.h"

namespace ferry {

WritePipeline::WritePipeline(TransactionBackend* backend,
                             CommitListener on_commit, const Clock* clock)
    : backend_(backend), on_commit_(std::move(on_commit)), clock_(clock) {
  writer_thread_ = std::thread([this] { WriterLoop(); });
  completion_thread_ = std::thread([this] { CompletionLoop(); });
}

WritePipeline::~WritePipeline() { Shutdown(); }

void WritePipeline::Shutdown() {
  if (!writer_thread_.joinable()) return;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  writer_thread_.join();
  completion_thread_.join();
}

void WritePipeline::Push(std::unique_ptr<Write> write) {
  absl::MutexLock lock(&mu_);
  pending_.push_back(std::move(write));
}

void WritePipeline::Flush() {
  (void)Run<bool>([]() -> absl::StatusOr<bool> { return true; });
}

bool WritePipeline::Quiesce(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(this, &WritePipeline::Idle),
                              timeout);
}

// The writer stops only when nothing is pending and no completion can
// queue more: completions may write (a lease after a submit, say).
bool WritePipeline::WriterHasWork() const {
  return !pending_.empty() || (stopping_ && committed_.empty());
}

bool WritePipeline::CompleterHasWork() const {
  return !committed_.empty() || writer_done_;
}

// A callback queues its writes before it returns, and a group leaves
// committed_ only after its callbacks have returned: once idle, only a
// write from outside the pipeline can make it busy again.
bool WritePipeline::Idle() const {
  return pending_.empty() && !committing_ && committed_.empty();
}

// Commits, and hands the group to the completion thread: the next
// transaction starts while the last one's callbacks (memory updates, gRPC
// sends) run, so callbacks never hold up a commit.
void WritePipeline::WriterLoop() {
  while (true) {
    Group group;
    {
      absl::MutexLock lock(
          &mu_, absl::Condition(this, &WritePipeline::WriterHasWork));
      if (pending_.empty()) {
        writer_done_ = true;  // stopping, and nothing can come
        return;
      }
      group.writes.swap(pending_);
      // The next group is likely about as large: no regrowing under mu_.
      pending_.reserve(group.writes.size());
      committing_ = true;
    }
    group.commit = CommitGroup(group.writes);
    absl::MutexLock lock(&mu_);
    committed_.push_back(std::move(group));
    committing_ = false;
  }
}

// Runs callbacks one group after another, in commit order.
void WritePipeline::CompletionLoop() {
  while (true) {
    Group* group;
    {
      absl::MutexLock lock(
          &mu_, absl::Condition(this, &WritePipeline::CompleterHasWork));
      if (committed_.empty()) return;  // the writer is done
      // Stays in committed_ (a deque: the writer's push_back leaves it in
      // place) until its callbacks have run.
      group = &committed_.front();
    }
    for (std::unique_ptr<Write>& write : group->writes) {
      write->Complete(group->commit);
    }
    absl::MutexLock lock(&mu_);
    committed_.pop_front();
  }
}

// A write that could fail half-way runs inside a savepoint, so that its
// failure undoes only its own changes.
absl::Status WritePipeline::CommitGroup(
    std::vector<std::unique_ptr<Write>>& writes) {
  TransactionBackend& db = *backend_;
  // Timed only for a listener: no clock read per group otherwise.
  const absl::Time start = on_commit_ ? clock_->Now() : absl::InfinitePast();
  // A failed rollback after a failed group may have left the last
  // transaction open: it must not absorb this group.
  if (db.InTransaction()) db.Rollback();
  FERRY_RETURN_IF_ERROR(db.Begin());
  for (std::unique_ptr<Write>& write : writes) {
    if (write->undo() == Undo::kByBackend) {
      // Its error goes to its callback. Some errors (I/O, disk full) make
      // the database roll back the whole transaction: then the group
      // fails, with that error.
      absl::Status applied = write->Apply();
      if (!applied.ok() && !db.InTransaction()) return applied;
      continue;
    }
    absl::Status status = db.Savepoint();
    if (status.ok()) {
      absl::Status applied = write->Apply();
      if (applied.ok()) {
        status = db.ReleaseSavepoint();
      } else if (!db.InTransaction()) {
        return applied;  // rolled back whole, savepoint and all
      } else {
        status = db.RollbackToSavepoint();
        if (status.ok()) status = db.ReleaseSavepoint();
      }
    }
    if (!status.ok()) {
      db.Rollback();
      return status;
    }
  }
  absl::Status status = db.Commit();
  if (!status.ok()) {
    db.Rollback();
    return status;
  }
  commits_.fetch_add(1, std::memory_order_relaxed);
  if (on_commit_) {
    on_commit_(static_cast<int>(writes.size()), clock_->Now() - start);
  }
  return absl::OkStatus();
}

}  // namespace ferry
