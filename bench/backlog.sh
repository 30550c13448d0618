#!/usr/bin/env bash
# bench/backlog.sh: does dispatch stay flat as the backlog grows, and how
# fast does ferryd serve again with a million jobs queued?
#
#   bench/backlog.sh [--big=1000000] [--take=1000] [--rounds=5]
#                    [--ferry-bench-args="--inline_handlers ..."]
#
# Starts its own ferryd (default settings) in a temp dir on 127.0.0.1,
# measures the dispatch rate of --take jobs with 1k, 100k and --big jobs
# queued behind them (median of --rounds), then restarts ferryd with the big
# backlog and times start -> serving (the 'listening' line, then a
# successful QueueStats), with and without the start-up integrity check.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../deploy/common.sh"

BIG=1000000 TAKE=1000 ROUNDS=5 BENCH_ARGS=
for arg in "$@"; do
  case $arg in
    --big=*) BIG=${arg#*=} ;;
    --take=*) TAKE=${arg#*=} ;;
    --rounds=*) ROUNDS=${arg#*=} ;;
    --ferry-bench-args=*) BENCH_ARGS=${arg#*=} ;;
    *) log "unknown argument $arg"; exit 2 ;;
  esac
done
BIN=$FERRY_BUILD
DIR=$(mktemp -d "${TMPDIR:-/tmp}/ferry-backlog.XXXXXX")
FERRYD_PID=
cleanup() {
  [ -n "$FERRYD_PID" ] && kill -TERM "$FERRYD_PID" 2>/dev/null && wait "$FERRYD_PID" 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT

# start_ferryd [FLAGS...]: starts ferryd on a free port; sets ADDR, FERRYD_PID.
STARTS=0
start_ferryd() {
  STARTS=$((STARTS + 1))
  local logfile="$DIR/ferryd-$STARTS.log"
  "$BIN/server/ferryd" --listen=127.0.0.1:0 --db="$DIR/db/ferry.db" "$@" 2>"$logfile" &
  FERRYD_PID=$!
  ADDR=$(listening_address "$logfile" "$FERRYD_PID")
}
stop_ferryd() { kill -TERM "$FERRYD_PID"; wait "$FERRYD_PID" || true; FERRYD_PID=; }
bench() { "$BIN/bench/ferry-bench" --broker="$ADDR" --json "$@"; }

start_ferryd
SIZES=(1000 100000 "$BIG")
declare -A RATE RATES
for backlog in "${SIZES[@]}"; do
  log "queueing $backlog jobs in backlog-$backlog"
  bench --mode=submit --batch=1000 --jobs="$backlog" --queue="backlog-$backlog" >/dev/null
done
# Rounds interleave the sizes, so each sees the machine in the same state.
for round in $(seq "$ROUNDS"); do
  for backlog in "${SIZES[@]}"; do
    queue="backlog-$backlog"
    # Top the queue up so every round sees the same backlog.
    bench --mode=submit --batch=1000 --jobs="$TAKE" --queue="$queue" >/dev/null
    read -r -a extra <<<"$BENCH_ARGS"
    line=$(bench --mode=backlog --fill=false --queue="$queue" \
      --backlog=$((backlog + TAKE)) --jobs="$TAKE" "${extra[@]}")
    RATES[$backlog]+="$(sed 's/.*"jobs_per_s":\([0-9]*\).*/\1/' <<<"$line") "
  done
  log "round $round done"
done
for backlog in "${SIZES[@]}"; do
  RATE[$backlog]=$(tr ' ' '\n' <<<"${RATES[$backlog]}" | grep . | median)
  log "backlog $backlog: ${RATES[$backlog]}jobs/s (median ${RATE[$backlog]})"
done

stop_ferryd
# restart [FLAGS...]: sets LISTEN and SERVE, seconds from start. Not run in
# a subshell, so the trap can always stop the ferryd it started.
restart() {
  local t0 t1 t2
  t0=$(date +%s.%N)
  start_ferryd "$@"
  t1=$(date +%s.%N)
  "$BIN/client/ferry" --broker="$ADDR" queues >/dev/null
  t2=$(date +%s.%N)
  LISTEN=$(echo "$t1 - $t0" | bc)
  SERVE=$(echo "$t2 - $t0" | bc)
  stop_ferryd
}
restart
listen_check=$LISTEN serve_check=$SERVE
restart --integrity_check=false
listen_nocheck=$LISTEN serve_nocheck=$SERVE
db_mb=$(( $(stat -c %s "$DIR/db/ferry.db") / 1048576 ))

cat <<REPORT

| backlog | dispatch jobs/s (median of $ROUNDS, $TAKE jobs each) | vs 1k |
|---:|---:|---:|
| 1,000 | ${RATE[1000]} | 1.00 |
| 100,000 | ${RATE[100000]} | $(echo "scale=2; ${RATE[100000]} / ${RATE[1000]}" | bc) |
| $BIG | ${RATE[$BIG]} | $(echo "scale=2; ${RATE[$BIG]} / ${RATE[1000]}" | bc) |

Restart with $BIG jobs queued (database ${db_mb} MiB): listening after ${listen_check} s and answering after ${serve_check} s with the integrity check; ${listen_nocheck} s / ${serve_nocheck} s with --integrity_check=false.
REPORT
