#!/usr/bin/env bash
# bench/compare/run.sh: Ferry against other durable queues on this machine.
#
# Installs what is missing (Debian packages), builds ferryd, ferry-bench and
# the drivers, then for each round runs `ferry-bench --mode=e2e` against a
# fresh ferryd (default settings: durable) and the same workload against
# beanstalkd (binlog, -f 0), Redis (AOF, appendfsync always), PostgreSQL
# (synchronous_commit=on) and, for reference, beanstalkd without a binlog.
# Every server is started for one run only, on 127.0.0.1, on a free port, in
# a fresh directory under a temporary directory, and stopped and removed
# afterwards. Prints a Markdown report (median and range of jobs/s per peer,
# ratio to Ferry's median, machine, versions, settings) and keeps it, with
# the raw JSON lines, in the results directory. See README.md.
#
# Usage: bench/compare/run.sh [--jobs=N|auto] [--producers=8] [--workers=8]
#          [--rounds=3] [--peers=LIST] [--out=DIR] [--run-timeout=600]
#          [--ferry-bench-args="..."] [--ferry-batch=K] [--no-install]
#          [--no-build]
#   --peers: comma-separated subset of beanstalkd-binlog-fsync,
#            redis-aof-always, postgres-sync-commit, beanstalkd-no-binlog
#            (ferry always runs: the ratios are to it).
#   --ferry-bench-args: extra ferry-bench flags for Ferry's runs; default
#            "--inline_handlers" (the no-op handler runs on the worker's
#            network thread, as the drivers run theirs on their event
#            loop). "--batch=100" measures SubmitBatch; "" the SDK's
#            default thread per slot.
#   --ferry-batch=K: each round also runs "ferry-batch": Ferry with its
#            producers sending SubmitBatch calls of K jobs (the peers still
#            send one job per request); the report gives its ratio to each
#            peer.
#   --jobs=auto (default): from the fsync probe, enough jobs that the
#            slowest durable peer (beanstalkd -f 0: two fsyncs per job, one
#            at a time) runs for about 12 s, the others (which group their
#            fsyncs) a few seconds; between 1,000 and 40,000.
# Environment: FERRY_BUILD (build directory, default ./build), TMPDIR (where
# the servers' directories go: must be a real disk, not tmpfs).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/common.sh
source "$HERE/../../deploy/common.sh"

ALL_PEERS=(beanstalkd-binlog-fsync redis-aof-always postgres-sync-commit beanstalkd-no-binlog)
JOBS=auto
PRODUCERS=8
WORKERS=8
ROUNDS=3
PEERS=$(IFS=,; echo "${ALL_PEERS[*]}")
OUT=
RUN_TIMEOUT=600
FERRY_BENCH_ARGS=--inline_handlers
FERRY_BATCH=0
INSTALL=1
BUILD=1
for arg in "$@"; do
  case $arg in
    --jobs=*) JOBS=${arg#*=} ;;
    --producers=*) PRODUCERS=${arg#*=} ;;
    --workers=*) WORKERS=${arg#*=} ;;
    --rounds=*) ROUNDS=${arg#*=} ;;
    --peers=*) PEERS=${arg#*=} ;;
    --out=*) OUT=${arg#*=} ;;
    --run-timeout=*) RUN_TIMEOUT=${arg#*=} ;;
    --ferry-bench-args=*) FERRY_BENCH_ARGS=${arg#*=} ;;
    --ferry-batch=*) FERRY_BATCH=${arg#*=} ;;
    --no-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      log "unknown argument: $arg (see --help)"
      exit 2
      ;;
  esac
done
for n in "$PRODUCERS" "$WORKERS" "$ROUNDS" "$RUN_TIMEOUT"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { log "--producers, --workers, --rounds, --run-timeout: positive integers"; exit 2; }
done
[[ $JOBS == auto || $JOBS =~ ^[1-9][0-9]*$ ]] || { log "--jobs: a positive integer or auto"; exit 2; }
IFS=, read -r -a SELECTED <<<"$PEERS"
for peer in "${SELECTED[@]}"; do
  [[ " ${ALL_PEERS[*]} " == *" $peer "* ]] || { log "unknown peer $peer"; exit 2; }
done
((ROUNDS <= 50)) || { log "--rounds: at most 50"; exit 2; }

# --- install and build ------------------------------------------------------

mapfile -t COMPARE_PACKAGES < <(grep -v '^\s*\(#\|$\)' "$HERE/packages.txt")
if ((INSTALL)); then
  install_deps "${COMPARE_PACKAGES[@]}"
fi
BIN=$FERRY_BUILD
DRIVER_TARGETS=(ferry-compare-beanstalkd ferry-compare-redis ferry-compare-postgres)
if ((BUILD)); then
  # A tree configured before libpq-dev/libhiredis-dev were installed has no
  # targets for their drivers: configure it again.
  if [ -f "$BIN/build.ninja" ] &&
    ! { grep -q 'ferry-compare-postgres' "$BIN/build.ninja" && grep -q 'ferry-compare-redis' "$BIN/build.ninja"; }; then
    log "configuring $BIN again (the comparison drivers are missing)"
    cmake -S "$FERRY_ROOT" -B "$BIN" >/dev/null
  fi
  build ferryd ferry-bench "${DRIVER_TARGETS[@]}"
fi
FERRYD=$BIN/server/ferryd
FERRY_BENCH=$BIN/bench/ferry-bench
DRIVERS=$BIN/bench/compare
for exe in "$FERRYD" "$FERRY_BENCH"; do
  [ -x "$exe" ] || { log "missing $exe (build it, or drop --no-build)"; exit 1; }
done
driver_for() {
  case $1 in
    beanstalkd-*) echo "$DRIVERS/ferry-compare-beanstalkd" ;;
    redis-*) echo "$DRIVERS/ferry-compare-redis" ;;
    postgres-*) echo "$DRIVERS/ferry-compare-postgres" ;;
  esac
}
PEERS_RUN=()
for peer in "${SELECTED[@]}"; do
  if [ -x "$(driver_for "$peer")" ]; then
    PEERS_RUN+=("$peer")
  else
    log "skipping $peer: $(driver_for "$peer") was not built (its -dev package missing?)"
  fi
