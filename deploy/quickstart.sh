#!/usr/bin/env bash
# Installs what is missing, builds, and runs ferryd in the foreground on the
# embedded SQLite database (./data/ferry.db). Ctrl-C stops it.
set -euo pipefail
source "$(dirname "$0")/common.sh"

install_deps
build

cd "$FERRY_ROOT"
log "starting ferryd on 127.0.0.1:7070 with ./data/ferry.db (Ctrl-C stops it)"
exec "$FERRY_BUILD/server/ferryd" --listen=127.0.0.1:7070 --db=./data/ferry.db "$@"
