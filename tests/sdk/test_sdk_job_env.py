"""What a shell job inherits from its worker, and the secrets masked in what it
writes: `trellis worker` processes and SDK workers against a real server.
Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Running
from sdk_helpers import (
    PROC_TIMEOUT,
    RUN_TIMEOUT,
    TRELLIS,
    Proc,
    client_for,
    free_port,
    job_by_id,
    log_text,
    started_worker,
    uid,
)

from trellis.v1 import jobs_pb2, logs_pb2, runs_pb2
from trellis.worker_sdk import Client, JobContext, Worker

DEPLOY_KEY = "deploy-key-5f2c9e7a"
PASSWORD = "hunter2-but-longer"


@pytest.fixture
def client(server: Running) -> Iterator[Client]:
    with client_for(server) as c:
        yield c


def _env_lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_a_shell_job_does_not_see_its_workers_token(server: Running, client: Client) -> None:
    wf = uid()
    client.create_workflow(
        {"name": "Env", "on": "push", "jobs": {"env": {"run": "env"}}}, workflow_id=wf
    )
    # The worker takes its token from TRELLIS_TOKEN, as `trellis worker` does.
    assert os.environ["TRELLIS_TOKEN"] == server.token
    with started_worker(Worker(server.grpc_target, shell=True)):
        run = client.run_workflow(wf)
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)

    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    text = log_text(client, wf, "env", run.run_id)
    assert "TRELLIS_TOKEN" not in text
    assert server.token not in text
    assert _env_lines(text)["TRELLIS_JOB_ID"] == "env"


def test_shell_jobs_get_base_and_passed_variables_but_no_credentials(
    server: Running, client: Client, tmp_path: Path
) -> None:
    token = server.token
    # What a job could read from elsewhere than its environment: the worker
    # still masks it in the log, in outputs and in failure messages.
    leaked = tmp_path / "leaked"
    leaked.write_text(f"{token}\n{PASSWORD}\n{DEPLOY_KEY}\n")
    wf = uid()
    client.create_workflow(
        {
            "name": "Env",
            "on": "push",
            "env": {"LEAKED": str(leaked), "FROM_WORKFLOW": "wf-value"},
            "jobs": {
                "dump": {
                    "run": 'env\ncat "$LEAKED"\n'
                    'echo "::set-output name=tok::$(head -n 1 "$LEAKED")"\n'
                    'echo "::set-output name=plain::$PASSED_VAR"',
                },
                "fail": {"run": 'head -n 1 "$LEAKED" >&2; exit 3'},
            },
        },
        workflow_id=wf,
    )
    env = {
        **os.environ,
        "TRELLIS_TOKEN": token,
        "TRELLIS_PASSWORD": PASSWORD,
        "PASSED_VAR": "visible-1",
        "ALIASED_TOKEN": token,
        "DEPLOY_KEY": DEPLOY_KEY,
        "DEPLOY_REGION": "eu-1",
        "UNLISTED_VAR": "not-for-jobs",
        "TRELLIS_WORKER_SECRET_ENV": "DEPLOY_KEY",
    }
    proc = Proc(
        [
            TRELLIS,
            "worker",
            "--target",
            server.grpc_target,
            "--pass-env",
            "PASSED_VAR",
            "--pass-env",
            "ALIASED_TOKEN",
            "--pass-env",
            "DEPLOY_*",
        ],
        env=env,
    )
    try:
        run = client.run_workflow(wf)
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait() == 0, "".join(proc.stderr_seen)
    finally:
        proc.kill()

    text = log_text(client, wf, "dump", run.run_id)
    for secret in (token, PASSWORD, DEPLOY_KEY):
        assert secret not in text
    seen = _env_lines(text)
    # The base, what the operator passed, the workflow's own, Trellis's.
    assert seen["PATH"] == os.environ["PATH"]
    assert seen["HOME"] == os.environ["HOME"]
    assert seen["PASSED_VAR"] == "visible-1"
    assert seen["DEPLOY_REGION"] == "eu-1"
    assert seen["FROM_WORKFLOW"] == "wf-value"
    assert seen["TRELLIS_JOB_ID"] == "dump"
    # Credentials and secrets are not passed, however they were asked for.
    for name in ("TRELLIS_TOKEN", "TRELLIS_PASSWORD", "ALIASED_TOKEN", "DEPLOY_KEY"):
        assert name not in seen, name
    assert "UNLISTED_VAR" not in seen
    assert "TRELLIS_WORKER_SECRET_ENV" not in seen
    # What the job read from the file is masked line by line.
    assert "\n***\n***\n***\n::set-output name=tok::***\n" in text, text[-300:]

    dump = job_by_id(detail, "dump")
    assert dict(dump.outputs) == {"tok": "***", "plain": "visible-1"}
    failed = job_by_id(detail, "fail")
    assert failed.status == jobs_pb2.JOB_STATE_FAILED
    assert failed.output == "exit code 3: ***"
    assert token not in log_text(client, wf, "fail", run.run_id)


def test_secret_written_in_pieces_is_masked_in_a_handlers_log(
    server: Running, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-handler-value"
    monkeypatch.setenv("HANDLER_SECRET", secret)
    wf = uid()
    client.create_workflow(
        {"name": "Pieces", "on": "push", "jobs": {"talk": {"run": "talk"}}}, workflow_id=wf
    )
    worker = Worker(server.grpc_target, secret_env=["HANDLER_SECRET"])

    @worker.handler("talk")
    def talk(ctx: JobContext) -> dict[str, str]:
        # Each piece is flushed: the log receives them as separate writes.
        print(f"key={secret[:7]}", end="", flush=True)
        print(secret[7:], flush=True)
        ctx.log(f"token {server.token} in ctx.log")
        sys.stderr.write(secret[:4])
        sys.stderr.flush()
        sys.stderr.write(secret[4:] + " on stderr\n")
        # An end that could begin a secret is held back, then shipped with the job's end.
        print(f"done {secret[:5]}", end="")
        return {"echo": secret}

    with started_worker(worker):
        run = client.run_workflow(wf)
        detail = client.wait_for_run(run.run_id, RUN_TIMEOUT)

    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED, job_by_id(detail, "talk").output
    chunks = client.list_logs(wf, "talk", run.run_id)
    out = "".join(c.data for c in chunks if c.stream == logs_pb2.LOG_STREAM_STDOUT)
    err = "".join(c.data for c in chunks if c.stream == logs_pb2.LOG_STREAM_STDERR)
    assert out == f"key=***\ntoken *** in ctx.log\ndone {secret[:5]}"
    assert err == "*** on stderr\n"
    assert dict(job_by_id(detail, "talk").outputs) == {"echo": "***"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--pass-env", "TRELLIS_TOKEN"], "pass_env: TRELLIS_TOKEN is a Trellis credential"),
        (
            ["--pass-env", "API_KEY", "--secret-env", "API_*"],
            "pass_env: API_KEY is also marked secret",
        ),
        (["--pass-env", "not-a-name"], "pass_env: 'not-a-name' is not a variable name"),
    ],
)
def test_worker_refuses_passing_credentials_or_secrets(flags: list[str], message: str) -> None:
    done = subprocess.run(
        [str(TRELLIS), "worker", "--target", f"127.0.0.1:{free_port()}", *flags],
        capture_output=True,
        text=True,
        timeout=PROC_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"trellis: error: {message}"), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
