"""Worker processes against a real server: a SIGKILLed worker's job runs once
more, on the idle worker, without spending a retry; SIGTERM drains (or hands
jobs back), and a worker reconnects to a restarted server. Runs on SQLite and
PostgreSQL."""

from __future__ import annotations

import os
import queue
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from conftest import Running, wait_until
from sdk_helpers import (
    PYTHON,
    RUN_TIMEOUT,
    TRELLIS,
    WAIT_FOR_GO,
    WORKER_PROC,
    Proc,
    client_for,
    free_port,
    job_by_id,
    log_text,
    run_events,
    started_worker,
    uid,
)

from trellis.v1 import jobs_pb2, runs_pb2, workers_pb2
from trellis.worker_sdk import Client, Worker


def _events(client: Client, run_id: str, job_id: str) -> list[runs_pb2.RunEvent]:
    return [e for e in run_events(client, run_id) if e.job_id == job_id]


def _names(events: list[runs_pb2.RunEvent]) -> list[tuple[str, int, str]]:
    return [(runs_pb2.RunEventType.Name(e.type), e.attempt, e.message) for e in events]


def test_killed_workers_job_runs_once_on_the_idle_worker_without_retries(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(reap_interval_secs=0.2, rest_enabled=False)
    client = client_for(server)
    wf = uid()
    client.create_workflow(
        {"name": "Failover", "on": "push", "jobs": {"job": {"run": "block", "retries": 0}}},
        workflow_id=wf,
    )
    # Two worker processes with one slot each and 2 s leases.
    procs = [Proc([PYTHON, WORKER_PROC, server.grpc_target, "2"]) for _ in range(2)]
    try:
        by_worker = {p.expect_stdout("worker ").split()[1]: p for p in procs}
        run = client.run_workflow(wf)

        def holder() -> str:
            attempts = job_by_id(client.get_run(run.run_id), "job").attempts
            return str(attempts[0].worker_id) if attempts else ""

        dead = wait_until(holder)
        victim = by_worker[dead]
        _, job_id, dead_lease, attempt = victim.expect_stdout("started ").split()
        assert (job_id, attempt) == ("job", "0")
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait() == -signal.SIGKILL
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)
    finally:
        for p in procs:
            p.kill()

    (alive,) = set(by_worker) - {dead}
    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    job = job_by_id(detail, "job")
    assert (job.max_retries, job.attempt) == (0, 1)
    assert dict(job.outputs) == {"by": "worker-process"}
    assert [(a.attempt, a.worker_id, a.outcome) for a in job.attempts] == [
        (0, dead, jobs_pb2.ATTEMPT_OUTCOME_LEASE_LOST),
        (1, alive, jobs_pb2.ATTEMPT_OUTCOME_SUCCEEDED),
    ]
    assert by_worker[alive].expect_stdout("started ").split()[3] == "1"
    events = _events(client, run.run_id, "job")
    assert not any(e.type == runs_pb2.RUN_EVENT_TYPE_JOB_FAILED for e in events), _names(events)
    retrying = [e for e in events if e.type == runs_pb2.RUN_EVENT_TYPE_JOB_RETRYING]
    assert [(e.attempt, e.message) for e in retrying] == [
        (0, "lease expired: the worker stopped heartbeating")
    ], _names(events)

    # The dead worker's lease is spent: a late completion changes nothing.
    with pytest.raises(grpc.RpcError) as caught:
        server.workers.CompleteJob(
            workers_pb2.CompleteJobRequest(lease_id=dead_lease, outputs={"by": "zombie"}),
            timeout=RUN_TIMEOUT,
        )
    assert caught.value.code() is grpc.StatusCode.ABORTED
    after = client.get_run(run.run_id)
    assert dict(job_by_id(after, "job").outputs) == {"by": "worker-process"}
    events = _events(client, run.run_id, "job")
    succeeded = [e for e in events if e.type == runs_pb2.RUN_EVENT_TYPE_JOB_SUCCEEDED]
    assert [e.attempt for e in succeeded] == [1], _names(events)
    client.close()


def _cli_worker(server: Running, drain_timeout: float) -> Proc:
    return Proc(
        [
            TRELLIS,
            "worker",
            "--target",
            server.grpc_target,
            "--drain-timeout",
            str(drain_timeout),
        ]
    )