done

PG_BIN=
# shellcheck disable=SC2012  # versioned directory names, no odd characters
for dir in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
  if [ -x "$dir/initdb" ]; then PG_BIN=$dir; break; fi
done
if [[ " ${PEERS_RUN[*]} " == *" postgres-sync-commit "* ]] && [ -z "$PG_BIN" ]; then
  log "no PostgreSQL server binaries (package postgresql)"
  exit 1
fi

# --- the temporary directory, and cleaning up --------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferry-compare.XXXXXX")
chmod 755 "$WORK"  # the postgres user must reach its directories
STARTED=()         # pids of servers still running
CLIENT_PID=        # the subshell running a load generator
PG_DATA_RUNNING=   # data directory of a running PostgreSQL
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_servers
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(stat -f -c %T "$WORK")" = tmpfs ]; then
  log "$WORK is on tmpfs, where fsync costs nothing: set TMPDIR to a directory on disk"
  exit 1
fi

# PostgreSQL refuses to run as root: run it as the postgres user.
PG_AS=()
if [ "$(id -u)" -eq 0 ]; then
  if ! id -u postgres >/dev/null 2>&1; then
    useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin postgres
  fi
  PG_AS=(runuser -u postgres --)
fi

stop_servers() {
  if [ -n "$CLIENT_PID" ]; then
    # The subshell's child is `timeout`, which passes SIGTERM to the client.
    pkill -TERM -P "$CLIENT_PID" 2>/dev/null || true
    wait "$CLIENT_PID" 2>/dev/null || true
    CLIENT_PID=
  fi
  if [ -n "$PG_DATA_RUNNING" ]; then
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA_RUNNING" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    PG_DATA_RUNNING=
  fi
  local pid
  for pid in "${STARTED[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED[@]}"; do
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  STARTED=()
}

# A port in 20000-32767 (below the ephemeral range) that nothing listens on.
free_port() {
  local port
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 12768))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  log "no free port found"
  return 1
}

# Waits (at most 30 s) until 127.0.0.1:PORT accepts connections; fails when
# PID exits first.
wait_port() {
  local port=$1 pid=$2
  for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { log "server (pid $pid) exited during start"; return 1; }
    sleep 0.1
  done
  log "server (pid $pid) did not listen on $port within 30 s"
  return 1
}

CLK_TCK=$(getconf CLK_TCK)
# CPU seconds of a process, its exited children (reaped) and its live
# children (PostgreSQL's backends and background processes).
tree_cpu() {
  local root=$1 ticks=0 pid fields
  for pid in "$root" $(pgrep -P "$root" || true); do
    [ -r "/proc/$pid/stat" ] || continue
    fields=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    # After "pid (comm) ": state=1 ... utime=12 stime=13 cutime=14 cstime=15.
    if [ "$pid" = "$root" ]; then
      ticks=$((ticks + $(awk '{print $12 + $13 + $14 + $15}' <<<"$fields")))
    else
      ticks=$((ticks + $(awk '{print $12 + $13}' <<<"$fields")))
    fi
  done
  awk -v t="$ticks" -v hz="$CLK_TCK" 'BEGIN {printf "%.3f", t / hz}'
}

