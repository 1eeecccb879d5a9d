"""Starting runs over real gRPC: a caller's request id makes a start safe to
retry (also when the retries race), a batch starts all its runs or none, and
a run's inputs are checked whole, stored with it and handed to every job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from conftest import Running, race
from engine_helpers import (
    RPC_TIMEOUT,
    assert_status,
    claim,
    complete,
    create_workflow,
    get_run,
    job,
    must_claim,
    rpc_error,
    uid,
)
from google.protobuf import json_format, struct_pb2

from trellis.v1 import runs_pb2, workflows_pb2

INPUTS_FILE = """
name: Greeter
on: push
inputs:
  who:
    type: string
    required: true
    description: whom to greet
  times:
    type: number
    default: 2
  loud:
    type: boolean
    default: false
  extra:
    type: json
jobs:
  greet:
    run: echo greet
  after:
    needs: greet
    run: echo after
"""


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    """A gRPC-only server: the engine tests need no REST bridge."""
    return start_server(rest_enabled=False)


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def run_request(
    workflow_id: str, inputs: dict[str, Any] | None = None, request_id: str = ""
) -> workflows_pb2.RunWorkflowRequest:
    return workflows_pb2.RunWorkflowRequest(
        workflow_id=workflow_id,
        inputs=struct(inputs) if inputs is not None else None,
        request_id=request_id,
    )


def start(server: Running, *args: Any, **kwargs: Any) -> runs_pb2.Run:
    return server.workflows.RunWorkflow(run_request(*args, **kwargs), timeout=RPC_TIMEOUT)


def batch(server: Running, *requests: workflows_pb2.RunWorkflowRequest) -> list[runs_pb2.Run]:
    answer = server.workflows.BatchRunWorkflows(
        workflows_pb2.BatchRunWorkflowsRequest(requests=list(requests)), timeout=RPC_TIMEOUT
    )
    return list(answer.runs)


def run_ids(server: Running, workflow_id: str) -> list[str]:
    listed = server.runs.ListRuns(
        runs_pb2.ListRunsRequest(workflow_id=workflow_id, page_size=1000), timeout=RPC_TIMEOUT
    )
    return [r.run_id for r in listed.runs]


def greeter(server: Running) -> str:
    wf = uid("greeter")
    server.workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(workflow_id=wf, source=INPUTS_FILE),
        timeout=RPC_TIMEOUT,
    )
    return wf


def inputs_of(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message.inputs)


# ------------------------------------------------------------------ request ids


def test_a_retried_start_answers_the_first_run(server: Running) -> None:
    wf = create_workflow(server, [job("only")])
    first = start(server, wf, request_id="order-17")
    again = start(server, wf, request_id="order-17")
    assert again.run_id == first.run_id
    assert again.request_id == "order-17"
    assert run_ids(server, wf) == [first.run_id]
    # Another id is another start.
    other = start(server, wf, request_id="order-18")
    assert other.run_id != first.run_id
    assert sorted(run_ids(server, wf)) == sorted([first.run_id, other.run_id])


def test_racing_retries_start_one_run(server: Running) -> None:
    wf = create_workflow(server, [job("only")])
    runs = race(8, lambda _: start(server, wf, request_id="racing").run_id)
    assert len(set(runs)) == 1
    assert run_ids(server, wf) == [runs[0]]
    # Exactly one job to run: the run was made once.
    lease = must_claim(server).lease
    assert lease.run_id == runs[0]
    complete(server, lease.lease_id)


def test_a_request_id_given_to_another_start_is_refused(server: Running) -> None:
    wf = create_workflow(server, [job("only")])
    other_wf = create_workflow(server, [job("only")])
    start(server, wf, request_id="reused")
    error = rpc_error(server.workflows.RunWorkflow, run_request(other_wf, request_id="reused"))
    assert_status(error, grpc.StatusCode.ALREADY_EXISTS, "request_id 'reused'")
    assert run_ids(server, other_wf) == []


def test_the_idempotency_key_metadata_is_the_request_id(server: Running) -> None:
    wf = create_workflow(server, [job("only")])
    metadata = (("idempotency-key", "from-header"),)
    first = server.workflows.RunWorkflow(run_request(wf), metadata=metadata, timeout=RPC_TIMEOUT)
    assert first.request_id == "from-header"
    assert start(server, wf, request_id="from-header").run_id == first.run_id
    with pytest.raises(grpc.RpcError) as caught:
        server.workflows.RunWorkflow(
            run_request(wf, request_id="another"), metadata=metadata, timeout=RPC_TIMEOUT
        )
    assert_status(caught.value, grpc.StatusCode.INVALID_ARGUMENT, "idempotency-key")


def test_an_overlong_request_id_is_refused(server: Running) -> None:
    wf = create_workflow(server, [job("only")])
    error = rpc_error(server.workflows.RunWorkflow, run_request(wf, request_id="x" * 201))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "request_id", "200")
    assert run_ids(server, wf) == []


# ------------------------------------------------------------------ batches


def test_a_batch_starts_its_runs_in_order(server: Running) -> None:
    one = create_workflow(server, [job("only")])
    two = create_workflow(server, [job("a"), job("b", needs=["a"])])
    runs = batch(server, run_request(one), run_request(two), run_request(one, request_id="b-3"))
    assert [r.workflow_id for r in runs] == [one, two, one]
    assert len({r.run_id for r in runs}) == 3
    assert all(r.state == runs_pb2.RUN_STATE_RUNNING for r in runs)
    assert sorted(run_ids(server, one)) == sorted([runs[0].run_id, runs[2].run_id])
    # The runs are whole: the two-job run waits for its first job.
    detail = get_run(server, runs[1].run_id)
    assert [j.id for j in detail.jobs] == ["a", "b"]
    # The workflow's latest run is the last of the batch.
    status = server.workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id=one), timeout=RPC_TIMEOUT
    )
    assert status.run_id == runs[2].run_id
    # Retried whole, the batch answers the same run for the item with an id.
    again = batch(server, run_request(one, request_id="b-3"))
    assert again[0].run_id == runs[2].run_id


def test_one_bad_item_rejects_the_whole_batch(server: Running) -> None:
    wf = create_workflow(server, [job("only")])
    error = rpc_error(
        server.workflows.BatchRunWorkflows,
        workflows_pb2.BatchRunWorkflowsRequest(
            requests=[run_request(wf), run_request(wf), run_request("no-such-workflow")]
        ),
    )
    assert_status(error, grpc.StatusCode.NOT_FOUND, "requests[2]", "no-such-workflow")
    error = rpc_error(
        server.workflows.BatchRunWorkflows,
        workflows_pb2.BatchRunWorkflowsRequest(
            requests=[run_request(wf, request_id="dup"), run_request(wf, {"x": 1}, "dup")]
        ),
    )
    assert_status(error, grpc.StatusCode.ALREADY_EXISTS, "requests[1]", "'dup'")
    assert run_ids(server, wf) == []
    assert must_claim_nothing(server)


def test_a_batch_names_its_item_with_a_bad_input(server: Running) -> None:
    wf = greeter(server)
    error = rpc_error(
        server.workflows.BatchRunWorkflows,
        workflows_pb2.BatchRunWorkflowsRequest(
            requests=[run_request(wf, {"who": "a"}), run_request(wf, {"who": 3})]
        ),
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "requests[1]", "inputs.who")
    assert run_ids(server, wf) == []


def test_a_repeated_request_id_in_one_batch_is_one_run(server: Running) -> None:
    wf = create_workflow(server, [job("only")])
    runs = batch(server, run_request(wf, request_id="same"), run_request(wf, request_id="same"))
    assert runs[0].run_id == runs[1].run_id
    assert run_ids(server, wf) == [runs[0].run_id]


def test_batch_sizes_are_bounded(server: Running) -> None:
    wf = create_workflow(server, [job("only")])
    empty = rpc_error(server.workflows.BatchRunWorkflows, workflows_pb2.BatchRunWorkflowsRequest())
    assert_status(empty, grpc.StatusCode.INVALID_ARGUMENT, "requests")
    many = workflows_pb2.BatchRunWorkflowsRequest(requests=[run_request(wf)] * 1001)
    error = rpc_error(server.workflows.BatchRunWorkflows, many)
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "at most 1000")
    assert run_ids(server, wf) == []


def must_claim_nothing(server: Running) -> bool:
    """Whether no job waits to be claimed."""
    return claim(server, uid("idle")) is None


# ------------------------------------------------------------------ inputs


def test_inputs_are_stored_with_defaults_and_reach_every_job(server: Running) -> None:
    wf = greeter(server)
    run = start(server, wf, {"who": "Ada", "extra": {"tags": ["a", "b"], "n": 1}})
    expected = {"who": "Ada", "times": 2, "loud": False, "extra": {"tags": ["a", "b"], "n": 1}}
    assert inputs_of(run) == expected
    assert inputs_of(get_run(server, run.run_id).run) == expected
    first = must_claim(server)
    assert inputs_of(first.job) == expected
    complete(server, first.lease.lease_id)
    second = must_claim(server)
    assert second.job.job_id == "after"
    assert inputs_of(second.job) == expected
    complete(server, second.lease.lease_id)


@pytest.mark.parametrize(
    ("inputs", "fragments"),
    [
        ({}, ("missing required input 'who'",)),
        ({"who": "a", "colour": "red"}, ("unknown input 'colour'",)),
        ({"who": 7}, ("inputs.who", "string")),
        ({"who": "a", "times": "3"}, ("inputs.times", "number")),
        ({"who": "a", "loud": "yes"}, ("inputs.loud", "true or false")),
    ],
)
def test_bad_inputs_are_refused_and_nothing_is_stored(
    server: Running, inputs: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    wf = greeter(server)
    error = rpc_error(server.workflows.RunWorkflow, run_request(wf, inputs))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, *fragments)
    assert run_ids(server, wf) == []
    assert must_claim_nothing(server)


def test_a_workflow_without_inputs_refuses_any(server: Running) -> None:
    wf = create_workflow(server, [job("only")])
    error = rpc_error(server.workflows.RunWorkflow, run_request(wf, {"x": 1}))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "unknown input 'x'")
    run = start(server, wf)
    assert not run.HasField("inputs")
    assert not must_claim(server).job.HasField("inputs")


def test_inputs_are_part_of_the_request(server: Running) -> None:
    wf = greeter(server)
    first = start(server, wf, {"who": "Ada"}, request_id="greet-1")
    assert start(server, wf, {"who": "Ada"}, request_id="greet-1").run_id == first.run_id
    error = rpc_error(
        server.workflows.RunWorkflow, run_request(wf, {"who": "Bob"}, request_id="greet-1")
    )
    assert_status(error, grpc.StatusCode.ALREADY_EXISTS, "greet-1")
    assert run_ids(server, wf) == [first.run_id]


def test_a_start_runs_the_version_another_replica_just_stored(
    start_server: Callable[..., Running],
) -> None:
    here, there = start_server(rest_enabled=False), start_server(rest_enabled=False)
    wf = create_workflow(here, [job("v1")])
    assert start(here, wf).workflow_version == 1  # `here` now knows version 1
    create_workflow(there, [job("v2")], workflow_id=wf)
    run = start(here, wf)
    assert run.workflow_version == 2
    assert [j.id for j in get_run(here, run.run_id).jobs] == ["v2"]
    # The next start knows the new version without looking twice.
    assert start(here, wf).workflow_version == 2


def test_starts_made_together_are_judged_each_on_its_own(server: Running) -> None:
    """Concurrent starts share transactions; a refused one takes none of the
    others with it, and ids shared between them still start one run."""
    wf = greeter(server)

    def one(i: int) -> str:
        inputs: dict[str, Any] = {"who": f"w{i}"} if i % 3 else {"who": i}  # every third mistyped
        request_id = "shared" if i % 3 == 1 else ""
        if request_id:
            inputs = {"who": "shared"}
        try:
            return str(start(server, wf, inputs, request_id=request_id).run_id)
        except grpc.RpcError as exc:
            assert isinstance(exc, grpc.Call)
            return exc.code().name

    answers = race(24, one)
    refused = [a for i, a in enumerate(answers) if i % 3 == 0]
    shared = {a for i, a in enumerate(answers) if i % 3 == 1}
    others = [a for i, a in enumerate(answers) if i % 3 == 2]
    assert refused == ["INVALID_ARGUMENT"] * 8
    assert len(shared) == 1
    assert len(set(others)) == 8
    assert sorted(run_ids(server, wf)) == sorted([*shared, *others])
