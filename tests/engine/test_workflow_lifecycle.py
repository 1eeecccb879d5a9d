"""A workflow's lifecycle over real gRPC, on SQLite and PostgreSQL: versions
and revert, clones, disabling, deletion with and without its runs, edits of
one job or edge at a time, concurrent edits, and export/import."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from conftest import Running, wait_until
from engine_helpers import (
    RPC_TIMEOUT,
    assert_status,
    complete,
    create_workflow,
    get_run,
    job,
    list_logs,
    must_claim,
    push_logs,
    race,
    rpc_error,
    start_run,
    uid,
    wait_run_state,
)
from google.protobuf import field_mask_pb2

from trellis.v1 import events_pb2, events_pb2_grpc, jobs_pb2, runs_pb2, workflows_pb2

W = workflows_pb2


def _versions(server: Running, workflow_id: str) -> list[int]:
    found = server.workflows.ListWorkflowVersions(
        W.ListWorkflowVersionsRequest(workflow_id=workflow_id), timeout=RPC_TIMEOUT
    )
    return [v.version for v in found.versions]


def _job_ids(server: Running, workflow_id: str) -> dict[str, list[str]]:
    """The current definition's jobs: id -> the ids it depends on."""
    found = server.workflows.ListWorkflowJobs(
        W.ListWorkflowJobsRequest(workflow_id=workflow_id), timeout=RPC_TIMEOUT
    )
    return {j.id: list(j.depends_on) for j in found.jobs}


def _version(server: Running, workflow_id: str) -> int:
    found = server.workflows.GetWorkflow(
        W.GetWorkflowRequest(workflow_id=workflow_id), timeout=RPC_TIMEOUT
    )
    return int(found.version)


def _finish(server: Running, run_id: str, *job_ids: str) -> None:
    for _ in job_ids:
        complete(server, must_claim(server).lease.lease_id)
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_SUCCEEDED)


def test_every_change_keeps_the_previous_version_and_a_revert_is_a_new_one(
    server: Running,
) -> None:
    wf = create_workflow(server, [job("a")])
    create_workflow(server, [job("a"), job("b", needs=["a"])], workflow_id=wf)
    create_workflow(server, [job("c")], workflow_id=wf)
    assert _versions(server, wf) == [3, 2, 1]

    first = server.workflows.GetWorkflowVersion(
        W.GetWorkflowVersionRequest(workflow_id=wf, version=2), timeout=RPC_TIMEOUT
    )
    assert [j.id for j in first.workflow.jobs] == ["a", "b"]
    assert first.created_at.ToMilliseconds() > 0

    page = server.workflows.ListWorkflowVersions(
        W.ListWorkflowVersionsRequest(workflow_id=wf, page_size=2), timeout=RPC_TIMEOUT
    )
    assert [v.version for v in page.versions] == [3, 2] and page.next_page_token
    rest = server.workflows.ListWorkflowVersions(
        W.ListWorkflowVersionsRequest(workflow_id=wf, page_size=2, page_token=page.next_page_token),
        timeout=RPC_TIMEOUT,
    )
    assert [v.version for v in rest.versions] == [1] and not rest.next_page_token

    reverted = server.workflows.RevertWorkflow(
        W.RevertWorkflowRequest(workflow_id=wf, to_version=2), timeout=RPC_TIMEOUT
    )
    assert reverted.version == 4
    assert [j.id for j in reverted.workflow.jobs] == ["a", "b"]
    assert _versions(server, wf) == [4, 3, 2, 1]
    # The run records the version it ran.
    run_id = start_run(server, wf)
    assert get_run(server, run_id).run.workflow_version == 4

    missing = rpc_error(
        server.workflows.RevertWorkflow, W.RevertWorkflowRequest(workflow_id=wf, to_version=9)
    )
    assert_status(missing, grpc.StatusCode.NOT_FOUND, "version 9", wf)


def test_a_clone_has_the_definition_and_a_history_of_its_own(server: Running) -> None:
    wf = create_workflow(server, [job("a"), job("b", needs=["a"])], name="Original")
    create_workflow(server, [job("a"), job("b", needs=["a"]), job("c")], workflow_id=wf)
    copy = uid("copy")
    cloned = server.workflows.CloneWorkflow(
        W.CloneWorkflowRequest(workflow_id=wf, new_workflow_id=copy, name="Copy"),
        timeout=RPC_TIMEOUT,
    )
    assert cloned.id == copy and cloned.name == "Copy" and cloned.version == 1
    assert cloned.enabled and not cloned.run_id
    assert _job_ids(server, copy) == _job_ids(server, wf)

    taken = rpc_error(
        server.workflows.CloneWorkflow, W.CloneWorkflowRequest(workflow_id=copy, new_workflow_id=wf)
    )
    assert_status(taken, grpc.StatusCode.ALREADY_EXISTS, wf)
    bad = rpc_error(
        server.workflows.CloneWorkflow,
        W.CloneWorkflowRequest(workflow_id=wf, new_workflow_id="no spaces"),
    )
    assert_status(bad, grpc.StatusCode.INVALID_ARGUMENT, "no spaces")


