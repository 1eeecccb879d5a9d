"""The ``trellis`` client commands as a user runs them (``.venv/bin/trellis``),
against a real server with an SDK shell worker. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import ROOT, Running, wait_until
from sdk_helpers import (
    PROC_TIMEOUT,
    WAIT_FOR_GO,
    client_for,
    free_port,
    job_by_id,
    one_error_line,
    started_worker,
    trellis,
    uid,
)

from trellis.v1 import jobs_pb2, runs_pb2, workers_pb2
from trellis.worker_sdk import Client, NotFound, Worker


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    return start_server(rest_enabled=False)


@pytest.fixture
def client(server: Running) -> Iterator[Client]:
    with client_for(server) as c:
        yield c


@pytest.fixture
def worker(server: Running) -> Iterator[Worker]:
    with started_worker(Worker(server.grpc_target, shell=True, slots=2)) as w:
        yield w


def test_run_wait_status_logs_and_workflows(
    server: Running, client: Client, worker: Worker
) -> None:
    target = ["--target", server.grpc_target]

    done = trellis("run", "hello", "--wait", *target)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.splitlines()[0].strip()
    assert client.get_run(run_id).run.state == runs_pb2.RUN_STATE_SUCCEEDED
    assert f"run {run_id}: succeeded" in done.stdout
    assert "Traceback" not in done.stderr

    status = trellis("status", "hello", *target)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == f"workflow hello, run {run_id}: succeeded"
    assert lines[1].split() == ["JOB", "STATE", "ATTEMPT", "DURATION", "OUTPUT"]
    assert lines[2].split()[:3] == ["hello", "succeeded", "0"]

    by_run = trellis("status", "--run", run_id, *target)
    assert by_run.returncode == 0, by_run.stderr
    assert by_run.stdout.splitlines()[0] == f"run {run_id} of hello: succeeded"

    logs = trellis("logs", "hello", "hello", *target)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "hello\n"

    listed = trellis("workflows", *target)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert listed.stdout.splitlines()[0].split()[:3] == ["ID", "NAME", "VERSION"]
    assert set(rows) == {"ci", "hello"}
    assert rows["hello"][1:] == ["Hello", "1", run_id, "succeeded", "1"]
    assert rows["ci"][1:] == ["CI", "1", "4"]  # never run: no run id, no state


def test_run_wait_of_a_failing_workflow_exits_non_zero(
    server: Running, client: Client, worker: Worker
) -> None:
    wf = uid()
    client.create_workflow(
        {
            "name": "Fails",
            "on": "push",
            "jobs": {
                "bad": {"run": "echo about to fail; echo 'it broke' >&2; exit 3"},
                "after": {"run": "echo never", "needs": "bad"},
            },
        },
        workflow_id=wf,
    )
    done = trellis("run", wf, "--wait", "--target", server.grpc_target)
    assert done.returncode != 0
    run_id = done.stdout.splitlines()[0].strip()
    detail = client.get_run(run_id)
    assert detail.run.state == runs_pb2.RUN_STATE_FAILED
    assert f"run {run_id}: failed" in done.stdout
    assert "exit code 3: it broke" in done.stdout
    assert "Traceback" not in done.stderr

    logs = trellis("logs", wf, "bad", "--target", server.grpc_target)
    assert logs.returncode == 0
    assert logs.stdout == "about to fail\n"
    assert logs.stderr == "it broke\n"


@pytest.mark.parametrize(
    "args",
    [
        ["run", "hello"],
        ["run", "hello", "--wait"],
        ["status", "hello"],
        ["status"],
        ["logs", "hello", "hello"],
        ["workflows"],
        ["runs"],
        ["runs", "hello"],
        ["workers"],
        ["cancel", "hello"],
        ["cancel", "--run", "r1"],
        ["apply", "-f", str(ROOT / "workflows" / "hello.yml")],
    ],
    ids=lambda a: "-".join(a),
)
def test_unreachable_target_is_one_error_line(args: list[str]) -> None:
    target = f"127.0.0.1:{free_port()}"
    done = trellis(*args, "--target", target)
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("trellis: error: "), done.stderr
    assert target in lines[0]


def test_unknown_workflow_is_one_error_line(server: Running) -> None:
    done = trellis("run", "nope", "--target", server.grpc_target)
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trellis: error: "), done.stderr
    assert "nope" in lines[0]


def test_run_follow_prints_each_jobs_log(server: Running, worker: Worker) -> None:
    done = trellis("run", "ci", "--follow", "--target", server.grpc_target)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for line in (
        "[checkout] checking out app",
        "[lint] static checks ok (strict=1)",
        "[test] unit tests ok (12 cases)",
        "[build] building app",
    ):
        assert line in out, out
    # The lines of one job keep their order.
    assert out.index("[checkout] checking out app") < out.index("[checkout] revision 1a2b3c4")
    run_id = out.splitlines()[0].strip()
    assert f"run {run_id}: succeeded" in out


def test_run_wait_timeout_is_one_error_line(server: Running, client: Client) -> None:
    wf = uid()
    # No worker has the label: the run cannot finish.
    client.create_workflow(
        {"name": "Stuck", "on": "push", "jobs": {"j": {"run": "true", "labels": ["nowhere"]}}},
        workflow_id=wf,
    )
    done = trellis("run", wf, "--wait", "--timeout", "1", "--target", server.grpc_target)
    assert done.returncode == 124
    run_id = done.stdout.splitlines()[0].strip()
    assert client.get_run(run_id).run.state == runs_pb2.RUN_STATE_RUNNING
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trellis: error: "), done.stderr


def test_run_follow_timeout_ends_the_follow_at_the_deadline(
    server: Running, client: Client, worker: Worker, tmp_path: Path
) -> None:
    wf = uid()
    go = tmp_path / "go"
    # The job runs (and its log is followed) until the test lets it end.
    client.create_workflow(
        {
            "name": "Slow",
            "on": "push",
            "env": {"GO": str(go)},
            "jobs": {"g": {"run": "echo started\n" + WAIT_FOR_GO}},
        },
        workflow_id=wf,
    )
    timeout = 1.0
    done = trellis("run", wf, "--follow", "--timeout", str(timeout), "--target", server.grpc_target)
    try:
        assert done.returncode == 124, done.stderr
        run_id = done.stdout.splitlines()[0].strip()
        # The command ended while the job it followed still ran (the job ends
        # only once the test lets it): the deadline, not the job, ended it.
        detail = client.get_run(run_id)
        assert detail.run.state == runs_pb2.RUN_STATE_RUNNING
        assert job_by_id(detail, "g").status in (
            jobs_pb2.JOB_STATE_QUEUED,
            jobs_pb2.JOB_STATE_RUNNING,
        )
        # One line: the timeout, no noise from the log streams it cut short.
        assert done.stderr.splitlines() == [
            f"trellis: error: run {run_id} did not finish within {timeout:g} s"
        ], done.stderr
    finally:
        go.touch()


def utc(ms: int) -> str:
    """How the tables show a time: UTC, to the second."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