# --- machine and settings ----------------------------------------------------

git_rev=$(git -C "$FERRY_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
# Microseconds per 4 KiB write with O_DSYNC on $WORK's disk, averaged over
# COUNT writes (the disk is shared: it is measured again before each run).
fsync_probe() {
  local count=$1 out secs
  out=$(timeout 120 dd if=/dev/zero of="$WORK/fsync-probe" bs=4k count="$count" oflag=dsync 2>&1 | tail -1)
  rm -f "$WORK/fsync-probe"
  secs=$(sed -n 's/.*copied, \([0-9.e+-]*\) s.*/\1/p' <<<"$out")
  [ -n "$secs" ] || { log "fsync probe failed: $out"; return 1; }
  awk -v s="$secs" -v n="$count" 'BEGIN {printf "%.0f", s / n * 1e6}'
}
fsync_us=$(fsync_probe 200)
if [ "$JOBS" = auto ]; then
  # beanstalkd -f 0 fsyncs once per put and once per delete, one at a time.
  JOBS=$(awk -v us="$fsync_us" 'BEGIN {
    n = 12e6 / (2 * (us < 1 ? 1 : us)); n = int(n / 500 + 0.5) * 500;
    if (n < 1000) n = 1000; if (n > 40000) n = 40000; print n }')
fi
load_before=$(uptime | sed 's/.*load average: //')

version_of() {
  case $1 in
    ferry | ferry-batch) echo "ferry $git_rev" ;;
    beanstalkd-*) beanstalkd -v 2>&1 | head -1 ;;
    redis-*) redis-server --version | awk '{print $1, $2, $3}' ;;
    postgres-*) "$PG_BIN/postgres" --version ;;
  esac
}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$BIN/compare-results/$STAMP}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
log "results: $OUT (N=$JOBS P=$PRODUCERS W=$WORKERS rounds=$ROUNDS; fsync probe ${fsync_us} µs)"

if [[ " ${PEERS_RUN[*]} " == *" postgres-sync-commit "* ]]; then
  log "initdb (once; each run starts from a copy)"
  mkdir "$WORK/pg-template"
  chown postgres: "$WORK/pg-template" 2>/dev/null || true
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$WORK/pg-template/data" -U postgres --auth=trust \
    -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; exit 1; }
  cat >>"$WORK/pg-template/data/postgresql.conf" <<'EOF'

# bench/compare/run.sh: durable settings, spelled out.
listen_addresses = '127.0.0.1'
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 100
EOF
fi

# --- one run -----------------------------------------------------------------

FAILURES=0
RUN_DIR=
SERVER_PID=
PORT=

# Starts PEER's server in a fresh directory; sets RUN_DIR, SERVER_PID, PORT.
start_server() {
  local peer=$1 round=$2
  RUN_DIR=$WORK/$round-$peer
  mkdir -m 755 "$RUN_DIR" || return 1
  PORT=$(free_port) || return 1
  case $peer in
    ferry | ferry-batch)
      "$FERRYD" --listen="127.0.0.1:$PORT" --db="$RUN_DIR/db/ferry.db" >"$RUN_DIR/server.log" 2>&1 &
      SERVER_PID=$!
      ;;
    beanstalkd-binlog-fsync)
      mkdir "$RUN_DIR/binlog"
      beanstalkd -l 127.0.0.1 -p "$PORT" -b "$RUN_DIR/binlog" -f 0 >"$RUN_DIR/server.log" 2>&1 &
      SERVER_PID=$!
      ;;
    beanstalkd-no-binlog)
      beanstalkd -l 127.0.0.1 -p "$PORT" >"$RUN_DIR/server.log" 2>&1 &
      SERVER_PID=$!
      ;;
    redis-aof-always)
      cat >"$RUN_DIR/redis.conf" <<EOF
