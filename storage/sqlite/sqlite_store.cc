#include "storage/sqlite/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "base/status_macros.h"
#include "storage/sqlite/sqlite_db.h"
#include "storage/write_pipeline.h"

namespace ferry {

namespace {

using sqlite::Connection;
using sqlite::Statement;

// "FERY": marks the file as ours so we never migrate someone else's database.
constexpr int64_t kApplicationId = 0x46455259;

// Schema migrations; user_version is the number applied. Append only from
// the first release on (none has shipped: migration 1 is still the
// initial schema).
constexpr const char* kMigrations[] = {
    // 1: the job table and queue settings.
    R"sql(
CREATE TABLE jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  queue TEXT NOT NULL,
  kind TEXT NOT NULL,
  state INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  run_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  attempt INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  initial_backoff_us INTEGER NOT NULL,
  max_backoff_us INTEGER NOT NULL,
  lease_ttl_us INTEGER NOT NULL,
  timeout_us INTEGER NOT NULL,
  idempotency_key TEXT,
  content_type TEXT NOT NULL,
  labels TEXT NOT NULL,
  last_error TEXT NOT NULL,
  progress_percent INTEGER NOT NULL,
  progress_message TEXT NOT NULL,
  worker_id TEXT NOT NULL,
  lease_token TEXT,
  lease_deadline INTEGER,
  result_token TEXT,
  -- Large columns last: reads that skip them never touch overflow pages.
  payload BLOB NOT NULL,
  result BLOB
);
CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs(idempotency_key)
  WHERE idempotency_key IS NOT NULL;
-- Listing and counting by queue and state.
CREATE INDEX jobs_by_queue_state ON jobs(queue, state, id);
-- Ready jobs only (state 2 = QUEUED), covering the start-up load. Partial,
-- so the other transitions never touch it, and a job leased in the same
-- transaction that stores it never enters it.
CREATE INDEX jobs_ready ON jobs(queue, priority, run_at) WHERE state = 2;
-- Jobs that are not yet due, in due order (state 1 = SCHEDULED).
CREATE INDEX jobs_due ON jobs(run_at) WHERE state = 1;
-- Retention.
CREATE INDEX jobs_by_finished_at ON jobs(finished_at)
  WHERE finished_at IS NOT NULL;
CREATE TABLE queues (
  name TEXT PRIMARY KEY,
  paused INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
)sql",
    // 2: idempotency keys are scoped to their queue: a key used in one
    // queue must not return (or reveal) another queue's job. Keys unique
    // across the broker are unique per queue too, so old rows stay valid.
    R"sql(
DROP INDEX jobs_by_idempotency_key;
CREATE UNIQUE INDEX jobs_by_queue_idempotency_key
  ON jobs(queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
)sql",
};

// Column list shared by every query that reads a JobRecord (see ReadJob).
#define JOB_COLUMNS                                                        \
  "id, queue, kind, state, priority, run_at, created_at, updated_at, "     \
  "started_at, finished_at, attempt, max_attempts, initial_backoff_us, "   \
  "max_backoff_us, lease_ttl_us, timeout_us, idempotency_key, "            \
  "content_type, labels, last_error, progress_percent, progress_message, " \
  "worker_id, lease_token, lease_deadline, result_token"
#define JOB_COLUMNS_FULL JOB_COLUMNS ", payload, result"
constexpr int kPayloadColumn = 26;

int64_t ToMicros(absl::Time t) { return absl::ToUnixMicros(t); }
int64_t ToMicros(absl::Duration d) { return absl::ToInt64Microseconds(d); }

void BindOptionalTime(Statement& stmt, int index, absl::Time t) {
  if (t == absl::InfinitePast()) {
    stmt.BindNull(index);
  } else {
    stmt.BindInt(index, ToMicros(t));
  }
}

absl::Time OptionalTime(const Statement& stmt, int column) {
  if (stmt.IsNull(column)) return absl::InfinitePast();
  return absl::FromUnixMicros(stmt.Int(column));
}

// Labels are stored as "key=value\n" lines, sorted by key. Keys never hold
// '=' and nothing holds '\n' (the broker validates), so a label filter is a
// substring match on "\nkey=value\n".
std::string EncodeLabels(const Labels& labels) {
  std::string out;
  for (const auto& [key, value] : labels)
    absl::StrAppend(&out, key, "=", value, "\n");
  return out;
}

Labels DecodeLabels(absl::string_view text) {
  Labels labels;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv =
        absl::StrSplit(line, absl::MaxSplits('=', 1));
    labels.insert(std::move(kv));
  }
  return labels;
}

