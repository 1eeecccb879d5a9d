"""Cancelling a run over real gRPC: waiting and queued jobs end at once, the
running one learns of it from its heartbeat and its assignment stream, a late
report changes nothing, and the next run starts clean."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from conftest import Running
from engine_helpers import (
    RPC_TIMEOUT,
    assert_status,
    complete,
    create_workflow,
    event_name,
    get_run,
    heartbeat,
    job,
    list_logs,
    must_claim,
    push_logs,
    race,
    rpc_error,
    run_events,
    run_jobs,
    start_run,
    uid,
)

from trellis.v1 import jobs_pb2, runs_pb2, workers_pb2, workflows_pb2


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    """A gRPC-only server: the engine tests need no REST bridge."""
    return start_server(rest_enabled=False)


def _cancelled(server: Running, wf: str, job_id: str, run_id: str = "") -> bool:
    answer = server.workers.GetJobCancelled(
        workers_pb2.GetJobCancelledRequest(workflow_id=wf, job_id=job_id, run_id=run_id),
        timeout=RPC_TIMEOUT,
    )
    return bool(answer.cancelled)


def test_cancel_mid_run(server: Running) -> None:
    # `build` runs on the streaming worker (label `special`); `docs` stays
    # queued (no worker has `other`); `ship` waits for `build`.
    wf = create_workflow(
        server,
        [
            job("build", labels=["special"]),
            job("docs", labels=["other"]),
            job("ship", needs=["build"]),
        ],
    )
    worker = uid("streamer")
    stream = server.workers.StreamAssignments(
        workers_pb2.StreamAssignmentsRequest(worker_id=worker, labels=["special"], slots=1),
        timeout=RPC_TIMEOUT * 2,
    )
    try:
        run_id = start_run(server, wf)
        first = next(stream)
        assert [a.job.job_id for a in first.assignments] == ["build"]
        lease_id = first.assignments[0].lease.lease_id
        assert first.assignments[0].lease.worker_id == worker
        assert not _cancelled(server, wf, "build")

        cancelled_run = server.runs.CancelRun(
            runs_pb2.CancelRunRequest(run_id=run_id), timeout=RPC_TIMEOUT
        )
        assert cancelled_run.run_id == run_id
        assert cancelled_run.state == runs_pb2.RUN_STATE_CANCELLED
        assert cancelled_run.finished_at.ToMilliseconds() > 0
        states = {j.id: j.status for j in get_run(server, run_id).jobs}
        assert states == dict.fromkeys(("build", "docs", "ship"), jobs_pb2.JOB_STATE_CANCELLED)

        # The running worker hears of it from its heartbeat and its stream.
        beat = heartbeat(server, lease_id)
        assert beat.cancelled
        told = next(stream)
        assert list(told.cancelled_lease_ids) == [lease_id]
        assert not told.assignments

        # A late report changes nothing.
        late = rpc_error(
            server.workers.CompleteJob,
            workers_pb2.CompleteJobRequest(lease_id=lease_id, outputs={"x": "y"}),
        )
        assert_status(late, grpc.StatusCode.ABORTED, "cancelled")
        build = run_jobs(server, run_id)["build"]
        assert build.status == jobs_pb2.JOB_STATE_CANCELLED
        assert not build.outputs
        assert get_run(server, run_id).run.state == runs_pb2.RUN_STATE_CANCELLED
        assert _cancelled(server, wf, "build")
        assert _cancelled(server, wf, "ship", run_id)

        events = run_events(server, run_id)
        names = [(event_name(e), e.job_id) for e in events]
        assert {j for n, j in names if n == "JOB_CANCELLED"} == {"build", "docs", "ship"}
        assert names[-1] == ("RUN_FINISHED", "")
        assert events[-1].message == "cancelled"
        assert ("JOB_SUCCEEDED", "build") not in names

        # Cancelling again leaves the finished run as it is.
        again = server.runs.CancelRun(runs_pb2.CancelRunRequest(run_id=run_id), timeout=RPC_TIMEOUT)
        assert again.state == runs_pb2.RUN_STATE_CANCELLED
        assert again.finished_at.ToMilliseconds() == cancelled_run.finished_at.ToMilliseconds()
        assert len(run_events(server, run_id)) == len(events)

        # A new run of the same workflow is not cancelled; its job reaches the
        # stream's freed slot.
        run2 = start_run(server, wf)
        assert not _cancelled(server, wf, "build")
        assert not _cancelled(server, wf, "build", run2)
        assert _cancelled(server, wf, "build", run_id)
        pushed = next(stream)
        assert [(a.job.job_id, a.job.run_id) for a in pushed.assignments] == [("build", run2)]
        assert heartbeat(server, pushed.assignments[0].lease.lease_id).cancelled is False
        complete(server, pushed.assignments[0].lease.lease_id)
        assert run_jobs(server, run2)["build"].status == jobs_pb2.JOB_STATE_SUCCEEDED
    finally:
        stream.cancel()


def test_cancel_workflow_cancels_its_latest_run(server: Running) -> None:
    wf = create_workflow(server, [job("a"), job("b", needs=["a"])])
    first = start_run(server, wf)
    latest = start_run(server, wf)
    answer = server.workflows.CancelWorkflow(
        workflows_pb2.CancelWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
    )
    assert answer.run_id == latest
    assert answer.state == runs_pb2.RUN_STATE_CANCELLED
    assert get_run(server, first).run.state == runs_pb2.RUN_STATE_RUNNING
    status = server.workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
    )
    assert status.run_id == latest
    assert status.run_state == runs_pb2.RUN_STATE_CANCELLED
    assert [j.status for j in status.jobs] == [jobs_pb2.JOB_STATE_CANCELLED] * 2


def test_cancel_racing_a_completion_has_one_outcome(server: Running) -> None:
    wf = create_workflow(server, [job("a"), job("b", needs=["a"])])
    for _ in range(4):
        run_id = start_run(server, wf)
        lease_id = must_claim(server).lease.lease_id
        completed, cancelled = race(
            [
                lambda lid=lease_id: complete(server, lid, {"done": "yes"}),
                lambda rid=run_id: server.runs.CancelRun(
                    runs_pb2.CancelRunRequest(run_id=rid), timeout=RPC_TIMEOUT
                ),
            ]
        )
        assert cancelled == grpc.StatusCode.OK
        jobs = run_jobs(server, run_id)
        if completed == grpc.StatusCode.OK:
            # The completion came first; the cancel then caught `b`.
            assert jobs["a"].status == jobs_pb2.JOB_STATE_SUCCEEDED
            assert dict(jobs["a"].outputs) == {"done": "yes"}
        else:
            assert completed == grpc.StatusCode.ABORTED
            assert jobs["a"].status == jobs_pb2.JOB_STATE_CANCELLED
            assert not jobs["a"].outputs
        assert jobs["b"].status == jobs_pb2.JOB_STATE_CANCELLED
        assert get_run(server, run_id).run.state == runs_pb2.RUN_STATE_CANCELLED
        names = [(event_name(e), e.job_id) for e in run_events(server, run_id)]
        assert names.count(("RUN_FINISHED", "")) == 1
        assert names[-1] == ("RUN_FINISHED", "")
        assert (("JOB_SUCCEEDED", "a") in names) == (completed == grpc.StatusCode.OK)


def test_a_cancelled_job_may_still_log_while_it_stops(server: Running) -> None:
    wf = create_workflow(server, [job("slow")])
    run_id = start_run(server, wf)
    lease = must_claim(server, uid("worker")).lease
    push_logs(server, lease.lease_id, "working\n")
    server.runs.CancelRun(runs_pb2.CancelRunRequest(run_id=run_id), timeout=RPC_TIMEOUT)

    # The worker's last words (a trap handler, say) are kept with the job...
    assert push_logs(server, lease.lease_id, "stopping\n", first_sequence=1).accepted == 1
    data = [c.data for c in list_logs(server, wf, "slow", run_id).chunks]
    assert data == ["working\n", "stopping\n"]
    # ...but the lease still cannot change the job.
    late = rpc_error(
        server.workers.CompleteJob, workers_pb2.CompleteJobRequest(lease_id=lease.lease_id)
    )
    assert_status(late, grpc.StatusCode.ABORTED, "cancelled")
    assert run_jobs(server, run_id)["slow"].status == jobs_pb2.JOB_STATE_CANCELLED
