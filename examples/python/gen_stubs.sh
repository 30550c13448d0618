#!/bin/sh
# Generates the Python stubs of proto/ferry/v1 into DIR (default: gen/ next
# to this script), as DIR/ferry/v1/*_pb2.py and *_pb2_grpc.py. Generated code
# is not committed. Needs Debian's python3-grpc-tools (and
# python3-pkg-resources, which grpc_tools.protoc imports).
#   examples/python/gen_stubs.sh [DIR]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
proto=$(cd "$here/../../proto" && pwd)
out=${1:-$here/gen}
python=${PYTHON:-/usr/bin/python3}
mkdir -p "$out"
"$python" -m grpc_tools.protoc -I "$proto" --python_out="$out" \
  --grpc_python_out="$out" "$proto"/ferry/v1/*.proto
echo "stubs written to $out"
