// ferry-compare-postgres: the ferry-bench e2e workload against PostgreSQL,
// as a jobs table dequeued with SELECT ... FOR UPDATE SKIP LOCKED (libpq).
//
//   producer:  INSERT INTO ferry_compare_jobs (payload) VALUES ($1) RETURNING
//   id worker:    UPDATE ferry_compare_jobs SET state = 'running', worker = $1,
//   ...
//                WHERE id = (SELECT id FROM ferry_compare_jobs WHERE state =
//                'queued'
//                            ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
//                RETURNING id, payload
//              UPDATE ferry_compare_jobs SET state = 'done', ... WHERE id = $1
//              AND ...
//
// Every statement is its own transaction (autocommit), so a job costs three
// commits, like Ferry's submit, lease and finish. With synchronous_commit=on
// each commit waits for its WAL flush (PostgreSQL groups concurrent flushes).
// Finished rows are kept (state 'done'), as Ferry keeps finished jobs.
//
// Workers poll: when the lease finds no queued job the worker waits
// --poll_min_us, doubling up to --poll_max_us while the queue stays empty,
// and goes straight back after a job. LISTEN/NOTIFY was not used: NOTIFY
// takes a database-wide lock at commit, which serialises the producers'
// commits, and in this closed-loop workload the queue is seldom empty while
// producers run, so polls rarely come back empty (the JSON line reports
// how many did: empty_polls).
//
// Statements are prepared once per connection; one statement in flight per
// connection (no pipelining), driven by the shared epoll loop through
// libpq's asynchronous API.

#include <libpq-fe.h>

#include "bench/compare/compare_common.h"

namespace compare {
namespace {

const char* kUsage =
    "ferry-compare-postgres: ferry-bench's e2e workload against PostgreSQL "
    "(SKIP LOCKED).\n"
    "  --user=postgres --dbname=postgres   connection (host/port from "
    "--host/--port)\n"
    "  --poll_min_us=1000 --poll_max_us=10000   worker backoff when the queue "
    "is empty\n";

const char* kSchema =
    "DROP TABLE IF EXISTS ferry_compare_jobs;"
    "CREATE TABLE ferry_compare_jobs ("
    "  id bigserial PRIMARY KEY,"
    "  state text NOT NULL DEFAULT 'queued',"
    "  payload text NOT NULL,"
    "  worker int,"
    "  created_at timestamptz NOT NULL DEFAULT now(),"
    "  updated_at timestamptz);"
    "CREATE INDEX ferry_compare_jobs_queued ON ferry_compare_jobs (id) WHERE "
    "state = 'queued';";

const char* kSubmit =
    "INSERT INTO ferry_compare_jobs (payload) VALUES ($1) RETURNING id";
const char* kLease =
    "UPDATE ferry_compare_jobs SET state = 'running', worker = $1, updated_at "
    "= now() "
    "WHERE id = (SELECT id FROM ferry_compare_jobs WHERE state = 'queued' "
    "ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id, payload";
const char* kDone =
    "UPDATE ferry_compare_jobs SET state = 'done', updated_at = now() "
    "WHERE id = $1 AND worker = $2 AND state = 'running'";

std::atomic<int64_t> g_empty_polls{0};

PGconn* Connect(const std::string& conninfo) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  if (PQstatus(conn) != CONNECTION_OK)
    Die("postgres: connect: %s", PQerrorMessage(conn));
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  return conn;
}

void Exec(PGconn* conn, const char* sql) {
  PGresult* r = PQexec(conn, sql);
  const ExecStatusType status = PQresultStatus(r);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    Die("postgres: %s: %s", sql, PQerrorMessage(conn));
  }
  PQclear(r);
}

std::string Show(PGconn* conn, const char* setting) {
  PGresult* r = PQexec(conn, (std::string("SHOW ") + setting).c_str());
  if (PQresultStatus(r) != PGRES_TUPLES_OK)
    Die("postgres: SHOW %s: %s", setting, PQerrorMessage(conn));
  std::string value = PQgetvalue(r, 0, 0);
  PQclear(r);
  return value;
}

