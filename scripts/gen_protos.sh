#!/usr/bin/env bash
# Regenerates generated/ from proto/. `--check` fails when generated/ is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
out=generated
if [[ "${1:-}" == "--check" ]]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
googleapis=third_party/googleapis
mkdir -p "$out/trellis/v1"
rm -f "$out"/trellis/v1/*_pb2*.py "$out"/trellis/v1/*_pb2*.pyi
python -m grpc_tools.protoc -I proto -I "$googleapis" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/trellis/v1/*.proto
if [[ "${1:-}" == "--check" ]]; then
  if ! diff -r -x __init__.py -x __pycache__ -x py.typed "$out/trellis/v1" generated/trellis/v1; then
    echo "generated/ is stale: run scripts/gen_protos.sh and commit the result" >&2
    exit 1
  fi
  echo "generated/ is fresh"
fi
