"""Jobs go only to workers that can run them: labels that cover the job's, and
a handler for its command or shell commands (any command). A job that no
connected worker can run stays queued and says why.

Real server, real SDK workers (in the test process and as `trellis worker`
processes), the real `trellis` command, REST over real HTTP; SQLite and
PostgreSQL.
"""

from __future__ import annotations

import queue
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from conftest import Running, wait_until
from engine_helpers import create_workflow, run_jobs, start_run
from rest_helpers import assert_error, assert_worker_shape, assert_workflow_shape, rest
from sdk_helpers import (
    PROC_TIMEOUT,
    RUN_TIMEOUT,
    TRELLIS,
    Proc,
    client_for,
    job_by_id,
    started_worker,
    uid,
)

from trellis.server.engine import Capabilities, Claimed

# Claims drawn together in one statement need a deterministic batch of asks, which
# only the scheduler's grouped-claim API gives; concurrent RPCs would interleave by chance.
from trellis.server.engine._machine import ClaimAsk, claim
from trellis.v1 import jobs_pb2, runs_pb2, workers_pb2
from trellis.worker_sdk import Client, JobContext, Worker

ORG = "default"
QUEUED = jobs_pb2.JOB_STATE_QUEUED
SUCCEEDED = runs_pb2.RUN_STATE_SUCCEEDED


class HandlerWorker:
    """An SDK worker with one handler (no shell) that records what it ran."""

    def __init__(self, server: Running, command: str, labels: tuple[str, ...] = ("linux",)):
        self.ran: list[str] = []
        self._lock = threading.Lock()
        self.worker = Worker(
            server.grpc_target, labels=labels, slots=2, worker_id=uid("sdk"), lease_ttl_secs=10
        )
        self.worker.register(command, self._run)

    def _run(self, ctx: JobContext) -> dict[str, str]:
        with self._lock:
            self.ran.append(ctx.job_id)
        return {"by": "sdk"}


def shell_worker(server: Running, *labels: str) -> Proc:
    """`trellis worker --labels ...`, as an operator starts one."""
    args: list[str] = [TRELLIS, "worker", "--target", server.grpc_target, "--slots", "2"]
    if labels:
        args += ["--labels", ",".join(labels)]
    proc = Proc(args)
    proc.expect_stderr("connected to")
    return proc


def rest_of(lines: queue.Queue[str | None]) -> list[str]:
    """The lines a finished process printed that no one has read yet."""
    out = []
    while (line := lines.get(timeout=PROC_TIMEOUT)) is not None:
        out.append(line)
    return out


def workers(server: Running) -> dict[str, workers_pb2.Worker]:
    listed = server.workers.ListWorkers(workers_pb2.ListWorkersRequest(), timeout=RUN_TIMEOUT)
    return {w.worker_id: w for w in listed.workers}


def connected(server: Running, *worker_ids: str) -> None:
    wait_until(lambda: set(worker_ids) <= set(workers(server)))


@pytest.fixture
def grpc_server(start_server: Callable[..., Running]) -> Running:
    return start_server(rest_enabled=False)


@pytest.fixture
def client(grpc_server: Running) -> Iterator[Client]:
    with client_for(grpc_server) as c:
        yield c


def test_shell_jobs_go_to_the_shell_worker_and_a_handler_job_to_the_handler(
    grpc_server: Running, client: Client
) -> None:
    # The reported setup: an SDK worker with one handler beside `trellis
    # worker`, both labelled linux; three runs of the sample `ci` at once.
    sdk = HandlerWorker(grpc_server, "compile")
    mixed = uid()
    client.create_workflow(
        {
            "name": "Mixed",
            "on": "push",
            "jobs": {
                "prepare": {"run": "echo prepared"},
                "compile": {"run": "compile", "needs": "prepare"},
                "package": {"run": "echo packaged", "needs": "compile"},
            },
        },
        workflow_id=mixed,
    )
    with started_worker(sdk.worker):
        proc = shell_worker(grpc_server, "linux")
        try:
            connected(grpc_server, sdk.worker.worker_id)
            runs = [client.run_workflow("ci") for _ in range(3)]
            for run in runs:
                detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)
                assert detail.run.state == SUCCEEDED, [(j.id, j.output) for j in detail.jobs]
                # No attempt was spent on a worker that could not run it.
                assert [j.attempt for j in detail.jobs] == [0, 0, 0, 0]
            assert dict(job_by_id(detail, "build").outputs) == {"artifact": "dist/app.tar.gz"}
            assert sdk.ran == []

            # The handler's job, between two shell jobs, goes to the SDK worker.
            detail = client.wait_for_run(client.run_workflow(mixed).run_id, RUN_TIMEOUT)
            assert detail.run.state == SUCCEEDED, [(j.id, j.output) for j in detail.jobs]
            assert dict(job_by_id(detail, "compile").outputs) == {"by": "sdk"}
            assert sdk.ran == ["compile"]
        finally:
            proc.kill()


