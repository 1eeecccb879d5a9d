"""The engine runs DAGs in dependency order, passes outputs downstream, keeps
runs apart and skips what a failure makes impossible; all over real gRPC."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import Running
from engine_helpers import (
    RPC_TIMEOUT,
    claim,
    complete,
    create_workflow,
    event_name,
    fail,
    get_run,
    job,
    list_logs,
    must_claim,
    push_logs,
    run_events,
    run_jobs,
    start_run,
)

from trellis.v1 import jobs_pb2, runs_pb2, workflows_pb2


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    """A gRPC-only server: the engine tests need no REST bridge."""
    return start_server(rest_enabled=False)


# root fans out to left/right (a diamond joined by `join`) and to three leaves;
# `solo` is unrelated to all of them.
DAG: dict[str, tuple[str, ...]] = {
    "root": (),
    "left": ("root",),
    "right": ("root",),
    "join": ("left", "right"),
    "fan1": ("root",),
    "fan2": ("root",),
    "fan3": ("root",),
    "solo": (),
}


def test_dag_runs_in_dependency_order_with_parent_outputs(server: Running) -> None:
    wf = create_workflow(server, [job(j, needs=deps) for j, deps in DAG.items()])
    run_id = start_run(server, wf)

    done: dict[str, dict[str, str]] = {}
    while len(done) < len(DAG):
        got = must_claim(server, "w1")
        job_id = got.job.job_id
        assert job_id not in done, f"{job_id} handed out twice"
        assert got.job.run_id == got.lease.run_id == run_id
        assert got.job.workflow_id == wf
        parents = DAG[job_id]
        assert set(parents) <= set(done), f"{job_id} started before its parents"
        # Exactly the direct parents' outputs: not grandparents, not siblings.
        upstream = {k: dict(v.values) for k, v in got.job.upstream_outputs.items()}
        assert upstream == {p: done[p] for p in parents}
        outputs = {"job": job_id, "run": run_id}
        complete(server, got.lease.lease_id, outputs)
        done[job_id] = outputs

    detail = get_run(server, run_id)
    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    assert detail.run.finished_at.ToMilliseconds() >= detail.run.created_at.ToMilliseconds()
    assert [j.id for j in detail.jobs] == list(DAG)
    for j in detail.jobs:
        assert j.status == jobs_pb2.JOB_STATE_SUCCEEDED
        assert dict(j.outputs) == done[j.id]
        assert list(j.depends_on) == list(DAG[j.id])
    assert claim(server, "w1") is None

    wf_status = server.workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
    )
    assert wf_status.run_id == run_id
    assert wf_status.run_state == runs_pb2.RUN_STATE_SUCCEEDED

    events = run_events(server, run_id)
    ids = [e.id for e in events]
    assert ids == sorted(set(ids)), "event ids must increase"
    assert all(e.run_id == run_id for e in events)
    names = [(event_name(e), e.job_id) for e in events]
    assert names[0] == ("RUN_STARTED", "")
    assert names[-1] == ("RUN_FINISHED", "")
    assert events[-1].message == "succeeded"
    assert [n for n, _ in names].count("RUN_FINISHED") == 1
    for job_id, parents in DAG.items():
        queued = names.index(("JOB_QUEUED", job_id))
        succeeded = names.index(("JOB_SUCCEEDED", job_id))
        assert names.count(("JOB_SUCCEEDED", job_id)) == 1
        assert queued < succeeded
        for parent in parents:
            assert names.index(("JOB_SUCCEEDED", parent)) < queued

    # Resuming after an event id replays exactly what followed it.
    assert run_events(server, run_id, after_id=events[3].id) == events[4:]


def test_times_are_timestamps_unset_until_they_happen(server: Running) -> None:
    wf = create_workflow(server, [job("a"), job("b", needs=("a",))])
    run_id = start_run(server, wf)
    before = get_run(server, run_id)
    assert before.run.HasField("created_at") and not before.run.HasField("finished_at")
    for waiting in before.jobs:
        assert not waiting.HasField("started_at") and not waiting.HasField("delayed_until")

    got = must_claim(server, "w1")
    # A root job is ready the moment its run is created, on the same clock.
    assert got.job.enqueued_at == before.run.created_at
    assert not got.job.HasField("delayed_until")
    ttl_ms = got.lease.ttl_secs * 1000
    assert got.lease.expires_at.ToMilliseconds() == got.lease.granted_at.ToMilliseconds() + ttl_ms
    running = {j.id: j for j in get_run(server, run_id).jobs}
    (attempt,) = running["a"].attempts
    assert running["a"].started_at == got.lease.granted_at == attempt.started_at
    assert not attempt.HasField("ended_at") and not running["b"].HasField("started_at")

    complete(server, got.lease.lease_id)
    complete(server, must_claim(server, "w1").lease.lease_id)
    after = get_run(server, run_id)
    assert after.run.HasField("finished_at")
    (ended,) = {j.id: j for j in after.jobs}["a"].attempts
    assert attempt.started_at.ToMilliseconds() <= ended.ended_at.ToMilliseconds()
    assert ended.ended_at.ToMilliseconds() <= after.run.finished_at.ToMilliseconds()


def test_second_run_never_sees_the_first_runs_outputs_or_logs(server: Running) -> None:
    wf = create_workflow(server, [job("a"), job("b", needs=["a"])])

    run1 = start_run(server, wf)
    a1 = must_claim(server)
    assert a1.job.job_id == "a" and a1.job.run_id == run1
    assert push_logs(server, a1.lease.lease_id, "run1 a line 0", "run1 a line 1").accepted == 2
    # A retried push of the same (stream, sequence) is not stored twice.
    assert push_logs(server, a1.lease.lease_id, "run1 a line 0").accepted == 0
    complete(server, a1.lease.lease_id, {"v": "1"})
    b1 = must_claim(server)
    assert {k: dict(v.values) for k, v in b1.job.upstream_outputs.items()} == {"a": {"v": "1"}}
    complete(server, b1.lease.lease_id, {"w": "1"})

    run2 = start_run(server, wf)
    assert run2 != run1
    # Without a run id the latest run is meant: the new one has no logs yet.
    latest = list_logs(server, wf, "a")
    assert latest.run_id == run2
    assert list(latest.chunks) == []
    assert all(
        j.status == jobs_pb2.JOB_STATE_PENDING
        for j in run_jobs(server, run2).values()
        if j.id == "b"
    )
    assert not run_jobs(server, run2)["a"].outputs

    a2 = must_claim(server)
    assert a2.job.job_id == "a" and a2.job.run_id == run2
    assert a2.job.attempt == 0
    assert not a2.job.upstream_outputs
    push_logs(server, a2.lease.lease_id, "run2 a line 0")
    complete(server, a2.lease.lease_id, {"v": "2"})
    b2 = must_claim(server)
    assert b2.job.run_id == run2
    assert {k: dict(v.values) for k, v in b2.job.upstream_outputs.items()} == {"a": {"v": "2"}}
    complete(server, b2.lease.lease_id)

    logs1 = list_logs(server, wf, "a", run1)
    assert logs1.run_id == run1
    assert [c.data for c in logs1.chunks] == ["run1 a line 0", "run1 a line 1"]
    assert all(c.run_id == run1 and c.workflow_id == wf and c.job_id == "a" for c in logs1.chunks)
    logs2 = list_logs(server, wf, "a", run2)
    assert [c.data for c in logs2.chunks] == ["run2 a line 0"]
    assert [c.data for c in list_logs(server, wf, "a").chunks] == ["run2 a line 0"]

    assert dict(run_jobs(server, run1)["a"].outputs) == {"v": "1"}
    assert dict(run_jobs(server, run2)["a"].outputs) == {"v": "2"}
    assert all(e.run_id == run2 for e in run_events(server, run2))

    listed = server.runs.ListRuns(runs_pb2.ListRunsRequest(workflow_id=wf), timeout=RPC_TIMEOUT)
    assert {r.run_id for r in listed.runs} == {run1, run2}
    assert all(r.state == runs_pb2.RUN_STATE_SUCCEEDED for r in listed.runs)


def test_failure_skips_descendants_only_and_fails_the_run(server: Running) -> None:
    # a -> b -> c, b -> e <- d <- a; x -> y is unrelated to the failing b.
    wf = create_workflow(
        server,
        [
            job("a"),
            job("b", needs=["a"], retries=3),
            job("c", needs=["b"]),
            job("d", needs=["a"]),
            job("e", needs=["b", "d"]),
            job("x"),
            job("y", needs=["x"]),
        ],
    )
    run_id = start_run(server, wf)
    held: dict[str, str] = {}
    for _ in range(2):
        got = must_claim(server)
        held[got.job.job_id] = got.lease.lease_id
    assert set(held) == {"a", "x"}
    complete(server, held.pop("a"))
    for _ in range(2):
        got = must_claim(server)
        held[got.job.job_id] = got.lease.lease_id
    assert set(held) == {"x", "b", "d"}

    # A non-retryable failure ends the job at once, whatever its retry budget.
    answer = fail(server, held.pop("b"), "compile error", retryable=False)
    assert not answer.will_retry
    states = {k: j.status for k, j in run_jobs(server, run_id).items()}
    assert states["b"] == jobs_pb2.JOB_STATE_FAILED
    assert states["c"] == jobs_pb2.JOB_STATE_SKIPPED
    assert states["e"] == jobs_pb2.JOB_STATE_SKIPPED
    assert states["d"] == jobs_pb2.JOB_STATE_RUNNING
    assert states["x"] == jobs_pb2.JOB_STATE_RUNNING
    assert states["y"] == jobs_pb2.JOB_STATE_PENDING
    assert run_jobs(server, run_id)["b"].output == "compile error"
    # Unrelated work still runs; the run ends only when everything is terminal.
    assert get_run(server, run_id).run.state == runs_pb2.RUN_STATE_RUNNING

    complete(server, held.pop("d"))
    complete(server, held.pop("x"))
    y = must_claim(server)
    assert y.job.job_id == "y"
    assert get_run(server, run_id).run.state == runs_pb2.RUN_STATE_RUNNING
    complete(server, y.lease.lease_id)

    detail = get_run(server, run_id)
    assert detail.run.state == runs_pb2.RUN_STATE_FAILED
    final = {j.id: j.status for j in detail.jobs}
    assert final == {
        "a": jobs_pb2.JOB_STATE_SUCCEEDED,
        "b": jobs_pb2.JOB_STATE_FAILED,
        "c": jobs_pb2.JOB_STATE_SKIPPED,
        "d": jobs_pb2.JOB_STATE_SUCCEEDED,
        "e": jobs_pb2.JOB_STATE_SKIPPED,
        "x": jobs_pb2.JOB_STATE_SUCCEEDED,
        "y": jobs_pb2.JOB_STATE_SUCCEEDED,
    }
    events = run_events(server, run_id)
    names = [(event_name(e), e.job_id) for e in events]
    assert ("JOB_FAILED", "b") in names
    assert ("JOB_RETRYING", "b") not in names
    assert {j for n, j in names if n == "JOB_SKIPPED"} == {"c", "e"}
    assert names[-1] == ("RUN_FINISHED", "")
    assert events[-1].message == "failed"
    failed = next(e for e in events if event_name(e) == "JOB_FAILED")
    assert failed.message == "compile error"
