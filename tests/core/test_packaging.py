"""The wheel holds every module of the source folders, under its import name,
and each of them imports from a fresh environment."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Runs Alembic's migration environment when imported; the migrations are
# exercised by every test that starts a server.
NOT_IMPORTABLE = {"trellis.server.migrations.env"}


def _expected_modules() -> set[str]:
    roots = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["trellis"]["package-roots"]
    names: set[str] = set()
    for name, folder in roots.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            names.add(".".join([name, *parts]))
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (found,) = out.glob("trellis-*.whl")
    return found


def test_the_wheel_holds_every_module_under_its_import_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
    modules = {
        f[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        for f in files
        if f.endswith(".py")
    }
    assert _expected_modules() <= modules
    assert "trellis/server/migrations/script.py.mako" in files
    assert "trellis/py.typed" in files


def test_every_module_imports_from_a_fresh_environment(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    # The dependencies come from this environment's site-packages, which holds
    # no `trellis` of its own (the editable install is a path hook, not a folder).
    deps = sysconfig.get_paths()["purelib"]
    script = (
        "import importlib, sys\n"
        f"names = {sorted(_expected_modules() - NOT_IMPORTABLE)!r}\n"
        "for n in names:\n"
        "    m = importlib.import_module(n)\n"
        f"    assert m.__file__.startswith({site!r}), (n, m.__file__)\n"
        "print(len(names))\n"
    )
    done = subprocess.run(
        [str(python), "-c", script],
        env={"PYTHONPATH": deps, "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(_expected_modules() - NOT_IMPORTABLE)