def test_a_job_no_connected_worker_can_run_waits_and_says_why_until_one_connects(
    grpc_server: Running, client: Client
) -> None:
    wf = uid()
    client.create_workflow(
        {
            "name": "Waits",
            "on": "push",
            "jobs": {
                "train": {"run": "echo trained", "labels": ["gpu"]},
                "report": {"run": "echo report"},
                "warm": {"run": "warm"},
            },
        },
        workflow_id=wf,
    )
    sdk = HandlerWorker(grpc_server, "warm")
    target = ["--target", grpc_server.grpc_target]
    with started_worker(sdk.worker):
        connected(grpc_server, sdk.worker.worker_id)
        follow = Proc([TRELLIS, "run", wf, "--follow", *target])
        try:
            run_id = follow.expect_stdout("").strip()
            follow.expect_stderr("job train is waiting: no connected worker has labels [gpu]")
            follow.expect_stderr(
                'job report is waiting: no connected worker handles command "echo report"'
            )
            wait_until(lambda: sdk.ran == ["warm"])
            jobs = {j.id: j for j in client.get_run(run_id).jobs}
            assert (jobs["train"].status, jobs["report"].status) == (QUEUED, QUEUED)
            assert jobs["train"].waiting_reason == "no connected worker has labels [gpu]"
            assert (
                jobs["report"].waiting_reason == 'no connected worker handles command "echo report"'
            )
            assert jobs["warm"].waiting_reason == ""
            status = subprocess.run(
                [TRELLIS, "status", "--run", run_id, *target],
                capture_output=True,
                text=True,
                timeout=PROC_TIMEOUT,
                check=True,
            )
            rows = {line.split()[0]: line for line in status.stdout.splitlines()[2:]}
            assert rows["train"].endswith("no connected worker has labels [gpu]")

            # A worker that can run both connects: they are taken at once.
            with started_worker(Worker(grpc_server.grpc_target, labels=["gpu"], shell=True)):
                assert follow.wait() == 0, "".join(follow.stderr_seen)
            done = client.get_run(run_id)
            assert done.run.state == SUCCEEDED
            assert [j.waiting_reason for j in done.jobs] == ["", "", ""]
            follow.expect_stdout(f"run {run_id}: succeeded")
            # Each reason was said once.
            assert not [line for line in rest_of(follow.stderr_lines) if "is waiting" in line]
        finally:
            follow.kill()


def test_an_assignment_stream_takes_only_the_queued_jobs_its_worker_can_run(
    grpc_server: Running, client: Client
) -> None:
    # Queued before any worker connects: the stream's own claim, not a
    # hand-off, decides what the SDK worker gets.
    wf = uid()
    client.create_workflow(
        {
            "name": "Queued",
            "on": "push",
            "jobs": {
                "a": {"run": "echo a"},
                "b": {"run": "echo b"},
                "compile": {"run": "compile"},
                "c": {"run": "echo c"},
            },
        },
        workflow_id=wf,
    )
    run = client.run_workflow(wf)
    reasons = {j.id: j.waiting_reason for j in client.get_run(run.run_id).jobs}
    assert reasons == dict.fromkeys(["a", "b", "compile", "c"], "no worker is connected")
    sdk = HandlerWorker(grpc_server, "compile")
    with started_worker(sdk.worker):
        wait_until(lambda: sdk.ran == ["compile"])
        jobs = {j.id: j for j in client.get_run(run.run_id).jobs}
        for job_id in ("a", "b", "c"):
            assert jobs[job_id].status == QUEUED
            assert jobs[job_id].waiting_reason == (
                f'no connected worker handles command "echo {job_id}"'
            )
        listed = workers(grpc_server)[sdk.worker.worker_id]
        assert (list(listed.capabilities.handlers), listed.capabilities.shell) == (
            ["compile"],
            False,
        )
        with started_worker(Worker(grpc_server.grpc_target, shell=True)):
            detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)
    assert detail.run.state == SUCCEEDED
    assert sdk.ran == ["compile"]


# --------------------------------------------------------------------------- REST


