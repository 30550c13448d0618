// ferryd: the Ferry broker. Parses flags, opens the store, serves until
// SIGTERM or SIGINT, then shuts down gracefully.

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "base/broker_address.h"
#include "base/clock.h"
#include "base/daemon.h"
#include "base/log_format.h"
#include "base/read_file.h"
#include "base/status_macros.h"
#include "server/protobuf_log.h"
#include "server/queue_config.h"
#include "server/server.h"
#include "server/validate.h"
#include "storage/sqlite/sqlite_store.h"

ABSL_FLAG(std::string, listen, ferry::kDefaultBrokerAddress,
          "Address to serve gRPC on, host:port. Port 0 picks a free port; "
          "the log line 'listening address=...' tells which.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain to serve TLS with (with --tls_key). The "
          "files are re-read when they change (see --tls_refresh).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA file: clients must present a certificate it signed "
          "(mutual TLS). Needs --tls_cert.");
ABSL_FLAG(absl::Duration, tls_refresh, absl::Minutes(1),
          "How often the TLS files are checked for changes; new connections "
          "use the new ones, open connections are kept.");
ABSL_FLAG(std::string, auth_tokens, "",
          "Token file: every call needs a token it lists, with the role for "
          "the call (read, submit, work, admin) and, if the token has queue "
          "scopes, a queue in them. Create tokens with 'ferry token create'. "
          "Re-read on SIGHUP.");
ABSL_FLAG(bool, allow_insecure, false,
          "Serve a non-loopback --listen address without TLS and tokens. "
          "Only on a network where everyone who can reach the port may run "
          "and read every job.");
ABSL_FLAG(std::string, db, "./data/ferry.db",
          "SQLite database file; created (with its directory) if missing.");
ABSL_FLAG(std::string, log_level, "info",
          "trace, debug, info, warn, error or off. SPDLOG_LEVEL overrides.");
ABSL_FLAG(std::string, sync, "full",
          "full: every acknowledged change survives power loss (fsync per "
          "commit). normal: survives a ferryd crash, may lose the last "
          "commits on power loss; faster on slow disks.");
ABSL_FLAG(absl::Duration, retention, absl::Hours(24 * 7),
          "How long finished jobs (SUCCEEDED, FAILED, CANCELLED) are kept.");
ABSL_FLAG(int64_t, max_payload_bytes, 1 << 20,
          "Largest job payload (and result) accepted, in bytes.");
ABSL_FLAG(absl::Duration, lease_ttl, absl::Seconds(30),
          "Default lease TTL for jobs that set none: how long a worker may "
          "go without a heartbeat before its job is re-run.");
ABSL_FLAG(int32_t, max_attempts, 5,
          "Default attempts per job (the first included) for jobs that set "
          "none.");
ABSL_FLAG(absl::Duration, initial_backoff, absl::Seconds(1),
          "Default delay before the first retry; doubles per attempt.");
ABSL_FLAG(absl::Duration, max_backoff, absl::Hours(1),
          "Default cap on the retry delay.");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "On SIGTERM, how long workers get to report running jobs before "
          "ferryd exits.");
ABSL_FLAG(std::string, queue_config, "",
          "File of per-queue job defaults, one 'QUEUE key=value...' per line "
          "(keys: lease_ttl, max_attempts, initial_backoff, max_backoff).");
ABSL_FLAG(bool, integrity_check, true,
          "Check the database (PRAGMA quick_check) at start and refuse a "
          "damaged one.");
ABSL_FLAG(absl::Duration, listener_probe_interval, absl::Seconds(10),
          "How often ferryd checks, over a new connection to itself, that it "
          "still accepts connections; after 3 failed checks in a row it "
          "reports NOT_SERVING and exits 1 for its supervisor to restart it "
          "(gRPC 1.51 stops accepting for good once it ran out of file "
          "descriptors). 0 turns the check off.");
ABSL_FLAG(int64_t, max_watchers, 100000,
          "Most Watch and Wait calls open at once; past it they are refused "
          "with RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_watchers_per_connection, 1000,
          "Most Watch and Wait calls one client connection may have open; "
          "past it they are refused with RESOURCE_EXHAUSTED. Must be below "
          "--max_streams_per_connection.");
ABSL_FLAG(int, max_streams_per_connection, 2000,
          "Most calls one client connection may have open at once (HTTP/2 "
          "SETTINGS_MAX_CONCURRENT_STREAMS): gRPC clients wait for a free "
          "one; streams past it from a client that ignores the setting are "
          "refused.");
