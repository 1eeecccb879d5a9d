"""The worker SDK against a real server: the sample workflows on shell workers,
Python handlers with outputs, upstream outputs, retries and logs, and the
client's typed errors. Runs on SQLite and PostgreSQL (the fixtures)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from conftest import Running, wait_until
from sdk_helpers import (
    RUN_TIMEOUT,
    WAIT_FOR_GO,
    client_for,
    free_port,
    job_by_id,
    log_text,
    run_events,
    started_worker,
    uid,
)

from trellis.v1 import jobs_pb2, logs_pb2, runs_pb2, workers_pb2
from trellis.worker_sdk import (
    Client,
    ConnectionLost,
    DeadlineExceeded,
    JobContext,
    NotFound,
    StopReason,
    TrellisError,
    Worker,
)


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    """A gRPC-only server with the sample workflows: the SDK needs no REST."""
    return start_server(rest_enabled=False)


@pytest.fixture
def client(server: Running) -> Iterator[Client]:
    with client_for(server) as c:
        yield c


def shell_worker(server: Running) -> Worker:
    return Worker(server.grpc_target, shell=True, labels=["linux"], slots=2)


# -- shell jobs ------------------------------------------------------------------


def test_ci_sample_workflow_runs_end_to_end(server: Running, client: Client) -> None:
    with started_worker(shell_worker(server)):
        run = client.run_workflow("ci")
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)

    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    assert {j.id: j.status for j in detail.jobs} == {
        "checkout": jobs_pb2.JOB_STATE_SUCCEEDED,
        "lint": jobs_pb2.JOB_STATE_SUCCEEDED,
        "test": jobs_pb2.JOB_STATE_SUCCEEDED,
        "build": jobs_pb2.JOB_STATE_SUCCEEDED,
    }
    # `::set-output` became an output, and was not left in the log as text only.
    assert dict(job_by_id(detail, "build").outputs) == {"artifact": "dist/app.tar.gz"}

    expected = {
        "checkout": ["checking out app", "revision 1a2b3c4"],
        # Steps run in order; a step's env applies to it.
        "lint": ["formatting ok", "static checks ok (strict=1)"],
        "test": ["running unit tests for app", "unit tests ok (12 cases)"],
        "build": ["building app"],
    }
    for job_id, lines in expected.items():
        text = log_text(client, "ci", job_id, run.run_id)
        for line in lines:
            assert line in text, f"{job_id}: {line!r} not in {text!r}"
    # Lines in order, for a job whose log has several.
    text = log_text(client, "ci", "checkout", run.run_id)
    assert text.index("checking out app") < text.index("revision 1a2b3c4")

    # FollowLogs of a finished job replays its history and ends.
    followed = "".join(c.data for c in client.follow_logs("ci", "build", run.run_id))
    assert "building app" in followed


def test_hello_sample_workflow_and_latest_run_logs(server: Running, client: Client) -> None:
    with started_worker(shell_worker(server)):
        run = client.run_workflow("hello")
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)
    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    assert job_by_id(detail, "hello").status == jobs_pb2.JOB_STATE_SUCCEEDED
    # Without a run id, logs are the latest run's.
    assert "hello\n" in "".join(c.data for c in client.list_logs("hello", "hello"))
    assert client.get_workflow("hello").run_id == run.run_id


def test_upstream_outputs_reach_shell_children_as_env(server: Running, client: Client) -> None:
    wf = uid()
    client.create_workflow(
        {
            "name": "Upstream",
            "on": "push",
            "jobs": {
                "make-it": {
                    "run": "echo '::set-output name=out.url::s3://bucket/a b'\n"
                    "echo '::set-output name=count::3'",
                },
                "use": {
                    "needs": "make-it",
                    "run": 'echo "url=$TRELLIS_UPSTREAM_MAKE_IT_OUT_URL"\n'
                    'echo "count=$TRELLIS_UPSTREAM_MAKE_IT_COUNT"\n'
                    'echo "::set-output name=seen::$TRELLIS_UPSTREAM_MAKE_IT_OUT_URL"',
                },
            },
        },
        workflow_id=wf,
    )
    with started_worker(shell_worker(server)):
        run = client.run_workflow(wf)
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)

    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    assert dict(job_by_id(detail, "make-it").outputs) == {
        "out.url": "s3://bucket/a b",
        "count": "3",
    }
    assert dict(job_by_id(detail, "use").outputs) == {"seen": "s3://bucket/a b"}
    text = log_text(client, wf, "use", run.run_id)
    assert "url=s3://bucket/a b\n" in text
    assert "count=3\n" in text


# -- Python handlers --------------------------------------------------------------


def test_handlers_pass_outputs_downstream_and_log(server: Running, client: Client) -> None:
    wf = uid()
    client.create_workflow(
        {
            "name": "Handlers",
            "on": "push",
            "jobs": {
                "produce": {"run": "produce"},
                "consume": {"run": "consume", "needs": "produce"},
            },
        },
        workflow_id=wf,
    )
    seen: dict[str, object] = {}
    worker = Worker(server.grpc_target, slots=2)

    @worker.handler("produce")
    def produce(ctx: JobContext) -> dict[str, object]:
        ctx.log(f"producing for run {ctx.run_id}")
        ctx.log("a warning", stream="stderr")
        return {"n": 42, "url": "s3://x"}

    @worker.handler("consume")
    def consume(ctx: JobContext) -> dict[str, str]:
        seen["upstream"] = ctx.upstream_outputs
        seen["job"] = (ctx.workflow_id, ctx.job_id, ctx.attempt)
        ctx.log(f"got n={ctx.upstream_outputs['produce']['n']}")
        return {"total": str(int(ctx.upstream_outputs["produce"]["n"]) + 1)}

    with started_worker(worker):
        run = client.run_workflow(wf)
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)

    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    assert dict(job_by_id(detail, "produce").outputs) == {"n": "42", "url": "s3://x"}
    assert dict(job_by_id(detail, "consume").outputs) == {"total": "43"}
    assert seen["upstream"] == {"produce": {"n": "42", "url": "s3://x"}}
    assert seen["job"] == (wf, "consume", 0)

    chunks = client.list_logs(wf, "produce", run.run_id)
    assert f"producing for run {run.run_id}\n" in [c.data for c in chunks]
    stderr = [c.data for c in chunks if c.stream == logs_pb2.LOG_STREAM_STDERR]
    assert stderr == ["a warning\n"]
    assert "got n=42\n" in log_text(client, wf, "consume", run.run_id)


def test_raising_handler_is_retried_per_policy(server: Running, client: Client) -> None:
    wf = uid()
    client.create_workflow(
        {
            "name": "Flaky",
            "on": "push",
            "jobs": {
                "flaky": {"run": "flaky", "retries": 2},
                "after": {"run": "after", "needs": "flaky"},
            },
        },
        workflow_id=wf,
    )
    attempts: list[int] = []
    lock = threading.Lock()
    worker = Worker(server.grpc_target)

    @worker.handler("flaky")
    def flaky(ctx: JobContext) -> dict[str, str]:
        with lock:
            attempts.append(ctx.attempt)
        ctx.log(f"attempt {ctx.attempt}")
        if ctx.attempt == 0:
            raise RuntimeError("first attempt fails")
        return {"attempt": str(ctx.attempt)}

    @worker.handler("after")
    def after(ctx: JobContext) -> None:
        return None

    with started_worker(worker):
        run = client.run_workflow(wf)
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)

    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    assert attempts == [0, 1]
    flaky_job = job_by_id(detail, "flaky")
    assert flaky_job.attempt == 1
    assert dict(flaky_job.outputs) == {"attempt": "1"}
    assert job_by_id(detail, "after").status == jobs_pb2.JOB_STATE_SUCCEEDED

    events = [e for e in run_events(client, run.run_id) if e.job_id == "flaky"]
    kinds = [(runs_pb2.RunEventType.Name(e.type), e.attempt) for e in events]
    retrying = [e for e in events if e.type == runs_pb2.RUN_EVENT_TYPE_JOB_RETRYING]
    assert len(retrying) == 1, kinds
    assert "RuntimeError: first attempt fails" in retrying[0].message, kinds
    succeeded = [e for e in events if e.type == runs_pb2.RUN_EVENT_TYPE_JOB_SUCCEEDED]
    assert [e.attempt for e in succeeded] == [1], kinds

    # Both attempts' lines are in the run's log of the job.
    text = log_text(client, wf, "flaky", run.run_id)
    assert "attempt 0\n" in text and "attempt 1\n" in text


def test_handler_failing_every_attempt_fails_the_run(server: Running, client: Client) -> None:
    wf = uid()
    client.create_workflow(
        {
            "name": "Broken",
            "on": "push",
            "jobs": {
                "broken": {"run": "broken", "retries": 1},
                "child": {"run": "child", "needs": "broken"},
            },
        },
        workflow_id=wf,
    )
    attempts: list[int] = []
    worker = Worker(server.grpc_target)

    @worker.handler("broken")
    def broken(ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        raise ValueError(f"bad input on attempt {ctx.attempt}")

    @worker.handler("child")
    def child(ctx: JobContext) -> None:
        raise AssertionError("a child of a failed job must not run")

    with started_worker(worker):
        run = client.run_workflow(wf)
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)

    assert detail.run.state == runs_pb2.RUN_STATE_FAILED
    assert attempts == [0, 1]
    job = job_by_id(detail, "broken")
    assert (job.status, job.attempt) == (jobs_pb2.JOB_STATE_FAILED, 1)
    assert job.output == "ValueError: bad input on attempt 1"
    assert job_by_id(detail, "child").status == jobs_pb2.JOB_STATE_SKIPPED


# -- client errors ---------------------------------------------------------------


def test_client_raises_typed_errors(server: Running, client: Client) -> None:
    with pytest.raises(NotFound) as caught:
        client.run_workflow("nope")
    assert isinstance(caught.value, TrellisError)
    assert not isinstance(caught.value, grpc.RpcError)
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert "nope" in str(caught.value)

    with pytest.raises(NotFound):
        client.get_run("no-such-run")


def test_client_against_unreachable_target_raises_connection_lost() -> None:
    target = f"127.0.0.1:{free_port()}"
    with Client(target, timeout=10.0) as client, pytest.raises(ConnectionLost) as caught:
        client.list_workflows()
    assert not isinstance(caught.value, grpc.RpcError)
    assert target in str(caught.value)


def test_list_runs_newest_first_within_a_limit(server: Running, client: Client) -> None:
    wf = uid()
    client.create_workflow(
        {"name": "Waits", "on": "push", "jobs": {"j": {"run": "true", "labels": ["nowhere"]}}},
        workflow_id=wf,
    )
    made = {client.run_workflow(wf).run_id for _ in range(3)}
    other = client.run_workflow("hello").run_id

    runs = client.list_runs(wf)
    assert {run.run_id for run in runs} == made
    assert {run.workflow_id for run in runs} == {wf}
    started = [run.created_at.ToMilliseconds() for run in runs]
    assert started == sorted(started, reverse=True)
    assert [run.run_id for run in client.list_runs(wf, limit=2)] == [r.run_id for r in runs[:2]]
    assert {run.run_id for run in client.list_runs()} == {*made, other}
    assert client.list_runs("nope") == []
    with pytest.raises(ValueError):
        client.list_runs(limit=0)


def test_list_workers_shows_a_connected_worker(server: Running, client: Client) -> None:
    worker_id = uid("worker")
    with started_worker(Worker(server.grpc_target, worker_id=worker_id, labels=["b", "a"])):
        listed = wait_until(lambda: [w for w in client.list_workers() if w.worker_id == worker_id])
    (worker,) = listed
    assert list(worker.labels) == ["a", "b"]
    assert worker.status == workers_pb2.WORKER_STATUS_IDLE
    assert not worker.HasField("current_job")


def test_follow_logs_with_a_timeout_raises_deadline_exceeded(
    server: Running, client: Client
) -> None:
    run = client.run_workflow("hello")  # no worker: the job stays queued
    with pytest.raises(DeadlineExceeded) as caught:
        list(client.follow_logs("hello", "hello", run.run_id, timeout=0.3))
    assert "hello/hello did not end within 0.3 s" in str(caught.value)
    assert job_by_id(client.get_run(run.run_id), "hello").status == jobs_pb2.JOB_STATE_QUEUED


def test_follow_logs_streams_a_running_job_live(
    server: Running, client: Client, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    wf = uid()
    client.create_workflow(
        {
            "name": "Live",
            "on": "push",
            "env": {"GO": str(go)},
            "jobs": {
                "job": {
                    "run": "echo first\n" + WAIT_FOR_GO + "echo second",
                }
            },
        },
        workflow_id=wf,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def follow(run_id: str) -> None:
        try:
            for chunk in client.follow_logs(wf, "job", run_id):
                lines.put(chunk.data)
        finally:
            lines.put(None)  # the stream ended

    with started_worker(shell_worker(server)):
        run = client.run_workflow(wf)
        reader = threading.Thread(target=follow, args=(run.run_id,), daemon=True)
        reader.start()
        # The first line arrives while the job is still running.
        assert lines.get(timeout=RUN_TIMEOUT) == "first\n"
        assert job_by_id(client.get_run(run.run_id), "job").status == jobs_pb2.JOB_STATE_RUNNING
        go.touch()
        assert lines.get(timeout=RUN_TIMEOUT) == "second\n"
        # ... and the stream ends with the job.
        assert lines.get(timeout=RUN_TIMEOUT) is None
        reader.join(RUN_TIMEOUT)
        assert client.wait_for_run(run.run_id, RUN_TIMEOUT).run.state == (
            runs_pb2.RUN_STATE_SUCCEEDED
        )


def test_run_events_tell_when_each_attempt_starts(server: Running, client: Client) -> None:
    wf = uid()
    client.create_workflow(
        {"name": "Events", "on": "push", "jobs": {"flaky": {"run": "flaky", "retries": 1}}},
        workflow_id=wf,
    )
    worker = Worker(server.grpc_target)

    @worker.handler("flaky")
    def flaky(ctx: JobContext) -> None:
        if ctx.attempt == 0:
            raise RuntimeError("again")

    with started_worker(worker):
        run = client.run_workflow(wf)
        client.wait_for_run(run.run_id, RUN_TIMEOUT)
    events = [e for e in run_events(client, run.run_id) if e.job_id == "flaky"]
    started = [e.attempt for e in events if e.type == runs_pb2.RUN_EVENT_TYPE_JOB_STARTED]
    assert started == [0, 1], [(runs_pb2.RunEventType.Name(e.type), e.attempt) for e in events]


def test_handler_past_its_timeout_is_stopped_and_retried(server: Running, client: Client) -> None:
    wf = uid()
    client.create_workflow(
        {
            "name": "Timeout",
            "on": "push",
            "jobs": {"slow": {"run": "slow", "retries": 1, "timeout": 1}},
        },
        workflow_id=wf,
    )
    reasons: list[tuple[int, StopReason | None]] = []
    worker = Worker(server.grpc_target)

    @worker.handler("slow")
    def slow(ctx: JobContext) -> dict[str, str]:
        if ctx.attempt == 0:
            ctx.cancelled.wait(RUN_TIMEOUT)  # bounded: a missed time limit fails the test
            reasons.append((ctx.attempt, ctx.stop_reason))
            ctx.raise_if_cancelled()
        return {"attempt": str(ctx.attempt)}

    with started_worker(worker):
        run = client.run_workflow(wf)
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)
        wait_until(lambda: reasons)

    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    assert reasons == [(0, StopReason.TIMEOUT)]
    assert dict(job_by_id(detail, "slow").outputs) == {"attempt": "1"}
    events = [e for e in run_events(client, run.run_id) if e.job_id == "slow"]
    kinds = [(runs_pb2.RunEventType.Name(e.type), e.attempt, e.message) for e in events]
    retrying = [e for e in events if e.type == runs_pb2.RUN_EVENT_TYPE_JOB_RETRYING]
    assert len(retrying) == 1, kinds
    assert "timed out" in retrying[0].message, kinds