JobRecord ReadJob(const Statement& stmt, bool with_payload) {
  JobRecord job;
  job.id = stmt.Int(0);
  job.queue = stmt.Text(1);
  job.kind = stmt.Text(2);
  job.state = static_cast<JobState>(stmt.Int(3));
  job.priority = static_cast<int32_t>(stmt.Int(4));
  job.run_at = absl::FromUnixMicros(stmt.Int(5));
  job.created_at = absl::FromUnixMicros(stmt.Int(6));
  job.updated_at = absl::FromUnixMicros(stmt.Int(7));
  job.started_at = OptionalTime(stmt, 8);
  job.finished_at = OptionalTime(stmt, 9);
  job.attempt = static_cast<int32_t>(stmt.Int(10));
  job.max_attempts = static_cast<int32_t>(stmt.Int(11));
  job.initial_backoff = absl::Microseconds(stmt.Int(12));
  job.max_backoff = absl::Microseconds(stmt.Int(13));
  job.lease_ttl = absl::Microseconds(stmt.Int(14));
  job.timeout = absl::Microseconds(stmt.Int(15));
  job.idempotency_key = stmt.Text(16);
  job.content_type = stmt.Text(17);
  job.labels = DecodeLabels(stmt.Text(18));
  job.last_error = stmt.Text(19);
  job.progress_percent = static_cast<int32_t>(stmt.Int(20));
  job.progress_message = stmt.Text(21);
  job.worker_id = stmt.Text(22);
  job.lease_token = stmt.Text(23);
  job.lease_deadline = OptionalTime(stmt, 24);
  job.result_token = stmt.Text(25);
  if (with_payload) {
    job.payload = stmt.Blob(kPayloadColumn);
    job.result = stmt.Blob(kPayloadColumn + 1);
  }
  return job;
}

JobKey ReadKey(const Statement& stmt) {
  return JobKey{stmt.Int(0), stmt.Text(1), static_cast<int32_t>(stmt.Int(2)),
                absl::FromUnixMicros(stmt.Int(3))};
}

// Runs a statement that returns at most one job row.
absl::StatusOr<std::optional<JobRecord>> StepJob(Statement& stmt,
                                                 bool with_payload) {
  FERRY_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return std::nullopt;
  JobRecord job = ReadJob(stmt, with_payload);
  FERRY_RETURN_IF_ERROR(stmt.Run());  // finishes the statement
  return job;
}

// Reads job `id`; nullopt if there is none.
absl::StatusOr<std::optional<JobRecord>> ReadJobById(Connection& db, int64_t id,
                                                     bool with_payload) {
  FERRY_ASSIGN_OR_RETURN(
      Statement stmt,
      with_payload
          ? db.Prepare("SELECT " JOB_COLUMNS_FULL " FROM jobs WHERE id = ?")
          : db.Prepare("SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?"));
  stmt.Bind(id);
  return StepJob(stmt, with_payload);
}

// Runs `update`, an UPDATE of at most the row of job `id`, then reads that
// row back: nullopt if the update matched nothing. Cheaper than UPDATE ...
// RETURNING, which builds a temporary b-tree for its output on every run.
// Should the read-back fail after the row changed, the whole transaction is
// rolled back (the group then fails), so no caller sees an error for a
// change that stays.
absl::StatusOr<std::optional<JobRecord>> UpdateJob(Connection& db,
                                                   Statement& update,
                                                   int64_t id,
                                                   bool with_payload) {
  FERRY_RETURN_IF_ERROR(update.Run());
  if (db.Changes() == 0) return std::nullopt;
  absl::StatusOr<std::optional<JobRecord>> job =
      ReadJobById(db, id, with_payload);
  if (job.ok() && job->has_value()) return job;
  (void)db.Exec("ROLLBACK");
  if (!job.ok()) return job.status();
  return absl::InternalError(absl::StrCat("job ", id, " vanished"));
}

// What a conditional update of a job requires of it besides existing, to
// explain a miss: FAILED_PRECONDITION "<prefix>job N is STATE, <why>".
struct Requirement {
  absl::string_view why;
  absl::string_view prefix = "";
};

// An update keyed by a lease token.
constexpr Requirement kCurrentLease = {
    "and the lease token is not the current one", "lease lost: "};

// Explains why a conditional update on job `id` matched no row: NOT_FOUND,
// or FAILED_PRECONDITION as `requirement` says.
absl::Status WrongState(Connection& db, int64_t id,
                        const Requirement& requirement) {
  FERRY_ASSIGN_OR_RETURN(Statement stmt,
                         db.Prepare("SELECT state FROM jobs WHERE id = ?"));
  stmt.Bind(id);
  FERRY_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return JobNotFoundError(id);
  return absl::FailedPreconditionError(absl::StrCat(
      requirement.prefix, "job ", id, " is ",
      JobStateName(static_cast<JobState>(stmt.Int(0))), ", ", requirement.why));
}

// Runs `update`, a conditional UPDATE of job `id` with its values bound,
// and returns the job after it; if it matched no row, why (WrongState).
absl::StatusOr<JobRecord> UpdateJobOrExplain(Connection& db, Statement& update,
                                             int64_t id, bool with_payload,
                                             const Requirement& requirement) {
  FERRY_ASSIGN_OR_RETURN(std::optional<JobRecord> job,
                         UpdateJob(db, update, id, with_payload));
  if (!job) return WrongState(db, id, requirement);
  return *std::move(job);
}

absl::Status RunCached(Connection& db, const char* sql) {
  FERRY_ASSIGN_OR_RETURN(Statement stmt, db.Prepare(sql));
  return stmt.Run();
}

// The write connection's transaction commands, for the WritePipeline. A
// savepoint needs no unique name: one is open at a time.
class SqliteTransactions final : public TransactionBackend {
 public:
  // `db` is not owned and must outlive this.
  explicit SqliteTransactions(Connection* db) : db_(*db) {}