STUCK = {"name": "Stuck", "on": "push", "jobs": {"j": {"run": "true", "labels": ["nowhere"]}}}


def test_apply_creates_workflows_and_new_versions(
    server: Running, client: Client, tmp_path: Path
) -> None:
    target = ["--target", server.grpc_target]
    a, b = uid(), uid()
    (tmp_path / f"{a}.yml").write_text("name: A\non: push\njobs:\n  one: {run: echo a}\n")
    (tmp_path / f"{b}.json").write_text(json.dumps(STUCK, indent="\t"))

    done = trellis(
        "apply", "-f", str(tmp_path / f"{a}.yml"), "-f", str(tmp_path / f"{b}.json"), *target
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"workflow {a}: version 1", f"workflow {b}: version 1"]
    assert client.get_workflow(a).name == "A"
    assert [job.id for job in client.get_workflow(b).jobs] == ["j"]

    # A changed file is a new version; an unchanged one keeps its own.
    (tmp_path / f"{a}.yml").write_text("name: A2\non: push\njobs:\n  two: {run: echo a}\n")
    again = trellis(
        "apply", "-f", str(tmp_path / f"{a}.yml"), "-f", str(tmp_path / f"{b}.json"), *target
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [f"workflow {a}: version 2", f"workflow {b}: version 1"]
    assert [job.id for job in client.get_workflow(a).jobs] == ["two"]

    # --id names the workflow instead of the file's stem; -f - reads stdin.
    other = uid()
    named = trellis("apply", "-f", str(tmp_path / f"{a}.yml"), "--id", other, *target)
    assert named.returncode == 0, named.stderr
    assert named.stdout == f"workflow {other}: version 1\n"
    assert client.get_workflow(other).name == "A2"
    piped = uid()
    fed = trellis("apply", "-f", "-", "--id", piped, *target, stdin=json.dumps(STUCK))
    assert fed.returncode == 0, fed.stderr
    assert fed.stdout == f"workflow {piped}: version 1\n"
    assert client.get_workflow(piped).name == "Stuck"


def test_apply_prints_the_servers_message_for_an_invalid_file(
    server: Running, client: Client, tmp_path: Path
) -> None:
    target = ["--target", server.grpc_target]
    bad, good = tmp_path / f"{uid()}.yml", tmp_path / f"{uid()}.yml"
    bad.write_text("name: Bad\non: push\njobs:\n  b: {run: 'true', needs: nope}\n")
    good.write_text("name: Good\non: push\njobs:\n  g: {run: 'true'}\n")

    done = trellis("apply", "-f", str(bad), "-f", str(good), *target)
    assert done.returncode == 1
    assert one_error_line(done) == f"{bad}: api: job 'b': needs unknown job 'nope'"
    # The other file still went; the rejected one stored nothing.
    assert done.stdout == f"workflow {good.stem}: version 1\n"
    with pytest.raises(NotFound):
        client.get_workflow(bad.stem)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-f", "a.yml", "-f", "b.yml", "--id", "x"], 2, "--id names one workflow"),
        (["-f", "-"], 2, "-f - needs --id"),
        (["-f", "missing.yml", "-f", "good.yml"], 1, "missing.yml: cannot read it"),
        (["-f", "empty.yml"], 1, "empty.yml: the file is empty"),
    ],
    ids=["id-with-two-files", "stdin-without-id", "missing-file", "empty-file"],
)
def test_apply_refuses_bad_arguments_and_applies_nothing(
    server: Running,
    client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    code: int,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.yml").write_text("name: Good\non: push\njobs:\n  g: {run: 'true'}\n")
    (tmp_path / "empty.yml").write_text("\n")
    done = trellis("apply", *args, "--target", server.grpc_target)
    assert done.returncode == code
    assert message in one_error_line(done)
    assert done.stdout == ""
    assert {wf.id for wf in client.list_workflows()} == {"ci", "hello"}


def test_cancel_a_run_or_the_latest_run_of_a_workflow(server: Running, client: Client) -> None:
    target = ["--target", server.grpc_target]
    wf = uid()
    client.create_workflow(STUCK, workflow_id=wf)  # its runs wait: no worker has the label
    first, second = client.run_workflow(wf), client.run_workflow(wf)

    by_run = trellis("cancel", "--run", first.run_id, *target)
    assert by_run.returncode == 0, by_run.stderr
    assert by_run.stdout == f"run {first.run_id} of {wf}: cancelled\n"
    assert client.get_run(first.run_id).run.state == runs_pb2.RUN_STATE_CANCELLED
    assert client.get_run(second.run_id).run.state == runs_pb2.RUN_STATE_RUNNING

    latest = trellis("cancel", wf, *target)
    assert latest.returncode == 0, latest.stderr
    assert latest.stdout == f"run {second.run_id} of {wf}: cancelled\n"
    assert client.get_run(second.run_id).run.state == runs_pb2.RUN_STATE_CANCELLED

    for args in (["nope"], ["--run", "nope"]):
        unknown = trellis("cancel", *args, *target)
        assert unknown.returncode == 1
        assert "'nope' not found" in one_error_line(unknown)
    never_run = trellis("cancel", "ci", *target)
    assert never_run.returncode == 1
    assert one_error_line(never_run) == "workflow 'ci' has no run to cancel"


@pytest.mark.parametrize("args", [[], ["x", "--run", "y"]], ids=["neither", "both"])
def test_cancel_takes_a_workflow_or_a_run(args: list[str]) -> None:
    done = trellis("cancel", *args)
    assert done.returncode == 2
    assert "trellis cancel: error:" in done.stderr


def test_runs_lists_runs_newest_first(server: Running, client: Client) -> None:
    target = ["--target", server.grpc_target]
    wf = uid()
    client.create_workflow(STUCK, workflow_id=wf)
    made = [client.run_workflow(wf).run_id for _ in range(3)]
    client.cancel_run(made[0])
    hello = client.run_workflow("hello").run_id  # another workflow's

    newest = [run.run_id for run in client.list_runs(wf)]
    assert sorted(newest) == sorted(made)
    done = trellis("runs", wf, "--limit", "2", *target)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["RUN", "WORKFLOW", "VERSION", "STATE", "STARTED", "ENDED", "INPUTS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == newest[:2]
    for run_id, row in rows.items():
        run = client.get_run(run_id).run
        assert row[1:5] == [wf, "1", "running", utc(run.created_at.ToMilliseconds())]
        assert row[4].endswith("Z") and len(row) == 5  # no end yet

    everything = trellis("runs", "--json", *target)
    assert everything.returncode == 0, everything.stderr
    listed = {run["run_id"]: run for run in json.loads(everything.stdout)}
    assert set(listed) == {*made, hello}
    cancelled = client.get_run(made[0]).run
    assert listed[made[0]] == {
        "run_id": made[0],
        "workflow_id": wf,
        "workflow_version": 1,
        "state": "cancelled",
        "created_at_ms": cancelled.created_at.ToMilliseconds(),
        "finished_at_ms": cancelled.finished_at.ToMilliseconds(),
        "inputs": {},
        "request_id": None,
    }
    assert listed[made[1]]["finished_at_ms"] is None
    assert listed[hello]["workflow_id"] == "hello"

    unknown = trellis("runs", "nope", *target)
    assert unknown.returncode == 1
    assert "'nope' not found" in one_error_line(unknown)
    assert trellis("runs", "--limit", "0", *target).returncode == 2


def test_workers_lists_workers_and_what_they_do(
    server: Running, client: Client, tmp_path: Path
) -> None:
    target = ["--target", server.grpc_target]
    go = tmp_path / "go"
    wf = uid()
    client.create_workflow(
        {
            "name": "Busy",
            "on": "push",
            "env": {"GO": str(go)},
            "jobs": {"w": {"run": WAIT_FOR_GO, "labels": ["gpu"]}},
        },
        workflow_id=wf,
    )
    busy_id, idle_id = uid("busy"), uid("idle")
    busy = Worker(server.grpc_target, worker_id=busy_id, labels=["linux", "gpu"], shell=True)
    idle = Worker(server.grpc_target, worker_id=idle_id, labels=["linux"], shell=True)
    with started_worker(busy), started_worker(idle):
        run = client.run_workflow(wf)
        try:
            wait_until(
                lambda: (
                    {w.worker_id: w.status for w in client.list_workers()}
                    == {
                        busy_id: workers_pb2.WORKER_STATUS_BUSY,
                        idle_id: workers_pb2.WORKER_STATUS_IDLE,
                    }
                )
            )
            before = {w.worker_id: w for w in client.list_workers()}
            done = trellis("workers", *target)
            after = {w.worker_id: w for w in client.list_workers()}
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            assert lines[0].split() == ["WORKER", "LABELS", "STATE", "JOB", "LAST", "SEEN"]
            rows = {line.split()[0]: line.split() for line in lines[1:]}
            assert rows[busy_id][1:4] == ["gpu,linux", "busy", f"{wf}/w"]
            assert rows[idle_id][1:3] == ["linux", "idle"]
            # Last seen: the time of its latest heartbeat, which may have moved on
            # (more than once while the command ran).
            seen_first, seen_last = (
                utc(seen[idle_id].last_heartbeat.ToMilliseconds()) for seen in (before, after)
            )
            assert seen_first <= rows[idle_id][3] <= seen_last

            as_json = trellis("workers", "--json", *target)
            assert as_json.returncode == 0, as_json.stderr
            listed = {w["worker_id"]: w for w in json.loads(as_json.stdout)}
            assert listed[busy_id]["labels"] == ["gpu", "linux"]
            assert listed[busy_id]["status"] == "busy"
            assert listed[busy_id]["current_job"] == f"{wf}/w"
            assert listed[idle_id]["status"] == "idle"
            assert listed[idle_id]["current_job"] is None
            assert (
                listed[idle_id]["registered_at_ms"]
                == before[idle_id].registered_at.ToMilliseconds()
            )
        finally:
            go.touch()
        client.wait_for_run(run.run_id, PROC_TIMEOUT)
