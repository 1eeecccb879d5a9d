"""Malformed input over gRPC answers INVALID_ARGUMENT with a message naming
the problem and stores nothing; unknown ids answer NOT_FOUND; bad workflow
files are skipped at start-up while the good ones load."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import Running
from engine_helpers import (
    RPC_TIMEOUT,
    assert_status,
    claim,
    create_workflow,
    exponential,
    fixed,
    get_run,
    job,
    list_logs,
    must_claim,
    rpc_error,
    start_run,
    uid,
)

from trellis.v1 import jobs_pb2, logs_pb2, runs_pb2, workers_pb2, workflows_pb2

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    """A gRPC-only server: the engine tests need no REST bridge."""
    return start_server(rest_enabled=False)


def _stored(server: Running) -> list[tuple[str, int, int]]:
    """What ListWorkflows shows: (id, version, job count) of each workflow."""
    listed = server.workflows.ListWorkflows(
        workflows_pb2.ListWorkflowsRequest(limit=1000), timeout=RPC_TIMEOUT
    )
    return [(w.id, w.version, len(w.jobs)) for w in listed.workflows]


def _create(workflow: workflows_pb2.Workflow) -> workflows_pb2.CreateWorkflowRequest:
    return workflows_pb2.CreateWorkflowRequest(workflow=workflow)


def _wf(*jobs: jobs_pb2.Job, name: str = "Bad", wf_id: str = "") -> workflows_pb2.Workflow:
    return workflows_pb2.Workflow(id=wf_id or uid("bad"), name=name, jobs=list(jobs))


def _bad_retry_job() -> jobs_pb2.Job:
    bad = job("r")
    bad.max_retries = 101
    return bad


BAD_WORKFLOWS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "cycle": (
        lambda: _wf(job("a", needs=["c"]), job("b", needs=["a"]), job("c", needs=["b"])),
        ("cycle", "a -> c -> b -> a"),
    ),
    "self dependency": (lambda: _wf(job("a", needs=["a"])), ("job 'a'", "itself")),
    "unknown depends_on": (
        lambda: _wf(job("a"), job("b", needs=["nope"])),
        ("job 'b'", "unknown job 'nope'"),
    ),
    "duplicate job ids": (
        lambda: _wf(job("a"), job("b"), job("a")),
        ("job 'a'", "more than once"),
    ),
    "too many retries": (lambda: _wf(_bad_retry_job()), ("job 'r'", "max_retries", "101")),
    "exponential base 0": (
        lambda: _wf(job("e", retries=1, backoff=exponential(0, 5))),
        ("job 'e'", "base_secs"),
    ),
    "exponential max below base": (
        lambda: _wf(job("e", retries=1, backoff=exponential(10, 5))),
        ("job 'e'", "max_secs"),
    ),
    "fixed delay too long": (
        lambda: _wf(job("f", retries=1, backoff=fixed(10**6))),
        ("job 'f'", "delay_secs"),
    ),
    "missing name": (lambda: _wf(job("a"), name=""), ("name",)),
    "no jobs": (lambda: _wf(), ("jobs",)),
    "job without command": (lambda: _wf(jobs_pb2.Job(id="a")), ("job 'a'", "command")),
    "bad job id": (lambda: _wf(jobs_pb2.Job(id="a b", command="x")), ("'a b'",)),
    "bad label": (lambda: _wf(job("a", labels=["x,y"])), ("job 'a'", "comma")),
}


@pytest.mark.parametrize("case", list(BAD_WORKFLOWS))
def test_bad_workflow_is_rejected_and_nothing_is_stored(server: Running, case: str) -> None:
    make, fragments = BAD_WORKFLOWS[case]
    before = _stored(server)
    error = rpc_error(server.workflows.CreateWorkflow, _create(make()))
    assert_status(error, INVALID, *fragments)
    assert _stored(server) == before


def test_bad_new_version_keeps_the_old_one(server: Running) -> None:
    wf = create_workflow(server, [job("a"), job("b", needs=["a"])])
    before = _stored(server)
    cyclic = _wf(job("a", needs=["b"]), job("b", needs=["a"]), wf_id=wf)
    assert_status(rpc_error(server.workflows.CreateWorkflow, _create(cyclic)), INVALID, "cycle")
    assert _stored(server) == before
    source = workflows_pb2.CreateWorkflowRequest(source="name: X\non: push\njobs: [oops")
    assert_status(rpc_error(server.workflows.CreateWorkflow, source), INVALID, "YAML")
    nothing = workflows_pb2.CreateWorkflowRequest()
    assert_status(rpc_error(server.workflows.CreateWorkflow, nothing), INVALID, "workflow")
    assert _stored(server) == before
    # The stored version still runs.
    run_id = start_run(server, wf)
    assert must_claim(server).job.run_id == run_id


def test_bad_worker_requests_are_invalid(server: Running) -> None:
    wf = create_workflow(server, [job("a"), job("b")])
    run_id = start_run(server, wf)
    before = _stored(server)
    w = server.workers
    cases: list[tuple[Any, Any, str]] = [
        (w.ClaimJob, workers_pb2.ClaimJobRequest(worker_id=""), "worker_id"),
        (w.ClaimJob, workers_pb2.ClaimJobRequest(worker_id="w", lease_ttl_secs=3601), "ttl"),
        (w.ClaimJob, workers_pb2.ClaimJobRequest(worker_id="w", wait_secs=61), "wait_secs"),
        (w.ClaimJob, workers_pb2.ClaimJobRequest(worker_id="w", labels=["a,b"]), "labels[0]"),
        (w.ClaimJob, workers_pb2.ClaimJobRequest(worker_id="w", labels=[""]), "labels[0]"),
        (w.ClaimJobs, workers_pb2.ClaimJobsRequest(worker_id="w", max_jobs=501), "max_jobs"),
        (w.ClaimJobs, workers_pb2.ClaimJobsRequest(worker_id="", max_jobs=2), "worker_id"),
        (w.RegisterWorker, workers_pb2.RegisterWorkerRequest(worker_id=""), "worker_id"),
        (w.RegisterWorker, workers_pb2.RegisterWorkerRequest(worker_id="x" * 201), "worker_id"),
        (w.Heartbeat, workers_pb2.HeartbeatRequest(lease_id=""), "lease_id"),
        (w.CompleteJob, workers_pb2.CompleteJobRequest(lease_id=""), "lease_id"),
        (
            w.ReportResults,
            workers_pb2.ReportResultsRequest(results=[workers_pb2.JobResult()]),
            "results[0]",
        ),
    ]
    for call, request, fragment in cases:
        assert_status(rpc_error(call, request), INVALID, fragment)
        assert _stored(server) == before
    # Nothing was claimed or registered by any of them.
    assert [j.status for j in get_run(server, run_id).jobs] == [jobs_pb2.JOB_STATE_QUEUED] * 2
    listed = server.workers.ListWorkers(workers_pb2.ListWorkersRequest(), timeout=RPC_TIMEOUT)
    assert list(listed.workers) == []

    stream = server.workers.StreamAssignments(
        workers_pb2.StreamAssignmentsRequest(worker_id="w", slots=1001), timeout=RPC_TIMEOUT
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)
    assert_status(caught.value, INVALID, "slots")

    # max_jobs unset (0) means the documented default of one job.
    one = server.workers.ClaimJobs(
        workers_pb2.ClaimJobsRequest(worker_id="w", max_jobs=0), timeout=RPC_TIMEOUT
    )
    assert len(one.assignments) == 1


def test_bad_log_stream_stores_nothing(server: Running) -> None:
    wf = create_workflow(server, [job("a")])
    run_id = start_run(server, wf)
    lease_id = must_claim(server).lease.lease_id
    request = logs_pb2.PushLogsRequest(
        lease_id=lease_id,
        chunks=[
            logs_pb2.LogChunk(sequence=0, data="fine"),
            logs_pb2.LogChunk(sequence=1, data="bad", stream=7),  # type: ignore[arg-type]
        ],
    )
    assert_status(rpc_error(server.logs.PushLogs, request), INVALID, "chunks[1].stream")
    assert list(list_logs(server, wf, "a", run_id).chunks) == []


def test_other_bad_reads_are_invalid(server: Running) -> None:
    bad_status = workflows_pb2.ListWorkflowsRequest(status="bogus")
    assert_status(rpc_error(server.workflows.ListWorkflows, bad_status), INVALID, "status")
    bad_token = runs_pb2.ListRunsRequest(page_token="not-a-token")
    assert_status(rpc_error(server.runs.ListRuns, bad_token), INVALID, "page_token")


def test_unknown_ids_are_not_found(server: Running) -> None:
    wf = create_workflow(server, [job("a")])
    other = create_workflow(server, [job("a")])
    other_run = start_run(server, other)
    missing = "0" * 32
    cases: list[tuple[Any, Any, str]] = [
        (
            server.workflows.RunWorkflow,
            workflows_pb2.RunWorkflowRequest(workflow_id="nope"),
            "nope",
        ),
        (
            server.workflows.GetWorkflow,
            workflows_pb2.GetWorkflowRequest(workflow_id="nope"),
            "nope",
        ),
        (
            server.workflows.CancelWorkflow,
            workflows_pb2.CancelWorkflowRequest(workflow_id="nope"),
            "nope",
        ),
        (server.runs.CancelRun, runs_pb2.CancelRunRequest(run_id=missing), missing),
        (server.runs.GetRun, runs_pb2.GetRunRequest(run_id=missing), missing),
        (
            server.logs.ListLogs,
            logs_pb2.ListLogsRequest(workflow_id="nope", job_id="a"),
            "nope",
        ),
        (
            server.logs.ListLogs,
            logs_pb2.ListLogsRequest(workflow_id=wf, job_id="zzz"),
            "zzz",
        ),
        (
            server.logs.ListLogs,
            logs_pb2.ListLogsRequest(workflow_id=wf, job_id="a", run_id=missing),
            missing,
        ),
        (
            server.workers.GetJobCancelled,
            workers_pb2.GetJobCancelledRequest(workflow_id="nope", job_id="a"),
            "nope",
        ),
        (
            server.workers.GetJobCancelled,
            workers_pb2.GetJobCancelledRequest(workflow_id=wf, job_id="zzz"),
            "zzz",
        ),
        (
            server.workers.GetJobCancelled,
            workers_pb2.GetJobCancelledRequest(workflow_id=wf, job_id="a", run_id=missing),
            missing,
        ),
        # A run of another workflow is not a run of this one.
        (
            server.logs.ListLogs,
            logs_pb2.ListLogsRequest(workflow_id=wf, job_id="a", run_id=other_run),
            other_run,
        ),
        (
            server.workers.GetJobCancelled,
            workers_pb2.GetJobCancelledRequest(workflow_id=wf, job_id="a", run_id=other_run),
            other_run,
        ),
    ]
    for call, request, fragment in cases:
        assert_status(rpc_error(call, request), NOT_FOUND, fragment)

    # A known workflow without runs: nothing to cancel, no logs, not cancelled.
    assert_status(
        rpc_error(
            server.workflows.CancelWorkflow, workflows_pb2.CancelWorkflowRequest(workflow_id=wf)
        ),
        NOT_FOUND,
        "no run",
    )
    assert list(list_logs(server, wf, "a").chunks) == []
    assert not server.workers.GetJobCancelled(
        workers_pb2.GetJobCancelledRequest(workflow_id=wf, job_id="a"), timeout=RPC_TIMEOUT
    ).cancelled

    for stream in (
        server.runs.StreamRunEvents(
            runs_pb2.StreamRunEventsRequest(run_id=missing), timeout=RPC_TIMEOUT
        ),
        server.logs.FollowLogs(
            logs_pb2.FollowLogsRequest(workflow_id="nope", job_id="a"), timeout=RPC_TIMEOUT
        ),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            next(stream)
        assert_status(caught.value, NOT_FOUND)


GOOD_FILE = """\
name: Good
on: push
jobs:
  first: {run: echo one}
  second: {needs: first, run: echo two, labels: [linux]}