  absl::Status Begin() override { return RunCached(db_, "BEGIN IMMEDIATE"); }
  absl::Status Savepoint() override { return RunCached(db_, "SAVEPOINT op"); }
  absl::Status ReleaseSavepoint() override {
    return RunCached(db_, "RELEASE op");
  }
  absl::Status RollbackToSavepoint() override {
    return RunCached(db_, "ROLLBACK TO op");
  }
  absl::Status Commit() override { return RunCached(db_, "COMMIT"); }
  void Rollback() override { (void)db_.Exec("ROLLBACK"); }
  bool InTransaction() const override { return db_.InTransaction(); }

 private:
  Connection& db_;
};

absl::Status CheckIntegrity(Connection& db, const std::string& path);

class SqliteStoreImpl final : public SqliteStore {
 public:
  // `check_in_background`: run the start-up integrity check on a reader of
  // its own, so that it overlaps with loading the live jobs
  // (AwaitStartupCheck has the verdict).
  SqliteStoreImpl(SqliteOptions options, std::unique_ptr<Connection> writer,
                  int lock_fd, bool check_in_background)
      : options_(std::move(options)),
        writer_(std::move(writer)),
        transactions_(writer_.get()),
        lock_fd_(lock_fd),
        pipeline_(&transactions_, options_.on_commit, options_.clock) {
    if (check_in_background) {
      check_thread_ = std::thread([this] {
        absl::StatusOr<std::unique_ptr<Connection>> reader = OpenReader();
        check_status_ = reader.ok() ? CheckIntegrity(**reader, options_.path)
                                    : reader.status();
        checked_.Notify();
      });
    } else {
      checked_.Notify();
    }
  }

  ~SqliteStoreImpl() override {
    if (check_thread_.joinable()) check_thread_.join();
    pipeline_.Shutdown();
    // Readers close before the writer, so the last connection to close (the
    // one that checkpoints on close) is the writer.
    {
      absl::MutexLock lock(&readers_mu_);
      readers_.clear();
    }
    writer_.reset();
    close(lock_fd_);
  }

  void CreateJobs(std::vector<JobRecord> jobs,
                  ResultCallback<std::vector<CreateResult>> done) override {
    // One insert per job: a later one may fail after an earlier one wrote.
    const Undo undo = jobs.size() > 1 ? Undo::kBySavepoint : Undo::kByBackend;
    pipeline_.Enqueue<std::vector<CreateResult>>(
        [&db = *writer_, jobs = std::move(jobs)]()
            -> absl::StatusOr<std::vector<CreateResult>> {
          std::vector<CreateResult> results;
          results.reserve(jobs.size());
          for (const JobRecord& job : jobs) {
            FERRY_ASSIGN_OR_RETURN(CreateResult result, InsertJob(db, job));
            results.push_back(std::move(result));
          }
          return results;
        },
        std::move(done), undo);
  }

  void LeaseJob(int64_t id, LeaseGrant grant,
                ResultCallback<JobRecord> done) override {
    EnqueueUpdate(
        "UPDATE jobs SET state = 3, attempt = attempt + 1, "
        "started_at = ?1, updated_at = ?1, worker_id = ?2, "
        "lease_token = ?3, lease_deadline = ?1 + lease_ttl_us, "
        "progress_percent = 0, progress_message = '' "
        "WHERE id = ?4 AND state = 2",
        id, /*with_payload=*/true, {"not QUEUED"}, std::move(done),
        ToMicros(grant.now), std::move(grant.worker_id), std::move(grant.token),
        id);
  }

  void FinishAttempt(int64_t id, std::string lease_token,
                     AttemptOutcome outcome,
                     ResultCallback<JobRecord> done) override {
    pipeline_.Enqueue<JobRecord>(
        [&db = *writer_, id, token = std::move(lease_token),
         outcome = std::move(outcome)]() -> absl::StatusOr<JobRecord> {
          FERRY_ASSIGN_OR_RETURN(
              Statement stmt,
              db.Prepare("UPDATE jobs SET state = ?1, updated_at = ?2, "
                         "run_at = coalesce(?3, run_at), finished_at = ?4, "
                         "result = ?5, last_error = coalesce(?6, last_error), "
                         "lease_token = NULL, lease_deadline = NULL, "
                         "result_token = CASE WHEN ?9 THEN ?8 "
                         "ELSE result_token END "
                         "WHERE id = ?7 AND state = 3 AND lease_token = ?8"));
          const bool success = outcome.next_state == JobState::kSucceeded;
          stmt.BindInt(1, static_cast<int>(outcome.next_state));
          stmt.BindInt(2, ToMicros(outcome.now));
          if (outcome.next_state == JobState::kScheduled) {
            stmt.BindInt(3, ToMicros(outcome.run_at));
          } else {
            stmt.BindNull(3);
          }
          BindOptionalTime(stmt, 4,
                           IsTerminal(outcome.next_state)
                               ? outcome.now
                               : absl::InfinitePast());
          if (success) {
            stmt.BindBlob(5, outcome.result);
            stmt.BindNull(6);
          } else {
            stmt.BindNull(5);
            stmt.BindText(6, outcome.error);
          }
          stmt.BindInt(7, id);
          stmt.BindText(8, token);
          stmt.BindInt(9, outcome.reported ? 1 : 0);
          return UpdateJobOrExplain(db, stmt, id, /*with_payload=*/false,
                                    kCurrentLease);
        },
        std::move(done));
  }

