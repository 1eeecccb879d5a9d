"""Engine listings over real gRPC: runs and workers page by signed keyset
tokens, which neither shift as runs arrive nor carry over to other filters."""

from __future__ import annotations

import base64
from collections.abc import Callable

import grpc
import pytest
from conftest import Running
from engine_helpers import (
    RPC_TIMEOUT,
    assert_status,
    complete,
    create_workflow,
    job,
    must_claim,
    push_logs,
    rpc_error,
    start_run,
    uid,
)

from trellis.v1 import logs_pb2, runs_pb2, workers_pb2, workflows_pb2


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    """A gRPC-only server: the engine tests need no REST bridge."""
    return start_server(rest_enabled=False)


def list_runs(
    server: Running, workflow_id: str, size: int, token: str = ""
) -> runs_pb2.ListRunsResponse:
    request = runs_pb2.ListRunsRequest(workflow_id=workflow_id, page_size=size, page_token=token)
    return server.runs.ListRuns(request, timeout=RPC_TIMEOUT)


def test_run_pages_do_not_shift_when_runs_start_between_them(server: Running) -> None:
    wf = create_workflow(server, [job("only")])
    before = [start_run(server, wf) for _ in range(5)]
    first = list_runs(server, wf, 2)
    assert first.next_page_token
    # Runs started now are newer than any listed: they belong before the first page.
    later = [start_run(server, wf) for _ in range(3)]
    second = list_runs(server, wf, 2, first.next_page_token)
    third = list_runs(server, wf, 2, second.next_page_token)
    assert [len(p.runs) for p in (first, second, third)] == [2, 2, 1]
    assert third.next_page_token == ""
    paged = [r.run_id for p in (first, second, third) for r in p.runs]
    assert sorted(paged) == sorted(before)
    assert not set(paged) & set(later)
    # Newest first, as one unpaged listing orders them.
    whole = [r.run_id for r in list_runs(server, wf, 100).runs]
    assert set(whole[:3]) == set(later)
    assert whole[3:] == paged


def test_a_run_page_token_serves_only_its_own_listing(server: Running) -> None:
    wf, other = create_workflow(server, [job("a")]), create_workflow(server, [job("b")])
    for _ in range(3):
        start_run(server, wf)
    token = list_runs(server, wf, 1).next_page_token
    request = runs_pb2.ListRunsRequest(workflow_id=other, page_size=1, page_token=token)
    error = rpc_error(server.runs.ListRuns, request)
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "page_token")
    # A token changed by hand is refused too: it is signed.
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[2] ^= 1
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    request = runs_pb2.ListRunsRequest(workflow_id=wf, page_size=1, page_token=forged)
    assert_status(rpc_error(server.runs.ListRuns, request), grpc.StatusCode.INVALID_ARGUMENT)


def test_workers_page_in_id_order_and_all_come_back_without_a_page_size(
    server: Running,
) -> None:
    prefix = uid("w")
    ids = [f"{prefix}-{i}" for i in range(5)]
    for worker_id in reversed(ids):
        request = workers_pb2.RegisterWorkerRequest(worker_id=worker_id)
        server.workers.RegisterWorker(request, timeout=RPC_TIMEOUT)
    everything = server.workers.ListWorkers(workers_pb2.ListWorkersRequest(), timeout=RPC_TIMEOUT)
    assert [w.worker_id for w in everything.workers] == ids
    assert everything.next_page_token == ""
    pages: list[list[str]] = []
    token = ""
    while True:
        page = server.workers.ListWorkers(
            workers_pb2.ListWorkersRequest(page_size=2, page_token=token), timeout=RPC_TIMEOUT
        )
        pages.append([w.worker_id for w in page.workers])
        token = page.next_page_token
        if not token:
            break
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    # A runs token does not page workers.
    wf = create_workflow(server, [job("a")])
    for _ in range(2):
        start_run(server, wf)
    runs_token = list_runs(server, wf, 1).next_page_token
    request = workers_pb2.ListWorkersRequest(page_size=2, page_token=runs_token)
    error = rpc_error(server.workers.ListWorkers, request)
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "page_token")


