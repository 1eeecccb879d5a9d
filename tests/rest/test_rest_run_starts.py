"""Starting runs over REST: workflows declaring inputs, `{"inputs": {...}}` on
the workflow-graph run path, the `Idempotency-Key` header as the request id,
and `POST /api/runs/batch`."""

from __future__ import annotations

from typing import Any

from conftest import Running
from rest_helpers import Rest, assert_error, rest, uid

# The workflow of `POST /api/workflows`, with the inputs its runs take.
INPUTS = {
    "target": {"type": "string", "required": True, "description": "where to"},
    "replicas": {"type": "number", "default": 1},
    "dry-run": {"type": "boolean", "default": True},
}


def deploy_workflow(client: Rest) -> str:
    wf = uid("deploy")
    body = {
        "id": wf,
        "name": "Deploy",
        "jobs": [{"id": "deploy", "command": "./deploy.sh"}],
        "inputs": INPUTS,
    }
    created = client.ok(client.post("/api/workflows", body), 201)
    assert created["inputs"] == {
        "target": {"type": "string", "required": True, "description": "where to"},
        "replicas": {"type": "number", "required": False, "default": 1, "description": ""},
        "dry-run": {"type": "boolean", "required": False, "default": True, "description": ""},
    }
    return wf


def run_ids(client: Rest, workflow_id: str) -> list[str]:
    listed = client.ok(client.get(f"/api/runs?workflow_id={workflow_id}&page_size=100"))
    return [run["run_id"] for run in listed["runs"]]


def test_a_run_takes_inputs_and_shows_them(server: Running) -> None:
    client = rest(server)
    wf = deploy_workflow(client)
    reply = client.post(f"/api/workflows/{wf}/run", {"inputs": {"target": "eu-1", "replicas": 3}})
    run: dict[str, Any] = client.ok(reply, 202)
    expected = {"target": "eu-1", "replicas": 3, "dry-run": True}
    assert run["inputs"] == expected
    # Whole numbers come back as JSON integers (a Struct holds doubles), and
    # the keys sorted, as in every map of an answer.
    assert b'"inputs":{"dry-run":true,"replicas":3,"target":"eu-1"}' in reply.raw
    detail = client.ok(client.get(f"/api/runs/{run['run_id']}"))
    assert detail["run"]["inputs"] == expected
    worker = uid("worker")
    got = client.must_claim(worker, wait=10)
    assert got["job"]["inputs"] == expected


def test_a_run_without_inputs_keeps_the_documented_shape(server: Running) -> None:
    client = rest(server)
    run = client.run("ci")
    assert "inputs" not in run and "request_id" not in run


def test_bad_inputs_are_a_400_naming_the_input(server: Running) -> None:
    client = rest(server)
    wf = deploy_workflow(client)
    reply = client.post(f"/api/workflows/{wf}/run", {"inputs": {"target": "x", "replicas": "3"}})
    assert_error(reply, 400, "INVALID_ARGUMENT", "inputs.replicas", "number")
    reply = client.post(f"/api/workflows/{wf}/run", {"inputs": {}})
    assert_error(reply, 400, "INVALID_ARGUMENT", "missing required input 'target'")
    reply = client.post(f"/api/workflows/{wf}/run", {"inputs": ["target"]})
    assert reply.status == 400
    assert run_ids(client, wf) == []


def test_the_idempotency_key_header_makes_a_start_safe_to_retry(server: Running) -> None:
    client = rest(server)
    wf = deploy_workflow(client)
    body = {"inputs": {"target": "eu-1"}}
    key = {"Idempotency-Key": "deploy-eu-1-0001"}
    first = client.ok(client.post(f"/api/workflows/{wf}/run", body, headers=key), 202)
    again = client.ok(client.post(f"/api/workflows/{wf}/run", body, headers=key), 202)
    assert again["run_id"] == first["run_id"]
    assert first["request_id"] == "deploy-eu-1-0001"
    other = {"inputs": {"target": "us-1"}}
    reply = client.post(f"/api/workflows/{wf}/run", other, headers=key)
    assert_error(reply, 409, "ALREADY_EXISTS", "deploy-eu-1-0001")
    assert run_ids(client, wf) == [first["run_id"]]


def test_a_batch_starts_all_its_runs_or_none(server: Running) -> None:
    client = rest(server)
    wf = deploy_workflow(client)
    items = [
        {"workflow_id": wf, "inputs": {"target": f"t{i}"}, "request_id": f"b-{i}"} for i in range(3)
    ]
    answer = client.ok(client.post("/api/runs/batch", {"requests": items}), 202)
    runs = answer["runs"]
    assert [run["inputs"]["target"] for run in runs] == ["t0", "t1", "t2"]
    assert [run["request_id"] for run in runs] == ["b-0", "b-1", "b-2"]
    assert sorted(run_ids(client, wf)) == sorted(run["run_id"] for run in runs)

    bad = [{"workflow_id": wf, "inputs": {"target": "ok"}}, {"workflow_id": wf, "inputs": {}}]
    reply = client.post("/api/runs/batch", {"requests": bad})
    assert_error(reply, 400, "INVALID_ARGUMENT", "requests[1]", "target")
    assert len(run_ids(client, wf)) == 3


def test_a_batch_refuses_one_idempotency_key_for_many_starts(server: Running) -> None:
    client = rest(server)
    wf = deploy_workflow(client)
    body = {"requests": [{"workflow_id": wf, "inputs": {"target": "a"}}]}
    reply = client.post("/api/runs/batch", body, headers={"Idempotency-Key": "k-1"})
    assert_error(reply, 400, "INVALID_ARGUMENT", "idempotency-key", "request_id")
    assert run_ids(client, wf) == []
