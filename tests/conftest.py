"""Test harness: real Trellis servers on free ports, on SQLite and PostgreSQL.

Every test that takes ``server`` runs twice: once on a SQLite file, once on a
PostgreSQL database created for it and dropped afterwards. PostgreSQL comes
from ``TRELLIS_TEST_PG`` (default: the local server's ``test`` database as
``postgres``). When it is unreachable the PostgreSQL half fails; it is never
skipped silently (set ``TRELLIS_SKIP_PG=1`` to leave it out on purpose).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from trellis.server.app import TrellisServer
from trellis.server.config import Config
from trellis.server.core.db import Database, connect, upgrade_schema
from trellis.server.identity.ratelimit import DEFAULT_LIMITS, Limit
from trellis.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    logs_pb2_grpc,
    runs_pb2_grpc,
    workers_pb2_grpc,
    workflows_pb2_grpc,
)
from trellis.worker_sdk import authorized_channel

ROOT = Path(__file__).resolve().parent.parent
# The administrator every test server starts with; tests act as it unless
# they set out to test who may do what.
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "Trellis-test-admin-1"
# Rate limits so high that only the tests about rate limits meet them.
NO_LIMITS = {bucket: Limit(10_000_000, 60.0) for bucket in DEFAULT_LIMITS}
PG_ADMIN_URL = os.environ.get("TRELLIS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite"] if os.environ.get("TRELLIS_SKIP_PG") == "1" else ["sqlite", "postgres"]


def _pg_admin() -> Any:
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc}")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'trellis.db'}"
        return
    name = f"trellis_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def login(channel: grpc.Channel, username: str, password: str, org: str = "") -> str:
    """An access token for ``username`` (over the real Login RPC)."""
    metadata = (("x-organization-id", org),) if org else ()
    answer = auth_pb2_grpc.AuthServiceStub(channel).Login(
        auth_pb2.LoginRequest(username=username, password=password),
        metadata=metadata,
        timeout=30,
    )
    return str(answer.token)


T = TypeVar("T")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated database of each kind, for tests below the gRPC edge."""
    database = connect(database_url)
    try:
        upgrade_schema(database)
        yield database
    finally:
        database.dispose()


def race(n: int, fn: Callable[[int], T]) -> list[T]:
    """Runs ``fn(0..n-1)`` on ``n`` threads released together; returns results in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


@dataclass
class Running:
    """A started server and clients for it, signed in as its administrator."""

    server: TrellisServer
    channel: grpc.Channel
    config: Config
    workflows_dir: Path
    # The administrator's access token, which ``channel`` sends on every call.
    token: str = ""
    # The same server without credentials.
    anonymous: grpc.Channel | None = None
    stopped: bool = False
    extra_channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def anonymous_channel(self) -> grpc.Channel:
        """A channel to this server that sends no credentials."""
        assert self.anonymous is not None
        return self.anonymous

    @property
    def subject(self) -> str:
        """The administrator's principal subject (what its leases are bound to)."""
        return self.server.identity.authenticate(f"Bearer {self.token}", None).subject

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.server.rest_port}"

    @property
    def workflows(self) -> workflows_pb2_grpc.WorkflowServiceStub:
        return workflows_pb2_grpc.WorkflowServiceStub(self.channel)

    @property
    def runs(self) -> runs_pb2_grpc.RunServiceStub:
        return runs_pb2_grpc.RunServiceStub(self.channel)

    @property
    def workers(self) -> workers_pb2_grpc.WorkerServiceStub:
        return workers_pb2_grpc.WorkerServiceStub(self.channel)

    @property
    def logs(self) -> logs_pb2_grpc.LogServiceStub:
        return logs_pb2_grpc.LogServiceStub(self.channel)

    def channel_with(self, token: str, organization_id: str | None = None) -> grpc.Channel:
        """A new channel to this server that sends ``token`` (and the
        organization header), closed with the server."""
        raw = grpc.insecure_channel(self.grpc_target)
        self.extra_channels.append(raw)
        return authorized_channel(raw, token, organization_id)

    def _close_channels(self) -> None:
        self.channel.close()
        if self.anonymous is not None:
            self.anonymous.close()
        for extra in self.extra_channels:
            extra.close()

    def stop_clients(self) -> None:
        """For a test that stopped ``server`` itself: closes the clients."""
        self._close_channels()
        self.stopped = True

    def stop(self) -> None:
        if not self.stopped:
            self._close_channels()
            self.server.stop(grace=2.0)
            self.stopped = True


def _start(config: Config) -> Running:
    srv = TrellisServer(config)
    srv.start()
    anonymous = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}")
    grpc.channel_ready_future(anonymous).result(timeout=10)
    token = login(anonymous, ADMIN_USERNAME, ADMIN_PASSWORD)
    raw = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}")
    channel = authorized_channel(raw, token)
    assert config.workflows_dir is not None
    running = Running(srv, channel, config, config.workflows_dir, token, anonymous)
    running.extra_channels.append(raw)
    return running


@pytest.fixture
def start_server(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Running]]:
    """Starts servers on ``database_url``; ``restart`` them with the same data."""
    started: list[Running] = []
    wf_dir = tmp_path / "workflows"
    if not wf_dir.exists():
        shutil.copytree(ROOT / "workflows", wf_dir)

    def start(**overrides: Any) -> Running:
        config = Config(
            database_url=database_url,
            host="127.0.0.1",
            port=0,
            grpc_port=0,
            workflows_dir=wf_dir,
            reap_interval_secs=0.2,
            poll_interval_secs=0.5,
            grpc_threads=64,
            admin_username=ADMIN_USERNAME,
            admin_password=ADMIN_PASSWORD,
            rate_limits=dict(NO_LIMITS),
        )
        running = _start(replace(config, **overrides))
        started.append(running)
        # SDK workers, clients and `trellis` subprocesses started by the test
        # take their credentials from here.
        monkeypatch.setenv("TRELLIS_TOKEN", running.token)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    """A running server (gRPC and REST) with the sample workflows loaded."""
    return start_server()


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Polls ``predicate`` until it returns something truthy (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        threading.Event().wait(interval)
