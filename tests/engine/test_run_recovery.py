"""Runs beyond the happy path over real gRPC: retried as a next attempt,
capped by a parallel limit (across two replicas), started ad hoc from an
inline definition, and measured by their progress."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from conftest import Running
from engine_helpers import (
    RPC_TIMEOUT,
    assert_status,
    claim,
    complete,
    create_workflow,
    event_name,
    fail,
    get_run,
    job,
    must_claim,
    rpc_error,
    run_events,
    run_jobs,
    uid,
    wait_run_state,
)
from sdk_helpers import client_for, one_error_line, started_worker, trellis

from trellis.server.engine.definitions import WorkflowDef, parse_text
from trellis.v1 import jobs_pb2, runs_pb2, workers_pb2, workflows_pb2
from trellis.worker_sdk import JobContext, Worker


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    return start_server(rest_enabled=False)


def start(server: Running, workflow_id: str, parallel_limit: int = 0) -> runs_pb2.Run:
    run: runs_pb2.Run = server.workflows.RunWorkflow(
        workflows_pb2.RunWorkflowRequest(workflow_id=workflow_id, parallel_limit=parallel_limit),
        timeout=RPC_TIMEOUT,
    )
    return run


def retry(server: Running, run_id: str) -> runs_pb2.Run:
    run: runs_pb2.Run = server.runs.RetryRun(
        runs_pb2.RetryRunRequest(run_id=run_id), timeout=RPC_TIMEOUT
    )
    return run


def progress(server: Running, run_id: str) -> runs_pb2.RunProgress:
    found: runs_pb2.RunProgress = server.runs.GetRunProgress(
        runs_pb2.GetRunProgressRequest(run_id=run_id), timeout=RPC_TIMEOUT
    )
    return found


def test_retry_reruns_what_failed_and_keeps_what_succeeded(server: Running) -> None:
    # a -> b -> c, a -> d: b fails, so c is skipped; a and d succeed.
    wf = create_workflow(
        server, [job("a"), job("b", needs=["a"]), job("c", needs=["b"]), job("d", needs=["a"])]
    )
    run_id = start(server, wf).run_id
    a = must_claim(server, "w")
    complete(server, a.lease.lease_id, {"x": "1"})
    got = {}
    for _ in range(2):
        one = must_claim(server, "w")
        got[one.job.job_id] = one
    fail(server, got["b"].lease.lease_id, "b broke")
    complete(server, got["d"].lease.lease_id, {"d": "yes"})
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_FAILED)
    assert run_jobs(server, run_id)["c"].status == jobs_pb2.JOB_STATE_SKIPPED

    again = retry(server, run_id)
    assert again.state == runs_pb2.RUN_STATE_RUNNING
    assert again.attempt == 2
    jobs = run_jobs(server, run_id)
    assert jobs["a"].status == jobs["d"].status == jobs_pb2.JOB_STATE_SUCCEEDED
    assert dict(jobs["a"].outputs) == {"x": "1"}
    assert jobs["b"].status == jobs_pb2.JOB_STATE_QUEUED
    assert jobs["c"].status == jobs_pb2.JOB_STATE_PENDING

    b = must_claim(server, "w")
    assert b.job.job_id == "b"
    assert dict(b.job.upstream_outputs["a"].values) == {"x": "1"}
    complete(server, b.lease.lease_id, {"y": "2"})
    c = must_claim(server, "w")
    assert c.job.job_id == "c"
    assert dict(c.job.upstream_outputs["b"].values) == {"y": "2"}
    complete(server, c.lease.lease_id)
    detail = wait_run_state(server, run_id, runs_pb2.RUN_STATE_SUCCEEDED)
    assert detail.run.attempt == 2
    # Each job ran once per attempt it took part in.
    tries = {j.id: len(j.attempts) for j in detail.jobs}
    assert tries == {"a": 1, "b": 2, "c": 1, "d": 1}
    names = [event_name(e) for e in run_events(server, run_id)]
    assert names.count("RUN_RETRIED") == 1
    assert names.count("RUN_FINISHED") == 2

    # A succeeded run has nothing to run again.
    assert_status(
        rpc_error(server.runs.RetryRun, runs_pb2.RetryRunRequest(run_id=run_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "no job to run again",
    )


def test_retry_refuses_a_running_run_and_gives_retries_afresh(server: Running) -> None:
    wf = create_workflow(server, [job("a", retries=1)])
    run_id = start(server, wf).run_id
    assert_status(
        rpc_error(server.runs.RetryRun, runs_pb2.RetryRunRequest(run_id=run_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "is running",
    )
    assert_status(
        rpc_error(server.runs.RetryRun, runs_pb2.RetryRunRequest(run_id="nope")),
        grpc.StatusCode.NOT_FOUND,
    )
    for _ in range(2):  # the try and its one retry
        fail(server, must_claim(server, "w").lease.lease_id, "no", retryable=True)
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_FAILED)
    # A disabled workflow's runs are not run again.
    server.workflows.DisableWorkflow(
        workflows_pb2.DisableWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
    )
    assert_status(
        rpc_error(server.runs.RetryRun, runs_pb2.RetryRunRequest(run_id=run_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "disabled",
    )
    server.workflows.EnableWorkflow(
        workflows_pb2.EnableWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
    )
    retry(server, run_id)
    first = must_claim(server, "w")
    assert first.job.attempt == 2
    # The job's own retry is there again in the new attempt.
    assert fail(server, first.lease.lease_id, "again", retryable=True).will_retry
    complete(server, must_claim(server, "w").lease.lease_id)
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_SUCCEEDED)


def test_a_parallel_limit_holds_jobs_until_a_slot_frees(server: Running) -> None:
    wf = create_workflow(server, [job(f"j{i}") for i in range(5)])
    run = start(server, wf, parallel_limit=2)
    assert run.parallel_limit == 2
    first = must_claim(server, "w1")
    second = must_claim(server, "w2")
    assert claim(server, "w3") is None
    jobs = run_jobs(server, run.run_id)
    queued = [j for j in jobs.values() if j.status == jobs_pb2.JOB_STATE_QUEUED]
    assert len(queued) == 3
    assert not any(j.HasField("delayed_until") for j in queued)
    # A waiting claimer gets the job as soon as a lease of the run ends.
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(must_claim(server, "w3").job.job_id))
    waiter.start()
    complete(server, first.lease.lease_id)
    waiter.join(RPC_TIMEOUT)
    assert len(got) == 1
    assert claim(server, "w4") is None
    complete(server, second.lease.lease_id)


def test_a_parallel_limit_holds_under_concurrent_claims_on_two_replicas(
    start_server: Callable[..., Running],
) -> None:
    replicas = [start_server(rest_enabled=False), start_server(rest_enabled=False)]
    n_jobs, limit = 24, 3
    wf = create_workflow(replicas[0], [job(f"j{i}") for i in range(n_jobs)])
    run_id = start(replicas[0], wf, parallel_limit=limit).run_id
    seen: list[int] = []
    done: list[str] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        srv = replicas[i % 2]
        while True:
            with lock:
                if len(done) >= n_jobs:
                    return
            got = claim(srv, f"w{i}", wait=1)
            if got is None:
                continue
            # While this lease is held, the server's count of the run's
            # leased jobs must stay within the limit.
            running = len(progress(srv, run_id).running_jobs)
            with lock:
                seen.append(running)
                done.append(got.job.job_id)
            complete(srv, got.lease.lease_id)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(done) == sorted(f"j{i}" for i in range(n_jobs))
    assert seen and max(seen) <= limit
    wait_run_state(replicas[0], run_id, runs_pb2.RUN_STATE_SUCCEEDED)


def test_an_adhoc_run_of_an_inline_definition(server: Running) -> None:
    definition = workflows_pb2.Workflow(
        name="once",
        jobs=[job("a"), job("b", needs=["a"])],
        inputs={"who": workflows_pb2.WorkflowInput(required=True)},
    )
    request = workflows_pb2.CreateRunRequest(workflow=definition, parallel_limit=1)
    request.inputs.update({"who": "me"})
    run = server.workflows.CreateRun(request, timeout=RPC_TIMEOUT)
    assert run.workflow_id == f"adhoc-{run.run_id}"
    assert run.workflow_version == 1
    assert dict(run.inputs) == {"who": "me"}
    a = must_claim(server, "w")
    assert (a.job.job_id, a.job.run_id) == ("a", run.run_id)
    complete(server, a.lease.lease_id, {"out": "1"})
    b = must_claim(server, "w")
    assert dict(b.job.upstream_outputs["a"].values) == {"out": "1"}
    complete(server, b.lease.lease_id)
    wait_run_state(server, run.run_id, runs_pb2.RUN_STATE_SUCCEEDED)
    listed = server.workflows.ListWorkflows(
        workflows_pb2.ListWorkflowsRequest(), timeout=RPC_TIMEOUT
    )
    assert not any(w.id.startswith("adhoc-") for w in listed.workflows)
    assert get_run(server, run.run_id).run.workflow_id == run.workflow_id


def test_a_bad_adhoc_definition_is_refused_and_nothing_is_stored(server: Running) -> None:
    before = server.runs.ListRuns(runs_pb2.ListRunsRequest(), timeout=RPC_TIMEOUT)
    cycle = workflows_pb2.Workflow(name="loop", jobs=[job("a", needs=["b"]), job("b", needs=["a"])])
    error = rpc_error(server.workflows.CreateRun, workflows_pb2.CreateRunRequest(workflow=cycle))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "cycle")
    missing = workflows_pb2.CreateRunRequest(
        workflow=workflows_pb2.Workflow(
            name="x",
            jobs=[job("a")],
            inputs={"who": workflows_pb2.WorkflowInput(required=True)},
        )
    )
    assert_status(
        rpc_error(server.workflows.CreateRun, missing), grpc.StatusCode.INVALID_ARGUMENT, "who"
    )
    after = server.runs.ListRuns(runs_pb2.ListRunsRequest(), timeout=RPC_TIMEOUT)
    assert [r.run_id for r in after.runs] == [r.run_id for r in before.runs]


def test_progress_counts_jobs_and_estimates_from_earlier_runs(server: Running) -> None:
    wf = create_workflow(server, [job("a"), job("b", needs=["a"]), job("c", needs=["a"])])
    first = start(server, wf).run_id
    found = progress(server, first)
    assert (found.jobs_total, found.jobs_done) == (3, 0)
    assert list(found.queued_jobs) == ["a"]
    assert not found.HasField("estimated_secs_left")
    assert found.estimate_sample_runs == 0
    a = must_claim(server, "w")
    found = progress(server, first)
    assert list(found.running_jobs) == ["a"]
    complete(server, a.lease.lease_id)
    for _ in range(2):
        complete(server, must_claim(server, "w").lease.lease_id)
    wait_run_state(server, first, runs_pb2.RUN_STATE_SUCCEEDED)
    found = progress(server, first)
    assert (found.jobs_done, found.jobs_succeeded) == (3, 3)
    assert not found.HasField("estimated_secs_left")

    second = start(server, wf).run_id
    found = progress(server, second)
    assert found.estimate_sample_runs == 1
    assert found.HasField("estimated_secs_left")
    assert found.estimated_secs_left >= 0
    assert (found.jobs_total, found.jobs_done) == (3, 0)


def undoable(job_id: str, needs: tuple[str, ...] = ()) -> jobs_pb2.Job:
    msg = job(job_id, needs=needs)
    msg.compensation.command = f"undo {job_id}"
    return msg


DIAMOND = (undoable("a"), undoable("b", ("a",)), undoable("c", ("a",)), undoable("d", ("b", "c")))


def run_all(server: Running, run_id: str, n: int) -> None:
    for _ in range(n):
        got = must_claim(server, "w")
        complete(server, got.lease.lease_id, {"made": got.job.job_id})
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_SUCCEEDED)


def rollback(server: Running, run_id: str, *job_ids: str) -> runs_pb2.Run:
    run: runs_pb2.Run = server.runs.RollbackRun(
        runs_pb2.RollbackRunRequest(run_id=run_id, job_ids=list(job_ids)), timeout=RPC_TIMEOUT
    )
    return run


def claim_all(server: Running) -> dict[str, workers_pb2.Assignment]:
    """Every job claimable now, by id."""
    found = {}
    while (got := claim(server, "w")) is not None:
        found[got.job.job_id] = got
    return found


def test_compensations_run_in_reverse_dependency_order(server: Running) -> None:
    wf = create_workflow(server, DIAMOND)
    run_id = start(server, wf).run_id
    run_all(server, run_id, 4)
    assert rollback(server, run_id).state == runs_pb2.RUN_STATE_ROLLING_BACK

    order: list[list[str]] = []
    for _ in range(3):
        wave = claim_all(server)
        order.append(sorted(wave))
        for got in wave.values():
            assert got.job.command == f"undo {got.job.job_id.split(':')[0]}"
            own = got.job.job_id.split(":")[0]
            # The compensation sees the outputs of the job it undoes.
            assert dict(got.job.upstream_outputs[own].values) == {"made": own}
            complete(server, got.lease.lease_id)
    assert order == [["d:undo"], ["b:undo", "c:undo"], ["a:undo"]]
    detail = wait_run_state(server, run_id, runs_pb2.RUN_STATE_ROLLED_BACK)
    assert {j.id for j in detail.jobs} >= {"a:undo", "b:undo", "c:undo", "d:undo"}
    names = [event_name(e) for e in run_events(server, run_id)]
    assert names.count("JOB_COMPENSATED") == 4
    assert names.count("RUN_ROLLBACK_STARTED") == names.count("RUN_ROLLBACK_FINISHED") == 1
    assert names[-1] == "RUN_ROLLBACK_FINISHED"
    # All is undone: nothing is left to compensate, and a rolled-back run is not retried.
    for call, request, text in (
        (server.runs.RollbackRun, runs_pb2.RollbackRunRequest(run_id=run_id), "is rolled_back"),
        (server.runs.RetryRun, runs_pb2.RetryRunRequest(run_id=run_id), "rolled back"),
    ):
        assert_status(rpc_error(call, request), grpc.StatusCode.FAILED_PRECONDITION, text)


def test_a_partial_rollback_then_the_rest(server: Running) -> None:
    wf = create_workflow(server, DIAMOND)
    run_id = start(server, wf).run_id
    assert_status(
        rpc_error(server.runs.RollbackRun, runs_pb2.RollbackRunRequest(run_id=run_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "is running",
    )
    run_all(server, run_id, 4)
    assert_status(
        rpc_error(
            server.runs.RollbackRun, runs_pb2.RollbackRunRequest(run_id=run_id, job_ids=["zz"])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "zz",
    )
    rollback(server, run_id, "b")
    wave = claim_all(server)
    assert sorted(wave) == ["b:undo"]
    complete(server, wave["b:undo"].lease.lease_id)
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_PARTLY_ROLLED_BACK)
    assert_status(
        rpc_error(
            server.runs.RollbackRun, runs_pb2.RollbackRunRequest(run_id=run_id, job_ids=["b"])
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "compensated already",
    )
    rollback(server, run_id)
    order = []
    for _ in range(3):
        wave = claim_all(server)
        order.append(sorted(wave))
        for got in wave.values():
            complete(server, got.lease.lease_id)
    # b's is done: c's waits for d's alone (d depends on c), a's for c's.
    assert order == [["d:undo"], ["c:undo"], ["a:undo"]]
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_ROLLED_BACK)


def test_a_failed_compensation_fails_the_rollback(server: Running) -> None:
    wf = create_workflow(server, DIAMOND)
    run_id = start(server, wf).run_id
    run_all(server, run_id, 4)
    rollback(server, run_id)
    fail(server, must_claim(server, "w").lease.lease_id, "cannot undo d")
    detail = wait_run_state(server, run_id, runs_pb2.RUN_STATE_ROLLBACK_FAILED)
    states = {j.id: j.status for j in detail.jobs}
    assert states["d:undo"] == jobs_pb2.JOB_STATE_FAILED
    assert states["a:undo"] == states["b:undo"] == jobs_pb2.JOB_STATE_SKIPPED


def test_a_run_that_fails_rolls_back_on_failure(server: Running) -> None:
    created = server.workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(
            workflow=workflows_pb2.Workflow(
                id=f"undo-{run_jobs.__name__}-{threading.get_ident()}",
                name="saga",
                rollback="on_failure",
                jobs=[undoable("a"), job("b", needs=["a"])],
            )
        ),
        timeout=RPC_TIMEOUT,
    )
    assert created.rollback == "on_failure"
    assert created.jobs[0].compensation.command == "undo a"
    run_id = start(server, created.id).run_id
    a = must_claim(server, "w")
    complete(server, a.lease.lease_id, {"made": "a"})
    fail(server, must_claim(server, "w").lease.lease_id, "b broke")
    undo = must_claim(server, "w")
    assert undo.job.job_id == "a:undo"
    assert get_run(server, run_id).run.state == runs_pb2.RUN_STATE_ROLLING_BACK
    complete(server, undo.lease.lease_id)
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_ROLLED_BACK)
    names = [event_name(e) for e in run_events(server, run_id)]
    assert names.index("RUN_FINISHED") < names.index("RUN_ROLLBACK_STARTED")


def test_a_run_whose_last_job_succeeds_after_a_failure_still_rolls_back(server: Running) -> None:
    # The run ends failed in the transaction of its last job, a success: the
    # rollback starts there, not only in the transaction of the failure.
    created = server.workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(
            workflow=workflows_pb2.Workflow(
                id=f"undo-late-{threading.get_ident()}",
                name="saga",
                rollback="on_failure",
                jobs=[undoable("a"), job("b", labels=["b"]), job("c", labels=["c"])],
            )
        ),
        timeout=RPC_TIMEOUT,
    )
    run_id = start(server, created.id).run_id
    complete(server, must_claim(server, "w").lease.lease_id)
    b = must_claim(server, "w", ["b"])
    assert b.job.job_id == "b"
    c = must_claim(server, "w", ["c"])
    assert c.job.job_id == "c"
    fail(server, b.lease.lease_id, "b broke")
    assert get_run(server, run_id).run.state == runs_pb2.RUN_STATE_RUNNING
    complete(server, c.lease.lease_id)
    undo = must_claim(server, "w")
    assert undo.job.job_id == "a:undo"
    complete(server, undo.lease.lease_id)
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_ROLLED_BACK)


def test_a_rollback_under_way_can_be_cancelled(server: Running) -> None:
    undo_a = job("a", labels=["x"])
    undo_a.compensation.command = "undo a"
    created = server.workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(
            workflow=workflows_pb2.Workflow(
                id=f"undo-cancel-{threading.get_ident()}",
                name="saga",
                rollback="on_failure",
                jobs=[undo_a, job("b", needs=["a"])],
            )
        ),
        timeout=RPC_TIMEOUT,
    )
    run_id = start(server, created.id).run_id
    complete(server, must_claim(server, "w", ["x"]).lease.lease_id)
    fail(server, must_claim(server, "w").lease.lease_id, "b broke")
    # Its compensation waits for a worker with label x, which never comes.
    assert get_run(server, run_id).run.state == runs_pb2.RUN_STATE_ROLLING_BACK
    cancelled = server.runs.CancelRun(runs_pb2.CancelRunRequest(run_id=run_id), timeout=RPC_TIMEOUT)
    assert cancelled.state == runs_pb2.RUN_STATE_CANCELLED
    states = {j.id: j.status for j in get_run(server, run_id).jobs}
    assert states["a:undo"] == jobs_pb2.JOB_STATE_CANCELLED
    names = [event_name(e) for e in run_events(server, run_id)]
    assert names[-1] == "RUN_ROLLBACK_FINISHED"


SAGA = """
name: saga
on: push
jobs:
  book:
    run: book
    compensate: unbook
  pay:
    needs: book
    run: pay
    compensate:
      run: refund
      retries: 1
