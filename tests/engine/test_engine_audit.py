"""The engine's audited changes (creating, running and cancelling) land in
the one audit log, recorded with the caller's subject, kind and address,
refusals included."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from conftest import Running
from engine_helpers import RPC_TIMEOUT, job, uid

from trellis.server.core.audit import list_audit
from trellis.v1 import jobs_pb2, runs_pb2, workflows_pb2

ORG = "default"
# What a trusted proxy (the REST bridge) forwards as the client's address.
FORWARDED = (("x-forwarded-for", "203.0.113.7"),)


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    """A gRPC-only server: the engine tests need no REST bridge."""
    return start_server(rest_enabled=False)


def test_runs_and_cancels_are_audited_with_the_caller_and_its_address(server: Running) -> None:
    wf, never_run = uid(), uid()
    for wf_id in (wf, never_run):
        server.workflows.CreateWorkflow(
            workflows_pb2.CreateWorkflowRequest(
                workflow=workflows_pb2.Workflow(id=wf_id, name="A", jobs=[job("a")])
            ),
            timeout=RPC_TIMEOUT,
            metadata=FORWARDED,
        )
    run = server.workflows.RunWorkflow(
        workflows_pb2.RunWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT, metadata=FORWARDED
    )
    server.runs.CancelRun(
        runs_pb2.CancelRunRequest(run_id=run.run_id), timeout=RPC_TIMEOUT, metadata=FORWARDED
    )
    with pytest.raises(grpc.RpcError) as refused:
        server.workflows.CancelWorkflow(
            workflows_pb2.CancelWorkflowRequest(workflow_id=never_run),
            timeout=RPC_TIMEOUT,
            metadata=FORWARDED,
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND

    with server.server.db.read() as conn:
        events = list_audit(conn, ORG, actor=server.subject, limit=1000).items
    mine = {
        (e.action, e.resource, e.result): e
        for e in events
        if e.resource in (f"workflow:{wf}", f"workflow:{never_run}", f"run:{run.run_id}")
    }
    assert set(mine) == {
        ("workflow.create", f"workflow:{wf}", "success"),
        ("workflow.create", f"workflow:{never_run}", "success"),
        ("workflow.run", f"workflow:{wf}", "success"),
        ("run.cancel", f"run:{run.run_id}", "success"),
        ("run.cancel", f"workflow:{never_run}", "failure"),
    }
    for event in mine.values():
        assert (event.actor_kind, event.ip) == ("user", "203.0.113.7")
    assert mine[("workflow.run", f"workflow:{wf}", "success")].detail == {"run_id": run.run_id}
    refusal = mine[("run.cancel", f"workflow:{never_run}", "failure")]
    assert "has no run to cancel" in refusal.detail["error"]
    # The refused cancel changed nothing; the other run's job was cancelled.
    assert jobs_pb2.JOB_STATE_CANCELLED in {
        j.status
        for j in server.runs.GetRun(
            runs_pb2.GetRunRequest(run_id=run.run_id), timeout=RPC_TIMEOUT
        ).jobs
    }
