"""Error answers over REST against the real server: 404 for unknown ids, 409 for
spent or unknown leases, 400 naming the problem (with nothing stored), and the
bridge's own 404/405; every one a JSON body ``{"error": {code, status, message}}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import Running
from rest_helpers import JOB_KEYS, Rest, assert_error, assert_workflow_shape, rest, uid

# --- 404: unknown workflow and job ids ---------------------------------------------------


def test_unknown_workflows_and_jobs_are_json_404s(server: Running) -> None:
    client = rest(server)
    missing = uid("missing")
    for method, path in [
        ("GET", f"/api/workflows/{missing}/status"),
        ("POST", f"/api/workflows/{missing}/run"),
        # The original answers 202 here.
        ("POST", f"/api/workflows/{missing}/cancel"),
        ("GET", f"/api/jobs/{missing}/build/cancelled"),
        ("GET", f"/api/workflows/{missing}/jobs/build/logs"),
        ("GET", f"/api/workflows/{missing}/jobs/build/logs/stream"),
    ]:
        reply = client.request(method, path)
        assert_error(reply, 404, "NOT_FOUND", f"workflow {missing!r} not found")
    # Nothing was created by any of these.
    assert missing not in {w["id"] for w in client.ok(client.get("/api/workflows"))}

    # An unknown job of a known workflow: before the first run the definition
    # answers; after it, the run does.
    for _ in ("never ran", "ran"):
        for path in [
            "/api/jobs/ci/nope/cancelled",
            "/api/workflows/ci/jobs/nope/logs",
            "/api/workflows/ci/jobs/nope/logs/stream",
        ]:
            assert_error(client.get(path), 404, "NOT_FOUND", "'nope' not found")
        client.run("ci")


# --- 409: spent and unknown leases --------------------------------------------------------


def _claimed(client: Rest, **claim: Any) -> tuple[str, dict[str, Any]]:
    workflow_id = client.create_workflow(
        [{"id": "a", "command": "true"}, {"id": "b", "command": "true", "depends_on": ["a"]}]
    )["id"]
    client.run(workflow_id)
    got = client.must_claim(**claim)
    return workflow_id, got


def test_completed_cancelled_and_unknown_leases_are_409s(server: Running) -> None:
    client = rest(server)
    workflow_id, got = _claimed(client)
    lease_id = got["lease"]["lease_id"]
    client.complete(lease_id, {"first": "yes"})
    spent = "already completed"
    assert_error(
        client.post(f"/api/jobs/{lease_id}/complete", {"outputs": {"second": "yes"}}),
        409,
        "ABORTED",
        spent,
    )
    assert_error(client.post(f"/api/jobs/{lease_id}/fail", {"error": "x"}), 409, "ABORTED", spent)
    assert_error(client.post(f"/api/jobs/{lease_id}/heartbeat"), 409, "ABORTED", spent)
    assert_error(
        client.post(f"/api/jobs/{lease_id}/logs", {"chunks": [{"sequence": 0, "data": "x"}]}),
        409,
        "ABORTED",
        spent,
    )
    # The first completion stands; the child was released exactly once.
    jobs = client.jobs(workflow_id)
    assert (jobs["a"]["status"], jobs["a"]["outputs"]) == ("success", {"first": "yes"})
    assert client.logs(workflow_id, "a") == []
    child = client.must_claim()
    assert child["job"]["upstream_outputs"] == {"a": {"first": "yes"}}
    assert client.claim() is None

    # A lease the server never granted.
    unknown = uid("lease")
    for path, body in [
        (f"/api/jobs/{unknown}/complete", {"outputs": {}}),
        (f"/api/jobs/{unknown}/fail", {"error": "x", "retryable": True}),
        (f"/api/jobs/{unknown}/heartbeat", None),
        (f"/api/jobs/{unknown}/logs", {"chunks": []}),
    ]:
        reply = client.post(path) if body is None else client.post(path, body)
        assert_error(reply, 409, "ABORTED", f"unknown lease {unknown!r}")

    # The lease of a cancelled job: a late completion does not revive the job.
    cancelled_wf, got = _claimed(client)
    client.ok(client.post(f"/api/workflows/{cancelled_wf}/cancel"), 202)
    assert_error(
        client.post(f"/api/jobs/{got['lease']['lease_id']}/complete", {"outputs": {}}),
        409,
        "ABORTED",
        "cancelled",
    )
    statuses = [job["status"] for job in client.status(cancelled_wf)["jobs"]]
    assert statuses == ["cancelled", "cancelled"]


def test_an_expired_and_reaped_lease_is_spent(start_server: Callable[..., Running]) -> None:
    client = rest(start_server(reap_interval_secs=0.2))
    # No retries: a lost lease spends none.
    workflow_id = client.create_workflow([{"id": "a", "command": "true"}])["id"]
    run_id = client.run(workflow_id)["run_id"]
    old = client.must_claim("w1", ttl=1)
    old_lease = old["lease"]["lease_id"]
    assert old["lease"]["ttl_secs"] == 1

    # The reaper turns the expired lease into a retry of the job.
    job = client.wait_job_status(workflow_id, "a", "queued")
    assert job["attempt"] == 1
    assert job["output"] == "lease expired: the worker stopped heartbeating"

    expired = "the lease expired"
    assert_error(client.post(f"/api/jobs/{old_lease}/heartbeat"), 409, "ABORTED", expired)
    assert_error(
        client.post(f"/api/jobs/{old_lease}/complete", {"outputs": {"late": "yes"}}),
        409,
        "ABORTED",
        expired,
    )
    assert_error(
        client.post(f"/api/jobs/{old_lease}/logs", {"chunks": [{"sequence": 0, "data": "x"}]}),
        409,
        "ABORTED",
        expired,
    )
    # Only the fresh lease counts.
    new = client.must_claim("w2")
    assert new["job"]["attempt"] == 1 and new["lease"]["lease_id"] != old_lease
    assert_error(client.post(f"/api/jobs/{old_lease}/fail", {"error": "x"}), 409, "ABORTED")
    client.complete(new["lease"]["lease_id"], {"by": "w2"})
    status = client.status(workflow_id)
    assert status["run_state"] == "success"
    assert status["jobs"][0]["outputs"] == {"by": "w2"}
    assert_workflow_shape(status)

    # The run shows both tries of the job.
    (job,) = client.ok(client.get(f"/api/runs/{run_id}"))["jobs"]
    assert set(job) == JOB_KEYS | {"attempts", "waiting_reason"}
    first, second = job["attempts"]
    assert first == {
        "attempt": 0,
        "lease_id": old_lease,
        "worker_id": "w1",
        "started_at_ms": old["lease"]["granted_at_ms"],
        "ended_at_ms": first["ended_at_ms"],
        "outcome": "lease_lost",
        "error": "lease expired: the worker stopped heartbeating",
    }
    assert first["ended_at_ms"] >= old["lease"]["expires_at_ms"]
    assert (second["attempt"], second["lease_id"], second["worker_id"]) == (
        1,
        new["lease"]["lease_id"],
        "w2",
    )
    assert (second["outcome"], second["error"]) == ("succeeded", "")
    assert second["started_at_ms"] == new["lease"]["granted_at_ms"] <= second["ended_at_ms"]


def test_a_lease_lost_too_often_fails_the_run(start_server: Callable[..., Running]) -> None:
    # The original leaves such a workflow hanging forever.
    client = rest(start_server(reap_interval_secs=0.2, max_lost_leases=0))
    workflow_id = client.create_workflow(
        [{"id": "a", "command": "true"}, {"id": "b", "command": "true", "depends_on": ["a"]}]
    )["id"]
    run_id = client.run(workflow_id)["run_id"]
    lease_id = client.must_claim(ttl=1)["lease"]["lease_id"]
    job = client.wait_job_status(workflow_id, "a", "failure")
    assert job["output"] == (
        "lease expired: the worker stopped heartbeating; the job's lease was lost 1 time, "
        "and lost leases are not queued again"
    )
    # A job that never ran has no attempts.
    a, b = client.ok(client.get(f"/api/runs/{run_id}"))["jobs"]
    assert [x["outcome"] for x in a["attempts"]] == ["lease_lost"]
    assert b["attempts"] == [] and set(b) == JOB_KEYS | {"attempts", "waiting_reason"}
    status = client.status(workflow_id)
    assert status["run_state"] == "failure"
    assert status["jobs"][1]["status"] == "skipped"
    assert_error(client.post(f"/api/jobs/{lease_id}/heartbeat"), 409, "ABORTED", "expired")
    assert client.claim() is None


# --- 400: bad input, nothing stored ---------------------------------------------------------


def test_bad_requests_are_json_400s_that_store_nothing(server: Running) -> None:
    client = rest(server)
    workflow_id = uid("bad")

    def snapshot() -> tuple[Any, Any]:
        return client.ok(client.get("/api/workflows")), client.ok(client.get("/api/workers"))

    before = snapshot()
    job = {"id": "a", "command": "true"}
    cases: list[tuple[str, dict[str, Any], str]] = [
        # (path, request, what the message must name)
        ("/api/workflows", {"raw": b'{"name": '}, "invalid JSON body"),
        ("/api/workflows", {"raw": b"\xff\xfe"}, "invalid JSON body"),
        (
            "/api/workflows",
            {"body": {"id": workflow_id, "name": "X", "jobs": [{**job, "max_retries": "two"}]}},
            'jobs[0].max_retries: expected an integer, got "two"',
        ),
        (
            "/api/workflows",
            {"body": {"id": workflow_id, "name": "X", "jobs": [job], "colour": "red"}},
            "colour: unknown field",
        ),
        (
            "/api/workflows",
            {"body": {"id": workflow_id, "name": "X", "jobs": [{**job, "needs": ["b"]}]}},
            "jobs[0].needs: unknown field",
        ),
        (
            "/api/workflows",
            {
                "body": {
                    "id": workflow_id,
                    "name": "Cycle",
                    "jobs": [
                        {"id": "a", "command": "true", "depends_on": ["c"]},
                        {"id": "b", "command": "true", "depends_on": ["a"]},
                        {"id": "c", "command": "true", "depends_on": ["b"]},
                    ],
                }
            },
            "cycle",
        ),
        (
            "/api/workflows",
            {
                "body": {
                    "id": workflow_id,
                    "name": "Dangling",
                    "jobs": [{"id": "a", "command": "true", "depends_on": ["zz"]}],
                }
            },
            "job 'a': depends on unknown job 'zz'",
        ),
        (
            "/api/workflows",
            {"body": {"id": workflow_id, "name": "Twice", "jobs": [job, job]}},
            "job 'a': defined more than once",
        ),
        (
            "/api/workflows",
            {
                "body": {
                    "id": workflow_id,
                    "name": "X",
                    "jobs": [{**job, "retry_policy": {"backoff": "Sometimes"}}],
                }
            },
            'jobs[0].retry_policy.backoff: unknown variant "Sometimes"',
        ),
        ("/api/workflows", {"body": []}, "body: expected an object, got []"),
        (
            "/api/jobs/claim",
            {"body": {"worker_id": "w", "lease_ttl_secs": "x"}},
            'lease_ttl_secs: expected an integer, got "x"',
        ),
        ("/api/jobs/claim", {"body": {"worker_id": "w", "bogus": 1}}, "bogus: unknown field"),
        ("/api/jobs/claim", {"body": {"labels": ["x"]}}, "worker_id: required"),
        ("/api/jobs/claim", {"raw": b""}, "worker_id: required"),
        ("/api/jobs/claim", {"raw": b"null"}, "worker_id: required"),
        ("/api/jobs/claim", {"body": {"worker_id": "w", "wait_secs": 61}}, "wait_secs"),
        ("/api/jobs/claim", {"raw": b'{"worker_id": "w",}'}, "invalid JSON body"),
        ("/api/workers/register", {"body": {"labels": ["x"]}}, "worker_id: required"),
        (
            "/api/workers/register",
            {"body": {"worker_id": "w", "labels": "linux"}},
            'labels: expected a list, got "linux"',
        ),
        ("/api/workers/register", {"body": {"worker_id": "w", "labels": ["a,b"]}}, "labels[0]"),
    ]
    for path, request, fragment in cases:
        if "raw" in request:
            reply = client.post(path, raw=request["raw"])
        else:
            reply = client.post(path, request["body"])
        message = assert_error(reply, 400, "INVALID_ARGUMENT", fragment)
        assert snapshot() == before, f"{path} {request} stored something ({message})"
    for query, fragment in [
        ("limit=ten", 'limit: expected an integer, got "ten"'),
        ("offset=-1", "offset: expected a non-negative integer, got -1"),
        ("status=bogus", "status: unknown job status 'bogus'"),
    ]:
        assert_error(client.get(f"/api/workflows?{query}"), 400, "INVALID_ARGUMENT", fragment)
    assert snapshot() == before


def test_bad_result_reports_are_400s_that_change_nothing(server: Running) -> None:
    client = rest(server)
    workflow_id = client.create_workflow([{"id": "a", "command": "true"}])["id"]
    client.run(workflow_id)
    lease_id = client.must_claim()["lease"]["lease_id"]
    for path, body, fragment in [
        (f"/api/jobs/{lease_id}/complete", {"outputs": {"n": 1}}, 'outputs["n"]'),
        (f"/api/jobs/{lease_id}/complete", {"outputs": ["x"]}, "outputs: expected an object"),
        (f"/api/jobs/{lease_id}/fail", {"retryable": "yes"}, "retryable"),
        (f"/api/jobs/{lease_id}/heartbeat", {"lease_ttl_secs": 0.5}, "lease_ttl_secs"),
        (f"/api/jobs/{lease_id}/logs", {"chunks": [{"stream": "stdin"}]}, "chunks[0].stream"),
        (f"/api/jobs/{lease_id}/logs", {"chunks": {}}, "chunks: expected a list"),
    ]:
        assert_error(client.post(path, body), 400, "INVALID_ARGUMENT", fragment)
    # The lease is untouched: it still completes.
    assert client.jobs(workflow_id)["a"]["status"] == "running"
    assert client.logs(workflow_id, "a") == []
    client.complete(lease_id)
    assert client.status(workflow_id)["run_state"] == "success"


# --- the bridge's own errors ---------------------------------------------------------------


def test_wrong_methods_are_json_405s_and_unknown_paths_json_404s(server: Running) -> None:
    client = rest(server)
    for method, path, allowed in [
        ("DELETE", "/api/jobs/claim", "POST"),
        ("GET", "/api/jobs/claim", "POST"),
        ("PUT", "/api/workflows", "GET, HEAD, POST"),
        ("POST", "/api/workflows/ci/status", "GET, HEAD"),
        ("POST", "/api/workflows/ci", "DELETE"),
        ("POST", "/api/workers", "GET, HEAD"),
        ("DELETE", "/api/workflows/ci/jobs/build/logs/stream", "GET, HEAD"),
    ]:
        reply = client.request(method, path)
        assert_error(reply, 405, "UNIMPLEMENTED", f"{method} is not allowed on {path}")
        assert reply.headers["Allow"] == allowed
    for method, path in [
        ("GET", "/api/nothing/here"),
        ("POST", "/api/workflows/ci/nothing"),
        ("GET", "/api/workflows/"),
        ("GET", "/api//workflows"),
        ("GET", "/"),
    ]:
        reply = client.request(method, path)
        assert_error(reply, 404, "NOT_FOUND", f"no route for {method} {path}")