def test_a_disabled_workflow_cannot_be_run_while_its_running_run_goes_on(
    server: Running,
) -> None:
    wf = create_workflow(server, [job("a"), job("b", needs=["a"])])
    other = create_workflow(server, [job("x")])
    run_id = start_run(server, wf)
    first = must_claim(server)

    disabled = server.workflows.DisableWorkflow(
        W.DisableWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
    )
    assert not disabled.enabled and disabled.run_id == run_id

    single = rpc_error(server.workflows.RunWorkflow, W.RunWorkflowRequest(workflow_id=wf))
    assert_status(single, grpc.StatusCode.FAILED_PRECONDITION, wf, "disabled")
    batch = rpc_error(
        server.workflows.BatchRunWorkflows,
        W.BatchRunWorkflowsRequest(
            requests=[W.RunWorkflowRequest(workflow_id=other), W.RunWorkflowRequest(workflow_id=wf)]
        ),
    )
    assert_status(batch, grpc.StatusCode.FAILED_PRECONDITION, "requests[1]", wf, "disabled")
    # All or nothing: the other workflow of the batch did not start either.
    assert not server.workflows.GetWorkflow(
        W.GetWorkflowRequest(workflow_id=other), timeout=RPC_TIMEOUT
    ).run_id

    # The running run finishes.
    complete(server, first.lease.lease_id)
    complete(server, must_claim(server).lease.lease_id)
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_SUCCEEDED)

    enabled = server.workflows.EnableWorkflow(
        W.EnableWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
    )
    assert enabled.enabled
    assert start_run(server, wf) != run_id


def test_a_workflow_disabled_by_one_replica_is_refused_by_another(
    start_server: Callable[..., Running],
) -> None:
    one, two = start_server(), start_server()
    wf = create_workflow(one, [job("a")])
    # The second replica has seen the workflow's version (and keeps it).
    start_run(two, wf)
    one.workflows.DisableWorkflow(W.DisableWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT)
    refused = rpc_error(two.workflows.RunWorkflow, W.RunWorkflowRequest(workflow_id=wf))
    assert_status(refused, grpc.StatusCode.FAILED_PRECONDITION, wf, "disabled")
    one.workflows.EnableWorkflow(W.EnableWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT)
    start_run(two, wf)
    # An edit on one replica is what the other runs next.
    one.workflows.AddWorkflowJob(
        W.AddWorkflowJobRequest(workflow_id=wf, job=job("b")), timeout=RPC_TIMEOUT
    )
    assert get_run(two, start_run(two, wf)).run.workflow_version == 2


