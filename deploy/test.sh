#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite with ctest,
# twice: built with gcc, then built with clang under AddressSanitizer (leaks
# included) and UndefinedBehaviorSanitizer, where any report fails the run
# and -Wthread-safety checks the lock annotations at compile time.
# FERRY_SKIP_CLANG=1 skips the second run.
set -euo pipefail
source "$(dirname "$0")/common.sh"

install_deps
build

# run_tests DIR [CTEST_ARGS...]
run_tests() {
  local dir=$1
  shift
  log "running tests in $dir"
  # --no-tests=error: a run that executes no test is a failure.
  (cd "$dir" && ctest --output-on-failure --no-tests=error \
    --parallel "${FERRY_JOBS:-2}" --timeout 600 "$@")
}

run_tests "$FERRY_BUILD" "$@"
if [ "${FERRY_SKIP_CLANG:-0}" != 1 ]; then
  CC=clang CXX=clang++ build_tree "$FERRY_ROOT/build-sanitize" -- \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_CXX_FLAGS="-Werror=thread-safety-analysis" -DFERRY_SANITIZE=ON
  # halt_on_error: the first report fails the test that made it.
  ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_tests "$FERRY_ROOT/build-sanitize" "$@"
fi
