#!/usr/bin/env bash
# Creates .venv (if needed) and installs Trellis into it, editable.
# Usage: scripts/bootstrap.sh [extra]   e.g. `dev` for the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
spec="."
[[ -n "${1:-}" ]] && spec=".[$1]"
.venv/bin/python -m pip install -q -e "$spec"