  void ReleaseLease(int64_t id, std::string lease_token, absl::Time now,
                    ResultCallback<JobRecord> done) override {
    EnqueueUpdate(
        "UPDATE jobs SET state = 2, attempt = attempt - 1, "
        "updated_at = ?1, lease_token = NULL, "
        "lease_deadline = NULL, worker_id = '' "
        "WHERE id = ?2 AND state = 3 AND lease_token = ?3",
        id, /*with_payload=*/false, kCurrentLease, std::move(done),
        ToMicros(now), id, std::move(lease_token));
  }

  void SetProgress(int64_t id, std::string lease_token, int32_t percent,
                   std::string message, absl::Time now,
                   ResultCallback<JobRecord> done) override {
    EnqueueUpdate(
        "UPDATE jobs SET progress_percent = ?1, "
        "progress_message = ?2, updated_at = ?3 "
        "WHERE id = ?4 AND state = 3 AND lease_token = ?5",
        id, /*with_payload=*/false, kCurrentLease, std::move(done), percent,
        std::move(message), ToMicros(now), id, std::move(lease_token));
  }

  void CancelJob(int64_t id, std::string reason, absl::Time now,
                 ResultCallback<CancelResult> done) override {
    pipeline_.Enqueue<CancelResult>(
        [&db = *writer_, id, reason = std::move(reason),
         now]() -> absl::StatusOr<CancelResult> {
          CancelResult result;
          {
            FERRY_ASSIGN_OR_RETURN(
                Statement stmt,
                db.Prepare("SELECT state, lease_token FROM jobs WHERE id = ?"));
            stmt.Bind(id);
            FERRY_ASSIGN_OR_RETURN(bool row, stmt.Step());
            if (!row) return JobNotFoundError(id);
            result.previous_state = static_cast<JobState>(stmt.Int(0));
            result.previous_lease_token = stmt.Text(1);
          }
          if (IsTerminal(result.previous_state)) {
            return absl::FailedPreconditionError(
                absl::StrCat("job ", id, " is already ",
                             JobStateName(result.previous_state)));
          }
          FERRY_ASSIGN_OR_RETURN(
              Statement stmt,
              db.Prepare("UPDATE jobs SET state = 6, updated_at = ?1, "
                         "finished_at = ?1, last_error = ?2, "
                         "lease_token = NULL, lease_deadline = NULL "
                         "WHERE id = ?3"));
          stmt.Bind(ToMicros(now), reason, id);
          FERRY_ASSIGN_OR_RETURN(
              std::optional<JobRecord> job,
              UpdateJob(db, stmt, id, /*with_payload=*/false));
          if (!job) return JobNotFoundError(id);
          result.job = *std::move(job);
          return result;
        },
        std::move(done));
  }

  void RetryJob(int64_t id, absl::Time now,
                ResultCallback<JobRecord> done) override {
    EnqueueUpdate(
        "UPDATE jobs SET state = 2, attempt = 0, "
        "run_at = ?1, updated_at = ?1, finished_at = NULL, "
        "result = NULL, progress_percent = 0, "
        "progress_message = '' "
        "WHERE id = ?2 AND state IN (5, 6)",
        id, /*with_payload=*/false,
        {"only FAILED or CANCELLED jobs can be retried"}, std::move(done),
        ToMicros(now), id);
  }

  void PromoteDueJobs(absl::Time now, int limit,
                      ResultCallback<std::vector<JobKey>> done) override {
    pipeline_.Enqueue<std::vector<JobKey>>(
        [&db = *writer_, now, limit]() -> absl::StatusOr<std::vector<JobKey>> {
          FERRY_ASSIGN_OR_RETURN(
              Statement stmt,
              db.Prepare("UPDATE jobs SET state = 2, updated_at = ?1 "
                         "WHERE id IN (SELECT id FROM jobs WHERE state = 1 "
                         "AND run_at <= ?1 ORDER BY run_at LIMIT ?2) "
                         "RETURNING id, queue, priority, run_at"));
          stmt.Bind(ToMicros(now), limit);
          return ReadKeys(stmt);
        },
        std::move(done));
  }

  void DeleteJobs(std::string queue, JobState state, int limit,
                  ResultCallback<std::vector<JobKey>> done) override {
    pipeline_.Enqueue<std::vector<JobKey>>(
        [&db = *writer_, queue = std::move(queue), state,
         limit]() -> absl::StatusOr<std::vector<JobKey>> {
          FERRY_ASSIGN_OR_RETURN(
              Statement stmt,
              db.Prepare("DELETE FROM jobs WHERE id IN (SELECT id FROM jobs "
                         "WHERE queue = ?1 AND state = ?2 LIMIT ?3) "
                         "RETURNING id, queue, priority, run_at"));
          stmt.Bind(queue, static_cast<int>(state), limit);
          return ReadKeys(stmt);
        },
        std::move(done));
  }

  void DeleteFinishedBefore(absl::Time cutoff, int limit,
                            ResultCallback<int64_t> done) override {
    pipeline_.Enqueue<int64_t>(
        [&db = *writer_, cutoff, limit]() -> absl::StatusOr<int64_t> {
          FERRY_ASSIGN_OR_RETURN(
              Statement stmt,
              db.Prepare("DELETE FROM jobs WHERE id IN (SELECT id FROM jobs "
                         "WHERE finished_at < ?1 AND state IN (4, 5, 6) "
                         "ORDER BY finished_at "
                         "LIMIT ?2)"));
          stmt.Bind(ToMicros(cutoff), limit);
          FERRY_RETURN_IF_ERROR(stmt.Run());
          return static_cast<int64_t>(db.Changes());
        },
        std::move(done));
  }

