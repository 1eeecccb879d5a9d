"""Helpers for the engine's integration tests (``tests/test_engine_*.py``).

Everything goes through a real server over gRPC with the generated stubs;
nothing is mocked and nothing sleeps for a fixed time: waits are blocking RPCs
with deadlines or ``wait_until`` on a condition.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
import pytest
from conftest import Running, wait_until

from trellis.v1 import jobs_pb2, logs_pb2, runs_pb2, workers_pb2, workflows_pb2

# A deadline for every unary call, so that a hung server fails a test instead
# of hanging it.
RPC_TIMEOUT = 30.0


def uid(prefix: str = "wf") -> str:
    """A fresh id, so that tests never share workflows or workers."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def no_delay() -> jobs_pb2.Backoff:
    backoff = jobs_pb2.Backoff()
    backoff.none.SetInParent()
    return backoff


def fixed(delay_secs: int) -> jobs_pb2.Backoff:
    return jobs_pb2.Backoff(fixed=jobs_pb2.Backoff.Fixed(delay_secs=delay_secs))


def exponential(base_secs: int, max_secs: int) -> jobs_pb2.Backoff:
    return jobs_pb2.Backoff(
        exponential=jobs_pb2.Backoff.Exponential(base_secs=base_secs, max_secs=max_secs)
    )


def job(
    job_id: str,
    *,
    needs: Iterable[str] = (),
    labels: Iterable[str] = (),
    retries: int = 0,
    backoff: jobs_pb2.Backoff | None = None,
    timeout_secs: int = 0,
) -> jobs_pb2.Job:
    """A job message as a client would send it in CreateWorkflow."""
    msg = jobs_pb2.Job(
        id=job_id,
        command=f"echo {job_id}",
        depends_on=list(needs),
        required_labels=list(labels),
        timeout_secs=timeout_secs,
    )
    if retries or backoff is not None:
        msg.retry_policy.max_retries = retries
        if backoff is not None:
            msg.retry_policy.backoff.CopyFrom(backoff)
    return msg


def create_workflow(
    server: Running, jobs: Iterable[jobs_pb2.Job], *, workflow_id: str = "", name: str = "Test"
) -> str:
    """Creates a workflow over the API; returns its id (a fresh one by default)."""
    wf_id = workflow_id or uid()
    created = server.workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(
            workflow=workflows_pb2.Workflow(id=wf_id, name=name, jobs=list(jobs))
        ),
        timeout=RPC_TIMEOUT,
    )
    assert created.id == wf_id
    return wf_id


def start_run(server: Running, workflow_id: str) -> str:
    run = server.workflows.RunWorkflow(
        workflows_pb2.RunWorkflowRequest(workflow_id=workflow_id), timeout=RPC_TIMEOUT
    )
    assert run.state == runs_pb2.RUN_STATE_RUNNING
    return str(run.run_id)


def claim(
    server: Running,
    worker: str = "worker",
    labels: Iterable[str] = (),
    *,
    ttl: int | None = None,
    wait: int = 0,
) -> workers_pb2.Assignment | None:
    """ClaimJob; None when nothing was available within ``wait`` seconds."""
    request = workers_pb2.ClaimJobRequest(worker_id=worker, labels=list(labels), wait_secs=wait)
    if ttl is not None:
        request.lease_ttl_secs = ttl
    response = server.workers.ClaimJob(request, timeout=RPC_TIMEOUT + wait)
    return response.assignment if response.HasField("assignment") else None


def must_claim(
    server: Running,
    worker: str = "worker",
    labels: Iterable[str] = (),
    *,
    ttl: int | None = None,
    wait: int = 10,
) -> workers_pb2.Assignment:
    got = claim(server, worker, labels, ttl=ttl, wait=wait)
    assert got is not None, f"{worker} got no job within {wait} s"
    return got


def complete(server: Running, lease_id: str, outputs: Mapping[str, str] | None = None) -> None:
    server.workers.CompleteJob(
        workers_pb2.CompleteJobRequest(lease_id=lease_id, outputs=dict(outputs or {})),
        timeout=RPC_TIMEOUT,
    )


def fail(
    server: Running, lease_id: str, error: str = "boom", *, retryable: bool = False
) -> workers_pb2.FailJobResponse:
    response: workers_pb2.FailJobResponse = server.workers.FailJob(
        workers_pb2.FailJobRequest(lease_id=lease_id, error=error, retryable=retryable),
        timeout=RPC_TIMEOUT,
    )
    return response


def heartbeat(
    server: Running, lease_id: str, ttl: int | None = None
) -> workers_pb2.HeartbeatResponse:
    request = workers_pb2.HeartbeatRequest(lease_id=lease_id)
    if ttl is not None:
        request.lease_ttl_secs = ttl
    response: workers_pb2.HeartbeatResponse = server.workers.Heartbeat(request, timeout=RPC_TIMEOUT)
    return response


def push_logs(
    server: Running, lease_id: str, *lines: str, first_sequence: int = 0
) -> logs_pb2.PushLogsResponse:
    chunks = [
        logs_pb2.LogChunk(sequence=first_sequence + i, data=line, stream=logs_pb2.LOG_STREAM_STDOUT)
        for i, line in enumerate(lines)
    ]
    response: logs_pb2.PushLogsResponse = server.logs.PushLogs(
        logs_pb2.PushLogsRequest(lease_id=lease_id, chunks=chunks), timeout=RPC_TIMEOUT
    )
    return response


