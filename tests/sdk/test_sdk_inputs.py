"""Run inputs, idempotent starts and batch starts through the SDK and the
``trellis`` command: handlers and shell jobs see the run's inputs, request ids
make starts safe to retry, a batch starts all of its runs or none. Against a
real server (SQLite and PostgreSQL) with real workers."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Running, race
from google.protobuf import json_format
from sdk_helpers import (
    RUN_TIMEOUT,
    TRELLIS,
    Proc,
    client_for,
    free_port,
    job_by_id,
    log_text,
    one_error_line,
    started_worker,
    trellis,
    uid,
)

from trellis.v1 import runs_pb2
from trellis.worker_sdk import (
    AlreadyExists,
    Client,
    InvalidArgument,
    JobContext,
    NotFound,
    RunRequest,
    TrellisError,
    Worker,
)
from trellis.worker_sdk._shell import job_env

# One input of each type: a required one, defaults of each kind, and one
# with neither (absent from runs that do not give it).
INPUTS: dict[str, Any] = {
    "count": {"type": "number", "required": True, "description": "how many"},
    "target": {"type": "string", "default": "staging"},
    "dry-run": {"type": "boolean", "default": False},
    "config": {"type": "json", "default": {"regions": ["eu", "us"], "replicas": 2}},
    "note": {"description": "free text"},
}
DEFAULTS = {
    "target": "staging",
    "dry-run": False,
    "config": {"regions": ["eu", "us"], "replicas": 2},
}
# Labels no worker has: runs of such a workflow stay queued.
NOWHERE = ["nowhere"]

WORKER_TOKEN_SECRET = "deploy-key-7d1e0c3b"


@pytest.fixture
def client(server: Running) -> Iterator[Client]:
    with client_for(server) as c:
        yield c


def workflow(client: Client, jobs: dict[str, Any], **extra: Any) -> str:
    wf = uid()
    client.create_workflow(
        {"name": "Inputs", "on": "push", "inputs": INPUTS, "jobs": jobs, **extra}, workflow_id=wf
    )
    return wf


def queued_workflow(client: Client) -> str:
    """A workflow with inputs whose runs stay queued (no worker has its label)."""
    return workflow(client, {"j": {"run": "true", "labels": NOWHERE}})


def inputs_of(run: runs_pb2.Run) -> dict[str, Any]:
    # Struct numbers are doubles: 3.0 == 3, so comparisons with ints hold.
    return json_format.MessageToDict(run.inputs)


# -- handlers and shell jobs -----------------------------------------------------


def test_handlers_see_the_runs_inputs_with_defaults_filled_in(
    server: Running, client: Client
) -> None:
    wf = workflow(
        client,
        {"first": {"run": "record"}, "second": {"run": "record", "needs": "first"}},
    )
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    worker = Worker(server.grpc_target)

    @worker.handler("record")
    def record(ctx: JobContext) -> None:
        seen[(ctx.run_id, ctx.job_id)] = ctx.inputs
        assert ctx.inputs is seen[(ctx.run_id, ctx.job_id)]  # converted once

    given = {"count": 3, "config": {"nested": [1, 2.5, None, {"deep": True}]}}
    with started_worker(worker):
        run = client.run_workflow(wf, inputs=given)
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)
        fractional = client.run_workflow(wf, inputs={"count": 2.5, "note": ""})
        client.wait_for_run(fractional.run_id, RUN_TIMEOUT)

    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED, job_by_id(detail, "first").output
    expected = {**DEFAULTS, **given}
    # Every job of the run sees them, as JSON parsing would give them.
    assert seen[(run.run_id, "first")] == expected
    assert seen[(run.run_id, "second")] == expected
    got = seen[(run.run_id, "first")]
    assert type(got["count"]) is int
    assert [type(v) for v in got["config"]["nested"]] == [int, float, type(None), dict]
    assert seen[(fractional.run_id, "second")] == {**DEFAULTS, "count": 2.5, "note": ""}
    # The run shows what it was started with, defaults filled in.
    assert inputs_of(run) == expected
    assert inputs_of(detail.run) == expected
    assert not run.HasField("request_id")


def test_a_workflow_without_inputs_gives_handlers_none(server: Running, client: Client) -> None:
    worker = Worker(server.grpc_target)
    seen: list[dict[str, Any]] = []
    worker.handler("echo")(lambda ctx: seen.append(ctx.inputs))
    wf = uid()
    client.create_workflow(
        {"name": "Plain", "on": "push", "jobs": {"j": {"run": "echo"}}}, workflow_id=wf
    )
    with started_worker(worker):
        detail = client.wait_for_run(client.run_workflow(wf).run_id, RUN_TIMEOUT)
    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    assert seen == [{}]
    assert inputs_of(detail.run) == {}


def test_shell_jobs_get_inputs_as_variables_that_the_shell_never_interprets(
    server: Running, client: Client, tmp_path: Path
) -> None:
    marker = tmp_path / "interpreted"
    # Everything a shell would act on if the value were spliced into a command.
    nasty = (
        f'it\'s  "quoted" $(touch {marker}) `touch {marker}`; touch {marker} && exit 9\n'
        f"$HOME ${{PATH}} * ~ | & > {marker} < /dev/null \\ %0A \t'\"\n"
        "last line, no newline after it ;"
    )
    wf = workflow(
        client,
        {
            # printf's own format is fixed: the value is only ever an argument.
            "echo": {"run": 'printf "%s" "$TRELLIS_INPUT_NOTE"'},
            "env": {"run": "env -u TRELLIS_INPUT_NOTE"},
            "out": {"run": 'echo "::set-output name=target::$TRELLIS_INPUT_TARGET"'},
        },
    )
    env = {
        **os.environ,
        "TRELLIS_TOKEN": server.token,
        "DEPLOY_KEY": WORKER_TOKEN_SECRET,
        "TRELLIS_WORKER_SECRET_ENV": "DEPLOY_KEY",
        # A variable of the worker's that looks like an input: jobs see only their run's.
        "TRELLIS_INPUT_STALE": "from-the-worker",
    }
    proc = Proc(
        [TRELLIS, "worker", "--target", server.grpc_target, "--pass-env", "TRELLIS_INPUT_*"],
        env=env,
    )
    try:
        run = client.run_workflow(
            wf, inputs={"count": 3, "note": nasty, "target": "prod eu-1", "dry-run": True}
        )
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, "".join(proc.stderr_seen)
    finally:
        proc.kill()

    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED, [j.output for j in detail.jobs]
    assert log_text(client, wf, "echo", run.run_id) == nasty
    assert not marker.exists()
    assert dict(job_by_id(detail, "out").outputs) == {"target": "prod eu-1"}

    text = log_text(client, wf, "env", run.run_id)
    seen = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert {k: v for k, v in seen.items() if k.startswith("TRELLIS_INPUT_")} == {
        "TRELLIS_INPUT_COUNT": "3",
        "TRELLIS_INPUT_TARGET": "prod eu-1",
        "TRELLIS_INPUT_DRY_RUN": "true",
        "TRELLIS_INPUT_CONFIG": '{"regions":["eu","us"],"replicas":2}',
    }
    # The worker's own credentials and secrets still stay out.
    assert "TRELLIS_TOKEN" not in seen and "DEPLOY_KEY" not in seen
    assert server.token not in text and WORKER_TOKEN_SECRET not in text
    assert seen["TRELLIS_JOB_ID"] == "env"


def test_a_jobs_input_variables_are_exactly_its_runs_inputs() -> None:
    def env_for(inputs: dict[str, Any]) -> dict[str, str]:
        return job_env(
            job_id="j",
            run_id="r",
            workflow_id="w",
            attempt=0,
            env={"TRELLIS_INPUT_GHOST": "from-the-workflow", "MINE": "1"},
            upstream_outputs={},
            base={"PATH": "/bin", "TRELLIS_INPUT_STALE": "from-the-worker"},
            inputs=inputs,
        )

    seen = env_for({"dry-run": True, "list": [1, "two"], "none": None, "text": "a b"})
    assert {k: v for k, v in seen.items() if k.startswith("TRELLIS_INPUT_")} == {
        "TRELLIS_INPUT_DRY_RUN": "true",
        "TRELLIS_INPUT_LIST": '[1,"two"]',
        "TRELLIS_INPUT_NONE": "null",
        "TRELLIS_INPUT_TEXT": "a b",
    }
    assert seen["MINE"] == "1" and seen["PATH"] == "/bin"
    # No environment variable can hold a NUL: refused by name, not by a crash.
    with pytest.raises(ValueError, match=r"^input 'note' holds a NUL character"):
        env_for({"note": "a\x00b"})


# -- idempotent starts -------------------------------------------------------------


def test_a_start_retried_with_its_request_id_answers_the_same_run(
    server: Running, client: Client
) -> None:
    wf = queued_workflow(client)
    request_id = uid("req")
    first = client.run_workflow(wf, inputs={"count": 1}, request_id=request_id)
    again = client.run_workflow(wf, inputs={"count": 1}, request_id=request_id)
    assert again.run_id == first.run_id
    assert first.request_id == again.request_id == request_id
    assert client.get_run(first.run_id).run.request_id == request_id

    # The same id with other inputs is another request: refused, not started.
    with pytest.raises(AlreadyExists):
        client.run_workflow(wf, inputs={"count": 2}, request_id=request_id)

    # Retries that race each other still start one run.
    concurrent = uid("req")
    ids = race(8, lambda _: client.run_workflow(wf, inputs={"count": 5}, request_id=concurrent))
    assert len({run.run_id for run in ids}) == 1
    assert sorted(r.run_id for r in client.list_runs(wf)) == sorted([first.run_id, ids[0].run_id])


# -- batch starts ------------------------------------------------------------------


def test_run_workflows_starts_every_run_and_answers_them_in_order(
    server: Running, client: Client
) -> None:
    wf = queued_workflow(client)
    other = queued_workflow(client)
    request_id = uid("req")
    runs = client.run_workflows(
        [
            RunRequest(wf, {"count": 1}),
            RunRequest(other, {"count": 2, "target": "prod"}),
            RunRequest(wf, {"count": 3}, request_id=request_id),
        ]
    )
    assert [run.workflow_id for run in runs] == [wf, other, wf]
    assert len({run.run_id for run in runs}) == 3
    given_each = [{"count": 1}, {"count": 2, "target": "prod"}, {"count": 3}]
    for run, given in zip(runs, given_each, strict=True):
        assert inputs_of(client.get_run(run.run_id).run) == {**DEFAULTS, **given}
    assert sorted(r.run_id for r in client.list_runs(wf)) == sorted(
        [runs[0].run_id, runs[2].run_id]
    )
    # An item's request id makes it safe to retry, in a batch or alone.
    retried = client.run_workflows([RunRequest(wf, {"count": 3}, request_id=request_id)])
    assert [run.run_id for run in retried] == [runs[2].run_id]
    assert client.run_workflow(wf, inputs={"count": 3}, request_id=request_id).run_id == (
        runs[2].run_id
    )
    assert client.run_workflows([]) == []


@pytest.mark.parametrize(
    ("bad", "error", "words"),
    [
        (RunRequest("WF", {"count": "many"}), InvalidArgument, "inputs.count"),
        (RunRequest("WF", {}), InvalidArgument, "missing required input 'count'"),
        (RunRequest("WF", {"count": 1, "colour": "red"}), InvalidArgument, "'colour'"),
        (RunRequest("no-such-workflow", {"count": 1}), NotFound, "'no-such-workflow'"),
    ],
    ids=["mistyped", "missing", "unknown", "unknown-workflow"],
)
def test_a_bad_item_refuses_the_whole_batch_naming_its_index(
    server: Running, client: Client, bad: RunRequest, error: type[TrellisError], words: str
) -> None:
    wf = queued_workflow(client)
    if bad.workflow_id == "WF":
        bad = RunRequest(wf, bad.inputs)
    items = [RunRequest(wf, {"count": 1}), RunRequest(wf, {"count": 2}), bad]
    with pytest.raises(error) as refused:
        client.run_workflows(items)
    message = str(refused.value)
    assert message.startswith("requests[2]: ") and words in message, message
    assert client.list_runs(wf) == []


def test_values_json_cannot_carry_are_refused_before_any_call() -> None:
    # Nothing listens there: a call would fail with ConnectionLost instead.
    with Client(f"127.0.0.1:{free_port()}", timeout=5) as offline:
        with pytest.raises(ValueError, match=r"^inputs\.big: 9007199254740993 is beyond"):
            offline.run_workflow("wf", inputs={"big": 2**53 + 1})
        with pytest.raises(ValueError, match=r"^inputs\.cfg\.tags\[1\]: a value of type 'set'"):
            offline.run_workflow("wf", inputs={"cfg": {"tags": ["a", {"b"}]}})
        with pytest.raises(ValueError, match=r"^requests\[1\]\.inputs\.x: nan is not a JSON"):
            offline.run_workflows([RunRequest("wf"), RunRequest("wf", {"x": float("nan")})])
        with pytest.raises(TypeError, match=r"^requests\[0\]: expected a RunRequest, got str"):
            offline.run_workflows(["wf"])  # type: ignore[list-item]


# -- the command line --------------------------------------------------------------


def test_run_reads_each_input_as_its_declared_type(server: Running, client: Client) -> None:
    wf = queued_workflow(client)
    done = trellis(
        "run",
        wf,
        "--input",
        "count=3",
        "--input",
        "target=prod eu=1",
        "--input",
        "dry-run=TRUE",
        "--input",
        'config={"regions": ["ap"]}',
        "--input",
        "note=42",  # a string input keeps its text
        "--target",
        server.grpc_target,
    )
    assert done.returncode == 0, done.stderr
    run = client.get_run(done.stdout.strip()).run
    assert json_format.MessageToDict(run.inputs) == {
        "count": 3,
        "target": "prod eu=1",
        "dry-run": True,
        "config": {"regions": ["ap"]},
        "note": "42",
    }


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("inputs.yaml", "count: 2.5\ntarget: from-file\nconfig: {regions: [eu]}\ndry-run: true\n"),
        (
            "inputs.json",
            '{"count": 2.5, "target": "from-file", "config": {"regions": ["eu"]}, "dry-run": true}',
        ),
    ],
)
def test_run_takes_an_inputs_file_that_input_options_override(
    server: Running, client: Client, tmp_path: Path, name: str, text: str
) -> None:
    wf = queued_workflow(client)
    path = tmp_path / name
    path.write_text(text)
    done = trellis(
        "run",
        wf,
        "--inputs-file",
        str(path),
        "--input",
        "target=from-option",
        "--target",
        server.grpc_target,
    )
    assert done.returncode == 0, done.stderr
    run = client.get_run(done.stdout.strip()).run
    assert json_format.MessageToDict(run.inputs) == {
        "count": 2.5,
        "target": "from-option",
        "config": {"regions": ["eu"]},
        "dry-run": True,
    }


def test_run_with_a_request_id_twice_starts_one_run(server: Running, client: Client) -> None:
    wf = queued_workflow(client)
    args = ["run", wf, "--input", "count=1", "--request-id", uid("req")]
    args += ["--target", server.grpc_target]
    first, second = trellis(*args), trellis(*args)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    assert [run.run_id for run in client.list_runs(wf)] == [first.stdout.strip()]


def test_run_refuses_bad_inputs_with_one_line_and_starts_nothing(
    server: Running, client: Client, tmp_path: Path
) -> None:
    wf = queued_workflow(client)
    target = ["--target", server.grpc_target]
    a_list = tmp_path / "list.yaml"
    a_list.write_text("- 1\n- 2\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("count: [1,\n")
    dated = tmp_path / "dated.yaml"
    dated.write_text("count: 1\nnote: 2025-01-31\n")

    refusals = [
        (["--input", "count=abc"], 2, "--input count: expected a number, got 'abc'"),
        (["--input", "count=1", "--input", "dry-run=maybe"], 2, "expected true or false"),
        (["--input", "count=1", "--input", "config={oops"], 2, "--input config: not JSON"),
        (["--inputs-file", str(a_list)], 2, "expected a mapping of input names to values"),
        (["--inputs-file", str(broken)], 2, "neither JSON nor YAML"),
        (["--inputs-file", str(dated)], 2, "inputs.note: a value of type 'date' is not JSON"),
        (["--inputs-file", str(tmp_path / "absent.json")], 2, "cannot read it"),
        # The server's own refusals: an undeclared name goes as a string.
        (["--input", "count=1", "--input", "colour=red"], 1, "colour"),
        ([], 1, "count"),
    ]
    for extra, code, words in refusals:
        done = trellis("run", wf, *extra, *target)
        assert done.returncode == code, (extra, done.stderr)
        assert words in one_error_line(done), (extra, done.stderr)
        assert done.stdout == ""

    done = trellis("run", wf, "--input", "count", *target)
    assert done.returncode == 2
    assert "argument --input: expected NAME=VALUE, got 'count'" in done.stderr
    assert client.list_runs(wf) == []


def test_input_options_need_a_token_that_reads_workflows_a_file_does_not(
    server: Running, client: Client, tmp_path: Path
) -> None:
    wf = queued_workflow(client)
    run_only = client.create_personal_access_token("runner", ["workflows:run"])
    as_runner = ["--target", server.grpc_target, "--token", run_only, "--organization-id"]
    as_runner.append("default")
    typed = tmp_path / "inputs.json"
    typed.write_text('{"count": 2}')

    refused = trellis("run", wf, "--input", "count=2", *as_runner)
    assert refused.returncode == 1
    assert "--input reads the workflow's declared input types" in one_error_line(refused)
    done = trellis("run", wf, "--inputs-file", str(typed), *as_runner)
    assert done.returncode == 0, done.stderr
    assert inputs_of(client.get_run(done.stdout.strip()).run) == {**DEFAULTS, "count": 2}


def test_status_and_runs_show_a_runs_inputs(server: Running, client: Client) -> None:
    wf = queued_workflow(client)
    target = ["--target", server.grpc_target]
    request_id = uid("req")
    run = client.run_workflow(wf, inputs={"count": 4, "note": "a\nb"}, request_id=request_id)
    plain = client.run_workflow("hello")
    shown = json.dumps(
        {**DEFAULTS, "count": 4, "note": "a\nb"}, separators=(",", ":"), sort_keys=True
    )

    by_run = trellis("status", "--run", run.run_id, *target)
    assert by_run.returncode == 0, by_run.stderr
    assert by_run.stdout.splitlines()[:2] == [
        f"run {run.run_id} of {wf}: running",
        f"inputs: {shown}",
    ]
    by_workflow = trellis("status", wf, *target)
    assert by_workflow.stdout.splitlines()[1] == f"inputs: {shown}"
    without = trellis("status", "--run", plain.run_id, *target)
    assert without.stdout.splitlines()[1].split()[0] == "JOB"

    table = trellis("runs", *target)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[-1] == "INPUTS"
    row = next(line for line in lines if line.startswith(run.run_id))
    assert row.endswith(shown[:59] + "…")

    listed = {r["run_id"]: r for r in json.loads(trellis("runs", "--json", *target).stdout)}
    assert listed[run.run_id]["inputs"] == {**DEFAULTS, "count": 4, "note": "a\nb"}
    assert listed[run.run_id]["request_id"] == request_id
    assert listed[plain.run_id]["inputs"] == {}
    assert listed[plain.run_id]["request_id"] is None