  void SetQueuePaused(std::string queue, bool paused,
                      ResultCallback<bool> done) override {
    pipeline_.Enqueue<bool>(
        [&db = *writer_, queue = std::move(queue),
         paused]() -> absl::StatusOr<bool> {
          FERRY_ASSIGN_OR_RETURN(
              Statement stmt,
              // Resuming a queue that has no row (never paused) inserts
              // nothing: it did not change.
              db.Prepare("INSERT INTO queues (name, paused) SELECT ?1, ?2 "
                         "WHERE ?2 = 1 OR EXISTS (SELECT 1 FROM queues "
                         "WHERE name = ?1) "
                         "ON CONFLICT (name) DO UPDATE SET paused = ?2 "
                         "WHERE paused != ?2"));
          stmt.Bind(queue, paused ? 1 : 0);
          FERRY_RETURN_IF_ERROR(stmt.Run());
          return db.Changes() > 0;
        },
        std::move(done));
  }

  absl::Status AwaitStartupCheck() override {
    checked_.WaitForNotification();
    return check_status_;
  }

  void Flush() override { pipeline_.Flush(); }

  bool Quiesce(absl::Duration timeout) override {
    return pipeline_.Quiesce(timeout);
  }

  absl::StatusOr<int64_t> WriterCacheBytes() override {
    return pipeline_.Run<int64_t>(
        [&db = *writer_]() -> absl::StatusOr<int64_t> {
          return db.CacheBytes();
        });
  }

  absl::StatusOr<JobRecord> GetJob(int64_t id, bool with_payload) override {
    return WithReader([&](Connection& db) -> absl::StatusOr<JobRecord> {
      FERRY_ASSIGN_OR_RETURN(std::optional<JobRecord> job,
                             ReadJobById(db, id, with_payload));
      if (!job) return JobNotFoundError(id);
      return *std::move(job);
    });
  }

  absl::StatusOr<std::vector<JobRecord>> ListJobs(
      const ListFilter& filter) override {
    // Built at run time from the filters in use so the planner can pick the
    // matching index; every value is still bound, never pasted.
    std::string sql = filter.with_payload ? "SELECT " JOB_COLUMNS_FULL
                                          : "SELECT " JOB_COLUMNS;
    absl::StrAppend(&sql, " FROM jobs WHERE 1");
    if (!filter.queue.empty()) absl::StrAppend(&sql, " AND queue = :queue");
    for (size_t i = 0; i < filter.queue_globs.size(); ++i) {
      absl::StrAppend(&sql, i == 0 ? " AND (" : " OR ", "queue GLOB :glob", i,
                      i + 1 == filter.queue_globs.size() ? ")" : "");
    }
    if (filter.state) absl::StrAppend(&sql, " AND state = :state");
    if (!filter.kind.empty()) absl::StrAppend(&sql, " AND kind = :kind");
    for (size_t i = 0; i < filter.labels.size(); ++i) {
      absl::StrAppend(&sql, " AND instr(char(10) || labels, :label", i,
                      ") > 0");
    }
    if (filter.after_id > 0) {
      absl::StrAppend(
          &sql, filter.oldest_first ? " AND id > :after" : " AND id < :after");
    }
    absl::StrAppend(
        &sql, filter.oldest_first ? " ORDER BY id ASC" : " ORDER BY id DESC",
        " LIMIT :limit");
    return WithReader(
        [&](Connection& db) -> absl::StatusOr<std::vector<JobRecord>> {
          FERRY_ASSIGN_OR_RETURN(Statement stmt, db.PrepareOnce(sql));
          auto index = [&](const char* name) {
            return stmt.ParameterIndex(name);
          };
          if (!filter.queue.empty())
            stmt.BindText(index(":queue"), filter.queue);
          if (filter.state) {
            stmt.BindInt(index(":state"), static_cast<int>(*filter.state));
          }
          if (!filter.kind.empty()) stmt.BindText(index(":kind"), filter.kind);
          for (size_t g = 0; g < filter.queue_globs.size(); ++g) {
            const std::string name = absl::StrCat(":glob", g);
            stmt.BindText(index(name.c_str()), filter.queue_globs[g]);
          }
          size_t i = 0;
          for (const auto& [key, value] : filter.labels) {
            std::string name = absl::StrCat(":label", i++);
            stmt.BindText(index(name.c_str()),
                          absl::StrCat("\n", key, "=", value, "\n"));
          }
          if (filter.after_id > 0)
            stmt.BindInt(index(":after"), filter.after_id);
          stmt.BindInt(index(":limit"), filter.limit);
          std::vector<JobRecord> jobs;
          while (true) {
            FERRY_ASSIGN_OR_RETURN(bool row, stmt.Step());
            if (!row) break;
            jobs.push_back(ReadJob(stmt, filter.with_payload));
          }
          return jobs;
        });
  }

