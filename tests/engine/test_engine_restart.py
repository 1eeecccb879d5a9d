"""A server restarted mid-run on the same database loses nothing: runs, jobs,
outputs, logs, events and unexpired leases all live in the database."""

from __future__ import annotations

from collections.abc import Callable

from conftest import Running
from engine_helpers import (
    RPC_TIMEOUT,
    complete,
    create_workflow,
    event_name,
    events_until,
    get_run,
    heartbeat,
    job,
    list_logs,
    must_claim,
    push_logs,
    run_events,
    run_jobs,
    start_run,
)

from trellis.v1 import jobs_pb2, runs_pb2, workflows_pb2


def test_restart_mid_run_loses_nothing(start_server: Callable[..., Running]) -> None:
    first = start_server(rest_enabled=False)
    wf = create_workflow(
        first,
        [job("a"), job("b", needs=["a"]), job("c", needs=["a"]), job("d", needs=["b", "c"])],
    )
    run_id = start_run(first, wf)
    a = must_claim(first)
    complete(first, a.lease.lease_id, {"from": "a"})
    b = must_claim(first, ttl=120)
    c = must_claim(first, ttl=120)
    assert (b.job.job_id, c.job.job_id) == ("b", "c")
    push_logs(first, b.lease.lease_id, "b before restart")
    complete(first, b.lease.lease_id, {"from": "b"})
    push_logs(first, c.lease.lease_id, "c before restart")
    events_before = events_until(
        first, run_id, lambda e: event_name(e) == "JOB_SUCCEEDED" and e.job_id == "b"
    )
    first.stop()

    second = start_server(rest_enabled=False)
    detail = get_run(second, run_id)
    assert detail.run.state == runs_pb2.RUN_STATE_RUNNING
    assert {j.id: j.status for j in detail.jobs} == {
        "a": jobs_pb2.JOB_STATE_SUCCEEDED,
        "b": jobs_pb2.JOB_STATE_SUCCEEDED,
        "c": jobs_pb2.JOB_STATE_RUNNING,
        "d": jobs_pb2.JOB_STATE_PENDING,
    }
    workflow = second.workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
    )
    assert workflow.version == 1
    assert workflow.run_id == run_id

    # The lease granted before the restart is still good.
    beat = heartbeat(second, c.lease.lease_id)
    assert not beat.cancelled
    assert beat.expires_at.ToMilliseconds() >= c.lease.expires_at.ToMilliseconds()
    push_logs(second, c.lease.lease_id, "c after restart", first_sequence=1)
    complete(second, c.lease.lease_id, {"from": "c"})

    d = must_claim(second)
    assert d.job.job_id == "d"
    assert {k: dict(v.values) for k, v in d.job.upstream_outputs.items()} == {
        "b": {"from": "b"},
        "c": {"from": "c"},
    }
    complete(second, d.lease.lease_id)
    assert get_run(second, run_id).run.state == runs_pb2.RUN_STATE_SUCCEEDED
    assert dict(run_jobs(second, run_id)["a"].outputs) == {"from": "a"}

    assert [x.data for x in list_logs(second, wf, "b", run_id).chunks] == ["b before restart"]
    assert [x.data for x in list_logs(second, wf, "c", run_id).chunks] == [
        "c before restart",
        "c after restart",
    ]
    events = run_events(second, run_id)
    assert events[: len(events_before)] == events_before
    names = [(event_name(e), e.job_id) for e in events]
    for key in "abcd":
        assert names.count(("JOB_SUCCEEDED", key)) == 1
    assert names[-1] == ("RUN_FINISHED", "")
    # Resuming the event stream after an id seen before the restart works.
    resumed = run_events(second, run_id, after_id=events_before[-1].id)
    assert resumed == events[len(events_before) :]
