#!/usr/bin/env bash
# mypy --strict over the hand-written packages, seen under their import names.
# The source folders map onto `trellis.*` (pyproject's [tool.trellis.package-roots],
# which setup.py installs); mypy cannot follow that mapping, so the script lays the
# same tree out in build/typecheck from the one table, as links.
set -euo pipefail
cd "$(dirname "$0")/.."
farm=build/typecheck
rm -rf "$farm"
python - "$farm" <<'PY'
import sys, tomllib
from pathlib import Path
roots = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["trellis"]["package-roots"]
farm = Path(sys.argv[1]).resolve()
for name, folder in roots.items():
    target = farm.joinpath(*name.split("."))
    target.parent.mkdir(parents=True, exist_ok=True)
    nested = any(other.startswith(name + ".") for other in roots)
    if nested:  # a real folder, so that the roots beneath can be linked into it
        target.mkdir()
        for child in Path(folder).resolve().iterdir():
            (target / child.name).symlink_to(child)
    else:
        target.symlink_to(Path(folder).resolve())
PY
packages=$(python -c 'import tomllib; r = tomllib.load(open("pyproject.toml", "rb"))["tool"]["trellis"]["package-roots"]; print(" ".join("-p " + n for n in r if n != "trellis"))')
cd "$farm"
# shellcheck disable=SC2086
mypy --config-file ../../pyproject.toml $packages "$@"