def test_a_deleted_workflow_leaves_its_runs_readable_and_its_id_free(server: Running) -> None:
    wf = create_workflow(server, [job("a")])
    create_workflow(server, [job("a"), job("b")], workflow_id=wf)
    run_id = start_run(server, wf)
    lease = must_claim(server).lease
    push_logs(server, lease.lease_id, "hello")
    complete(server, lease.lease_id)
    complete(server, must_claim(server).lease.lease_id)
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_SUCCEEDED)

    gone = server.workflows.DeleteWorkflow(
        W.DeleteWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
    )
    assert gone.workflow_id == wf and gone.purged_runs == 0
    assert_status(
        rpc_error(server.workflows.GetWorkflow, W.GetWorkflowRequest(workflow_id=wf)),
        grpc.StatusCode.NOT_FOUND,
        wf,
    )
    listed = server.workflows.ListWorkflows(W.ListWorkflowsRequest(), timeout=RPC_TIMEOUT)
    assert wf not in {w.id for w in listed.workflows}
    assert_status(
        rpc_error(
            server.workflows.ListWorkflowVersions, W.ListWorkflowVersionsRequest(workflow_id=wf)
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert_status(
        rpc_error(server.workflows.RunWorkflow, W.RunWorkflowRequest(workflow_id=wf)),
        grpc.StatusCode.NOT_FOUND,
    )

    # The run, its logs and the version it ran stay readable.
    detail = get_run(server, run_id)
    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED and len(detail.jobs) == 2
    assert [c.data for c in list_logs(server, wf, lease.job_id, run_id).chunks] == ["hello"]
    ran = server.workflows.GetWorkflowVersion(
        W.GetWorkflowVersionRequest(workflow_id=wf, version=detail.run.workflow_version),
        timeout=RPC_TIMEOUT,
    )
    assert [j.id for j in ran.workflow.jobs] == ["a", "b"]

    # Created again: a new history whose numbers go on from the old one.
    create_workflow(server, [job("z")], workflow_id=wf)
    assert _versions(server, wf) == [3]
    assert get_run(server, run_id).run.workflow_version == 2


def test_deleting_with_purge_runs_deletes_the_runs_too(server: Running) -> None:
    wf = create_workflow(server, [job("a")])
    run_id = start_run(server, wf)
    lease = must_claim(server).lease
    push_logs(server, lease.lease_id, "bye")

    # Not while a run is running: nothing is deleted.
    busy = rpc_error(
        server.workflows.DeleteWorkflow, W.DeleteWorkflowRequest(workflow_id=wf, purge_runs=True)
    )
    assert_status(busy, grpc.StatusCode.FAILED_PRECONDITION, wf, "running")
    assert get_run(server, run_id).run.workflow_id == wf
    assert _version(server, wf) == 1

    complete(server, lease.lease_id)
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_SUCCEEDED)
    second = start_run(server, wf)
    _finish(server, second, "a")
    gone = server.workflows.DeleteWorkflow(
        W.DeleteWorkflowRequest(workflow_id=wf, purge_runs=True), timeout=RPC_TIMEOUT
    )
    assert gone.purged_runs == 2
    for run in (run_id, second):
        assert_status(
            rpc_error(server.runs.GetRun, runs_pb2.GetRunRequest(run_id=run)),
            grpc.StatusCode.NOT_FOUND,
        )
    listed = server.runs.ListRuns(runs_pb2.ListRunsRequest(workflow_id=wf), timeout=RPC_TIMEOUT)
    assert not listed.runs
    # The event log is append-only: the runs' events stay, the deletion after
    # them (on PostgreSQL an event is readable once no older write is open).
    stub = events_pb2_grpc.EventServiceStub(server.channel)
    ask = events_pb2.ListEventsRequest(
        filter=events_pb2.EventFilter(workflow_id=wf), page_size=1000
    )

    def kinds() -> list[str]:
        log = stub.ListEvents(ask, timeout=RPC_TIMEOUT).events
        return [events_pb2.EventType.Name(e.type) for e in log]

    wait_until(lambda: kinds()[-1:] == ["EVENT_TYPE_WORKFLOW_DELETED"])
    log = stub.ListEvents(ask, timeout=RPC_TIMEOUT).events
    assert events_pb2.EventType.Name(log[0].type) == "EVENT_TYPE_WORKFLOW_CREATED"
    assert {e.run_id for e in log} >= {run_id, second}
    assert [e.cursor for e in log] == sorted(e.cursor for e in log)


def test_jobs_and_edges_are_edited_one_at_a_time_and_validated_whole(server: Running) -> None:
    wf = create_workflow(server, [job("a"), job("b", needs=["a"])])
    workflows = server.workflows

    added = workflows.AddWorkflowJob(
        W.AddWorkflowJobRequest(workflow_id=wf, job=job("c", needs=["b"])), timeout=RPC_TIMEOUT
    )
    assert added.version == 2
    assert _job_ids(server, wf) == {"a": [], "b": ["a"], "c": ["b"]}

    updated = workflows.UpdateWorkflowJob(
        W.UpdateWorkflowJobRequest(
            workflow_id=wf,
            job_id="c",
            job=jobs_pb2.Job(command="make c", timeout_secs=60),
            update_mask=field_mask_pb2.FieldMask(paths=["command"]),
        ),
        timeout=RPC_TIMEOUT,
    )
    c = workflows.GetWorkflowJob(W.GetWorkflowJobRequest(workflow_id=wf, job_id="c"))
    assert updated.version == 3 and c.command == "make c" and c.timeout_secs == 0
    assert list(c.depends_on) == ["b"]

    renamed = workflows.RenameWorkflowJob(
        W.RenameWorkflowJobRequest(workflow_id=wf, job_id="b", new_job_id="build"),
        timeout=RPC_TIMEOUT,
    )
    assert renamed.version == 4
    assert _job_ids(server, wf) == {"a": [], "build": ["a"], "c": ["build"]}

    needed = rpc_error(
        workflows.RemoveWorkflowJob, W.RemoveWorkflowJobRequest(workflow_id=wf, job_id="build")
    )
    assert_status(needed, grpc.StatusCode.FAILED_PRECONDITION, "'build'", "'c'", "cascade")
    removed = workflows.RemoveWorkflowJob(
        W.RemoveWorkflowJobRequest(workflow_id=wf, job_id="build", cascade=True),
        timeout=RPC_TIMEOUT,
    )
    assert removed.version == 5
    assert _job_ids(server, wf) == {"a": [], "c": []}

    workflows.AddWorkflowEdge(
        W.AddWorkflowEdgeRequest(workflow_id=wf, from_job="a", to_job="c"), timeout=RPC_TIMEOUT
    )
    assert _job_ids(server, wf) == {"a": [], "c": ["a"]}
    # An edge that closes a cycle is refused with the reason; nothing is stored.
    cycle = rpc_error(
        workflows.AddWorkflowEdge,
        W.AddWorkflowEdgeRequest(workflow_id=wf, from_job="c", to_job="a"),
    )
    assert_status(cycle, grpc.StatusCode.INVALID_ARGUMENT, wf, "cycle")
    unknown = rpc_error(
        workflows.UpdateWorkflowJob,
        W.UpdateWorkflowJobRequest(
            workflow_id=wf,
            job_id="c",
            job=jobs_pb2.Job(depends_on=["nope"]),
            update_mask=field_mask_pb2.FieldMask(paths=["depends_on"]),
        ),
    )
    assert_status(unknown, grpc.StatusCode.INVALID_ARGUMENT, "'c'", "nope")
    mask = rpc_error(
        workflows.UpdateWorkflowJob,
        W.UpdateWorkflowJobRequest(
            workflow_id=wf, job_id="c", update_mask=field_mask_pb2.FieldMask(paths=["status"])
        ),
    )
    assert_status(mask, grpc.StatusCode.INVALID_ARGUMENT, "update_mask", "status")
    assert _version(server, wf) == 6

    workflows.RemoveWorkflowEdge(
        W.RemoveWorkflowEdgeRequest(workflow_id=wf, from_job="a", to_job="c"), timeout=RPC_TIMEOUT
    )
    assert _job_ids(server, wf) == {"a": [], "c": []}
    no_edge = rpc_error(
        workflows.RemoveWorkflowEdge,
        W.RemoveWorkflowEdgeRequest(workflow_id=wf, from_job="a", to_job="c"),
    )
    assert_status(no_edge, grpc.StatusCode.NOT_FOUND, "'c'", "'a'")
    assert _versions(server, wf) == [7, 6, 5, 4, 3, 2, 1]

    # An edited workflow runs its new definition.
    run_id = start_run(server, wf)
    assert get_run(server, run_id).run.workflow_version == 7
    assert {j.id for j in get_run(server, run_id).jobs} == {"a", "c"}


def test_of_two_concurrent_edits_of_one_version_one_wins_and_the_other_is_aborted(
    server: Running,
) -> None:
    wf = create_workflow(server, [job("a"), job("b")])

    def edit(new_id: str) -> None:
        server.workflows.AddWorkflowJob(
            W.AddWorkflowJobRequest(workflow_id=wf, job=job(new_id), expected_version=1),
            timeout=RPC_TIMEOUT,
        )

    codes = race([lambda: edit("x"), lambda: edit("y")])
    assert sorted(codes, key=str) == sorted([grpc.StatusCode.OK, grpc.StatusCode.ABORTED], key=str)
    assert _version(server, wf) == 2 and len(_job_ids(server, wf)) == 3

    stale = rpc_error(
        server.workflows.AddWorkflowEdge,
        W.AddWorkflowEdgeRequest(workflow_id=wf, from_job="a", to_job="b", expected_version=1),
    )
    assert_status(stale, grpc.StatusCode.ABORTED, wf, "version 2")

    def edit_any(new_id: str) -> None:
        server.workflows.AddWorkflowJob(
            W.AddWorkflowJobRequest(workflow_id=wf, job=job(new_id)), timeout=RPC_TIMEOUT
        )

    # Without an expected version, concurrent edits are applied one after the other.
    assert race([lambda: edit_any("p"), lambda: edit_any("q")]) == [grpc.StatusCode.OK] * 2
    assert _version(server, wf) == 4
    found = set(_job_ids(server, wf))
    assert {"a", "b", "p", "q"} <= found and len(found & {"x", "y"}) == 1


def test_export_then_import_gives_back_equal_definitions(server: Running) -> None:
    first = uid("exp")
    server.workflows.CreateWorkflow(
        W.CreateWorkflowRequest(
            workflow_id=first,
            source=(
                "name: Exported\non: [push, pull_request]\nenv: {APP: app}\n"
                "inputs:\n  target: {type: string, default: prod, description: Where}\n"
                "jobs:\n  a:\n    run: |\n      echo one\n      echo two\n"
                "    retries: 2\n    backoff: {exponential: {base_secs: 1, max_secs: 8}}\n"
                "  b: {needs: a, labels: [linux], timeout: 5m, env: {MODE: fast}, run: echo b}\n"
            ),
        ),
        timeout=RPC_TIMEOUT,
    )
    second = create_workflow(server, [job("x", retries=1), job("y", needs=["x"])])
    exported = server.workflows.ExportWorkflows(W.ExportWorkflowsRequest(), timeout=RPC_TIMEOUT)
    assert f"id: {first}" in exported.text and f"id: {second}" in exported.text
    one = server.workflows.ExportWorkflows(
        W.ExportWorkflowsRequest(workflow_id=first), timeout=RPC_TIMEOUT
    )
    assert one.count == 1 and one.text.startswith(f"---\nid: {first}\n")

    same = server.workflows.ImportWorkflows(
        W.ImportWorkflowsRequest(text=exported.text), timeout=RPC_TIMEOUT
    )
    assert {w.action for w in same.workflows} == {W.IMPORT_ACTION_UNCHANGED}

    second_doc = _export(server, second)
    assert second_doc == _export_of(exported.text, second)
    for wf in (first, second):
        server.workflows.DeleteWorkflow(W.DeleteWorkflowRequest(workflow_id=wf))
    both = one.text + second_doc
    dry = server.workflows.ImportWorkflows(
        W.ImportWorkflowsRequest(text=both, dry_run=True), timeout=RPC_TIMEOUT
    )
    assert dry.dry_run
    assert [(w.workflow_id, w.action, w.version) for w in dry.workflows] == [
        (first, W.IMPORT_ACTION_CREATED, 2),
        (second, W.IMPORT_ACTION_CREATED, 2),
    ]
    # A dry run stores nothing.
    assert_status(
        rpc_error(server.workflows.GetWorkflow, W.GetWorkflowRequest(workflow_id=first)),
        grpc.StatusCode.NOT_FOUND,
    )

    done = server.workflows.ImportWorkflows(W.ImportWorkflowsRequest(text=both))
    assert [w.action for w in done.workflows] == [W.IMPORT_ACTION_CREATED] * 2
    assert _export(server, first) == one.text
    assert _export(server, second) == second_doc


def _export(server: Running, workflow_id: str) -> str:
    found = server.workflows.ExportWorkflows(
        W.ExportWorkflowsRequest(workflow_id=workflow_id), timeout=RPC_TIMEOUT
    )
    return str(found.text)


def _export_of(text: str, workflow_id: str) -> str:
    """The document of ``workflow_id`` in an export of many."""
    for part in text.split("---\n"):
        if part.startswith(f"id: {workflow_id}\n"):
            return "---\n" + part
    raise AssertionError(f"{workflow_id} not exported")


def test_an_import_stores_all_or_nothing_and_names_each_bad_workflow(server: Running) -> None:
    good, bad = uid("good"), uid("bad")
    text = (
        f"id: {good}\nname: Good\njobs:\n  a: {{run: echo a}}\n"
        f"---\nid: {bad}\nname: Bad\njobs:\n  a: {{run: echo a, needs: b}}\n"
        "---\nname: Nameless\njobs: {a: {run: echo}}\n"
    )
    refused = rpc_error(server.workflows.ImportWorkflows, W.ImportWorkflowsRequest(text=text))
    assert_status(
        refused, grpc.StatusCode.INVALID_ARGUMENT, bad, "job 'a'", "unknown job 'b'", "document 3"
    )
    assert good not in refused.details()  # type: ignore[attr-defined]
    assert_status(
        rpc_error(server.workflows.GetWorkflow, W.GetWorkflowRequest(workflow_id=good)),
        grpc.StatusCode.NOT_FOUND,
    )

    broken = rpc_error(
        server.workflows.ImportWorkflows, W.ImportWorkflowsRequest(text="id: x\njobs: [unclosed\n")
    )
    assert_status(broken, grpc.StatusCode.INVALID_ARGUMENT, "invalid YAML", "line")
    empty = rpc_error(server.workflows.ImportWorkflows, W.ImportWorkflowsRequest(text=""))
    assert_status(empty, grpc.StatusCode.INVALID_ARGUMENT, "no documents")
