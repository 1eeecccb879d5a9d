"""A workflow's lifecycle over REST, on SQLite and PostgreSQL: the paths under
/api/workflows/... for versions, revert, clone, enable/disable, delete, job
and edge edits, and export/import; refusals are JSON errors naming the problem."""

from __future__ import annotations

import threading
from typing import Any

from conftest import Running
from rest_helpers import Rest, assert_error, rest, uid


def _jobs(client: Rest, wf: str) -> dict[str, list[str]]:
    found = client.ok(client.get(f"/api/workflows/{wf}/jobs"))
    return {j["id"]: j["depends_on"] for j in found["jobs"]}


def _workflow(client: Rest, jobs: list[dict[str, Any]]) -> str:
    return str(client.create_workflow(jobs)["id"])


def test_versions_revert_and_the_version_a_run_ran(server: Running) -> None:
    client = rest(server)
    wf = _workflow(client, [{"id": "a", "command": "echo a"}])
    body = {"id": wf, "name": "Test", "jobs": [{"id": "b", "command": "echo b"}]}
    client.ok(client.post("/api/workflows", body), 201)

    listed = client.ok(client.get(f"/api/workflows/{wf}/versions"))
    assert [v["version"] for v in listed["versions"]] == [2, 1]
    assert listed["next_page_token"] == ""
    one = client.ok(client.get(f"/api/workflows/{wf}/versions/1"))
    assert one["workflow_id"] == wf and [j["id"] for j in one["workflow"]["jobs"]] == ["a"]
    assert isinstance(one["created_at_ms"], int) and one["created_at_ms"] > 0

    reverted = client.ok(client.post(f"/api/workflows/{wf}/revert", {"to_version": 1}))
    assert reverted["version"] == 3 and [j["id"] for j in reverted["workflow"]["jobs"]] == ["a"]
    assert client.run(wf)["workflow_version"] == 3

    assert_error(client.get(f"/api/workflows/{wf}/versions/7"), 404, "NOT_FOUND", "version 7", wf)
    assert_error(
        client.post(f"/api/workflows/{wf}/revert", {"to_version": "two"}),
        400,
        "INVALID_ARGUMENT",
        "to_version",
    )


def test_clone_enable_disable_and_delete(server: Running) -> None:
    client = rest(server)
    wf = _workflow(client, [{"id": "a", "command": "echo a"}])
    copy = uid("copy")
    cloned = client.ok(
        client.post(f"/api/workflows/{wf}/clone", {"new_workflow_id": copy, "name": "Copy"}), 201
    )
    assert cloned["id"] == copy and cloned["name"] == "Copy" and cloned["enabled"] is True

    disabled = client.ok(client.post(f"/api/workflows/{wf}/disable"))
    assert disabled["enabled"] is False
    assert_error(
        client.post(f"/api/workflows/{wf}/run"), 400, "FAILED_PRECONDITION", wf, "disabled"
    )
    batch = {"requests": [{"workflow_id": copy}, {"workflow_id": wf}]}
    assert_error(
        client.post("/api/runs/batch", batch), 400, "FAILED_PRECONDITION", "requests[1]", wf
    )
    assert client.ok(client.post(f"/api/workflows/{wf}/enable"))["enabled"] is True
    run = client.run(wf)

    reply = client.request("DELETE", f"/api/workflows/{wf}")
    assert client.ok(reply) == {"workflow_id": wf, "purged_runs": 0}
    assert_error(client.get(f"/api/workflows/{wf}/status"), 404, "NOT_FOUND", wf)
    # Its run stays readable.
    assert client.ok(client.get(f"/api/runs/{run['run_id']}"))["run"]["workflow_id"] == wf

    # With purge_runs, the clone's runs go too (none is running).
    client.run(copy)
    for _ in range(2):
        client.complete(client.must_claim()["lease"]["lease_id"])
    purged = client.ok(client.request("DELETE", f"/api/workflows/{copy}?purge_runs=true"))
    assert purged["purged_runs"] == 1
    assert client.ok(client.get(f"/api/runs?workflow_id={copy}"))["runs"] == []


