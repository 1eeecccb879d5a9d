#!/usr/bin/env bash
# Installs Trellis and serves it on the embedded SQLite default, with the
# sample workflows of workflows/: gRPC on :50051, REST on :3000.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/trellis serve "$@"
