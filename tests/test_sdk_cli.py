"""The ``trellis`` client commands as a user runs them (``.venv/bin/trellis``),
against a real server with an SDK shell worker. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Running
from sdk_helpers import (
    PROC_TIMEOUT,
    TRELLIS,
    WAIT_FOR_GO,
    client_for,
    free_port,
    job_by_id,
    started_worker,
    uid,
)

from trellis.v1 import jobs_pb2, runs_pb2
from trellis.worker_sdk import Client, Worker


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    return start_server(rest_enabled=False)


@pytest.fixture
def client(server: Running) -> Iterator[Client]:
    with client_for(server) as c:
        yield c


@pytest.fixture
def worker(server: Running) -> Iterator[Worker]:
    with started_worker(Worker(server.grpc_target, shell=True, slots=2)) as w:
        yield w


def trellis(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRELLIS), *args],
        capture_output=True,
        text=True,
        timeout=PROC_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def test_run_wait_status_logs_and_workflows(
    server: Running, client: Client, worker: Worker
) -> None:
    target = ["--target", server.grpc_target]

    done = trellis("run", "hello", "--wait", *target)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.splitlines()[0].strip()
    assert client.get_run(run_id).run.state == runs_pb2.RUN_STATE_SUCCEEDED
    assert f"run {run_id}: succeeded" in done.stdout
    assert "Traceback" not in done.stderr

    status = trellis("status", "hello", *target)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == f"workflow hello, run {run_id}: succeeded"
    assert lines[1].split() == ["JOB", "STATE", "ATTEMPT", "DURATION", "OUTPUT"]
    assert lines[2].split()[:3] == ["hello", "succeeded", "0"]

    by_run = trellis("status", "--run", run_id, *target)
    assert by_run.returncode == 0, by_run.stderr
    assert by_run.stdout.splitlines()[0] == f"run {run_id} of hello: succeeded"

    logs = trellis("logs", "hello", "hello", *target)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "hello\n"

    listed = trellis("workflows", *target)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert listed.stdout.splitlines()[0].split()[:3] == ["ID", "NAME", "VERSION"]
    assert set(rows) == {"ci", "hello"}
    assert rows["hello"][1:] == ["Hello", "1", run_id, "succeeded", "1"]
    assert rows["ci"][1:] == ["CI", "1", "4"]  # never run: no run id, no state


def test_run_wait_of_a_failing_workflow_exits_non_zero(
    server: Running, client: Client, worker: Worker
) -> None:
    wf = uid()
    client.create_workflow(
        {
            "name": "Fails",
            "on": "push",
            "jobs": {
                "bad": {"run": "echo about to fail; echo 'it broke' >&2; exit 3"},
                "after": {"run": "echo never", "needs": "bad"},
            },
        },
        workflow_id=wf,
    )
    done = trellis("run", wf, "--wait", "--target", server.grpc_target)
    assert done.returncode != 0
    run_id = done.stdout.splitlines()[0].strip()
    detail = client.get_run(run_id)
    assert detail.run.state == runs_pb2.RUN_STATE_FAILED
    assert f"run {run_id}: failed" in done.stdout
    assert "exit code 3: it broke" in done.stdout
    assert "Traceback" not in done.stderr

    logs = trellis("logs", wf, "bad", "--target", server.grpc_target)
    assert logs.returncode == 0
    assert logs.stdout == "about to fail\n"
    assert logs.stderr == "it broke\n"


@pytest.mark.parametrize(
    "args",
    [
        ["run", "hello"],
        ["run", "hello", "--wait"],
        ["status", "hello"],
        ["status"],
        ["logs", "hello", "hello"],
        ["workflows"],
    ],
    ids=lambda a: "-".join(a),
)
def test_unreachable_target_is_one_error_line(args: list[str]) -> None:
    target = f"127.0.0.1:{free_port()}"
    done = trellis(*args, "--target", target)
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("trellis: error: "), done.stderr
    assert target in lines[0]


def test_unknown_workflow_is_one_error_line(server: Running) -> None:
    done = trellis("run", "nope", "--target", server.grpc_target)
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trellis: error: "), done.stderr
    assert "nope" in lines[0]


def test_run_follow_prints_each_jobs_log(server: Running, worker: Worker) -> None:
    done = trellis("run", "ci", "--follow", "--target", server.grpc_target)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for line in (
        "[checkout] checking out app",
        "[lint] static checks ok (strict=1)",
        "[test] unit tests ok (12 cases)",
        "[build] building app",
    ):
        assert line in out, out
    # The lines of one job keep their order.
    assert out.index("[checkout] checking out app") < out.index("[checkout] revision 1a2b3c4")
    run_id = out.splitlines()[0].strip()
    assert f"run {run_id}: succeeded" in out


def test_run_wait_timeout_is_one_error_line(server: Running, client: Client) -> None:
    wf = uid()
    # No worker has the label: the run cannot finish.
    client.create_workflow(
        {"name": "Stuck", "on": "push", "jobs": {"j": {"run": "true", "labels": ["nowhere"]}}},
        workflow_id=wf,
    )
    done = trellis("run", wf, "--wait", "--timeout", "1", "--target", server.grpc_target)
    assert done.returncode == 124
    run_id = done.stdout.splitlines()[0].strip()
    assert client.get_run(run_id).run.state == runs_pb2.RUN_STATE_RUNNING
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trellis: error: "), done.stderr


def test_run_follow_timeout_ends_the_follow_at_the_deadline(
    server: Running, client: Client, worker: Worker, tmp_path: Path
) -> None:
    wf = uid()
    go = tmp_path / "go"
    # The job runs (and its log is followed) until the test lets it end.
    client.create_workflow(
        {
            "name": "Slow",
            "on": "push",
            "env": {"GO": str(go)},
            "jobs": {"g": {"run": "echo started\n" + WAIT_FOR_GO}},
        },
        workflow_id=wf,
    )
    timeout = 1.0
    began = time.monotonic()
    done = trellis("run", wf, "--follow", "--timeout", str(timeout), "--target", server.grpc_target)
    elapsed = time.monotonic() - began
    try:
        assert done.returncode == 124, done.stderr
        run_id = done.stdout.splitlines()[0].strip()
        # The command ended while the job it followed still ran.
        detail = client.get_run(run_id)
        assert detail.run.state == runs_pb2.RUN_STATE_RUNNING
        assert job_by_id(detail, "g").status in (
            jobs_pb2.JOB_STATE_QUEUED,
            jobs_pb2.JOB_STATE_RUNNING,
        )
        # One line: the timeout, no noise from the log streams it cut short.
        assert done.stderr.splitlines() == [
            f"trellis: error: run {run_id} did not finish within {timeout:g} s"
        ], done.stderr
        assert elapsed < timeout + 3.0  # a sanity bound, not a measurement
    finally:
        go.touch()