class PgConn : public Conn {
 public:
  // worker < 0: a producer.
  PgConn(const Options& o, Ledger* ledger, const std::string& conninfo,
         int worker, int64_t poll_min_us, int64_t poll_max_us)
      : o_(o),
        ledger_(ledger),
        conn_(Connect(conninfo)),
        worker_(worker),
        worker_param_(std::to_string(worker)),
        poll_min_us_(poll_min_us),
        poll_max_us_(poll_max_us),
        backoff_us_(poll_min_us) {
    Prepare("submit", kSubmit, 1);
    Prepare("lease", kLease, 1);
    Prepare("done", kDone, 2);
    if (PQsetnonblocking(conn_, 1) != 0)
      Die("postgres: PQsetnonblocking failed");
  }
  ~PgConn() override { PQfinish(conn_); }

  int fd() const override { return PQsocket(conn_); }

  void Start() override {
    if (worker_ < 0) {
      SubmitNext();
    } else {
      Lease();
    }
  }

  void OnEvents(uint32_t events) override {
    if (events & EPOLLOUT) Flush();
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
    if (!PQconsumeInput(conn_)) Die("postgres: %s", PQerrorMessage(conn_));
    while (in_flight_ && !PQisBusy(conn_)) {
      PGresult* r = PQgetResult(conn_);
      if (r == nullptr) {  // the statement is complete
        in_flight_ = false;
        PGresult* done = result_;
        result_ = nullptr;
        Complete(done);
        PQclear(done);
        break;
      }
      if (result_ != nullptr) PQclear(result_);
      result_ = r;
    }
  }

  void OnTimer() override { Lease(); }

 private:
  enum class State { kSubmit, kLease, kDone };

  void Prepare(const char* name, const char* sql, int params) {
    PGresult* r = PQprepare(conn_, name, sql, params, nullptr);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
      Die("postgres: prepare %s: %s", name, PQerrorMessage(conn_));
    PQclear(r);
  }

  void Send(State state, const char* statement, int n,
            const char* const* values) {
    state_ = state;
    if (!PQsendQueryPrepared(conn_, statement, n, values, nullptr, nullptr,
                             0)) {
      Die("postgres: send %s: %s", statement, PQerrorMessage(conn_));
    }
    in_flight_ = true;
    Flush();
  }
  void Flush() {
    const int r = PQflush(conn_);
    if (r < 0) Die("postgres: flush: %s", PQerrorMessage(conn_));
    const bool want_out = r == 1;
    if (want_out != watching_out_) {
      watching_out_ = want_out;
      loop->Watch(this, want_out ? (EPOLLIN | EPOLLOUT) : EPOLLIN);
    }
  }

  void SubmitNext() {
    const int64_t index = ledger_->Claim();
    if (index < 0) return;  // this producer is done
    payload_ = MakePayload(index, o_.payload_bytes);
    const char* values[] = {payload_.c_str()};
    Send(State::kSubmit, "submit", 1, values);
  }
  void Lease() {
    const char* values[] = {worker_param_.c_str()};
    Send(State::kLease, "lease", 1, values);
  }

  void Complete(PGresult* r) {
    if (r == nullptr) Die("postgres: a statement returned no result");
    const ExecStatusType status = PQresultStatus(r);
    switch (state_) {
      case State::kSubmit:
        if (status != PGRES_TUPLES_OK || PQntuples(r) != 1) {
          Die("postgres: submit: %s", PQresultErrorMessage(r));
        }
        ledger_->Submitted();
        SubmitNext();
        return;
      case State::kLease:
        if (status != PGRES_TUPLES_OK)
          Die("postgres: lease: %s", PQresultErrorMessage(r));
        if (PQntuples(r) == 0) {  // nothing queued: back off
          g_empty_polls.fetch_add(1, std::memory_order_relaxed);
          loop->After(backoff_us_, this);
          backoff_us_ = std::min(backoff_us_ * 2, poll_max_us_);
          return;
        }
        backoff_us_ = poll_min_us_;
        ledger_->Received(
            ParsePayload(PQgetvalue(r, 0, 1), PQgetlength(r, 0, 1)),
            "postgres");
        {
          // The no-op handler ran; mark the job done.
          job_id_ = PQgetvalue(r, 0, 0);
          const char* values[] = {job_id_.c_str(), worker_param_.c_str()};
          Send(State::kDone, "done", 2, values);
        }
        return;
      case State::kDone:
        if (status != PGRES_COMMAND_OK ||
            std::strcmp(PQcmdTuples(r), "1") != 0) {
          Die("postgres: done: %s (rows %s)", PQresultErrorMessage(r),
              PQcmdTuples(r));
        }
        ledger_->Completed();
        Lease();
        return;
    }
  }

