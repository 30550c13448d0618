#!/usr/bin/env bash
# bench/abuse_soak.sh: does a ferryd started with default flags survive its
# known attacks at once, while a normal client keeps submitting?
#
#   bench/abuse_soak.sh [--seconds=30] [--watchers=1000] [--credits=10000]
#                       [--big_jobs=300] [--flood_pairs=400000] [--rate=200]
#                       [--no-flood] [--via-nginx]
#
# Starts its own ferryd (defaults) in a temp dir on 127.0.0.1, then for
# --seconds runs, together:
#   - a worker stream on queue `soak` with --credits credits that never reads,
#     and --big_jobs jobs of 1,000,000 bytes submitted to that queue;
#   - --watchers Watch calls (FULL view) on a 1,000,000-byte job, never read;
#   - an HTTP/2 rapid-reset flood (--flood_pairs HEADERS+RST_STREAM pairs on
#     one connection, tests/e2e/h2_flood.py), unless --no-flood;
#   - a normal client: ferry-bench --mode=latency at --rate Submits/s with
#     two workers on its own queue.
# With --via-nginx every client goes through Debian's nginx (grpc_pass, as
# in deploy/nginx/ferry.conf but plaintext), the deployment
# docs/operations.md recommends for untrusted networks.
# Prints ferryd's peak RSS (sampled every 0.2 s) and the normal client's
# Submit p50/p99/max. Needs Debian's python3-grpcio, python3-grpc-tools and
# python3-h2 (deploy/common.sh installs them). Traffic goes to 127.0.0.1 only.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../deploy/common.sh"

SECONDS_=30 WATCHERS=1000 CREDITS=10000 BIG=300 PAIRS=400000 RATE=200 FLOOD=1
NGINX=0
for arg in "$@"; do
  case $arg in
    --seconds=*) SECONDS_=${arg#*=} ;;
    --watchers=*) WATCHERS=${arg#*=} ;;
    --credits=*) CREDITS=${arg#*=} ;;
    --big_jobs=*) BIG=${arg#*=} ;;
    --flood_pairs=*) PAIRS=${arg#*=} ;;
    --rate=*) RATE=${arg#*=} ;;
    --no-flood) FLOOD=0 ;;
    --via-nginx) NGINX=1 ;;
    *) log "unknown argument $arg"; exit 2 ;;
  esac
done
BIN=$FERRY_BUILD
PY=/usr/bin/python3
DIR=$(mktemp -d "${TMPDIR:-/tmp}/ferry-soak.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$DIR/nginx.pid" ] && kill "$(cat "$DIR/nginx.pid")" 2>/dev/null
  [ -n "${FERRYD_PID:-}" ] && kill -TERM "$FERRYD_PID" 2>/dev/null && wait "$FERRYD_PID" 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT

"$HERE/../examples/python/gen_stubs.sh" "$DIR/stubs" >/dev/null
"$BIN/server/ferryd" --listen=127.0.0.1:0 --db="$DIR/db/ferry.db" ${FERRYD_FLAGS:-} 2>"$DIR/ferryd.log" &
FERRYD_PID=$!
ADDR=$(listening_address "$DIR/ferryd.log" "$FERRYD_PID")
rss() { awk '/VmRSS/{print $2}' "/proc/$FERRYD_PID/status"; }
log "ferryd at $ADDR, RSS $(( $(rss) / 1024 )) MiB"
if [ "$NGINX" = 1 ]; then
  command -v nginx >/dev/null || { log "--via-nginx needs nginx (apt-get install nginx)"; exit 2; }
  NPORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$DIR/nginx-tmp"
  cat >"$DIR/nginx.conf" <<CONF
user root;
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $DIR/nginx-tmp;
  upstream ferryd { server $ADDR; keepalive 64; }
  server {
    listen 127.0.0.1:$NPORT http2;
    http2_max_concurrent_streams 100;
    client_max_body_size 16m;
    grpc_read_timeout 1h;
    grpc_send_timeout 1h;
    location / { grpc_pass grpc://ferryd; }
  }
}
CONF
  nginx -c "$DIR/nginx.conf" -p "$DIR"
  ADDR=127.0.0.1:$NPORT
  log "clients go through nginx at $ADDR"
fi

# RSS sampler, bounded by count.
( for _ in $(seq $(( (SECONDS_ + 60) * 5 ))); do rss || break; sleep 0.2; done ) >"$DIR/rss" 2>/dev/null &
PIDS+=($!)

abuse() { PYTHONPATH="$DIR/stubs" "$PY" "$HERE/abuse.py" "$@"; }
abuse greedy "$ADDR" soak "$CREDITS" "$SECONDS_" >"$DIR/greedy.out" 2>&1 &
PIDS+=($!)
"$BIN/bench/ferry-bench" --broker="$ADDR" --mode=submit --queue=soak \
  --jobs="$BIG" --producers=4 --payload_bytes=1000000 >/dev/null
abuse watchers "$ADDR" "$WATCHERS" "$SECONDS_" >"$DIR/watchers.out" 2>&1 &
PIDS+=($!)
if [ "$FLOOD" = 1 ]; then
  "$PY" "$HERE/../tests/e2e/h2_flood.py" reset "$ADDR" "$PAIRS" "$SECONDS_" >"$DIR/flood.out" 2>&1 &
  PIDS+=($!)
fi
"$BIN/bench/ferry-bench" --broker="$ADDR" --json --mode=latency --workers=2 \
  --rate="$RATE" --jobs=$((RATE * SECONDS_)) >"$DIR/latency.out" 2>&1 || true
wait "${PIDS[@]:1}" 2>/dev/null || true

alive=yes
kill -0 "$FERRYD_PID" 2>/dev/null || alive=no
peak=$(sort -n "$DIR/rss" | tail -1)
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" "$DIR/latency.out"; }
echo "ferryd alive after: $alive"
echo "ferryd peak RSS: $((peak / 1024)) MiB (sampled every 0.2 s)"
if [ "$NGINX" = 1 ]; then
  echo "nginx RSS at the end: $(( $(ps -o rss= --ppid "$(cat "$DIR/nginx.pid")" | awk '{s+=$1} END {print s+0}') / 1024 )) MiB (workers)"
fi
echo "normal client: $(field jobs) Submits at $RATE/s; submit p50 $(field submit_p50_us) us, p99 $(field submit_p99_us) us, max $(field submit_max_us) us"
echo "greedy worker: $(tr '\n' ' ' <"$DIR/greedy.out")"
echo "watchers: $(tr '\n' ' ' <"$DIR/watchers.out")"
[ "$FLOOD" = 1 ] && echo "flood: $(cat "$DIR/flood.out")"
echo "lease expiries: $(grep -c 'lease expired' "$DIR/ferryd.log" || true)"
grep -E "warn|error" "$DIR/ferryd.log" | grep -v "lease expired" | sed 's/^[^ ]* //' | cut -c1-160 | sort | uniq -c | sort -rn | head -6
[ "$alive" = yes ] && grep -q submit_p99_us "$DIR/latency.out"
