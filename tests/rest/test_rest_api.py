"""Every path of the workflow-graph REST page (seed 004) against the real server:
status codes and the exact JSON shapes of the page and of reference/workflow-graph.md.

Real server, real HTTP (``http.client``), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Running, wait_until
from rest_helpers import (
    HEARTBEAT_KEYS,
    NO_BACKOFF,
    assert_assignment_shape,
    assert_chunk_shape,
    assert_error,
    assert_run_shape,
    assert_worker_shape,
    assert_workflow_shape,
    chunk,
    is_ms,
    rest,
    uid,
)

# --- workflows -------------------------------------------------------------------------


def test_list_workflows_renders_the_loaded_files(server: Running) -> None:
    client = rest(server)
    reply = client.get("/api/workflows")
    listed = client.ok(reply)
    assert isinstance(listed, list)
    by_id = {workflow["id"]: workflow for workflow in listed}
    assert set(by_id) == {"ci", "hello"}
    for workflow in listed:
        assert_workflow_shape(workflow)

    ci = by_id["ci"]
    assert (ci["name"], ci["trigger"], ci["version"]) == ("CI", "push, pull_request", 1)
    assert (ci["run_id"], ci["run_state"]) == ("", None)
    assert ci["env"] == {"APP": "app"}
    jobs = {job["id"]: job for job in ci["jobs"]}
    assert list(jobs) == ["checkout", "lint", "test", "build"]
    assert {job_id: job["depends_on"] for job_id, job in jobs.items()} == {
        "checkout": [],
        "lint": ["checkout"],
        "test": ["checkout"],
        "build": ["lint", "test"],
    }
    # A workflow that never ran shows its jobs waiting, with nothing run yet.
    for job in ci["jobs"]:
        assert job["status"] == "queued"
        assert (job["duration_secs"], job["started_at"], job["output"]) == (None, None, None)
        assert (job["attempt"], job["outputs"], job["delayed_until_ms"]) == (0, {}, 0)
    assert jobs["checkout"]["name"] == "Check out sources"
    assert jobs["checkout"]["command"] == 'echo "checking out $APP"\necho "revision 1a2b3c4"\n'
    assert jobs["test"]["max_retries"] == 2
    assert jobs["test"]["timeout_secs"] == 300
    assert jobs["test"]["retry_policy"] == {
        "max_retries": 2,
        "backoff": {"Exponential": {"base_secs": 1, "max_secs": 10}},
    }
    assert jobs["build"]["retry_policy"] == {
        "max_retries": 1,
        "backoff": {"Fixed": {"delay_secs": 2}},
    }
    assert jobs["checkout"]["retry_policy"] == NO_BACKOFF
    assert jobs["checkout"]["required_labels"] == []

    # The status path answers the same workflow.
    assert client.status("ci") == ci


def _write_bulk_workflows(directory: Path, count: int) -> list[str]:
    ids = [f"bulk-{n:04d}" for n in range(count)]
    for workflow_id in ids:
        (directory / f"{workflow_id}.json").write_text(
            json.dumps({"name": "Bulk", "on": "push", "jobs": {"a": {"run": "true"}}})
        )
    return ids


def test_list_workflows_paginates_with_a_default_of_100_and_a_cap_of_1000(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    # 999 files beside ci.yml and hello.yml, loaded at start-up: 1001 workflows,
    # one more than the cap.
    bulk = _write_bulk_workflows(tmp_path / "workflows", 999)
    client = rest(start_server())
    everything = sorted([*bulk, "ci", "hello"])
    assert len(everything) == 1001

    def ids(query: str) -> list[str]:
        listed = client.ok(client.get(f"/api/workflows{query}"))
        return [workflow["id"] for workflow in listed]

    assert ids("") == everything[:100]
    assert ids("?limit=10") == everything[:10]
    assert ids("?limit=10&offset=10") == everything[10:20]
    assert ids("?offset=995") == everything[995:]
    assert ids("?limit=1000") == everything[:1000]
    assert ids("?limit=5000") == everything[:1000]
    assert ids("?limit=5000&offset=1000") == everything[1000:]
    assert ids("?offset=5000") == []


def test_list_workflows_with_limit_zero_answers_none(server: Running) -> None:
    client = rest(server)
    assert client.ok(client.get("/api/workflows?limit=0")) == []


def test_list_workflows_filters_by_job_status(server: Running) -> None:
    client = rest(server)
    running = client.create_workflow(
        [{"id": "a", "command": "true"}, {"id": "b", "command": "true"}],
        workflow_id=uid("a-running"),
    )["id"]
    done = client.create_workflow([{"id": "a", "command": "true"}], workflow_id=uid("b-done"))["id"]
    never = client.create_workflow([{"id": "a", "command": "true"}], workflow_id=uid("c-never"))[
        "id"
    ]
    client.run(done)
    client.complete(client.must_claim("w-done")["lease"]["lease_id"])
    client.run(running)
    got = client.must_claim("w-running")
    assert (got["job"]["workflow_id"], got["job"]["job_id"]) == (running, "a")

    def ids(status: str, extra: str = "") -> list[str]:
        listed = client.ok(client.get(f"/api/workflows?status={status}{extra}"))
        for workflow in listed:
            assert_workflow_shape(workflow)
            assert any(job["status"] == status for job in workflow["jobs"])
        return [workflow["id"] for workflow in listed]

    assert ids("running") == [running]
    assert ids("success") == [done]
    # "queued" also matches workflows that never ran (their jobs all read "queued").
    queued = sorted([running, never, "ci", "hello"])
    assert ids("queued") == queued
    assert ids("queued", "&limit=2&offset=1") == queued[1:3]
    assert ids("failure") == []
    assert ids("cancelled") == []


def test_create_workflow_answers_201_with_the_stored_workflow(server: Running) -> None:
    client = rest(server)
    before = client.ok(client.get("/api/workflows"))
    reply = client.post(
        "/api/workflows",
        {
            "name": "Demo",
            "trigger": "push",
            "jobs": [
                {
                    "id": "build",
                    "name": "Build it",
                    "command": "make",
                    "required_labels": ["linux"],
                    "retry_policy": {"max_retries": 2, "backoff": {"Fixed": {"delay_secs": 3}}},
                },
                {
                    "id": "test",
                    "command": "make test",
                    "depends_on": ["build"],
                    "max_retries": 1,
                },
                {
                    "id": "ship",
                    "command": "make ship",
                    "depends_on": ["build", "test"],
                    "retry_policy": {
                        "max_retries": 3,
                        "backoff": {"Exponential": {"base_secs": 2, "max_secs": 30}},
                    },
                    # Output-only fields, as a client echoes what it read, are ignored.
                    "status": "running",
                    "attempt": 7,
                },
            ],
        },
    )
    created = client.ok(reply, 201)
    assert_workflow_shape(created)
    # The id is generated: a fresh hex token.
    workflow_id = created["id"]
    assert len(workflow_id) == 32 and int(workflow_id, 16) >= 0
    assert workflow_id not in {workflow["id"] for workflow in before}
    assert (created["name"], created["trigger"], created["version"]) == ("Demo", "push", 1)
    assert (created["run_id"], created["run_state"]) == ("", None)
    jobs = {job["id"]: job for job in created["jobs"]}
    assert list(jobs) == ["build", "test", "ship"]
    assert {job_id: job["name"] for job_id, job in jobs.items()} == {
        "build": "Build it",
        "test": "test",
        "ship": "ship",
    }
    assert [job["command"] for job in jobs.values()] == ["make", "make test", "make ship"]
    assert [job["depends_on"] for job in jobs.values()] == [[], ["build"], ["build", "test"]]
    assert [job["required_labels"] for job in jobs.values()] == [["linux"], [], []]
    assert [job["max_retries"] for job in jobs.values()] == [2, 1, 3]
    assert [job["retry_policy"] for job in jobs.values()] == [
        {"max_retries": 2, "backoff": {"Fixed": {"delay_secs": 3}}},
        {"max_retries": 1, "backoff": "None"},
        {"max_retries": 3, "backoff": {"Exponential": {"base_secs": 2, "max_secs": 30}}},
    ]
    assert [(job["status"], job["attempt"]) for job in jobs.values()] == [("queued", 0)] * 3

    assert client.status(workflow_id) == created
    after = client.ok(client.get("/api/workflows"))
    assert [workflow["id"] for workflow in after] == sorted(
        [workflow["id"] for workflow in before] + [workflow_id]
    )


def test_create_workflow_with_an_id_stores_new_versions(server: Running) -> None:
    client = rest(server)
    workflow_id = uid()
    first = client.create_workflow([{"id": "a", "command": "echo 1"}], workflow_id=workflow_id)
    assert first["version"] == 1
    same = client.create_workflow([{"id": "a", "command": "echo 1"}], workflow_id=workflow_id)
    assert same["version"] == 1
    changed = client.create_workflow([{"id": "a", "command": "echo 2"}], workflow_id=workflow_id)
    assert changed["version"] == 2
    assert changed["jobs"][0]["command"] == "echo 2"
    run = client.run(workflow_id)
    assert run["workflow_version"] == 2
    assert client.must_claim()["job"]["command"] == "echo 2"


def test_run_and_cancel_answer_202_with_the_run(server: Running) -> None:
    client = rest(server)
    workflow_id = client.create_workflow(
        [
            {"id": "a", "command": "true"},
            {"id": "b", "command": "true", "depends_on": ["a"]},
            {"id": "c", "command": "true"},
        ]
    )["id"]
    reply = client.post(f"/api/workflows/{workflow_id}/run")
    run = client.ok(reply, 202)
    assert_run_shape(run, workflow_id)
    assert (run["state"], run["workflow_version"], run["finished_at_ms"]) == ("running", 1, 0)

    status = client.status(workflow_id)
    assert_workflow_shape(status)
    assert (status["run_id"], status["run_state"]) == (run["run_id"], "running")
    assert [job["status"] for job in status["jobs"]] == ["queued", "queued", "queued"]

    running = client.must_claim("w1")
    assert running["job"]["job_id"] == "a"
    jobs = client.jobs(workflow_id)
    assert jobs["a"]["status"] == "running"
    assert is_ms(jobs["a"]["started_at"])
    assert jobs["a"]["started_at"] == running["lease"]["granted_at_ms"]

    cancelled = client.ok(client.post(f"/api/workflows/{workflow_id}/cancel"), 202)
    assert_run_shape(cancelled, workflow_id)
    assert (cancelled["run_id"], cancelled["state"]) == (run["run_id"], "cancelled")
    assert cancelled["finished_at_ms"] >= cancelled["created_at_ms"]
    status = client.status(workflow_id)
    assert status["run_state"] == "cancelled"
    assert {job["id"]: job["status"] for job in status["jobs"]} == {
        "a": "cancelled",
        "b": "cancelled",
        "c": "cancelled",
    }
    for job_id in ("a", "b", "c"):
        reply = client.get(f"/api/jobs/{workflow_id}/{job_id}/cancelled")
        assert (client.ok(reply), reply.raw) == (True, b"true")
    assert client.claim("w1") is None

    # A new run is not cancelled by the old run's cancellation.
    again = client.run(workflow_id)
    assert again["run_id"] != run["run_id"]
    assert client.ok(client.get(f"/api/jobs/{workflow_id}/a/cancelled")) is False
    assert client.must_claim("w1")["job"]["run_id"] == again["run_id"]


# --- workers ---------------------------------------------------------------------------


def test_register_and_list_workers(server: Running) -> None:
    client = rest(server)
    worker_id = uid("worker")
    reply = client.post("/api/workers/register", {"worker_id": worker_id, "labels": ["z", "a"]})
    registered = client.ok(reply)
    assert_worker_shape(registered)
    assert registered["worker_id"] == worker_id
    assert registered["labels"] == ["a", "z"]
    assert (registered["status"], registered["current_job"]) == ("idle", None)
    assert registered["registered_at_ms"] == registered["last_heartbeat_ms"]

    reply = client.get("/api/workers")
    listed = client.ok(reply)
    assert isinstance(listed, list)
    for worker in listed:
        assert_worker_shape(worker)
    assert {worker["worker_id"]: worker for worker in listed}[worker_id] == registered

    # Registering again updates the labels, not the registration time.
    again = client.ok(client.post("/api/workers/register", {"worker_id": worker_id}))
    assert again["labels"] == []
    assert again["registered_at_ms"] == registered["registered_at_ms"]

    workflow_id = client.create_workflow([{"id": "only", "command": "true"}])["id"]
    client.run(workflow_id)
    got = client.must_claim(worker_id)
    busy = client.workers()[worker_id]
    assert_worker_shape(busy)
    assert (busy["status"], busy["current_job"]) == ("busy", f"{workflow_id}/only")
    client.complete(got["lease"]["lease_id"])
    idle = client.workers()[worker_id]
    assert (idle["status"], idle["current_job"]) == ("idle", None)


# --- claims, leases, results -----------------------------------------------------------


def test_claim_without_a_job_answers_a_bare_null(server: Running) -> None:
    client = rest(server)
    worker_id = uid("idle")
    reply = client.post("/api/jobs/claim", {"worker_id": worker_id, "labels": ["gpu"]})
    assert (reply.status, reply.content_type, reply.raw) == (200, "application/json", b"null")
    # Registration is optional: claiming registers the worker with its labels.
    worker = client.workers()[worker_id]
    assert_worker_shape(worker)
    assert (worker["labels"], worker["status"], worker["current_job"]) == (["gpu"], "idle", None)


def test_claim_answers_the_documented_shape_and_outputs_flow_downstream(
    server: Running,
) -> None:
    client = rest(server)
    workflow_id = client.create_workflow(
        [
            {"id": "test", "command": "make test", "required_labels": ["docker"]},
            {
                "id": "build",
                "command": "cargo build --release",
                "depends_on": ["test"],
                "required_labels": ["docker"],
                "retry_policy": {"max_retries": 2, "backoff": "None"},
            },
        ]
    )["id"]
    run = client.run(workflow_id)

    # The jobs need the "docker" label: a worker without it gets nothing.
    assert client.claim("w1", ["linux"]) is None
    reply = client.post(
        "/api/jobs/claim", {"worker_id": "w1", "labels": ["docker"], "lease_ttl_secs": 45}
    )
    first = client.ok(reply)
    assert_assignment_shape(first)
    assert first["job"] == {
        "job_id": "test",
        "workflow_id": workflow_id,
        "command": "make test",
        "required_labels": ["docker"],
        "retry_policy": NO_BACKOFF,
        "attempt": 0,
        "upstream_outputs": {},
        "enqueued_at_ms": run["created_at_ms"],
        "delayed_until_ms": 0,
        "run_id": run["run_id"],
        "name": "test",
        "env": {},
        "timeout_secs": 0,
    }
    lease = first["lease"]
    assert (lease["job_id"], lease["workflow_id"], lease["worker_id"]) == (
        "test",
        workflow_id,
        "w1",
    )
    assert lease["ttl_secs"] == 45
    assert lease["expires_at_ms"] == lease["granted_at_ms"] + 45_000
    assert lease["granted_at_ms"] >= first["job"]["enqueued_at_ms"]

    client.complete(lease["lease_id"], {"coverage": "94%"})
    second = client.must_claim("w1", ["docker"])
    assert_assignment_shape(second)
    job = second["job"]
    # The downstream job keeps its labels and retry policy (the original loses both).
    assert job["job_id"] == "build"
    assert job["required_labels"] == ["docker"]
    assert job["retry_policy"] == {"max_retries": 2, "backoff": "None"}
    assert job["upstream_outputs"] == {"test": {"coverage": "94%"}}
    # The default lease time to live is 30 s.
    assert second["lease"]["ttl_secs"] == 30


def test_claim_waits_for_a_job_with_wait_secs(server: Running) -> None:
    client = rest(server)
    workflow_id = client.create_workflow([{"id": "late", "command": "true"}])["id"]
    worker_id = uid("poller")
    answers: list[dict[str, Any] | None] = []
    poller = threading.Thread(
        target=lambda: answers.append(client.claim(worker_id, wait=20)), daemon=True
    )
    poller.start()
    # The claim registers its worker before it starts waiting.
    wait_until(lambda: worker_id in client.workers())
    client.run(workflow_id)
    poller.join(40)
    assert not poller.is_alive()
    (got,) = answers
    assert got is not None
    assert (got["job"]["workflow_id"], got["job"]["job_id"]) == (workflow_id, "late")


def test_heartbeat_without_a_body_renews_the_lease(server: Running) -> None:
    client = rest(server)
    workflow_id = client.create_workflow([{"id": "a", "command": "true"}])["id"]
    client.run(workflow_id)
    lease = client.must_claim("w1", ttl=5)["lease"]
    lease_id = lease["lease_id"]

    reply = client.post(f"/api/jobs/{lease_id}/heartbeat")
    beat = client.ok(reply)
    assert set(beat) == HEARTBEAT_KEYS
    assert (beat["lease_id"], beat["cancelled"], beat["lease_lost"]) == (lease_id, False, False)
    assert is_ms(beat["expires_at_ms"])
    assert beat["expires_at_ms"] >= lease["expires_at_ms"]

    # A requested time to live is honoured (the original ignores it) and kept.
    longer = client.ok(client.post(f"/api/jobs/{lease_id}/heartbeat", {"lease_ttl_secs": 600}))
    assert longer["expires_at_ms"] >= lease["granted_at_ms"] + 600_000
    kept = client.ok(client.post(f"/api/jobs/{lease_id}/heartbeat"))
    assert kept["expires_at_ms"] >= longer["expires_at_ms"]

    client.complete(lease_id)
    assert client.jobs(workflow_id)["a"]["status"] == "success"

    # The answer tells a worker that its job was cancelled (no 409: it learns why).
    cancelled_wf = client.create_workflow([{"id": "a", "command": "sleep 60"}])["id"]
    client.run(cancelled_wf)
    lease_id = client.must_claim("w1")["lease"]["lease_id"]
    client.ok(client.post(f"/api/workflows/{cancelled_wf}/cancel"), 202)
    beat = client.ok(client.post(f"/api/jobs/{lease_id}/heartbeat"))
    assert (beat["lease_id"], beat["cancelled"], beat["lease_lost"]) == (lease_id, True, False)
    assert client.jobs(cancelled_wf)["a"]["status"] == "cancelled"


def test_fail_without_retry_fails_the_job_and_skips_its_descendants(server: Running) -> None:
    client = rest(server)
    workflow_id = client.create_workflow(
        [
            {"id": "a", "command": "false", "max_retries": 3},
            {"id": "b", "command": "true", "depends_on": ["a"]},
            {"id": "c", "command": "true", "depends_on": ["b"]},
            {"id": "d", "command": "true"},
        ]
    )["id"]
    client.run(workflow_id)
    first = client.must_claim()
    assert first["job"]["job_id"] == "a"
    # Not retryable: the retry budget is not used.
    answer = client.fail(first["lease"]["lease_id"], "exit code 1: compilation failed")
    assert answer == {"will_retry": False, "delayed_until_ms": 0}
    jobs = client.jobs(workflow_id)
    assert {job_id: job["status"] for job_id, job in jobs.items()} == {
        "a": "failure",
        "b": "skipped",
        "c": "skipped",
        "d": "queued",
    }
    assert jobs["a"]["output"] == "exit code 1: compilation failed"
    assert jobs["a"]["attempt"] == 0
    client.complete(client.must_claim()["lease"]["lease_id"])
    status = client.status(workflow_id)
    assert status["run_state"] == "failure"
    assert status["jobs"][3]["status"] == "success"


def test_retryable_failure_requeues_after_the_exponential_backoff(server: Running) -> None:
    client = rest(server)
    workflow_id = client.create_workflow(
        [
            {
                "id": "flaky",
                "command": "true",
                "retry_policy": {
                    "max_retries": 2,
                    "backoff": {"Exponential": {"base_secs": 1, "max_secs": 10}},
                },
            }
        ]
    )["id"]
    client.run(workflow_id)
    attempt = client.must_claim()
    for n, delay_ms in enumerate((1000, 2000)):  # min(base * 2^attempt, max)
        assert attempt["job"]["attempt"] == n
        answer = client.fail(attempt["lease"]["lease_id"], f"transient {n}", retryable=True)
        assert set(answer) == {"will_retry", "delayed_until_ms"}
        assert answer["will_retry"] is True and is_ms(answer["delayed_until_ms"])
        job = client.jobs(workflow_id)["flaky"]
        assert (job["status"], job["attempt"], job["output"]) == ("queued", n + 1, f"transient {n}")
        assert job["delayed_until_ms"] == answer["delayed_until_ms"]
        # Not claimable before `delayed_until_ms`; the claim shows the delay it waited.
        attempt = client.must_claim(wait=20)
        assert attempt["job"]["attempt"] == n + 1
        assert attempt["job"]["delayed_until_ms"] == answer["delayed_until_ms"]
        assert attempt["job"]["delayed_until_ms"] - attempt["job"]["enqueued_at_ms"] == delay_ms
        assert attempt["lease"]["granted_at_ms"] >= answer["delayed_until_ms"]
    # The budget is spent: the third failure is final even though retryable.
    answer = client.fail(attempt["lease"]["lease_id"], "transient 2", retryable=True)
    assert answer == {"will_retry": False, "delayed_until_ms": 0}
    assert client.status(workflow_id)["run_state"] == "failure"


def test_retryable_failure_without_backoff_requeues_at_once(server: Running) -> None:
    client = rest(server)
    workflow_id = client.create_workflow([{"id": "a", "command": "true", "max_retries": 1}])["id"]
    client.run(workflow_id)
    first = client.must_claim()
    answer = client.fail(first["lease"]["lease_id"], "oom", retryable=True)
    assert answer == {"will_retry": True, "delayed_until_ms": 0}
    second = client.claim()
    assert second is not None
    assert (second["job"]["attempt"], second["job"]["delayed_until_ms"]) == (1, 0)
    assert second["lease"]["lease_id"] != first["lease"]["lease_id"]


# --- logs ------------------------------------------------------------------------------


def test_logs_push_and_history(server: Running) -> None:
    client = rest(server)
    workflow_id = client.create_workflow([{"id": "a", "command": "true"}])["id"]
    run = client.run(workflow_id)
    lease_id = client.must_claim()["lease"]["lease_id"]

    pushed = [
        chunk(0, "compiling\n", workflow_id=workflow_id, job_id="a", timestamp_ms=1710000000000),
        chunk(0, "warning: unused\n", "stderr", timestamp_ms=1710000000001),
        chunk(1, "h\u00e9llo \u2713 \U0001f600\n"),
    ]
    assert client.push_logs(lease_id, pushed) == 3
    # A retried push of the same (stream, sequence) is not stored twice.
    assert client.push_logs(lease_id, pushed[:2]) == 0
    assert client.push_logs(lease_id, []) == 0

    history = client.logs(workflow_id, "a")
    assert isinstance(history, list) and len(history) == 3
    for found in history:
        assert_chunk_shape(found)
        assert (found["workflow_id"], found["job_id"]) == (workflow_id, "a")
        assert (found["run_id"], found["attempt"]) == (run["run_id"], 0)
    assert [found["id"] for found in history] == sorted({found["id"] for found in history})
    assert [(c["stream"], c["sequence"], c["data"]) for c in history] == [
        ("stdout", 0, "compiling\n"),
        ("stderr", 0, "warning: unused\n"),
        ("stdout", 1, "h\u00e9llo \u2713 \U0001f600\n"),
    ]
    assert [c["timestamp_ms"] for c in history[:2]] == [1710000000000, 1710000000001]
    # A chunk without a timestamp gets the server's time.
    assert history[2]["timestamp_ms"] >= run["created_at_ms"]

    client.complete(lease_id)
    assert client.logs(workflow_id, "a") == history
    # A new run has logs of its own: runs are never mixed.
    client.run(workflow_id)
    assert client.logs(workflow_id, "a") == []


def test_log_data_with_a_nul_character_is_refused_cleanly(server: Running) -> None:
    client = rest(server)
    workflow_id = client.create_workflow([{"id": "a", "command": "true"}])["id"]
    client.run(workflow_id)
    lease_id = client.must_claim()["lease"]["lease_id"]
    reply = client.post(f"/api/jobs/{lease_id}/logs", {"chunks": [chunk(0, "a\u0000b\n")]})
    # PostgreSQL text cannot hold NUL: refused as bad input on every backend.
    assert_error(reply, 400, "INVALID_ARGUMENT", "chunks[0].data")
    assert client.logs(workflow_id, "a") == []


# --- cancellation flag ---------------------------------------------------------


def test_cancelled_answers_a_bare_boolean(server: Running) -> None:
    client = rest(server)
    # A workflow that never ran: its jobs are not cancelled, and have no logs.
    reply = client.get("/api/jobs/hello/hello/cancelled")
    assert (reply.status, reply.content_type, reply.raw) == (200, "application/json", b"false")
    reply = client.get("/api/workflows/hello/jobs/hello/logs")
    assert (reply.status, reply.content_type, reply.raw) == (200, "application/json", b"[]")
    client.run("hello")
    client.ok(client.post("/api/workflows/hello/cancel"), 202)
    reply = client.get("/api/jobs/hello/hello/cancelled")
    assert (reply.status, reply.content_type, reply.raw) == (200, "application/json", b"true")