bind 127.0.0.1
port $PORT
protected-mode yes
daemonize no
dir $RUN_DIR
logfile $RUN_DIR/server.log
appendonly yes
appendfsync always
save ""
EOF
      redis-server "$RUN_DIR/redis.conf" >/dev/null 2>&1 &
      SERVER_PID=$!
      ;;
    postgres-sync-commit)
      cp -a "$WORK/pg-template/data" "$RUN_DIR/data" || return 1
      if [ ${#PG_AS[@]} -gt 0 ]; then chown postgres: "$RUN_DIR" || return 1; fi
      PG_DATA_RUNNING=$RUN_DIR/data
      "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$RUN_DIR/data" -l "$RUN_DIR/server.log" -w -t 60 \
        -o "-p $PORT -k $RUN_DIR" start >/dev/null || return 1
      SERVER_PID=$(head -1 "$RUN_DIR/data/postmaster.pid") || return 1
      ;;
  esac
  [ "$peer" = postgres-sync-commit ] || STARTED+=("$SERVER_PID")
  wait_port "$PORT" "$SERVER_PID" || return 1
}

# Sets CMD to the load generator's command for PEER.
client_command() {
  local peer=$1 extra
  case $peer in
    ferry | ferry-batch)
      read -r -a extra <<<"$FERRY_BENCH_ARGS"
      [ "$peer" = ferry-batch ] && extra+=(--batch="$FERRY_BATCH")
      CMD=("$FERRY_BENCH" --broker="127.0.0.1:$PORT" --mode=e2e --producers="$PRODUCERS"
        --workers="$WORKERS" --jobs="$JOBS" --timeout="${RUN_TIMEOUT}s" --json "${extra[@]}")
      ;;
    *)
      CMD=("$(driver_for "$peer")" --peer="$peer" --port="$PORT" --producers="$PRODUCERS"
        --workers="$WORKERS" --jobs="$JOBS" --timeout_s="$RUN_TIMEOUT")
      ;;
  esac
}


run_one() {
  local peer=$1 round=$2
  log "round $round/$ROUNDS: $peer"
  if ! start_server "$peer" "$round"; then
    record_failure "$peer" "$round" "server did not start"
    return 0
  fi
  local cpu_before cpu_after load1 run_fsync_us rc=0
  run_fsync_us=$(fsync_probe 50) || run_fsync_us=-1
  client_command "$peer"
  load1=$(cut -d' ' -f1 /proc/loadavg)
  cpu_before=$(tree_cpu "$SERVER_PID")
  # In a subshell, so that `times` (children's CPU) counts the client only;
  # in the background, so that a signal to this script is handled at once.
  (
    timeout --kill-after=10 "$((RUN_TIMEOUT + 30))" "${CMD[@]}" >"$RUN_DIR/client.out" 2>"$RUN_DIR/client.err" &&
      rc=0 || rc=$?
    times >"$RUN_DIR/client.times" # not in a pipeline: that would fork
    exit "$rc"
  ) &
  CLIENT_PID=$!
  wait "$CLIENT_PID" || rc=$?
  CLIENT_PID=
  sleep 0.2  # let PostgreSQL reap the backends of the closed connections
  cpu_after=$(tree_cpu "$SERVER_PID")
  local json client_cpu server_cpu
  json=$(grep -m1 '^{' "$RUN_DIR/client.out" || true)
  if ((rc != 0)) || [ -z "$json" ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
    # shellcheck disable=SC1003  # the tr sets are "\n", a double quote and a backslash
    record_failure "$peer" "$round" "client exit $rc: $(tail -3 "$RUN_DIR/client.err" | tr '\n"\\' '  _')"
  else
    client_cpu=$(times_to_s "$(tail -1 "$RUN_DIR/client.times")")
    server_cpu=$(awk -v a="$cpu_before" -v b="$cpu_after" 'BEGIN {printf "%.3f", b - a}')
    case $peer in ferry | ferry-batch) json="{\"peer\":\"$peer\",${json#\{}" ;; esac
    json="${json%\}},\"round\":$round,\"server_cpu_s\":$server_cpu,\"client_cpu_s\":$client_cpu,\"load1\":$load1,\"fsync_us\":$run_fsync_us}"
    echo "$json" >>"$RESULTS"
    log "  $(sed -n 's/.*"jobs_per_s":\([0-9]*\).*/\1/p' <<<"$json") jobs/s"
  fi
  stop_servers
  rm -rf "$RUN_DIR"
}

