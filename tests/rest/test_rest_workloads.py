"""Whole runs driven only over REST, as a REST worker does it: the sample `ci`
workflow through a claim loop, and four concurrent claimers over 200 jobs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conftest import Running
from rest_helpers import (
    NO_BACKOFF,
    Rest,
    assert_assignment_shape,
    assert_chunk_shape,
    assert_workflow_shape,
    chunk,
    is_int,
    is_ms,
    rest,
    uid,
)

# workflows/ci.yml: checkout fans out to lint and test; build waits for both.
CI_PARENTS = {"checkout": [], "lint": ["checkout"], "test": ["checkout"], "build": ["lint", "test"]}
CI_RETRY_POLICIES = {
    "checkout": NO_BACKOFF,
    "lint": NO_BACKOFF,
    "test": {"max_retries": 2, "backoff": {"Exponential": {"base_secs": 1, "max_secs": 10}}},
    "build": {"max_retries": 1, "backoff": {"Fixed": {"delay_secs": 2}}},
}


def test_ci_runs_to_success_over_the_rest_claim_loop(server: Running) -> None:
    client = rest(server)
    worker_id = uid("rest-worker")
    client.ok(client.post("/api/workers/register", {"worker_id": worker_id, "labels": ["linux"]}))
    run = client.run("ci")
    run_id = run["run_id"]

    outputs: dict[str, dict[str, str]] = {}
    order: list[str] = []
    while len(outputs) < len(CI_PARENTS):
        got = client.must_claim(worker_id, ["linux"], wait=10)
        assert_assignment_shape(got)
        job, lease = got["job"], got["lease"]
        job_id = job["job_id"]
        assert job_id not in outputs, f"{job_id} handed out twice"
        assert (job["workflow_id"], job["run_id"], job["attempt"]) == ("ci", run_id, 0)
        assert (lease["worker_id"], lease["ttl_secs"]) == (worker_id, 30)
        assert job["retry_policy"] == CI_RETRY_POLICIES[job_id]
        assert job["env"] == {"APP": "app"}
        # Exactly the direct parents' outputs, once they have all succeeded.
        assert job["upstream_outputs"] == {p: outputs[p] for p in CI_PARENTS[job_id]}
        # Only one job is out at a time here: the others are waiting or queued.
        running = [j["id"] for j in client.status("ci")["jobs"] if j["status"] == "running"]
        assert running == [job_id]

        lease_id = lease["lease_id"]
        beat = client.ok(client.post(f"/api/jobs/{lease_id}/heartbeat"))
        assert beat["cancelled"] is False
        assert client.ok(client.get(f"/api/jobs/ci/{job_id}/cancelled")) is False
        pushed = [chunk(0, f"running {job_id}\n"), chunk(0, f"{job_id} done\n", "stderr")]
        assert client.push_logs(lease_id, pushed) == 2
        produced = {"job": job_id, "run": run_id}
        if job_id == "checkout":
            produced["revision"] = "1a2b3c4"
        client.complete(lease_id, produced)
        outputs[job_id] = produced
        order.append(job_id)

    assert order[0] == "checkout" and order[-1] == "build"
    assert sorted(order[1:3]) == ["lint", "test"]
    assert client.claim(worker_id, ["linux"]) is None

    status = client.status("ci")
    assert_workflow_shape(status)
    assert (status["run_id"], status["run_state"]) == (run_id, "success")
    assert [job["id"] for job in status["jobs"]] == list(CI_PARENTS)
    for job in status["jobs"]:
        assert job["status"] == "success"
        assert job["outputs"] == outputs[job["id"]]
        assert job["depends_on"] == CI_PARENTS[job["id"]]
        assert (job["attempt"], job["output"], job["delayed_until_ms"]) == (0, None, 0)
        assert is_int(job["duration_secs"]) and job["duration_secs"] >= 0
        assert is_ms(job["started_at"])
        history = client.logs("ci", job["id"])
        for found in history:
            assert_chunk_shape(found)
            assert (found["run_id"], found["job_id"]) == (run_id, job["id"])
        assert [(c["stream"], c["data"]) for c in history] == [
            ("stdout", f"running {job['id']}\n"),
            ("stderr", f"{job['id']} done\n"),
        ]
    worker = client.workers()[worker_id]
    assert (worker["status"], worker["current_job"], worker["labels"]) == ("idle", None, ["linux"])
    listed = {w["id"]: w for w in client.ok(client.get("/api/workflows?status=success"))}
    assert listed["ci"] == status


def _claim_loop(client: Rest, worker_id: str, start: threading.Barrier) -> list[str]:
    """Claims and completes until the queue is empty; returns the jobs it ran."""
    ran: list[str] = []
    start.wait(30)
    while True:
        got = client.claim(worker_id)
        if got is None:
            return ran
        job_id = got["job"]["job_id"]
        assert got["lease"]["worker_id"] == worker_id
        client.complete(got["lease"]["lease_id"], {"by": worker_id})
        ran.append(job_id)


def test_concurrent_rest_claimers_never_share_a_job(server: Running) -> None:
    client = rest(server)
    job_ids = [f"job-{n:03d}" for n in range(200)]
    workflow_id = client.create_workflow(
        [{"id": job_id, "command": "true"} for job_id in job_ids], name="Wide"
    )["id"]
    run = client.run(workflow_id)

    workers = [uid(f"claimer{n}") for n in range(4)]
    start = threading.Barrier(len(workers))
    with ThreadPoolExecutor(len(workers)) as pool:
        futures = {w: pool.submit(_claim_loop, rest(server), w, start) for w in workers}
        ran: dict[str, list[str]] = {w: f.result(timeout=120) for w, f in futures.items()}

    handed_out = [job_id for jobs in ran.values() for job_id in jobs]
    assert len(handed_out) == len(set(handed_out)) == len(job_ids), "a job was handed out twice"
    assert set(handed_out) == set(job_ids)

    status = client.status(workflow_id)
    assert (status["run_id"], status["run_state"]) == (run["run_id"], "success")
    ran_by = {job_id: worker for worker, jobs in ran.items() for job_id in jobs}
    for job in status["jobs"]:
        assert job["status"] == "success"
        # Each job's outputs are those of the one worker that claimed it.
        assert job["outputs"] == {"by": ran_by[job["id"]]}
    idle: dict[str, Any] = client.workers()
    assert all(idle[w]["status"] == "idle" for w in workers)
