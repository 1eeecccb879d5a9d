#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks the contract and the
# code, then runs every test on SQLite and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
. .venv/bin/activate
echo "== generated code"; scripts/gen_protos.sh --check
echo "== buf lint"; buf lint
echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy"; scripts/typecheck.sh
# Three workers, a file each at a time: most tests wait on servers, not on the
# CPU, and a file's tests share their module's fixtures.
echo "== pytest"; pytest -n 3 --dist loadfile "$@"