record_failure() {
  local peer=$1 round=$2 why=$3
  FAILURES=$((FAILURES + 1))
  log "  FAILED: $peer round $round: $why"
  echo "{\"peer\":\"$peer\",\"round\":$round,\"failed\":true,\"error\":\"$why\"}" >>"$RESULTS"
  mkdir -p "$OUT/failed-$round-$peer"
  cp "$RUN_DIR"/*.log "$RUN_DIR"/client.* "$OUT/failed-$round-$peer/" 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
  run_one ferry "$round"
  if ((FERRY_BATCH > 0)); then run_one ferry-batch "$round"; fi
  for peer in "${PEERS_RUN[@]}"; do
    run_one "$peer" "$round"
  done
done
load_after=$(uptime | sed 's/.*load average: //')

# --- the report --------------------------------------------------------------

REPORT=$OUT/report.md
{
  echo "## Ferry vs other queues: e2e, N=$JOBS, P=$PRODUCERS, W=$WORKERS, $ROUNDS rounds ($STAMP)"
  echo
  python3 "$HERE/summarize.py" "$RESULTS" || true
  echo
  echo "Median over the rounds; range is min–max; ratios use Ferry's median from this run."
  echo "CPU per job: the server's (its process tree) and the load generator's, medians."
  echo "Load and fsync: the 1-minute load average and an fsync probe (50 × dd oflag=dsync) just before each run, medians."
  echo
  echo "Every run, in the order they ran:"
  echo
  python3 "$HERE/summarize.py" --runs "$RESULTS" || true
  echo
  echo "**Machine.** $(nproc) cores ($cpu_model), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)," \
    "kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME");" \
    "disk for the servers: $(df -PT "$WORK" | awk 'NR==2 {print $2 " on " $1}');" \
    "fsync probe (dd bs=4k count=200 oflag=dsync): ${fsync_us} µs per write;" \
    "load average before: $load_before, after: $load_after."
  echo
  echo "**Versions.** $(version_of ferry) (ferryd, ferry-bench);"
  for peer in "${PEERS_RUN[@]}"; do
    case $peer in beanstalkd-no-binlog) continue ;; esac
    echo "$(version_of "$peer");"
  done
  echo "hiredis $(pkg-config --modversion hiredis 2>/dev/null || echo '?'), libpq $(pkg-config --modversion libpq 2>/dev/null || echo '?')."
  echo
  echo "**Settings.** Each run starts its server fresh on 127.0.0.1:PORT in an empty directory DIR under $(dirname "$WORK"), and removes it after."
  echo
  echo "- ferry: \`ferryd --listen=127.0.0.1:PORT --db=DIR/db/ferry.db\` (every other flag default: --sync=full);" \
    "client \`ferry-bench --mode=e2e --producers=$PRODUCERS --workers=$WORKERS --jobs=$JOBS --json${FERRY_BENCH_ARGS:+ $FERRY_BENCH_ARGS}\` (worker SDK, --slots default 16 per worker; unary Submit unless --batch)"
  if ((FERRY_BATCH > 0)); then
    echo "- ferry-batch: the same ferryd; client as ferry plus \`--batch=$FERRY_BATCH\` (SubmitBatch of $FERRY_BATCH jobs per call)"
  fi
  for peer in "${PEERS_RUN[@]}"; do
    case $peer in
      beanstalkd-binlog-fsync) echo "- $peer: \`beanstalkd -l 127.0.0.1 -p PORT -b DIR/binlog -f 0\` (fsync before each reply); put / reserve-with-timeout / delete" ;;
      beanstalkd-no-binlog) echo "- $peer: \`beanstalkd -l 127.0.0.1 -p PORT\` (memory only: not durable, a reference)" ;;
      redis-aof-always) echo "- $peer: \`redis-server\` with bind 127.0.0.1, appendonly yes, appendfsync always, save \"\" (no RDB snapshots); LPUSH / BLMOVE RIGHT LEFT into a per-worker processing list / LREM" ;;
      postgres-sync-commit) echo "- $peer: PostgreSQL via initdb + pg_ctl, postgresql.conf defaults plus listen_addresses='127.0.0.1', fsync=on, synchronous_commit=on, full_page_writes=on; INSERT / UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING / UPDATE state='done', one autocommit transaction each; workers poll with 1–10 ms backoff when empty" ;;
    esac
  done
  echo "- drivers: \`bench/compare/ferry-compare-* --producers=$PRODUCERS --workers=$WORKERS --jobs=$JOBS\`: one epoll thread, one request in flight per connection, 100-byte payloads"
  echo
  echo "Reproduce: \`bench/compare/run.sh --jobs=$JOBS --producers=$PRODUCERS --workers=$WORKERS --rounds=$ROUNDS$( ((FERRY_BATCH > 0)) && echo " --ferry-batch=$FERRY_BATCH")\`. Raw lines: $RESULTS"
} >"$REPORT"
cat "$REPORT"
if ((FAILURES > 0)); then
  log "$FAILURES run(s) failed; their logs are in $OUT/failed-*"
  exit 1
fi