def list_workflows(
    server: Running, size: int, token: str = "", status: str = ""
) -> workflows_pb2.ListWorkflowsResponse:
    request = workflows_pb2.ListWorkflowsRequest(page_size=size, page_token=token, status=status)
    return server.workflows.ListWorkflows(request, timeout=RPC_TIMEOUT)


def test_workflow_pages_neither_repeat_nor_skip_when_workflows_arrive(server: Running) -> None:
    listed = sorted(create_workflow(server, [job("a")], workflow_id=f"m-{i}") for i in range(5))
    first = list_workflows(server, 2)
    # One that sorts before the pages already read, one after them.
    create_workflow(server, [job("a")], workflow_id="a-early")
    create_workflow(server, [job("a")], workflow_id="z-late")
    paged = [w.id for w in first.workflows]
    token = first.next_page_token
    while token:
        page = list_workflows(server, 2, token)
        paged += [w.id for w in page.workflows]
        token = page.next_page_token
    # The early one sorts before the first page: it is not listed, and nothing
    # shifted. (The server's sample workflows are listed too.)
    mine = [w for w in paged if w.startswith(("m-", "a-", "z-"))]
    assert mine == [*listed, "z-late"]
    assert len(paged) == len(set(paged))


def test_a_workflow_page_token_keeps_its_status_and_not_limit_or_offset(server: Running) -> None:
    for i in range(3):
        create_workflow(server, [job("a")], workflow_id=f"w-{i}")
    token = list_workflows(server, 1).next_page_token
    assert token
    other = rpc_error(
        server.workflows.ListWorkflows,
        workflows_pb2.ListWorkflowsRequest(page_size=1, page_token=token, status="queued"),
    )
    assert_status(other, grpc.StatusCode.INVALID_ARGUMENT, "page_token")
    mixed = rpc_error(
        server.workflows.ListWorkflows,
        workflows_pb2.ListWorkflowsRequest(limit=1, page_token=token),
    )
    assert_status(mixed, grpc.StatusCode.INVALID_ARGUMENT, "not together with limit or offset")
    # The documented limit/offset paging answers as before, without a token.
    by_offset = server.workflows.ListWorkflows(
        workflows_pb2.ListWorkflowsRequest(limit=1, offset=1), timeout=RPC_TIMEOUT
    )
    every = list_workflows(server, 100).workflows
    assert [w.id for w in by_offset.workflows] == [every[1].id]
    assert by_offset.next_page_token == ""


def test_log_pages_stay_on_the_run_they_started_on(server: Running) -> None:
    wf = create_workflow(server, [job("build")])
    first_run = start_run(server, wf)
    lease = must_claim(server).lease.lease_id
    push_logs(server, lease, *(f"line {i}" for i in range(5)))
    complete(server, lease)

    def page(token: str = "") -> logs_pb2.ListLogsResponse:
        request = logs_pb2.ListLogsRequest(
            workflow_id=wf, job_id="build", page_size=2, page_token=token
        )
        return server.logs.ListLogs(request, timeout=RPC_TIMEOUT)

    pages = [page()]
    # A newer run becomes the latest; the pages already begun keep to theirs.
    start_run(server, wf)
    while pages[-1].next_page_token:
        pages.append(page(pages[-1].next_page_token))
    assert [len(p.chunks) for p in pages] == [2, 2, 1]
    assert {p.run_id for p in pages} == {first_run}
    assert [c.data for p in pages for c in p.chunks] == [f"line {i}" for i in range(5)]
    other_job = rpc_error(
        server.logs.ListLogs,
        logs_pb2.ListLogsRequest(
            workflow_id=wf, job_id="test", page_token=pages[0].next_page_token
        ),
    )
    assert_status(other_job, grpc.StatusCode.INVALID_ARGUMENT, "page_token")