  absl::StatusOr<std::vector<QueueCount>> CountJobs(
      absl::string_view queue) override {
    return WithReader(
        [&](Connection& db) -> absl::StatusOr<std::vector<QueueCount>> {
          FERRY_ASSIGN_OR_RETURN(
              Statement stmt,
              queue.empty()
                  ? db.Prepare("SELECT queue, state, count(*) FROM jobs "
                               "GROUP BY queue, state")
                  : db.Prepare("SELECT queue, state, count(*) FROM jobs "
                               "WHERE queue = ? GROUP BY queue, state"));
          if (!queue.empty()) stmt.Bind(queue);
          std::vector<QueueCount> counts;
          while (true) {
            FERRY_ASSIGN_OR_RETURN(bool row, stmt.Step());
            if (!row) break;
            counts.push_back(QueueCount{
                stmt.Text(0), static_cast<JobState>(stmt.Int(1)), stmt.Int(2)});
          }
          return counts;
        });
  }

  absl::StatusOr<std::vector<std::string>> PausedQueues() override {
    return WithReader(
        [&](Connection& db) -> absl::StatusOr<std::vector<std::string>> {
          FERRY_ASSIGN_OR_RETURN(
              Statement stmt,
              db.Prepare("SELECT name FROM queues WHERE paused = 1"));
          std::vector<std::string> names;
          while (true) {
            FERRY_ASSIGN_OR_RETURN(bool row, stmt.Step());
            if (!row) break;
            names.push_back(stmt.Text(0));
          }
          return names;
        });
  }

  absl::StatusOr<LiveJobs> LoadLiveJobs() override {
    return WithReader([&](Connection& db) -> absl::StatusOr<LiveJobs> {
      LiveJobs live;
      {
        FERRY_ASSIGN_OR_RETURN(
            Statement stmt,
            db.Prepare("SELECT id, queue, priority, run_at FROM jobs "
                       "WHERE state = 2"));
        FERRY_ASSIGN_OR_RETURN(live.queued, ReadKeys(stmt));
      }
      {
        FERRY_ASSIGN_OR_RETURN(
            Statement stmt,
            db.Prepare("SELECT " JOB_COLUMNS " FROM jobs WHERE state = 3"));
        while (true) {
          FERRY_ASSIGN_OR_RETURN(bool row, stmt.Step());
          if (!row) break;
          live.running.push_back(ReadJob(stmt, /*with_payload=*/false));
        }
      }
      FERRY_ASSIGN_OR_RETURN(live.next_scheduled, NextScheduled(db));
      return live;
    });
  }

  absl::StatusOr<std::optional<absl::Time>> NextScheduledTime() override {
    return WithReader([&](Connection& db) { return NextScheduled(db); });
  }

  int64_t CommitCount() const override { return pipeline_.CommitCount(); }

 private:
  // Queues `sql`, a conditional UPDATE of job `id` (a string literal: the
  // statement cache is keyed by its address), with `args` bound to its
  // parameters in order. `done` gets the job after it, or why it matched
  // no row (UpdateJobOrExplain).
  template <typename... Args>
  void EnqueueUpdate(const char* sql, int64_t id, bool with_payload,
                     Requirement requirement, ResultCallback<JobRecord> done,
                     Args... args) {
    pipeline_.Enqueue<JobRecord>(
        [&db = *writer_, sql, id, with_payload, requirement,
         args = std::make_tuple(
             std::move(args)...)]() -> absl::StatusOr<JobRecord> {
          FERRY_ASSIGN_OR_RETURN(Statement stmt, db.Prepare(sql));
          std::apply([&stmt](const auto&... arg) { stmt.Bind(arg...); }, args);
          return UpdateJobOrExplain(db, stmt, id, with_payload, requirement);
        },
        std::move(done));
  }

  static absl::StatusOr<CreateResult> InsertJob(Connection& db,
                                                const JobRecord& job) {
    if (!job.idempotency_key.empty()) {
      FERRY_ASSIGN_OR_RETURN(
          Statement stmt,
          db.Prepare("SELECT " JOB_COLUMNS_FULL
                     " FROM jobs WHERE queue = ? AND idempotency_key = ?"));
      stmt.Bind(job.queue, job.idempotency_key);
      FERRY_ASSIGN_OR_RETURN(std::optional<JobRecord> existing,
                             StepJob(stmt, /*with_payload=*/true));
      if (existing) return CreateResult{*std::move(existing), false};
    }
    FERRY_ASSIGN_OR_RETURN(
        Statement stmt,
        db.Prepare(
            "INSERT INTO jobs (queue, kind, state, priority, run_at, "
            "created_at, updated_at, started_at, finished_at, attempt, "
            "max_attempts, initial_backoff_us, max_backoff_us, lease_ttl_us, "
            "timeout_us, idempotency_key, content_type, labels, last_error, "
            "progress_percent, progress_message, worker_id, lease_token, "
            "lease_deadline, result_token, payload, result) VALUES (?, ?, ?, "
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?)"));
    stmt.Bind(job.queue, job.kind, static_cast<int>(job.state), job.priority,
              ToMicros(job.run_at), ToMicros(job.created_at),
              ToMicros(job.updated_at));
    BindOptionalTime(stmt, 8, job.started_at);
    BindOptionalTime(stmt, 9, job.finished_at);
    stmt.BindInt(10, job.attempt);
    stmt.BindInt(11, job.max_attempts);
    stmt.BindInt(12, ToMicros(job.initial_backoff));
    stmt.BindInt(13, ToMicros(job.max_backoff));
    stmt.BindInt(14, ToMicros(job.lease_ttl));
    stmt.BindInt(15, ToMicros(job.timeout));
    stmt.BindTextOrNull(16, job.idempotency_key);
    stmt.BindText(17, job.content_type);
    stmt.BindText(18, EncodeLabels(job.labels));
    stmt.BindText(19, job.last_error);
    stmt.BindInt(20, job.progress_percent);
    stmt.BindText(21, job.progress_message);
    stmt.BindText(22, job.worker_id);
    stmt.BindTextOrNull(23, job.lease_token);
    BindOptionalTime(stmt, 24, job.lease_deadline);
    stmt.BindTextOrNull(25, job.result_token);
    stmt.BindBlob(26, job.payload);
    if (job.result.empty()) {
      stmt.BindNull(27);
    } else {
      stmt.BindBlob(27, job.result);
    }
    FERRY_RETURN_IF_ERROR(stmt.Run());
    CreateResult result{job, true};
    result.job.id = db.LastInsertId();
    return result;
  }

  static absl::StatusOr<std::vector<JobKey>> ReadKeys(Statement& stmt) {
    std::vector<JobKey> keys;
    while (true) {
      FERRY_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      keys.push_back(ReadKey(stmt));
    }
    return keys;
  }

  static absl::StatusOr<std::optional<absl::Time>> NextScheduled(
      Connection& db) {
    FERRY_ASSIGN_OR_RETURN(
        Statement stmt,
        db.Prepare("SELECT min(run_at) FROM jobs WHERE state = 1"));
    FERRY_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row || stmt.IsNull(0)) return std::nullopt;
    return absl::FromUnixMicros(stmt.Int(0));
  }