def list_logs(
    server: Running, workflow_id: str, job_id: str, run_id: str = ""
) -> logs_pb2.ListLogsResponse:
    response: logs_pb2.ListLogsResponse = server.logs.ListLogs(
        logs_pb2.ListLogsRequest(workflow_id=workflow_id, job_id=job_id, run_id=run_id),
        timeout=RPC_TIMEOUT,
    )
    return response


def get_run(server: Running, run_id: str) -> runs_pb2.RunDetail:
    detail: runs_pb2.RunDetail = server.runs.GetRun(
        runs_pb2.GetRunRequest(run_id=run_id), timeout=RPC_TIMEOUT
    )
    return detail


def run_jobs(server: Running, run_id: str) -> dict[str, jobs_pb2.Job]:
    """The run's jobs by id, with their current state."""
    return {j.id: j for j in get_run(server, run_id).jobs}


def job_state(server: Running, run_id: str, job_id: str) -> int:
    return int(run_jobs(server, run_id)[job_id].status)


def wait_run_state(server: Running, run_id: str, state: int) -> runs_pb2.RunDetail:
    """Waits until the run reaches ``state`` (a RunState)."""

    def reached() -> runs_pb2.RunDetail | None:
        detail = get_run(server, run_id)
        return detail if detail.run.state == state else None

    found: runs_pb2.RunDetail = wait_until(reached)
    return found


def wait_job_state(server: Running, run_id: str, job_id: str, state: int) -> jobs_pb2.Job:
    """Waits until the job reaches ``state`` (a JobState) in the run."""

    def reached() -> jobs_pb2.Job | None:
        found = run_jobs(server, run_id)[job_id]
        return found if found.status == state else None

    found: jobs_pb2.Job = wait_until(reached)
    return found


def run_events(server: Running, run_id: str, after_id: int = 0) -> list[runs_pb2.RunEvent]:
    """The run's events, read with StreamRunEvents until the stream ends
    (it ends after RUN_FINISHED; the deadline turns a hang into a failure)."""
    stream = server.runs.StreamRunEvents(
        runs_pb2.StreamRunEventsRequest(run_id=run_id, after_id=after_id), timeout=RPC_TIMEOUT
    )
    return list(stream)


def events_until(
    server: Running, run_id: str, match: Callable[[runs_pb2.RunEvent], bool]
) -> list[runs_pb2.RunEvent]:
    """The run's events up to and including the first that ``match``es, read
    with StreamRunEvents (which also works while the run is still going)."""
    stream = server.runs.StreamRunEvents(
        runs_pb2.StreamRunEventsRequest(run_id=run_id), timeout=RPC_TIMEOUT
    )
    seen: list[runs_pb2.RunEvent] = []
    try:
        for event in stream:
            seen.append(event)
            if match(event):
                return seen
    finally:
        stream.cancel()
    raise AssertionError(f"run {run_id} finished without a matching event")


def find_event(
    server: Running, run_id: str, match: Callable[[runs_pb2.RunEvent], bool]
) -> runs_pb2.RunEvent:
    """The first event of the run that ``match``es."""
    return events_until(server, run_id, match)[-1]


def event_name(event: runs_pb2.RunEvent) -> str:
    return str(runs_pb2.RunEventType.Name(event.type)).removeprefix("RUN_EVENT_TYPE_")


def server_now_ms(server: Running) -> int:
    """The server's database clock: a registration answers with it.

    Tests compare server timestamps with each other, never with the local clock.
    """
    worker: workers_pb2.Worker = server.workers.RegisterWorker(
        workers_pb2.RegisterWorkerRequest(worker_id="test-clock"), timeout=RPC_TIMEOUT
    )
    return int(worker.last_heartbeat.ToMilliseconds())


def race(calls: Sequence[Callable[[], object]]) -> list[grpc.StatusCode]:
    """Runs each call in its own thread, all released at once; returns the
    status code each one ended with (OK when it returned)."""
    barrier = threading.Barrier(len(calls))
    codes: list[grpc.StatusCode | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            barrier.wait(timeout=RPC_TIMEOUT)
            calls[i]()
            codes[i] = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            assert isinstance(exc, grpc.Call)
            codes[i] = exc.code()
        except BaseException as exc:  # surfaced in the calling thread below
            errors.append(exc)

    pool = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=RPC_TIMEOUT * 2)
    assert not errors, errors[0]
    assert not any(t.is_alive() for t in pool), "a racing call hung"
    return [code for code in codes if code is not None]


def rpc_error(call: Callable[..., Any], request: Any) -> grpc.RpcError:
    """Calls a unary RPC that must fail; returns its error."""
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=RPC_TIMEOUT)
    return caught.value


def assert_status(error: grpc.RpcError, code: grpc.StatusCode, *fragments: str) -> None:
    """The error has ``code`` and its message mentions every fragment."""
    assert isinstance(error, grpc.Call)
    assert error.code() == code, f"{error.code()}: {error.details()}"
    details = error.details() or ""
    for fragment in fragments:
        assert fragment in details, f"{fragment!r} not in {details!r}"


__all__ = [
    "RPC_TIMEOUT",
    "assert_status",
    "claim",
    "complete",
    "create_workflow",
    "event_name",
    "events_until",
    "exponential",
    "fail",
    "find_event",
    "fixed",
    "get_run",
    "heartbeat",
    "job",
    "job_state",
    "list_logs",
    "must_claim",
    "no_delay",
    "push_logs",
    "race",
    "rpc_error",
    "run_events",
    "run_jobs",
    "server_now_ms",
    "start_run",
    "uid",
    "wait_job_state",
    "wait_run_state",
]