def test_sigterm_lets_the_running_job_finish(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    server = start_server(rest_enabled=False)
    client = client_for(server)
    go = tmp_path / "go"
    wf = uid()
    # The job runs until the test creates `go`: long enough to be signalled
    # mid-run, however slow the machine.
    client.create_workflow(
        {
            "name": "Drain",
            "on": "push",
            "env": {"GO": str(go)},
            "jobs": {
                "job": {
                    "run": "echo started\n"
                    + WAIT_FOR_GO
                    + 'echo "::set-output name=finished::yes"',
                }
            },
        },
        workflow_id=wf,
    )
    proc = _cli_worker(server, 10)
    try:
        run = client.run_workflow(wf)
        wait_until(lambda: "started" in log_text(client, wf, "job", run.run_id))
        proc.popen.send_signal(signal.SIGTERM)
        proc.expect_stderr("received SIGTERM: draining")
        go.touch()
        assert proc.wait() == 0, "".join(proc.stderr_seen)
    finally:
        proc.kill()

    detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)
    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    job = job_by_id(detail, "job")
    assert job.attempt == 0
    assert dict(job.outputs) == {"finished": "yes"}
    client.close()


def test_sigterm_hands_back_a_job_that_outlasts_the_drain(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(rest_enabled=False)
    client = client_for(server)
    wf = uid()
    client.create_workflow(
        {
            "name": "Handback",
            "on": "push",
            "jobs": {
                "job": {
                    "retries": 1,
                    # Only the first attempt is long.
                    "run": 'if [ "$TRELLIS_ATTEMPT" = 0 ]; then echo started; sleep 60; fi\n'
                    'echo "::set-output name=attempt::$TRELLIS_ATTEMPT"',
                }
            },
        },
        workflow_id=wf,
    )
    proc = _cli_worker(server, 1)
    try:
        run = client.run_workflow(wf)
        wait_until(lambda: "started" in log_text(client, wf, "job", run.run_id))
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, "".join(proc.stderr_seen)
    finally:
        proc.kill()

    # The job was handed back as a retryable failure, not left to its lease.
    def retried() -> bool:
        state = job_by_id(client.get_run(run.run_id), "job")
        return state.attempt == 1 and state.status == jobs_pb2.JOB_STATE_QUEUED

    wait_until(retried)
    with started_worker(Worker(server.grpc_target, shell=True)):
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)

    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    job = job_by_id(detail, "job")
    assert job.attempt == 1
    assert dict(job.outputs) == {"attempt": "1"}
    events = _events(client, run.run_id, "job")
    retrying = [e for e in events if e.type == runs_pb2.RUN_EVENT_TYPE_JOB_RETRYING]
    assert len(retrying) == 1, _names(events)
    assert "worker shutting down" in retrying[0].message, _names(events)
    client.close()


def test_worker_reconnects_to_a_restarted_server(start_server: Callable[..., Running]) -> None:
    port = free_port()
    first = start_server(grpc_port=port, rest_enabled=False)
    worker = Worker(first.grpc_target, shell=True, labels=["linux"], slots=2)
    with started_worker(worker):
        with client_for(first) as client:
            run = client.run_workflow("hello")
            assert client.wait_for_run(run.run_id, RUN_TIMEOUT).run.state == (
                runs_pb2.RUN_STATE_SUCCEEDED
            )

        first.server.stop(grace=2.0)
        first.stop_clients()
        second = start_server(grpc_port=port, rest_enabled=False)
        assert second.grpc_target == first.grpc_target

        with client_for(second) as client:
            run = client.run_workflow("hello")
            detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)
            assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
            assert "hello\n" in log_text(client, "hello", "hello", run.run_id)


