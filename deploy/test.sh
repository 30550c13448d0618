#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite with ctest.
# Also compiles once with clang and -Wthread-safety (lock annotations are
# checked at compile time); FERRY_SKIP_CLANG=1 skips that.
set -euo pipefail
source "$(dirname "$0")/common.sh"

install_deps
build

if [ "${FERRY_SKIP_CLANG:-0}" != 1 ]; then
  CC=clang CXX=clang++ build_tree "$FERRY_ROOT/build-clang" -- \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_CXX_FLAGS="-Werror=thread-safety-analysis" -DBUILD_TESTING=OFF
fi

cd "$FERRY_BUILD"
log "running tests"
# --no-tests=error: a run that executes no test is a failure.
ctest --output-on-failure --no-tests=error --parallel "${FERRY_JOBS:-2}" \
  --timeout 600 "$@"
