# Shared by quickstart.sh and test.sh: install what is missing, build.
# Sourced, not run.

FERRY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FERRY_BUILD=${FERRY_BUILD:-$FERRY_ROOT/build}

# Debian 12 packages Ferry needs to build, test and run.
FERRY_PACKAGES=(
  g++ cmake ninja-build ccache pkg-config
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev
  libabsl-dev libsqlite3-dev libspdlog-dev libgtest-dev libgmock-dev
  libjemalloc-dev
  # TLS and token hashes (libcrypto); openssl makes certificates.
  libssl-dev openssl
  clang
  # The Python examples and the interop test (Debian's grpc_tools.protoc
  # imports pkg_resources but does not depend on it).
  python3-grpcio python3-grpc-tools python3-pkg-resources
  # Raw HTTP/2 frames for the tests of stream floods (tests/e2e/h2_flood.py).
  python3-h2
)

log() { printf '==> %s\n' "$*" >&2; }

# Installs the packages that are not installed yet (nothing when all are).
install_deps() {
  local missing=()
  local pkg
  for pkg in "${FERRY_PACKAGES[@]}" "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
      missing+=("$pkg")
    fi
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
      log "missing packages: ${missing[*]}; run as root or install sudo"
      return 1
    fi
    sudo=(sudo)
  fi
  log "installing: ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Configures (once) and builds a tree: build_tree DIR [TARGET...] [-- CMAKE_ARGS...]
build_tree() {
  local dir=$1
  shift
  local targets=()
  while (($#)) && [ "$1" != "--" ]; do
    targets+=(--target "$1")
    shift
  done
  (($#)) && shift
  if [ ! -f "$dir/build.ninja" ]; then
    log "configuring $dir"
    cmake -S "$FERRY_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  fi
  log "building $dir ${targets[*]}"
  # Two jobs: the machines we target have two cores, and the protobuf and
  # gRPC headers make each compile large.
  cmake --build "$dir" --parallel "${FERRY_JOBS:-2}" "${targets[@]}"
}

# build [TARGET...]: the main tree; everything when no target is named.
build() { build_tree "$FERRY_BUILD" "$@"; }

# ---- helpers for the bench scripts ----

# listening_address LOGFILE PID: waits (up to 30 s) for a server started
# with --listen=...:0 to log "listening address=HOST:PORT" and prints the
# address; fails (showing the log) if the process exits first.
listening_address() {
  local logfile=$1 pid=$2 addr
  for _ in $(seq 3000); do
    addr=$(grep -ao 'listening address=[0-9.:]*' "$logfile" | cut -d= -f2 || true)
    [ -n "$addr" ] && { echo "$addr"; return 0; }
    kill -0 "$pid" 2>/dev/null || { cat "$logfile" >&2; return 1; }
    sleep 0.01
  done
  log "no 'listening address=' in $logfile after 30 s"; return 1
}

# median: the median of the numbers on stdin, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# times_to_s "0m1.250s 0m0.310s" (bash `times`, children line) -> seconds.
times_to_s() {
  awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); n += a[1] * 60 + a[2] }
         printf "%.3f", n }' <<<"$1"
}
