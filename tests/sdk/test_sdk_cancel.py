"""Cancelling a run reaches the jobs SDK workers are running: a handler sees
``ctx.cancelled``, a shell command is killed. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest
from conftest import Running, wait_until
from sdk_helpers import RUN_TIMEOUT, client_for, job_by_id, log_text, started_worker, uid

from trellis.v1 import jobs_pb2, runs_pb2
from trellis.worker_sdk import Client, JobContext, StopReason, Worker


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    return start_server(rest_enabled=False)


@pytest.fixture
def client(server: Running) -> Iterator[Client]:
    with client_for(server) as c:
        yield c


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancel_sets_ctx_cancelled_in_a_running_handler(server: Running, client: Client) -> None:
    wf = uid()
    client.create_workflow(
        {
            "name": "Cancel handler",
            "on": "push",
            "jobs": {"wait": {"run": "wait-for-cancel"}, "next": {"run": "next", "needs": "wait"}},
        },
        workflow_id=wf,
    )
    started = threading.Event()
    finished = threading.Event()
    seen: dict[str, object] = {}
    ran_next: list[str] = []
    # A long lease: cancellation must come over the assignment stream, not
    # wait for a heartbeat answer.
    worker = Worker(server.grpc_target, lease_ttl_secs=60)

    @worker.handler("wait-for-cancel")
    def wait_for_cancel(ctx: JobContext) -> None:
        started.set()
        try:
            # Bounded: a worker that never hears of the cancel fails the test.
            seen["cancelled"] = ctx.cancelled.wait(RUN_TIMEOUT)
            seen["reason"] = ctx.stop_reason
            ctx.raise_if_cancelled()
        finally:
            finished.set()

    @worker.handler("next")
    def next_job(ctx: JobContext) -> None:
        ran_next.append(ctx.job_id)

    with started_worker(worker):
        run = client.run_workflow(wf)
        assert started.wait(RUN_TIMEOUT)
        client.cancel_run(run.run_id)
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)
        assert finished.wait(RUN_TIMEOUT)
        wait_until(lambda: worker.running_jobs == 0)

    assert seen == {"cancelled": True, "reason": StopReason.CANCELLED}
    assert detail.run.state == runs_pb2.RUN_STATE_CANCELLED
    assert job_by_id(detail, "wait").status == jobs_pb2.JOB_STATE_CANCELLED
    assert job_by_id(detail, "next").status == jobs_pb2.JOB_STATE_CANCELLED
    assert ran_next == []


def test_cancel_kills_a_running_shell_command(server: Running, client: Client) -> None:
    wf = uid()
    # `exec` makes the shell the sleep itself, so the pid it prints is the
    # process that must die.
    client.create_workflow(
        {
            "name": "Cancel shell",
            "on": "push",
            "jobs": {"sleep": {"run": 'echo "pid $$"; exec sleep 30'}},
        },
        workflow_id=wf,
    )
    worker = Worker(server.grpc_target, shell=True, lease_ttl_secs=60)
    with started_worker(worker):
        run = client.run_workflow(wf)
        text = wait_until(lambda: log_text(client, wf, "sleep", run.run_id))
        pid = int(text.split()[1])
        assert worker.running_jobs == 1
        assert _alive(pid)

        client.cancel_run(run.run_id)
        # Both well before the sleep would have ended by itself.
        wait_until(lambda: worker.running_jobs == 0)
        wait_until(lambda: not _alive(pid))
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)

    assert detail.run.state == runs_pb2.RUN_STATE_CANCELLED
    job = job_by_id(detail, "sleep")
    assert job.status == jobs_pb2.JOB_STATE_CANCELLED
    assert job.attempt == 0
