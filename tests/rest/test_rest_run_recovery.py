"""Retry, rollback, progress, parallel limits and ad-hoc runs over REST: the
paths under /api/runs, their JSON and their errors, against the real server."""

from __future__ import annotations

from conftest import Running
from rest_helpers import assert_error, rest, uid


def test_retry_and_progress_over_rest(server: Running) -> None:
    client = rest(server)
    wf = uid()
    client.create_workflow(
        [{"id": "a", "command": "echo a"}, {"id": "b", "command": "echo b", "depends_on": ["a"]}],
        workflow_id=wf,
    )
    run = client.ok(client.post(f"/api/workflows/{wf}/run", {"parallel_limit": 1}), 202)
    run_id = run["run_id"]
    path = f"/api/runs/{run_id}"
    refused = client.post(f"{path}/retry", {})
    assert_error(refused, 400, "FAILED_PRECONDITION", "is running")

    progress = client.ok(client.get(f"{path}/progress"))
    assert progress["jobs_total"] == 2 and progress["jobs_done"] == 0
    assert progress["queued_jobs"] == ["a"] and progress["state"] == "running"
    assert "estimated_secs_left" not in progress

    a = client.must_claim("w")
    client.complete(a["lease"]["lease_id"], {"x": "1"})
    b = client.must_claim("w")
    client.fail(b["lease"]["lease_id"], "b broke")
    assert client.ok(client.get(path))["run"]["state"] == "failure"

    again = client.ok(client.post(f"{path}/retry", {}), 202)
    assert again["state"] == "running" and again["attempt"] == 2
    assert again["parallel_limit"] == 1
    b = client.must_claim("w")
    assert b["job"]["job_id"] == "b"
    assert b["job"]["upstream_outputs"]["a"] == {"x": "1"}
    client.complete(b["lease"]["lease_id"])
    detail = client.ok(client.get(path))
    assert detail["run"]["state"] == "success"


def test_adhoc_runs_and_rollback_over_rest(server: Running) -> None:
    client = rest(server)
    cycle = {
        "name": "loop",
        "jobs": [
            {"id": "a", "command": "x", "depends_on": ["b"]},
            {"id": "b", "command": "y", "depends_on": ["a"]},
        ],
    }
    before = client.ok(client.get("/api/runs"))["runs"]
    assert_error(client.post("/api/runs", {"workflow": cycle}), 400, "INVALID_ARGUMENT", "cycle")
    assert_error(client.post("/api/runs", {}), 400, "INVALID_ARGUMENT", "workflow")
    assert client.ok(client.get("/api/runs"))["runs"] == before

    source = """
name: saga
on: push
jobs:
  book:
    run: echo book
    compensate: echo unbook
  pay:
    needs: book
    run: echo pay
    compensate:
      run: echo refund
      retries: 2
"""
    run = client.ok(client.post("/api/runs", {"source": source}), 202)
    assert run["workflow_id"] == f"adhoc-{run['run_id']}"
    for _ in range(2):
        got = client.must_claim("w")
        client.complete(got["lease"]["lease_id"], {"done": got["job"]["job_id"]})
    path = f"/api/runs/{run['run_id']}"
    assert client.ok(client.get(path))["run"]["state"] == "success"

    assert_error(
        client.post(f"{path}/rollback", {"job_ids": ["nope"]}), 400, "INVALID_ARGUMENT", "nope"
    )
    rolling = client.ok(client.post(f"{path}/rollback", {}), 202)
    assert rolling["state"] == "rolling_back"
    refund = client.must_claim("w")
    assert refund["job"]["job_id"] == "pay:undo"
    assert refund["job"]["command"] == "echo refund"
    assert refund["job"]["upstream_outputs"]["pay"] == {"done": "pay"}
    client.complete(refund["lease"]["lease_id"])
    unbook = client.must_claim("w")
    assert unbook["job"]["job_id"] == "book:undo"
    client.complete(unbook["lease"]["lease_id"])
    detail = client.ok(client.get(path))
    assert detail["run"]["state"] == "rolled_back"
    jobs = {j["id"]: j for j in detail["jobs"]}
    assert jobs["pay:undo"]["status"] == "success"
    assert_error(client.post(f"{path}/rollback", {}), 400, "FAILED_PRECONDITION", "rolled_back")
