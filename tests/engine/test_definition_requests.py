"""A ``CreateWorkflowRequest`` carries its definition as a message or as file text (a oneof),
named by ``workflow_id``, the message's ``id`` or a generated id."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from conftest import Running
from engine_helpers import RPC_TIMEOUT, assert_status, rpc_error, uid

from trellis.server.engine.definitions import DefinitionError, WorkflowDef, parse_request
from trellis.v1 import jobs_pb2, workflows_pb2
from trellis.v1.workflows_pb2 import CreateWorkflowRequest as Request

SOURCE = "name: From text\non: push\njobs:\n  a: {run: echo a}\n"


def message(workflow_id: str = "") -> workflows_pb2.Workflow:
    return workflows_pb2.Workflow(
        id=workflow_id, name="From message", jobs=[jobs_pb2.Job(id="a", command="echo a")]
    )


def parse(request: Request) -> WorkflowDef:
    return parse_request(request, new_id=lambda: "generated")


def test_the_last_form_set_is_the_one_parsed() -> None:
    request = Request(workflow=message("wf"))
    assert parse(request).name == "From message"
    request.source = SOURCE
    assert request.WhichOneof("definition") == "source"
    assert parse(request).name == "From text"
    request.workflow.CopyFrom(message("wf"))
    assert parse(request).name == "From message"


@pytest.mark.parametrize(
    ("request_", "workflow_id"),
    [
        (Request(workflow=message("wf")), "wf"),
        (Request(workflow=message("wf"), workflow_id="wf"), "wf"),
        (Request(workflow=message(), workflow_id="named"), "named"),
        (Request(workflow=message()), "generated"),
        (Request(source=SOURCE, workflow_id="named"), "named"),
        (Request(source=SOURCE), "generated"),
    ],
)
def test_the_workflow_id(request_: Request, workflow_id: str) -> None:
    assert parse(request_).id == workflow_id


def test_an_id_is_generated_only_when_none_is_given() -> None:
    def no_id() -> str:
        raise AssertionError("an id was generated")

    assert parse_request(Request(source=SOURCE, workflow_id="named"), new_id=no_id).id == "named"


@pytest.mark.parametrize(
    ("request_", "rendered"),
    [
        (Request(), "workflow: required (or source)"),
        (Request(source=""), "workflow: required (or source)"),
        (
            Request(workflow=message("wf"), workflow_id="other"),
            "api: `id` 'wf' does not match the workflow id 'other'",
        ),
        (Request(source="name: X\non: push\njobs: {}\n"), "api: `jobs` must not be empty"),
        (
            Request(source=SOURCE, workflow_id="a b"),
            "api: workflow id 'a b' may only contain letters, digits, '_', '.' and '-', "
            "and must not start with '.' or '-'",
        ),
    ],
)
def test_rejected_requests(request_: Request, rendered: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse(request_)
    assert str(caught.value) == rendered


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    return start_server(rest_enabled=False)


def test_create_workflow_from_text_under_a_given_id(server: Running) -> None:
    wf_id = uid()
    created = server.workflows.CreateWorkflow(
        Request(source=SOURCE, workflow_id=wf_id), timeout=RPC_TIMEOUT
    )
    assert (created.id, created.name, created.version) == (wf_id, "From text", 1)
    again = server.workflows.CreateWorkflow(
        Request(workflow=message(), workflow_id=wf_id), timeout=RPC_TIMEOUT
    )
    assert (again.id, again.name, again.version) == (wf_id, "From message", 2)


def test_create_workflow_refuses_two_different_ids(server: Running) -> None:
    wf_id = uid()
    error = rpc_error(
        server.workflows.CreateWorkflow, Request(workflow=message(wf_id), workflow_id=uid())
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "does not match the workflow id")
    missing = rpc_error(
        server.workflows.GetWorkflow, workflows_pb2.GetWorkflowRequest(workflow_id=wf_id)
    )
    assert_status(missing, grpc.StatusCode.NOT_FOUND)


def test_a_workflow_read_back_with_its_output_only_fields_is_accepted(server: Running) -> None:
    # Whatever GetWorkflow returns can be sent back as it is: every field the
    # contract marks OUTPUT_ONLY is ignored, a waiting job's reason included.
    wf_id = uid()
    server.workflows.CreateWorkflow(Request(workflow=message(wf_id)), timeout=RPC_TIMEOUT)
    read = server.workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id=wf_id), timeout=RPC_TIMEOUT
    )
    read.jobs[0].waiting_reason = "no connected worker has the labels linux"
    read.jobs[0].attempt = 3
    again = server.workflows.CreateWorkflow(Request(workflow=read), timeout=RPC_TIMEOUT)
    # The same definition: no new version.
    assert (again.id, again.version) == (wf_id, 1)
