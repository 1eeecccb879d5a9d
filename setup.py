"""Packaging: each source folder is installed under its import name, with every
package beneath it found, not listed (the roots are `[tool.trellis.package-roots]`
in pyproject.toml, which `scripts/typecheck.sh` reads too)."""

import tomllib
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
ROOTS: dict[str, str] = tomllib.loads((HERE / "pyproject.toml").read_text())["tool"]["trellis"][
    "package-roots"
]


def _packages() -> list[str]:
    found = []
    for name, folder in ROOTS.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_packages(str(HERE / folder))]
    return found


setup(package_dir=ROOTS, packages=_packages())