def test_rest_claims_take_only_jobs_the_claimer_can_run(server: Running) -> None:
    client = rest(server)
    workflow_id = client.create_workflow(
        [
            {"id": "sh1", "command": "echo 1", "required_labels": ["linux"]},
            {"id": "build1", "command": "build", "required_labels": ["linux"]},
            {"id": "sh2", "command": "echo 2"},
            {"id": "build2", "command": "build"},
            {"id": "build3", "command": "build"},
        ]
    )["id"]
    run_id = client.run(workflow_id)["run_id"]
    handler = {"handlers": ["build"], "shell": False}

    def claim(path: str, worker: str, **body: object) -> object:
        answer = client.post(path, {"worker_id": worker, "labels": ["linux"], **body})
        return client.ok(answer)

    got = claim("/api/jobs/claim", "sdk", capabilities=handler)
    assert isinstance(got, dict) and got["job"]["job_id"] == "build1"
    batch = claim("/api/jobs/claim-batch", "sdk", capabilities=handler, max_jobs=5)
    assert isinstance(batch, dict)
    assert [a["job"]["job_id"] for a in batch["assignments"]] == ["build2", "build3"]
    assert claim("/api/jobs/claim", "sdk", capabilities=handler) is None

    # What is left waits for a worker that runs shell commands, and says so
    # on the runs surface; the documented status shape stays as it is.
    detail = client.ok(client.get(f"/api/runs/{run_id}"))
    reasons = {j["id"]: j["waiting_reason"] for j in detail["jobs"]}
    assert reasons["sh1"] == 'no connected worker handles command "echo 1"'
    assert reasons["build1"] == ""
    assert_workflow_shape(client.status(workflow_id))
    assert "waiting_reason" not in client.status(workflow_id)["jobs"][0]

    # A worker that says nothing runs anything, as before; so does a shell one.
    old = claim("/api/jobs/claim", "old")
    assert isinstance(old, dict) and old["job"]["job_id"] == "sh1"
    shell = claim("/api/jobs/claim", "sh", capabilities={"shell": True})
    assert isinstance(shell, dict) and shell["job"]["job_id"] == "sh2"


def test_rest_registration_records_capabilities_and_refuses_bad_ones(server: Running) -> None:
    client = rest(server)
    worker_id = uid("worker")
    body = {"worker_id": worker_id, "labels": ["linux"], "capabilities": {"handlers": ["b", "a"]}}
    registered = client.ok(client.post("/api/workers/register", body))
    assert_worker_shape(registered)  # the documented shape, without capabilities
    assert_worker_shape(client.workers()[worker_id])
    listed = workers(server)[worker_id]
    assert list(listed.capabilities.handlers) == ["a", "b"]

    for bad, named in (
        ({"handlers": [""]}, "capabilities.handlers[0]"),
        ({"handlers": ["x" * 201]}, "capabilities.handlers[0]"),
        ({"handlers": "build"}, "capabilities.handlers"),
        ({"shell": "yes"}, "capabilities.shell"),
    ):
        for path in ("/api/workers/register", "/api/jobs/claim"):
            answer = client.post(path, {"worker_id": worker_id, "capabilities": bad})
            assert_error(answer, 400, "INVALID_ARGUMENT", named)


# --------------------------------------------------------------------------- hand-off


def test_a_hand_off_leases_only_jobs_the_waiting_claimer_runs(grpc_server: Running) -> None:
    dispatch = grpc_server.server.service.dispatch

    def shell(job_id: str) -> jobs_pb2.Job:
        return jobs_pb2.Job(id=job_id, command=f"echo {job_id}")

    wf = create_workflow(
        grpc_server,
        [shell("a"), jobs_pb2.Job(id="b", command="build"), shell("c")],
    )
    with ExitStack() as stack:
        streams = [
            stack.enter_context(
                dispatch.open(
                    ORG,
                    uid("waiting"),
                    (),
                    slots=5,
                    ttl_secs=60,
                    owner=grpc_server.subject,
                    commands=commands,
                )
            )
            for commands in (frozenset({"build"}), frozenset({"deploy"}))
        ]
        run_id = start_run(grpc_server, wf)
        handed: list[list[Claimed]] = [stream.take() for stream in streams]
        assert [[c.job["key"] for c in items] for items in handed] == [["b"], []]
        states = {k: j.status for k, j in run_jobs(grpc_server, run_id).items()}
        assert states == {"a": QUEUED, "b": jobs_pb2.JOB_STATE_RUNNING, "c": QUEUED}


def test_claims_drawn_together_keep_to_each_claimers_commands(grpc_server: Running) -> None:
    wf = create_workflow(
        grpc_server,
        [jobs_pb2.Job(id=f"j{i}", command=command) for i, command in enumerate("abcabc")],
    )
    start_run(grpc_server, wf)
    only_a = Capabilities(("a",))
    asks = [
        ClaimAsk(ORG, "a1", (), 60, 1, "a1", only_a),
        ClaimAsk(ORG, "bc", (), 60, 5, "bc", Capabilities(("b", "c"))),
        ClaimAsk(ORG, "a2", (), 60, 5, "a2", only_a),
        ClaimAsk(ORG, "none", (), 60, 5, "none", Capabilities()),
        ClaimAsk(ORG, "any", (), 60, 5, "any"),
    ]
    db = grpc_server.server.db
    with db.write() as conn:
        granted, _ = claim(conn, is_pg=db.is_postgres, asks=asks, now=db.now_ms(conn))
    # Asks that run the same commands share a draw, the first one taking the
    # oldest jobs; none takes a job it cannot run.
    assert [[c.job["key"] for c in mine] for mine in granted] == [
        ["j0"],
        ["j1", "j2", "j4", "j5"],
        ["j3"],
        [],
        [],
    ]
