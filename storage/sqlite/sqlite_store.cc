#include "storage/sqlite/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "base/status_macros.h"
#include "storage/sqlite/sqlite_db.h"

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

absl::Status NotFound(int64_t id) {
  return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
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
  if (!row) return NotFound(id);
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

// A queued write: applied inside the group transaction, completed after it
// commits (or fails).
class Op {
 public:
  virtual ~Op() = default;
  // Returns the op's own error, if any; its changes are then rolled back.
  virtual absl::Status Apply(Connection& db) = 0;
  // `commit` is the group transaction's outcome.
  virtual void Complete(const absl::Status& commit) = 0;
  // True when Apply may change rows and then fail, so it needs a savepoint
  // to undo itself. An op that changes rows with a single statement does
  // not: SQLite undoes a failed statement on its own.
  virtual bool multi_statement() const = 0;
};

template <typename T>
class TypedOp final : public Op {
 public:
  using Fn = absl::AnyInvocable<absl::StatusOr<T>(Connection&)>;
  TypedOp(Fn fn, ResultCallback<T> done, bool multi_statement)
      : fn_(std::move(fn)),
        done_(std::move(done)),
        multi_statement_(multi_statement) {}
  bool multi_statement() const override { return multi_statement_; }

  absl::Status Apply(Connection& db) override {
    result_ = fn_(db);
    return result_.status();
  }
  void Complete(const absl::Status& commit) override {
    // When the transaction failed, every op in it reports why (UNAVAILABLE,
    // RESOURCE_EXHAUSTED...): one that succeeded did not happen, one the
    // failure never reached did not run, and one that failed may have
    // failed only because of an earlier op that was rolled back with it
    // (a finish refused after a cancel, say).
    if (!commit.ok()) result_ = commit;
    std::move(done_)(std::move(result_));
  }

 private:
  Fn fn_;
  ResultCallback<T> done_;
  absl::StatusOr<T> result_ = absl::UnknownError("not applied");
  const bool multi_statement_;
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
        lock_fd_(lock_fd) {
    writer_thread_ = std::thread([this] { WriterLoop(); });
    completion_thread_ = std::thread([this] { CompletionLoop(); });
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
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    writer_thread_.join();
    completion_thread_.join();
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
    const bool multi_statement = jobs.size() > 1;
    Enqueue<std::vector<CreateResult>>(
        [jobs = std::move(jobs)](
            Connection& db) -> absl::StatusOr<std::vector<CreateResult>> {
          std::vector<CreateResult> results;
          results.reserve(jobs.size());
          for (const JobRecord& job : jobs) {
            FERRY_ASSIGN_OR_RETURN(CreateResult result, InsertJob(db, job));
            results.push_back(std::move(result));
          }
          return results;
        },
        std::move(done), multi_statement);
  }

  void LeaseJob(int64_t id, LeaseGrant grant,
                ResultCallback<JobRecord> done) override {
    Enqueue<JobRecord>(
        [id, grant = std::move(grant)](
            Connection& db) -> absl::StatusOr<JobRecord> {
          FERRY_ASSIGN_OR_RETURN(
              Statement stmt,
              db.Prepare(
                  "UPDATE jobs SET state = 3, attempt = attempt + 1, "
                  "started_at = ?1, updated_at = ?1, worker_id = ?2, "
                  "lease_token = ?3, lease_deadline = ?1 + lease_ttl_us, "
                  "progress_percent = 0, progress_message = '' "
                  "WHERE id = ?4 AND state = 2"));
          stmt.Bind(ToMicros(grant.now), grant.worker_id, grant.token, id);
          return UpdateJobOrExplain(db, stmt, id, /*with_payload=*/true,
                                    {"not QUEUED"});
        },
        std::move(done));
  }

  void FinishAttempt(int64_t id, std::string lease_token,
                     AttemptOutcome outcome,
                     ResultCallback<JobRecord> done) override {
    Enqueue<JobRecord>(
        [id, token = std::move(lease_token), outcome = std::move(outcome)](
            Connection& db) -> absl::StatusOr<JobRecord> {
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
    Enqueue<JobRecord>(
        [id, token = std::move(lease_token),
         now](Connection& db) -> absl::StatusOr<JobRecord> {
          FERRY_ASSIGN_OR_RETURN(
              Statement stmt,
              db.Prepare("UPDATE jobs SET state = 2, attempt = attempt - 1, "
                         "updated_at = ?1, lease_token = NULL, "
                         "lease_deadline = NULL, worker_id = '' "
                         "WHERE id = ?2 AND state = 3 AND lease_token = ?3"));
          stmt.Bind(ToMicros(now), id, token);
          return UpdateJobOrExplain(db, stmt, id, /*with_payload=*/false,
                                    kCurrentLease);
        },
        std::move(done));
  }

  void SetProgress(int64_t id, std::string lease_token, int32_t percent,
                   std::string message, absl::Time now,
                   ResultCallback<JobRecord> done) override {
    Enqueue<JobRecord>(
        [id, token = std::move(lease_token), percent,
         message = std::move(message),
         now](Connection& db) -> absl::StatusOr<JobRecord> {
          FERRY_ASSIGN_OR_RETURN(
              Statement stmt,
              db.Prepare("UPDATE jobs SET progress_percent = ?1, "
                         "progress_message = ?2, updated_at = ?3 "
                         "WHERE id = ?4 AND state = 3 AND lease_token = ?5"));
          stmt.Bind(percent, message, ToMicros(now), id, token);
          return UpdateJobOrExplain(db, stmt, id, /*with_payload=*/false,
                                    kCurrentLease);
        },
        std::move(done));
  }

  void CancelJob(int64_t id, std::string reason, absl::Time now,
                 ResultCallback<CancelResult> done) override {
    Enqueue<CancelResult>(
        [id, reason = std::move(reason),
         now](Connection& db) -> absl::StatusOr<CancelResult> {
          CancelResult result;
          {
            FERRY_ASSIGN_OR_RETURN(
                Statement stmt,
                db.Prepare("SELECT state, lease_token FROM jobs WHERE id = ?"));
            stmt.Bind(id);
            FERRY_ASSIGN_OR_RETURN(bool row, stmt.Step());
            if (!row) return NotFound(id);
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
          if (!job) return NotFound(id);
          result.job = *std::move(job);
          return result;
        },
        std::move(done));
  }

  void RetryJob(int64_t id, absl::Time now,
                ResultCallback<JobRecord> done) override {
    Enqueue<JobRecord>(
        [id, now](Connection& db) -> absl::StatusOr<JobRecord> {
          FERRY_ASSIGN_OR_RETURN(
              Statement stmt,
              db.Prepare("UPDATE jobs SET state = 2, attempt = 0, "
                         "run_at = ?1, updated_at = ?1, finished_at = NULL, "
                         "result = NULL, progress_percent = 0, "
                         "progress_message = '' "
                         "WHERE id = ?2 AND state IN (5, 6)"));
          stmt.Bind(ToMicros(now), id);
          return UpdateJobOrExplain(
              db, stmt, id, /*with_payload=*/false,
              {"only FAILED or CANCELLED jobs can be retried"});
        },
        std::move(done));
  }

  void PromoteDueJobs(absl::Time now, int limit,
                      ResultCallback<std::vector<JobKey>> done) override {
    Enqueue<std::vector<JobKey>>(
        [now, limit](Connection& db) -> absl::StatusOr<std::vector<JobKey>> {
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
    Enqueue<std::vector<JobKey>>(
        [queue = std::move(queue), state,
         limit](Connection& db) -> absl::StatusOr<std::vector<JobKey>> {
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
    Enqueue<int64_t>(
        [cutoff, limit](Connection& db) -> absl::StatusOr<int64_t> {
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
    Enqueue<bool>(
        [queue = std::move(queue),
         paused](Connection& db) -> absl::StatusOr<bool> {
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

  void Flush() override {
    (void)RunOnWriter<bool>(
        [](Connection&) -> absl::StatusOr<bool> { return true; });
  }

  bool Quiesce(absl::Duration timeout) override {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(this, &SqliteStoreImpl::Idle),
                                timeout);
  }

  absl::StatusOr<int64_t> WriterCacheBytes() override {
    return RunOnWriter<int64_t>([](Connection& db) -> absl::StatusOr<int64_t> {
      return db.CacheBytes();
    });
  }

  absl::StatusOr<JobRecord> GetJob(int64_t id, bool with_payload) override {
    return WithReader([&](Connection& db) -> absl::StatusOr<JobRecord> {
      FERRY_ASSIGN_OR_RETURN(std::optional<JobRecord> job,
                             ReadJobById(db, id, with_payload));
      if (!job) return NotFound(id);
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

  int64_t CommitCount() const override {
    return commits_.load(std::memory_order_relaxed);
  }

 private:
  static absl::StatusOr<CreateResult> InsertJob(Connection& db,
                                                const JobRecord& job) {
    if (!job.idempotency_key.empty()) {
      FERRY_ASSIGN_OR_RETURN(
          Statement stmt, db.Prepare("SELECT " JOB_COLUMNS_FULL
                                     " FROM jobs WHERE idempotency_key = ?"));
      stmt.Bind(job.idempotency_key);
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

  // Runs `fn` on the writer thread, after the writes queued before it, and
  // waits for its result.
  template <typename T>
  absl::StatusOr<T> RunOnWriter(typename TypedOp<T>::Fn fn) {
    absl::Notification done;
    absl::StatusOr<T> result;
    Enqueue<T>(std::move(fn), [&](absl::StatusOr<T> r) {
      result = std::move(r);
      done.Notify();
    });
    done.WaitForNotification();
    return result;
  }

  template <typename T>
  void Enqueue(typename TypedOp<T>::Fn fn, ResultCallback<T> done,
               bool multi_statement = false) {
    auto op = std::make_unique<TypedOp<T>>(std::move(fn), std::move(done),
                                           multi_statement);
    absl::MutexLock lock(&mu_);
    pending_.push_back(std::move(op));
  }

  // The writer stops only when nothing is pending and no completion can
  // queue more: completions may write (a lease after a submit, say).
  bool WriterHasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !pending_.empty() || (stopping_ && committed_.empty());
  }
  bool CompleterHasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !committed_.empty() || writer_done_;
  }
  // A callback queues its writes before it returns, and a batch leaves
  // committed_ only after its callbacks have returned: once idle, only a
  // write from outside the store can make it busy again.
  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return pending_.empty() && !committing_ && committed_.empty();
  }

  // Commits, and hands the batch to the completion thread: the next
  // transaction starts while the last one's callbacks (memory updates,
  // gRPC sends) run, so callbacks never hold up a commit.
  void WriterLoop() {
    while (true) {
      Batch batch;
      {
        absl::MutexLock lock(
            &mu_, absl::Condition(this, &SqliteStoreImpl::WriterHasWork));
        if (pending_.empty()) {
          writer_done_ = true;  // stopping, and nothing can come
          return;
        }
        batch.ops.swap(pending_);
        // The next group is likely about as large: no regrowing under mu_.
        pending_.reserve(batch.ops.size());
        committing_ = true;
      }
      batch.commit = CommitBatch(batch.ops);
      absl::MutexLock lock(&mu_);
      committed_.push_back(std::move(batch));
      committing_ = false;
    }
  }

  // Runs callbacks one batch after another, in commit order.
  void CompletionLoop() {
    while (true) {
      Batch* batch;
      {
        absl::MutexLock lock(
            &mu_, absl::Condition(this, &SqliteStoreImpl::CompleterHasWork));
        if (committed_.empty()) return;  // the writer is done
        // Stays in committed_ (a deque: the writer's push_back leaves it in
        // place) until its callbacks have run.
        batch = &committed_.front();
      }
      for (std::unique_ptr<Op>& op : batch->ops) op->Complete(batch->commit);
      absl::MutexLock lock(&mu_);
      committed_.pop_front();
    }
  }

  // Applies every op in one transaction; an op that could fail half-way
  // runs inside a savepoint, so that one op's failure undoes only its own
  // changes.
  absl::Status CommitBatch(std::vector<std::unique_ptr<Op>>& batch) {
    Connection& db = *writer_;
    // A failed ROLLBACK after a failed batch may have left the last
    // transaction open: it must not absorb this batch.
    if (db.InTransaction()) (void)db.Exec("ROLLBACK");
    FERRY_RETURN_IF_ERROR(RunCached(db, "BEGIN IMMEDIATE"));
    for (std::unique_ptr<Op>& op : batch) {
      if (!op->multi_statement()) {
        // Its error goes to its callback. Some errors (I/O, disk full) make
        // SQLite roll back the whole transaction: then the batch fails, with
        // that error.
        absl::Status applied = op->Apply(db);
        if (!applied.ok() && !db.InTransaction()) return applied;
        continue;
      }
      absl::Status status = RunCached(db, "SAVEPOINT op");
      if (status.ok()) {
        absl::Status applied = op->Apply(db);
        if (applied.ok()) {
          status = RunCached(db, "RELEASE op");
        } else if (!db.InTransaction()) {
          return applied;  // rolled back whole, savepoint and all
        } else {
          status = RunCached(db, "ROLLBACK TO op");
          if (status.ok()) status = RunCached(db, "RELEASE op");
        }
      }
      if (!status.ok()) {
        (void)db.Exec("ROLLBACK");
        return status;
      }
    }
    absl::Status status = RunCached(db, "COMMIT");
    if (!status.ok()) {
      (void)db.Exec("ROLLBACK");
      return status;
    }
    commits_.fetch_add(1, std::memory_order_relaxed);
    return absl::OkStatus();
  }

  static absl::Status RunCached(Connection& db, const char* sql) {
    FERRY_ASSIGN_OR_RETURN(Statement stmt, db.Prepare(sql));
    return stmt.Run();
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
  std::unique_ptr<Connection> writer_;  // used only by the writer thread
  const int lock_fd_;
  std::atomic<int64_t> commits_{0};

  struct Batch {
    std::vector<std::unique_ptr<Op>> ops;
    absl::Status commit;
  };

  absl::Mutex mu_;
  std::vector<std::unique_ptr<Op>> pending_ ABSL_GUARDED_BY(mu_);
  std::deque<Batch> committed_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool writer_done_ ABSL_GUARDED_BY(mu_) = false;
  bool committing_ ABSL_GUARDED_BY(mu_) = false;  // a batch is off pending_

  absl::Mutex readers_mu_;
  std::vector<std::unique_ptr<Connection>> readers_
      ABSL_GUARDED_BY(readers_mu_);

  std::thread writer_thread_;
  std::thread completion_thread_;

  // The start-up check's verdict: written once, before checked_ is notified.
  absl::Status check_status_;
  absl::Notification checked_;
  std::thread check_thread_;
};

// Takes an exclusive, non-blocking lock on `<path>.lock`; the kernel drops it
// if the process dies, so a crash never leaves a stale lock behind.
absl::StatusOr<int> LockDatabase(const std::string& path) {
  std::string lock_path = path + ".lock";
  int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
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
