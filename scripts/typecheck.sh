#!/usr/bin/env bash
# mypy --strict over the hand-written packages, seen under their import names.
# The folders map onto `trellis.*` through setuptools' package-dir, which mypy
# cannot follow, so a tree of links gives it the installed layout.
set -euo pipefail
cd "$(dirname "$0")/.."
farm=build/typecheck
rm -rf "$farm"
mkdir -p "$farm/trellis"
ln -s "$PWD/generated/trellis/__init__.py" "$farm/trellis/__init__.py"
ln -s "$PWD/generated/trellis/py.typed" "$farm/trellis/py.typed"
ln -s "$PWD/generated/trellis/v1" "$farm/trellis/v1"
ln -s "$PWD/server" "$farm/trellis/server"
ln -s "$PWD/rest_bridge" "$farm/trellis/rest_bridge"
ln -s "$PWD/worker_sdk" "$farm/trellis/worker_sdk"
cd "$farm"
mypy --config-file ../../pyproject.toml -p trellis.server -p trellis.rest_bridge -p trellis.worker_sdk "$@"
