"""``examples/node`` (a grpc-js client loaded from ``proto/`` with
@grpc/proto-loader) against a real server: it signs in, lists the workflows and
runs one. Runs on SQLite and PostgreSQL.

Needs ``node`` and ``npm``: without them the test is skipped, except in CI
(``CI=true``), where it fails. ``npm ci`` installs the pinned packages into a
copy of the example, once per session (npm caches them in ``~/.npm``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ADMIN_PASSWORD, ADMIN_USERNAME, ROOT, Running
from sdk_helpers import client_for

from trellis.v1 import runs_pb2
from trellis.worker_sdk import Client

EXAMPLE = ROOT / "examples" / "node"
NPM_TIMEOUT = 300.0
NODE_TIMEOUT = 60.0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"examples/node needs `{name}` (Node.js 18 or later) on PATH"
    if os.environ.get("CI", "").lower() in {"true", "1"}:
        pytest.fail(f"{message}; CI must have it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example with its locked packages installed."""
    _tool("node")
    npm = _tool("npm")
    copy = tmp_path_factory.mktemp("node-example")
    for name in ("package.json", "package-lock.json", "example.js"):
        shutil.copy(EXAMPLE / name, copy / name)
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return copy


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    return start_server(rest_enabled=False)


@pytest.fixture
def client(server: Running) -> Iterator[Client]:
    with client_for(server) as c:
        yield c


def run_example(example: Path, server: Running, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("node"), "example.js"],
        cwd=example,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env={
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", ""),
            "TRELLIS_REPO": str(ROOT),
            "TRELLIS_TARGET": server.grpc_target,
            "TRELLIS_USERNAME": ADMIN_USERNAME,
            **env,
        },
    )


def test_node_example_signs_in_lists_and_runs(
    installed_example: Path, server: Running, client: Client
) -> None:
    done = run_example(
        installed_example, server, TRELLIS_PASSWORD=ADMIN_PASSWORD, TRELLIS_WORKFLOW="hello"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == [
        "workflow ci: CI, version 1, 4 jobs",
        "workflow hello: Hello, version 1, 1 jobs",
    ]
    assert lines[2].startswith("run ") and lines[2].endswith(" of hello: RUN_STATE_RUNNING")
    run_id = lines[2].split()[1]
    # The run it started is the server's latest run of the workflow.
    assert client.get_run(run_id).run.workflow_id == "hello"
    assert client.get_workflow("hello").run_id == run_id
    assert client.get_run(run_id).run.state == runs_pb2.RUN_STATE_RUNNING


def test_node_example_reports_the_servers_error(installed_example: Path, server: Running) -> None:
    done = run_example(installed_example, server, TRELLIS_PASSWORD="not-the-password")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "error: UNAUTHENTICATED: invalid username or password\n"