def test_job_and_edge_edits(server: Running) -> None:
    client = rest(server)
    wf = _workflow(client, [{"id": "a", "command": "echo a"}, {"id": "b", "command": "echo b"}])
    added = client.ok(
        client.post(
            f"/api/workflows/{wf}/jobs",
            {"id": "c", "command": "echo c", "depends_on": ["a"]},
        ),
        201,
    )
    assert added["version"] == 2
    assert client.ok(client.get(f"/api/workflows/{wf}/jobs/c"))["depends_on"] == ["a"]

    patched = client.ok(
        client.request(
            "PATCH",
            f"/api/workflows/{wf}/jobs/c",
            {"job": {"command": "make c", "timeout_secs": 30}, "update_mask": "command"},
        )
    )
    job_c = next(j for j in patched["workflow"]["jobs"] if j["id"] == "c")
    assert job_c["command"] == "make c" and job_c["timeout_secs"] == 0

    # The mask in FieldMask's JSON spelling; a snake_case path is refused.
    body = {
        "job": {"timeout_secs": 30, "depends_on": ["a"]},
        "update_mask": "timeoutSecs,dependsOn",
    }
    patched = client.ok(client.request("PATCH", f"/api/workflows/{wf}/jobs/c", body))
    job_c = next(j for j in patched["workflow"]["jobs"] if j["id"] == "c")
    assert job_c["timeout_secs"] == 30 and job_c["depends_on"] == ["a"]
    assert patched["workflow"]["enabled"] is True
    assert_error(
        client.request(
            "PATCH", f"/api/workflows/{wf}/jobs/c", {"job": {}, "update_mask": "timeout_secs"}
        ),
        400,
        "INVALID_ARGUMENT",
        "update_mask",
    )
    client.ok(client.post(f"/api/workflows/{wf}/jobs/a/rename", {"new_job_id": "first"}))
    assert _jobs(client, wf) == {"first": [], "b": [], "c": ["first"]}
    client.ok(client.post(f"/api/workflows/{wf}/edges", {"from_job": "b", "to_job": "c"}), 201)
    assert _jobs(client, wf)["c"] == ["first", "b"]

    # A cycle is refused with its reason, and nothing is stored.
    version = client.status(wf)["version"]
    assert_error(
        client.post(f"/api/workflows/{wf}/edges", {"from_job": "c", "to_job": "b"}),
        400,
        "INVALID_ARGUMENT",
        "cycle",
    )
    assert_error(
        client.request("DELETE", f"/api/workflows/{wf}/jobs/b"),
        400,
        "FAILED_PRECONDITION",
        "'b'",
        "cascade",
    )
    assert client.status(wf)["version"] == version

    client.ok(client.request("DELETE", f"/api/workflows/{wf}/edges/b/c"))
    client.ok(client.request("DELETE", f"/api/workflows/{wf}/jobs/b"))
    assert _jobs(client, wf) == {"first": [], "c": ["first"]}
    assert_error(client.request("DELETE", f"/api/workflows/{wf}/jobs/zzz"), 404, "NOT_FOUND", "zzz")


def test_two_editors_of_one_version_one_wins_the_other_gets_409(server: Running) -> None:
    client = rest(server)
    wf = _workflow(client, [{"id": "a", "command": "echo a"}])
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def edit(job_id: str) -> None:
        barrier.wait(timeout=10)
        reply = client.post(
            f"/api/workflows/{wf}/jobs?expected_version=1", {"id": job_id, "command": "x"}
        )
        statuses.append(reply.status)
        if reply.status == 409:
            assert_error(reply, 409, "ABORTED", wf, "version")

    threads = [threading.Thread(target=edit, args=(name,)) for name in ("x", "y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [201, 409]
    assert client.status(wf)["version"] == 2 and len(_jobs(client, wf)) == 2


def test_export_import_round_trip_dry_run_and_bad_yaml(server: Running) -> None:
    client = rest(server)
    wf = _workflow(
        client,
        [
            {"id": "a", "command": "echo a", "retry_policy": {"max_retries": 2}},
            {"id": "b", "command": "echo b", "depends_on": ["a"], "env": {"K": "v"}},
        ],
    )
    exported = client.ok(client.get(f"/api/workflows/export?workflow_id={wf}"))
    assert exported["count"] == 1 and exported["text"].startswith(f"---\nid: {wf}\n")

    client.ok(client.request("DELETE", f"/api/workflows/{wf}"))
    dry = client.ok(
        client.post("/api/workflows/import", {"text": exported["text"], "dry_run": True})
    )
    assert dry == {
        "workflows": [{"workflow_id": wf, "action": "created", "version": 2}],
        "dry_run": True,
    }
    assert_error(client.get(f"/api/workflows/{wf}/status"), 404, "NOT_FOUND")

    done = client.ok(client.post("/api/workflows/import", {"text": exported["text"]}))
    assert done["workflows"][0]["workflow_id"] == wf and done["dry_run"] is False
    again = client.ok(client.get(f"/api/workflows/export?workflow_id={wf}"))
    assert again["text"] == exported["text"]

    message = assert_error(
        client.post("/api/workflows/import", {"text": "id: x\nname: [unclosed\n"}),
        400,
        "INVALID_ARGUMENT",
        "invalid YAML",
    )
    assert "line" in message
    assert_error(
        client.post(
            "/api/workflows/import",
            {"text": f"id: {wf}\nname: N\njobs:\n  a: {{run: x, needs: [a]}}\n"},
        ),
        400,
        "INVALID_ARGUMENT",
        wf,
        "job 'a'",
    )