"""


def test_edits_and_exports_keep_compensations_rollback_and_limits(server: Running) -> None:
    text = SAGA.replace("on: push\n", "on: push\nrollback: on_failure\nparallel_limit: 2\n")
    wf = server.workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(source=text, workflow_id=f"saga-edit-{uid()}"),
        timeout=RPC_TIMEOUT,
    )
    edited = server.workflows.AddWorkflowJob(
        workflows_pb2.AddWorkflowJobRequest(workflow_id=wf.id, job=job("ship", needs=["pay"])),
        timeout=RPC_TIMEOUT,
    )
    assert edited.version == wf.version + 1
    now = server.workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id=wf.id), timeout=RPC_TIMEOUT
    )
    assert (now.rollback, now.parallel_limit) == ("on_failure", 2)
    by_id = {j.id: j for j in now.jobs}
    assert by_id["pay"].compensation.command == "refund"
    assert by_id["pay"].compensation.max_retries == 1
    exported = server.workflows.ExportWorkflows(
        workflows_pb2.ExportWorkflowsRequest(workflow_id=wf.id), timeout=RPC_TIMEOUT
    )
    again = server.workflows.ImportWorkflows(
        workflows_pb2.ImportWorkflowsRequest(text=exported.text, dry_run=True),
        timeout=RPC_TIMEOUT,
    )
    assert [w.action for w in again.workflows] == [workflows_pb2.IMPORT_ACTION_UNCHANGED]


def test_sdk_worker_and_cli_retry_rollback_progress(server: Running, tmp_path: Path) -> None:
    target = ["--target", server.grpc_target]
    worker = Worker(server.grpc_target, slots=2)
    tries: dict[str, int] = {}
    seen: dict[str, dict[str, dict[str, str]]] = {}

    def handle(ctx: JobContext) -> dict[str, str]:
        tries[ctx.job_id] = tries.get(ctx.job_id, 0) + 1
        seen[ctx.job_id] = ctx.upstream_outputs
        if ctx.job_id == "pay" and tries["pay"] == 1:
            raise RuntimeError("card declined")
        return {"by": ctx.job_id}

    for command in ("book", "pay", "unbook", "refund"):
        worker.handler(command)(handle)
    with client_for(server) as client, started_worker(worker):
        wf = client.create_workflow(SAGA, workflow_id=f"saga-{threading.get_ident()}").id
        started = trellis("run", wf, "--parallel-limit", "1", "--wait", *target)
        assert started.returncode != 0, started.stdout
        run_id = started.stdout.splitlines()[0]
        assert client.get_run(run_id).run.parallel_limit == 1

        retried = trellis("retry", run_id, *target)
        assert retried.returncode == 0, retried.stderr
        assert "(attempt 2)" in retried.stdout
        detail = client.wait_for_run(run_id, RPC_TIMEOUT)
        assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
        assert tries == {"book": 1, "pay": 2}
        assert seen["pay"] == {"book": {"by": "book"}}

        shown = trellis("progress", run_id, *target)
        assert shown.returncode == 0, shown.stderr
        assert "done: 2/2" in shown.stdout

        undone = trellis("rollback", run_id, "--job", "pay", *target)
        assert undone.returncode == 0, undone.stderr
        detail = wait_run_state(server, run_id, runs_pb2.RUN_STATE_PARTLY_ROLLED_BACK)
        assert seen["pay:undo"] == {"pay": {"by": "pay"}}
        assert "book:undo" not in tries
        assert client.rollback_run(run_id).state == runs_pb2.RUN_STATE_ROLLING_BACK
        wait_run_state(server, run_id, runs_pb2.RUN_STATE_ROLLED_BACK)
        assert seen["book:undo"] == {"book": {"by": "book"}}

        path = tmp_path / "once.yml"
        path.write_text(SAGA.replace("pay:\n", "pay2:\n"), encoding="utf-8")
        adhoc = trellis("run-adhoc", str(path), "--parallel-limit", "2", *target)
        assert adhoc.returncode == 0, adhoc.stderr
        adhoc_id = adhoc.stdout.strip()
        detail = client.wait_for_run(adhoc_id, RPC_TIMEOUT)
        assert detail.run.workflow_id == f"adhoc-{adhoc_id}"
        assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
        assert client.run_progress(adhoc_id).jobs_done == 2
        assert client.run_adhoc(SAGA, parallel_limit=1).parallel_limit == 1

        bad = trellis("run-adhoc", "-", *target, stdin="name: x\non: push\njobs: {}\n")
        assert bad.returncode != 0
        assert "jobs" in one_error_line(bad)


def test_the_readme_example() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    found = re.search(r"```yaml\n# saga\.yml\n(.*?)```", readme, re.DOTALL)
    assert found is not None
    wf = parse_text(found.group(1), source="saga.yml", workflow_id="saga")
    assert (wf.rollback, wf.parallel_limit) == ("on_failure", 2)
    assert [(j.id, j.compensate, j.compensate_retries) for j in wf.jobs] == [
        ("book", "./unbook.sh", 0),
        ("pay", "./refund.sh", 2),
    ]
    assert WorkflowDef.from_json(wf.to_json()) == wf