ABSL_FLAG(int64_t, max_watch_bytes, 256 << 20,
          "Bytes of FULL-view Watch responses (payload and result) written "
          "but not yet read by their clients, across all Watch calls, "
          "counting gRPC's copy too; past it such a Watch is ended with "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(absl::Duration, max_connection_idle, absl::Minutes(5),
          "A client connection with no call open for this long is closed "
          "(clients reconnect on their next call), so idle connections do "
          "not hold file descriptors. 0: never.");
ABSL_FLAG(absl::Duration, handshake_timeout, absl::Seconds(20),
          "A connection that has not finished its TLS and HTTP/2 handshake "
          "within this is closed.");
ABSL_FLAG(int64_t, max_queues, 100000,
          "Most queues held at once (with jobs waiting to run, workers "
          "waiting on them, or paused); a Submit that would add one past it "
          "is refused with RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_worker_sessions, 10000,
          "Most worker streams (Workers.Connect) open at once; past it a "
          "worker's Hello is refused with RESOURCE_EXHAUSTED.");

namespace ferry {
namespace {

// mkdir -p of the directory that holds `path`.
absl::Status MakeParentDirs(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return absl::OkStatus();
  const std::string dir = path.substr(0, slash);
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string prefix = dir.substr(0, pos);
    if (mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::UnavailableError(
          absl::StrCat("cannot create directory ", prefix,
                       " for --db: ", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

// Warns about each of the database's files (the file, its WAL, shared
// memory and lock files) that users other than ferryd's may read: they
// hold every payload and result.
void WarnIfReadableByOthers(const std::string& db) {
  for (const std::string& path : {db, db + "-wal", db + "-shm", db + ".lock"}) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0 || (st.st_mode & 077) == 0) continue;
    spdlog::warn(
        "database file readable by other users path={} mode={:04o}; run: "
        "chmod 600 {}",
        path, st.st_mode & 07777, path);
  }
}

absl::Status Validate(ServerOptions& options, SqliteOptions& sqlite) {
  const std::string sync = absl::GetFlag(FLAGS_sync);
  if (sync == "full") {
    sqlite.sync = SqliteOptions::Sync::kFull;
  } else if (sync == "normal") {
    sqlite.sync = SqliteOptions::Sync::kNormal;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--sync must be full or normal, got ", sync));
  }
  JobPolicy& policy = options.broker.policy;
  policy.lease_ttl = absl::GetFlag(FLAGS_lease_ttl);
  policy.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  policy.initial_backoff = absl::GetFlag(FLAGS_initial_backoff);
  policy.max_backoff = absl::GetFlag(FLAGS_max_backoff);
  policy.max_payload_bytes = absl::GetFlag(FLAGS_max_payload_bytes);
  options.broker.retention = absl::GetFlag(FLAGS_retention);
  options.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  options.broker.max_sessions = absl::GetFlag(FLAGS_max_worker_sessions);
  options.broker.max_watchers = absl::GetFlag(FLAGS_max_watchers);
  options.broker.max_queues = absl::GetFlag(FLAGS_max_queues);
  if (options.broker.max_queues < 1) {
    return absl::InvalidArgumentError("--max_queues must be >= 1");
  }
  options.max_watch_bytes = absl::GetFlag(FLAGS_max_watch_bytes);
  options.max_watchers_per_connection =
      absl::GetFlag(FLAGS_max_watchers_per_connection);
  if (options.max_watchers_per_connection < 1) {
    return absl::InvalidArgumentError(
        "--max_watchers_per_connection must be >= 1");
  }
  options.max_streams_per_connection =
      absl::GetFlag(FLAGS_max_streams_per_connection);
  if (options.max_watchers_per_connection >=
      options.max_streams_per_connection) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_watchers_per_connection (", options.max_watchers_per_connection,
        ") must be below --max_streams_per_connection (",
        options.max_streams_per_connection,
        "), so that a client with every Watch open can still make other "
        "calls"));
  }
  if (options.max_watch_bytes < 1) {
    return absl::InvalidArgumentError("--max_watch_bytes must be >= 1");
  }
  if (options.broker.max_watchers < 1) {
    return absl::InvalidArgumentError("--max_watchers must be >= 1");
  }
  FERRY_RETURN_IF_ERROR(ValidatePolicy(policy, "--"));
  if (options.broker.max_sessions < 1) {
    return absl::InvalidArgumentError("--max_worker_sessions must be >= 1");
  }
  if (options.broker.retention <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--retention must be positive");
  }
  if (options.shutdown_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--shutdown_grace must be >= 0");
  }
  if (options.listener_probe_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--listener_probe_interval must be >= 0 (0: no checks)");
  }
  if (options.max_connection_idle < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--max_connection_idle must be >= 0 (0: never)");
  }
  if (options.handshake_timeout < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        "--handshake_timeout must be at least 1s");
  }
  if (options.tls.refresh < absl::Seconds(1)) {
    return absl::InvalidArgumentError("--tls_refresh must be at least 1s");
  }
  if (!options.tls.client_ca.empty() && !options.tls.enabled()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca needs --tls_cert and --tls_key: client "
        "certificates are asked for in a TLS handshake");
  }
  const std::string queue_config = absl::GetFlag(FLAGS_queue_config);
  if (!queue_config.empty()) {
    absl::StatusOr<std::string> text = ReadFileToString(queue_config);
    if (!text.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--queue_config: ", text.status().message()));
    }
    absl::StatusOr<std::map<std::string, JobPolicy>> policies =
        ParseQueueConfig(*text, policy);
    if (!policies.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(queue_config, ": ", policies.status().message()));
    }
    options.broker.queue_policies = *std::move(policies);
  }
  return absl::OkStatus();
}

