"""SQLite's write-ahead log stays bounded under sustained writes with readers
on it, and an unclean stop leaves no oversized log behind a restart."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from conftest import ADMIN_PASSWORD, ADMIN_USERNAME, Running, login, wait_until
from sdk_helpers import TRELLIS, Proc
from sqlalchemy import text

from trellis.server.core.db import connect, upgrade_schema
from trellis.v1 import jobs_pb2, workflows_pb2, workflows_pb2_grpc
from trellis.worker_sdk import authorized_channel

MIB = 1024 * 1024
LIMIT = 2 * MIB
ROW = b"x" * 3000


def _wal_size(db_file: Path) -> int:
    wal = Path(f"{db_file}-wal")
    return wal.stat().st_size if wal.exists() else 0


def _db_file(database_url: str) -> Path:
    return Path(database_url.removeprefix("sqlite:///"))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_wal_stays_under_its_limit_while_readers_are_on_it(database_url: str) -> None:
    db_file = _db_file(database_url)
    db = connect(database_url, background_checkpoints=True, wal_limit_bytes=LIMIT)
    reader = sqlite3.connect(db_file, isolation_level=None, check_same_thread=False)
    sizes: list[int] = []
    try:
        upgrade_schema(db)
        with db.write() as conn:
            conn.execute(text("CREATE TABLE filler (id INTEGER PRIMARY KEY, body BLOB)"))
        with db.background_checkpoints():
            # Twenty limits' worth of commits, back to back, each with a reader
            # holding a snapshot on the log while it commits (as the server's
            # streams and polls always have one), and the checkpoint thread
            # running beside them.
            for _ in range(20 * LIMIT // len(ROW)):
                with db.write() as conn:
                    reader.execute("BEGIN")
                    reader.execute("SELECT max(id) FROM filler").fetchall()
                    conn.execute(text("INSERT INTO filler (body) VALUES (:b)"), {"b": ROW})
                reader.execute("COMMIT")
                sizes.append(_wal_size(db_file))
            # Once writes stop, the log is emptied (SQLite itself would
            # restart it only at the next write).
            wait_until(lambda: _wal_size(db_file) == 0)
        after_stop = _wal_size(db_file)
        with db.read() as conn:
            rows = conn.execute(text("SELECT count(*) FROM filler")).scalar_one()
    finally:
        reader.close()
        db.dispose()

    assert rows == 20 * LIMIT // len(ROW)
    # One commit may take the file past the limit; the next one finds the log restarted.
    one_commit = max(b - a for a, b in itertools.pairwise(sizes))
    assert max(sizes) <= LIMIT + one_commit, f"WAL peaked at {max(sizes) / MIB:.1f} MiB"
    assert after_stop == 0, "the WAL is emptied when the checkpoints stop"


def _serve(database_url: str, workdir: Path) -> Proc:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": "0",
            "GRPC_PORT": "0",
            "WORKFLOWS_DIR": "",
            "TRELLIS_ADMIN_USERNAME": ADMIN_USERNAME,
            "TRELLIS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            # Far beyond what the test writes: the log is left to grow.
            "TRELLIS_SQLITE_WAL_LIMIT_MIB": "1024",
        }
    )
    return Proc([TRELLIS, "serve"], env=env, cwd=workdir)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_restart_after_an_unclean_stop_empties_the_wal(
    database_url: str, tmp_path: Path, start_server: Callable[..., Running]
) -> None:
    db_file = _db_file(database_url)
    proc = _serve(database_url, tmp_path)
    try:
        line = proc.expect_stdout("trellis: gRPC on")
        grpc_port = line.split("gRPC on ")[1].split(",")[0].rsplit(":", 1)[1]
        raw = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        channel = authorized_channel(raw, login(raw, ADMIN_USERNAME, ADMIN_PASSWORD))
        workflows = workflows_pb2_grpc.WorkflowServiceStub(channel)
        jobs = [jobs_pb2.Job(id=f"j{i:03d}", command="noop") for i in range(300)]
        workflows.CreateWorkflow(
            workflows_pb2.CreateWorkflowRequest(
                workflow=workflows_pb2.Workflow(id="big", name="Big", jobs=jobs)
            ),
            timeout=30,
        )
        for _ in range(50):
            if _wal_size(db_file) >= MIB:
                break
            workflows.RunWorkflow(workflows_pb2.RunWorkflowRequest(workflow_id="big"), timeout=30)
        raw.close()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    finally:
        proc.kill()
    left = _wal_size(db_file)
    assert left >= MIB, "the killed server left its log behind"

    restarted = start_server(rest_enabled=False)
    assert _wal_size(db_file) < left
    assert restarted.workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id="big"), timeout=30
    ).jobs


def test_the_wal_limit_is_read_from_the_environment() -> None:
    from trellis.server.config import Config

    assert Config.from_env({"TRELLIS_SQLITE_WAL_LIMIT_MIB": "1.5"}).sqlite_wal_limit_bytes == (
        3 * MIB // 2
    )
    assert Config.from_env({}).sqlite_wal_limit_bytes is None
    for bad in ("0", "-4", "lots", "inf", "nan"):
        with pytest.raises(ValueError, match="TRELLIS_SQLITE_WAL_LIMIT_MIB"):
            Config.from_env({"TRELLIS_SQLITE_WAL_LIMIT_MIB": bad})
