#!/usr/bin/env bash
# Installs what is missing, builds, starts ferryd on 127.0.0.1:7070 with the
# embedded SQLite database (./data/ferry.db), starts a ferry-worker running
# examples/shell/upcase.sh, sends one job through, and keeps serving in the
# foreground. Ctrl-C stops both gracefully.
set -euo pipefail
source "$(dirname "$0")/common.sh"

install_deps
build ferryd ferry ferry-worker


cd "$FERRY_ROOT"
BIN=$FERRY_BUILD
export FERRY_BROKER=127.0.0.1:7070
FERRY="$BIN/client/ferry"

"$BIN/server/ferryd" --listen="$FERRY_BROKER" --db=./data/ferry.db "$@" &
ferryd_pid=$!
worker_pid=
stop() {
  [ -n "$worker_pid" ] && kill -TERM "$worker_pid" 2>/dev/null || true
  kill -TERM "$ferryd_pid" 2>/dev/null || true
  wait
}
# However this script ends (Ctrl-C, or a step below failing), nothing it
# started keeps running.
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Wait (at most 30 s: a large database is checked first) for the broker.
ready=
for _ in $(seq 300); do
  if "$FERRY" queues >/dev/null 2>&1; then ready=1; break; fi
  if ! kill -0 "$ferryd_pid" 2>/dev/null; then
    log "ferryd did not start (see its message above)"
    exit 1
  fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  log "ferryd is running but did not answer within 30 s (see its log above)"
  exit 1
fi

"$BIN/worker/ferry-worker" --queues=hello --concurrency=2 -- ./examples/shell/upcase.sh &
worker_pid=$!

log "submitting a job to queue 'hello' and waiting for its result:"
"$FERRY" submit hello --payload "hello, ferry" --wait --wait-timeout 60s
echo
cat >&2 <<TOUR
==> It went through. ferryd and a ferry-worker keep running; in another shell:
      export FERRY_BROKER=$FERRY_BROKER PATH=\$PATH:$BIN/client
      id=\$(ferry submit hello --payload 'one more')   # prints the job id
      ferry watch "\$id"                         # its state changes
      ferry list                                 # recent jobs
      ferry queues                               # counts per queue
      ferry workers                              # connected workers
==> Ctrl-C stops the worker and the broker.
TOUR
wait "$ferryd_pid"
