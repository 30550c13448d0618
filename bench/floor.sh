#!/usr/bin/env bash
# bench/floor.sh: what a unary Submit costs in gRPC alone, next to ferryd.
#
#   bench/floor.sh [--jobs=20000] [--rounds=3]
#
# Rounds interleave four servers on 127.0.0.1, each driven by
# `ferry-bench --mode=submit` (8 producers, one call in flight each):
# grpc-floor with the callback API, with the callback API and Finish from
# another thread (one hand-off), with the completion-queue API on one
# thread, and a fresh durable ferryd. Prints server and client CPU per call
# (medians) and jobs/s. Needs a build (deploy/test.sh or cmake --build).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../deploy/common.sh"

JOBS=20000 ROUNDS=3
for arg in "$@"; do
  case $arg in
    --jobs=*) JOBS=${arg#*=} ;;
    --rounds=*) ROUNDS=${arg#*=} ;;
    *) log "unknown argument $arg"; exit 2 ;;
  esac
done
BIN=$FERRY_BUILD
for exe in "$BIN/bench/grpc-floor" "$BIN/bench/ferry-bench" "$BIN/server/ferryd"; do
  [ -x "$exe" ] || { log "missing $exe: build first"; exit 1; }
done
DIR=$(mktemp -d "${TMPDIR:-/tmp}/ferry-floor.XXXXXX")
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# one NAME CMD...: starts the server, drives it, records "NAME server_us client_us jobs_per_s".
one() {
  local name=$1; shift
  local logfile="$DIR/$name.log" addr=
  rm -rf "$DIR/db"
  "$@" 2>"$logfile" >"$DIR/$name.out" &
  PID=$!
  addr=$(listening_address "$logfile" "$PID") || exit 1
  local t0 t1 line
  t0=$(ticks "$PID")
  line=$(bash -c 'b="$1"; shift; "$b" "$@"; times' _ "$BIN/bench/ferry-bench" \
    --broker="$addr" --mode=submit --jobs="$JOBS" --json | tr '\n' ' ')
  t1=$(ticks "$PID")
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=
  local rate client_s
  rate=$(grep -o '"jobs_per_s":[0-9]*' <<<"$line" | cut -d: -f2)
  # `times` prints the children's user and system time on its second line.
  client_s=$(times_to_s "$(grep -o '[0-9]*m[0-9.]*s [0-9]*m[0-9.]*s *$' <<<"$line")")
  echo "$name $(echo "($t1 - $t0) * 1000000 / $hz / $JOBS" | bc) $(echo "$client_s * 1000000 / $JOBS" | bc) $rate" >>"$DIR/results"
}

for round in $(seq "$ROUNDS"); do
  one grpc-callback "$BIN/bench/grpc-floor" --api=callback
  one grpc-callback-hop "$BIN/bench/grpc-floor" --api=callback_hop
  one grpc-async-1-thread "$BIN/bench/grpc-floor" --api=async --threads=1
  one ferryd "$BIN/server/ferryd" --listen=127.0.0.1:0 --db="$DIR/db/ferry.db"
  log "round $round done"
done

echo
echo "| server | server CPU µs/call | client CPU µs/call | jobs/s | (median of $ROUNDS, $JOBS unary Submits, 8 producers) |"
echo "|---|---:|---:|---:|---|"
for name in grpc-callback grpc-callback-hop grpc-async-1-thread ferryd; do
  s=$(awk -v n="$name" '$1 == n {print $2}' "$DIR/results" | median)
  c=$(awk -v n="$name" '$1 == n {print $3}' "$DIR/results" | median)
  r=$(awk -v n="$name" '$1 == n {print $4}' "$DIR/results" | median)
  echo "| $name | $s | $c | $r | |"
done