  const Options& o_;
  Ledger* ledger_;
  PGconn* conn_;
  const int worker_;
  const std::string worker_param_;
  const int64_t poll_min_us_;
  const int64_t poll_max_us_;
  int64_t backoff_us_;
  State state_ = State::kSubmit;
  bool in_flight_ = false;
  bool watching_out_ = false;
  PGresult* result_ = nullptr;
  std::string payload_;
  std::string job_id_;
};

int Main(int argc, char** argv) {
  Flags flags(argc, argv);
  Options o = ParseCommon(flags, "postgres", 5432);
  const std::string user = flags.Str("user", "postgres");
  const std::string dbname = flags.Str("dbname", "postgres");
  const int64_t poll_min_us = flags.Int("poll_min_us", 1000);
  const int64_t poll_max_us = flags.Int("poll_max_us", 10000);
  flags.CheckAllKnown((std::string(kUsage) + kCommonUsage).c_str());
  if (poll_min_us < 1 || poll_max_us < poll_min_us)
    Die("need 1 <= --poll_min_us <= --poll_max_us");
  const std::string conninfo =
      "host=" + o.host + " port=" + std::to_string(o.port) + " user=" + user +
      " dbname=" + dbname + " sslmode=disable application_name=ferry-compare";

  // Setup before the clock starts: a fresh table, and the settings in force.
  PGconn* setup = Connect(conninfo);
  Exec(setup, kSchema);
  const std::string fsync = Show(setup, "fsync");
  const std::string synchronous_commit = Show(setup, "synchronous_commit");
  const std::string wal_sync_method = Show(setup, "wal_sync_method");
  const std::string server_version = Show(setup, "server_version");

  Ledger ledger(o.jobs);
  std::vector<std::unique_ptr<Conn>> conns;
  for (int i = 0; i < o.workers; ++i) {
    conns.push_back(std::make_unique<PgConn>(o, &ledger, conninfo, i,
                                             poll_min_us, poll_max_us));
  }
  for (int i = 0; i < o.producers; ++i) {
    conns.push_back(std::make_unique<PgConn>(o, &ledger, conninfo, -1,
                                             poll_min_us, poll_max_us));
  }
  const int rc = RunAndReport(o, ledger, conns, [&] {
    // Every job must have ended up done, once.
    PGresult* r = PQexec(setup,
                         "SELECT count(*) FILTER (WHERE state = 'done'), "
                         "count(*) FROM ferry_compare_jobs");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
      Die("postgres: final count: %s", PQerrorMessage(setup));
    const std::string done = PQgetvalue(r, 0, 0), total = PQgetvalue(r, 0, 1);
    PQclear(r);
    if (done != std::to_string(o.jobs) || total != std::to_string(o.jobs)) {
      Die("postgres: %s rows done of %s, expected %lld", done.c_str(),
          total.c_str(), static_cast<long long>(o.jobs));
    }
    return ",\"empty_polls\":" + std::to_string(g_empty_polls.load()) +
           ",\"poll_min_us\":" + std::to_string(poll_min_us) +
           ",\"poll_max_us\":" + std::to_string(poll_max_us) + ",\"fsync\":\"" +
           fsync + "\",\"synchronous_commit\":\"" + synchronous_commit +
           "\",\"wal_sync_method\":\"" + wal_sync_method +
           "\",\"server_version\":\"" + server_version + "\"";
  });
  PQfinish(setup);
  return rc;
}

}  // namespace
}  // namespace compare

int main(int argc, char** argv) { return compare::Main(argc, argv); }