def test_job_running_across_a_server_restart_completes(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    port = free_port()
    first = start_server(grpc_port=port, rest_enabled=False)
    go = tmp_path / "go"
    wf = uid()
    with client_for(first) as client:
        client.create_workflow(
            {
                "name": "Across",
                "on": "push",
                "env": {"GO": str(go)},
                "jobs": {
                    "job": {
                        "run": "echo before\n"
                        + WAIT_FOR_GO
                        + 'echo after\necho "::set-output name=done::yes"',
                    }
                },
            },
            workflow_id=wf,
        )
        run = client.run_workflow(wf)
        worker = Worker(first.grpc_target, shell=True, lease_ttl_secs=30)
        with started_worker(worker):
            wait_until(lambda: "before" in log_text(client, wf, "job", run.run_id))
            # A client waiting for the run resumes its event stream too.
            waited: queue.Queue[runs_pb2.RunDetail | BaseException] = queue.Queue()

            def wait_for_run() -> None:
                try:
                    waited.put(client.wait_for_run(run.run_id, RUN_TIMEOUT))
                except BaseException as exc:
                    waited.put(exc)

            # ... and so does one following the job's log.
            followed: queue.Queue[str | BaseException] = queue.Queue()

            def follow_logs() -> None:
                try:
                    chunks = client.follow_logs(wf, "job", run.run_id)
                    followed.put("".join(c.data for c in chunks))
                except BaseException as exc:
                    followed.put(exc)

            threading.Thread(target=wait_for_run, daemon=True).start()
            threading.Thread(target=follow_logs, daemon=True).start()
            first.server.stop(grace=2.0)
            first.stop_clients()
            second = start_server(grpc_port=port, rest_enabled=False)
            go.touch()
            with client_for(second) as client2:
                detail = client2.wait_for_run(run.run_id, RUN_TIMEOUT)
                text = log_text(client2, wf, "job", run.run_id)
            resumed = waited.get(timeout=RUN_TIMEOUT)
            log = followed.get(timeout=RUN_TIMEOUT)

    assert isinstance(resumed, runs_pb2.RunDetail), resumed
    assert resumed.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    job = job_by_id(detail, "job")
    assert job.attempt == 0
    assert dict(job.outputs) == {"done": "yes"}
    # Pushes retried across the restart left no duplicates (nor gaps).
    assert text == "before\nafter\n::set-output name=done::yes\n"
    assert log == text


def test_cli_worker_without_a_server_stops_on_sigterm() -> None:
    proc = Proc([TRELLIS, "worker", "--target", f"127.0.0.1:{free_port()}"])
    try:
        proc.expect_stderr("cannot stream assignments")
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, "".join(proc.stderr_seen)
    finally:
        proc.kill()
    assert not any("Traceback" in line for line in proc.stderr_seen)


def test_paused_worker_loses_its_lease_and_reports_nothing(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(reap_interval_secs=0.2, rest_enabled=False)
    client = client_for(server)
    wf = uid()
    # No retries: lost leases spend none. While frozen, the worker's
    # server-side assignment stream may claim the job again too, and that
    # lease may expire before the thaw: up to 3 lost leases are queued again.
    client.create_workflow(
        {"name": "Pause", "on": "push", "jobs": {"job": {"run": "block"}}},
        workflow_id=wf,
    )
    proc = Proc([PYTHON, WORKER_PROC, server.grpc_target, "2"])
    try:
        run = client.run_workflow(wf)
        _, _, paused_lease, attempt = proc.expect_stdout("started ").split()
        assert attempt == "0"
        # Frozen, it cannot heartbeat: the lease expires and the job is retried.
        os.kill(proc.pid, signal.SIGSTOP)
        wait_until(lambda: job_by_id(client.get_run(run.run_id), "job").attempt >= 1)
        # Thawed, its next heartbeat learns the lease is gone: the first
        # attempt's handler is stopped and nothing is reported for it; the
        # retry then runs (on this worker, the only one) and succeeds.
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.expect_stdout("stopped ").split()[1:] == ["job", "lease", "lost"]
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()

    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    job = job_by_id(detail, "job")
    assert job.attempt >= 1
    assert dict(job.outputs) == {"by": "worker-process"}
    events = _events(client, run.run_id, "job")
    succeeded = [e.attempt for e in events if e.type == runs_pb2.RUN_EVENT_TYPE_JOB_SUCCEEDED]
    assert succeeded == [job.attempt], _names(events)
    assert not any(e.type == runs_pb2.RUN_EVENT_TYPE_JOB_FAILED for e in events), _names(events)
    # Every retry was a lease that expired; the lost one reported nothing.
    retrying = [e for e in events if e.type == runs_pb2.RUN_EVENT_TYPE_JOB_RETRYING]
    assert len(retrying) == job.attempt, _names(events)
    assert all(e.message.startswith("lease expired") for e in retrying), _names(events)
    lost = [a for a in job.attempts if a.outcome == jobs_pb2.ATTEMPT_OUTCOME_LEASE_LOST]
    assert len(lost) == job.attempt and lost[0].lease_id == paused_lease
    with pytest.raises(grpc.RpcError) as caught:
        server.workers.CompleteJob(
            workers_pb2.CompleteJobRequest(lease_id=paused_lease), timeout=RUN_TIMEOUT
        )
    assert caught.value.code() is grpc.StatusCode.ABORTED
    client.close()