  template <typename Fn>
  auto WithReader(Fn fn) -> decltype(fn(std::declval<Connection&>())) {
    std::unique_ptr<Connection> reader;
    {
      absl::MutexLock lock(&readers_mu_);
      if (!readers_.empty()) {
        reader = std::move(readers_.back());
        readers_.pop_back();
      }
    }
    if (reader == nullptr) {
      absl::StatusOr<std::unique_ptr<Connection>> opened = OpenReader();
      if (!opened.ok()) return opened.status();
      reader = *std::move(opened);
    }
    auto result = fn(*reader);
    absl::MutexLock lock(&readers_mu_);
    if (static_cast<int>(readers_.size()) < options_.max_readers) {
      readers_.push_back(std::move(reader));
    }
    return result;
  }

  absl::StatusOr<std::unique_ptr<Connection>> OpenReader() {
    FERRY_ASSIGN_OR_RETURN(
        std::unique_ptr<Connection> reader,
        Connection::Open(options_.path, Connection::Mode::kReadOnly));
    // mmap stays off on every connection (see docs/architecture.md).
    FERRY_RETURN_IF_ERROR(
        reader->Exec("PRAGMA mmap_size = 0; PRAGMA busy_timeout = 5000;"));
    return reader;
  }

  const SqliteOptions options_;
  // Used only on the pipeline's writer thread: by the writes it applies
  // (they capture it) and through transactions_.
  std::unique_ptr<Connection> writer_;
  SqliteTransactions transactions_;
  const int lock_fd_;
  WritePipeline pipeline_;  // after what its writes use

  absl::Mutex readers_mu_;
  std::vector<std::unique_ptr<Connection>> readers_
      ABSL_GUARDED_BY(readers_mu_);

  // The start-up check's verdict: written once, before checked_ is notified.
  absl::Status check_status_;
  absl::Notification checked_;
  std::thread check_thread_;
};

// Takes an exclusive, non-blocking lock on `<path>.lock`; the kernel drops it
// if the process dies, so a crash never leaves a stale lock behind.
absl::StatusOr<int> LockDatabase(const std::string& path) {
  std::string lock_path = path + ".lock";
  // O_NOFOLLOW: a symlink planted at the lock's path must not make ferryd
  // create or lock a file elsewhere.
  int fd =
      open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot create lock file ", lock_path, ": ", std::strerror(errno),
        "; check that the directory exists and is writable"));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "database ", path, " is in use by another process (", lock_path,
          " is locked); stop the other ferryd or choose another --db"));
    }
    return absl::UnavailableError(
        absl::StrCat("cannot lock ", lock_path, ": ", std::strerror(err)));
  }
  std::string pid = absl::StrCat(getpid(), "\n");
  if (ftruncate(fd, 0) == 0) {
    (void)!write(fd, pid.data(), pid.size());
  }
  return fd;
}

absl::Status Damaged(const std::string& path, absl::string_view detail) {
  return absl::DataLossError(absl::StrCat(
      "database ", path, " is damaged or not a Ferry database (", detail,
      "); ferryd will not serve it. Restore it from a backup, or move it "
      "away to start with an empty one"));
}

// Refuses a file that is not ours before changing anything in it (even its
// journal mode). The first read is also where a non-database fails.
absl::Status CheckOwnership(Connection& db, const std::string& path) {
  absl::StatusOr<int64_t> app_id = db.QueryInt("PRAGMA application_id");
  if (!app_id.ok()) {
    if (absl::IsDataLoss(app_id.status())) {
      return Damaged(path, app_id.status().message());
    }
    return app_id.status();
  }
  if (*app_id != 0 && *app_id != kApplicationId) {
    return Damaged(path, "application_id belongs to another program");
  }
  if (*app_id == 0) {
    FERRY_ASSIGN_OR_RETURN(int64_t tables,
                           db.QueryInt("SELECT count(*) FROM sqlite_master"));
    if (tables > 0) return Damaged(path, "it holds tables Ferry did not make");
  }
  return absl::OkStatus();
}