"""
CYCLIC_FILE = """\
name: Cyclic
on: push
jobs:
  a: {needs: b, run: echo a}
  b: {needs: a, run: echo b}
"""
INVALID_FILE = """\
name: Invalid
jobs:
  a: {run: echo a}
"""


def test_bad_workflow_files_are_skipped_at_start_up(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    directory = tmp_path / "own-workflows"
    directory.mkdir()
    (directory / "good.yml").write_text(GOOD_FILE)
    (directory / "cyclic.yml").write_text(CYCLIC_FILE)
    (directory / "invalid.yaml").write_text(INVALID_FILE)
    (directory / "broken.json").write_text('{"name": "Broken", "on": "push", "jobs": ')
    (directory / "notes.txt").write_text(textwrap.dedent("not a workflow"))

    server = start_server(rest_enabled=False, workflows_dir=directory)
    assert [wf_id for wf_id, _, _ in _stored(server)] == ["good"]
    good = server.workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id="good"), timeout=RPC_TIMEOUT
    )
    assert good.name == "Good"
    assert good.trigger == "push"
    assert [(j.id, list(j.depends_on), list(j.required_labels)) for j in good.jobs] == [
        ("first", [], []),
        ("second", ["first"], ["linux"]),
    ]
    for wf_id in ("cyclic", "invalid", "broken", "notes"):
        error = rpc_error(
            server.workflows.GetWorkflow, workflows_pb2.GetWorkflowRequest(workflow_id=wf_id)
        )
        assert_status(error, NOT_FOUND, wf_id)

    run_id = start_run(server, "good")
    got = must_claim(server)
    assert (got.job.job_id, got.job.run_id, got.job.command) == ("first", run_id, "echo one")
    assert claim(server) is None