constexpr char kUsage[] =
    "Ferry broker: a durable job queue served over gRPC.\n"
    "  ferryd [--listen=127.0.0.1:7070] [--db=./data/ferry.db] [flags]\n"
    "  ferryd --flagfile=/etc/ferry/ferryd.flags\n"
    "Stops gracefully on SIGTERM or SIGINT; re-reads --auth_tokens on "
    "SIGHUP.\nSee docs/operations.md (Security: TLS and tokens).";

int Usage(absl::string_view message) {
  std::fprintf(stderr, "ferryd: %s\n", std::string(message).c_str());
  return kExitUsage;
}

int Run(int argc, char** argv) {
  const absl::StatusOr<std::vector<std::string>> args =
      InitDaemon(argc, argv, kUsage, __FILE__, FLAGS_log_level);
  if (!args.ok()) return Usage(args.status().message());

  ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.tls.cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls.key = absl::GetFlag(FLAGS_tls_key);
  options.tls.client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  options.tls.refresh = absl::GetFlag(FLAGS_tls_refresh);
  options.auth_tokens = absl::GetFlag(FLAGS_auth_tokens);
  options.allow_insecure = absl::GetFlag(FLAGS_allow_insecure);
  options.listener_probe_interval =
      absl::GetFlag(FLAGS_listener_probe_interval);
  options.max_connection_idle = absl::GetFlag(FLAGS_max_connection_idle);
  options.handshake_timeout = absl::GetFlag(FLAGS_handshake_timeout);
  SqliteOptions sqlite;
  sqlite.path = absl::GetFlag(FLAGS_db);
  sqlite.check_integrity = absl::GetFlag(FLAGS_integrity_check);
  if (absl::Status s = Validate(options, sqlite); !s.ok()) {
    return Usage(s.message());
  }

  // Before any thread starts: the signals are taken by Wait() below.
  const StopSignals signals(/*reload=*/true);

  RouteProtobufLogs(SystemClock::Get());
  spdlog::info("open files limit={}", RaiseOpenFilesLimit());
  // Set by the listener probe: the listener is dead, stop and exit 1.
  std::atomic<bool> listener_lost{false};
  options.on_listener_lost = [&listener_lost] {
    listener_lost.store(true);
    kill(getpid(), SIGTERM);
  };
  // What ferryd creates (the database's directory, the file, its WAL and
  // lock files, later backups) is its own: they hold every payload.
  umask(077);
  if (absl::Status s = MakeParentDirs(sqlite.path); !s.ok()) {
    spdlog::error("cannot start status=\"{}\"", s.message());
    return kExitFailure;
  }
  spdlog::info("opening database path={} sync={}", sqlite.path,
               absl::GetFlag(FLAGS_sync));
  absl::StatusOr<std::unique_ptr<Store>> store = OpenSqliteStore(sqlite);
  if (!store.ok()) {
    spdlog::error("cannot open database path={} status=\"{}\"", sqlite.path,
                  store.status().ToString());
    return kExitFailure;
  }
  WarnIfReadableByOthers(sqlite.path);
  absl::StatusOr<std::unique_ptr<FerryServer>> server =
      FerryServer::Start(store->get(), SystemClock::Get(), options);
  if (!server.ok()) {
    spdlog::error("cannot start status=\"{}\"", server.status().ToString());
    return kExitFailure;
  }
  spdlog::info("listening address={}", (*server)->address());

  while (signals.Wait() == SIGHUP) {
    if (options.auth_tokens.empty()) continue;
    if (absl::Status s = (*server)->ReloadTokens(); !s.ok()) {
      spdlog::error("tokens not reloaded, the old ones stay status=\"{}\"",
                    s.message());
    }
  }
  (*server)->Shutdown();
  server->reset();
  store->reset();
  if (listener_lost.load()) {
    spdlog::error("stopped: the listener no longer accepted connections");
    return kExitFailure;
  }
  spdlog::info("stopped");
  return 0;
}

}  // namespace
}  // namespace ferry

int main(int argc, char** argv) { return ferry::Run(argc, argv); }