absl::Status Configure(Connection& db, const SqliteOptions& options) {
  absl::StatusOr<std::string> mode = db.QueryText("PRAGMA journal_mode = WAL");
  if (!mode.ok()) {
    if (absl::IsDataLoss(mode.status())) {
      return Damaged(options.path, mode.status().message());
    }
    return mode.status();
  }
  if (*mode != "wal") {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot enable WAL on ", options.path, " (journal_mode is ", *mode,
        "); Ferry needs a local file system that supports it"));
  }
  if (sqlite3_db_readonly(db.handle(), "main") == 1) {
    return absl::UnavailableError(absl::StrCat(
        "database ", options.path,
        " is read-only; ferryd needs to write it (check its permissions)"));
  }
  FERRY_RETURN_IF_ERROR(db.Exec(options.sync == SqliteOptions::Sync::kFull
                                    ? "PRAGMA synchronous = FULL"
                                    : "PRAGMA synchronous = NORMAL"));
  // cache_size: see SqliteOptions::cache_kib.
  // mmap_size = 0: Debian's SQLite 3.40 has a WAL-reset corruption bug that
  // mmap and multiple writers make reachable; we keep both off.
  return db.Exec(
      absl::StrCat("PRAGMA mmap_size = 0; PRAGMA busy_timeout = 5000; "
                   "PRAGMA foreign_keys = ON; PRAGMA cache_size = -",
                   options.cache_kib, "; PRAGMA temp_store = MEMORY;"));
}

absl::Status CheckIntegrity(Connection& db, const std::string& path) {
  absl::StatusOr<std::string> check = db.QueryText("PRAGMA quick_check");
  if (!check.ok()) {
    if (absl::IsDataLoss(check.status())) {
      return Damaged(path, check.status().message());
    }
    return check.status();
  }
  if (*check != "ok") return Damaged(path, *check);
  return absl::OkStatus();
}

// Applies the migrations after `version` (the file's user_version).
absl::Status Migrate(Connection& db, const std::string& path, int64_t version) {
  const int64_t latest = std::size(kMigrations);
  if (version > latest) {
    return absl::FailedPreconditionError(
        absl::StrCat("database ", path, " has schema version ", version,
                     " but this ferryd knows only up to ", latest,
                     "; run the newer ferryd that wrote it"));
  }
  for (int64_t v = version; v < latest; ++v) {
    FERRY_RETURN_IF_ERROR(db.Exec("BEGIN IMMEDIATE"));
    absl::Status status = db.Exec(kMigrations[v]);
    if (status.ok()) {
      status = db.Exec(
          absl::StrCat("PRAGMA user_version = ", v + 1,
                       "; PRAGMA application_id = ", kApplicationId, ";"));
    }
    if (status.ok()) status = db.Exec("COMMIT");
    if (!status.ok()) {
      (void)db.Exec("ROLLBACK");
      return absl::Status(status.code(),
                          absl::StrCat("migrating ", path, " to schema ", v + 1,
                                       ": ", status.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStore>> OpenSqliteStore(
    const SqliteOptions& options) {
  if (options.cache_kib <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SqliteOptions.cache_kib must be positive, got ", options.cache_kib));
  }
  FERRY_ASSIGN_OR_RETURN(int lock_fd, LockDatabase(options.path));
  auto fail = [lock_fd](absl::Status status) {
    close(lock_fd);
    return status;
  };
  // A new database is the owner's alone: it will hold every payload.
  // SQLite would create it 0644, and its WAL and shared-memory files take
  // the database's mode. (An existing file keeps its mode.)
  if (int fd = open(options.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      fd >= 0) {
    close(fd);
  }
  absl::StatusOr<std::unique_ptr<Connection>> writer =
      Connection::Open(options.path, Connection::Mode::kReadWrite);
  if (!writer.ok()) {
    return fail(absl::Status(
        writer.status().code(),
        absl::StrCat(writer.status().message(),
                     "; check that the directory exists and is writable")));
  }
  if (absl::Status s = CheckOwnership(**writer, options.path); !s.ok()) {
    return fail(s);
  }
  if (absl::Status s = Configure(**writer, options); !s.ok()) return fail(s);
  // A database at the current schema needs no write before it serves: its
  // check runs in the background, beside the loading of the live jobs
  // (half of a restart with a million jobs queued). One that must be
  // migrated is checked first.
  absl::StatusOr<int64_t> version = (*writer)->QueryInt("PRAGMA user_version");
  if (!version.ok()) return fail(version.status());
  const bool check_in_background =
      options.check_integrity &&
      *version == static_cast<int64_t>(std::size(kMigrations));
  if (options.check_integrity && !check_in_background) {
    if (absl::Status s = CheckIntegrity(**writer, options.path); !s.ok()) {
      return fail(s);
    }
  }
  if (absl::Status s = Migrate(**writer, options.path, *version); !s.ok()) {
    return fail(s);
  }
  return std::make_unique<SqliteStoreImpl>(options, *std::move(writer), lock_fd,
                                           check_in_background);
}

}  // namespace ferry
