"""Python handlers against a real server: what they print goes to their own
job's log, a raised exception leaves its traceback there, ``async def``
handlers run, and outputs are encoded as JSON. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator, Mapping

import pytest
from conftest import Running
from sdk_helpers import RUN_TIMEOUT, client_for, job_by_id, started_worker, uid

from trellis.v1 import jobs_pb2, logs_pb2, runs_pb2
from trellis.worker_sdk import Client, JobContext, Worker


@pytest.fixture
def client(server: Running) -> Iterator[Client]:
    with client_for(server) as c:
        yield c


def streams(client: Client, wf: str, job_id: str, run_id: str) -> tuple[str, str]:
    """(stdout, stderr) of a job's log."""
    chunks = client.list_logs(wf, job_id, run_id)
    out = "".join(c.data for c in chunks if c.stream == logs_pb2.LOG_STREAM_STDOUT)
    err = "".join(c.data for c in chunks if c.stream == logs_pb2.LOG_STREAM_STDERR)
    return out, err


def run_one(
    server: Running, client: Client, worker: Worker, jobs: Mapping[str, object]
) -> tuple[str, runs_pb2.RunDetail]:
    wf = uid()
    client.create_workflow({"name": "Handlers", "on": "push", "jobs": jobs}, workflow_id=wf)
    with started_worker(worker):
        run = client.run_workflow(wf)
        return wf, client.wait_for_run(run.run_id, RUN_TIMEOUT)


def test_concurrent_handlers_print_to_their_own_logs(
    server: Running, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    real_stdout = sys.stdout
    worker = Worker(server.grpc_target, slots=2)
    # Both jobs reach each point before either goes on: their writes interleave.
    together = threading.Barrier(2, timeout=RUN_TIMEOUT)

    @worker.handler("talk")
    def talk(ctx: JobContext) -> None:
        together.wait()
        print("first line of", ctx.job_id)
        outside = threading.Thread(target=print, args=(f"not in a job, from {ctx.job_id}",))
        outside.start()
        outside.join()
        together.wait()
        sys.stdout.write(f"second line of {ctx.job_id}, ")
        together.wait()
        sys.stdout.write("written in two pieces\n")
        print("to stderr of", ctx.job_id, file=sys.stderr)
        together.wait()

    wf, detail = run_one(server, client, worker, {"a": {"run": "talk"}, "b": {"run": "talk"}})

    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    for job_id in ("a", "b"):
        out, err = streams(client, wf, job_id, detail.run.run_id)
        assert out == (f"first line of {job_id}\nsecond line of {job_id}, written in two pieces\n")
        assert err == f"to stderr of {job_id}\n"
    # A thread that is not running a job writes to the real stdout.
    captured = capsys.readouterr()
    assert "not in a job, from a\n" in captured.out
    assert "not in a job, from b\n" in captured.out
    assert "first line of" not in captured.out + captured.err
    # A stopped worker leaves the streams as it found them.
    assert sys.stdout is real_stdout


def test_raising_handler_logs_its_traceback(server: Running, client: Client) -> None:
    worker = Worker(server.grpc_target)

    def parse(text: str) -> int:
        raise ValueError(f"cannot parse {text!r}\nsecond line of the message")

    @worker.handler("broken")
    def broken(ctx: JobContext) -> None:
        print("before the error")
        parse("x1")

    wf, detail = run_one(server, client, worker, {"broken": {"run": "broken"}})

    job = job_by_id(detail, "broken")
    assert job.status == jobs_pb2.JOB_STATE_FAILED
    assert job.output == "ValueError: cannot parse 'x1'"
    out, err = streams(client, wf, "broken", detail.run.run_id)
    assert out == "before the error\n"
    assert err.startswith("Traceback (most recent call last):\n"), err
    assert 'parse("x1")' in err and "in broken" in err and "in parse" in err
    assert err.endswith("ValueError: cannot parse 'x1'\nsecond line of the message\n"), err
    # The traceback begins at the handler, not inside the SDK.
    assert "worker_sdk" not in err


def test_async_handlers_run_to_completion(server: Running, client: Client) -> None:
    worker = Worker(server.grpc_target, slots=2)

    @worker.handler("fetch")
    async def fetch(ctx: JobContext) -> dict[str, object]:
        parts = await asyncio.gather(asyncio.sleep(0, "a"), asyncio.sleep(0, "b"))
        print("awaited", *parts)
        ctx.log("logged from a coroutine")
        return {"parts": parts}

    @worker.handler("fail-async")
    async def fail_async(ctx: JobContext) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("async failure")

    wf, detail = run_one(
        server,
        client,
        worker,
        {"fetch": {"run": "fetch"}, "fail": {"run": "fail-async"}},
    )

    fetched = job_by_id(detail, "fetch")
    assert fetched.status == jobs_pb2.JOB_STATE_SUCCEEDED, fetched.output
    assert dict(fetched.outputs) == {"parts": '["a", "b"]'}
    out, _ = streams(client, wf, "fetch", detail.run.run_id)
    assert out == "awaited a b\nlogged from a coroutine\n"
    failed = job_by_id(detail, "fail")
    assert failed.output == "RuntimeError: async failure"
    _, err = streams(client, wf, "fail", detail.run.run_id)
    assert "in fail_async" in err and err.endswith("RuntimeError: async failure\n"), err


def test_outputs_are_json_unless_strings(server: Running, client: Client) -> None:
    worker = Worker(server.grpc_target)

    @worker.handler("values")
    def values(ctx: JobContext) -> dict[str, object]:
        return {
            "s": "plain text",
            "quoted": '"already JSON"',
            "n": 3,
            "f": 1.5,
            "yes": True,
            "none": None,
            "obj": {"a": [1, "x"], "é": False},
        }

    @worker.handler("unencodable")
    def unencodable(ctx: JobContext) -> dict[str, object]:
        return {"ok": 1, "tags": {"a", "b"}}

    _, detail = run_one(
        server,
        client,
        worker,
        {"values": {"run": "values"}, "bad": {"run": "unencodable", "retries": 2}},
    )

    assert dict(job_by_id(detail, "values").outputs) == {
        "s": "plain text",
        "quoted": '"already JSON"',
        "n": "3",
        "f": "1.5",
        "yes": "true",
        "none": "null",
        "obj": '{"a": [1, "x"], "é": false}',
    }
    bad = job_by_id(detail, "bad")
    # The handler would return the same next time: no retry.
    assert (bad.status, bad.attempt) == (jobs_pb2.JOB_STATE_FAILED, 0)
    assert bad.output == (
        "TypeError: output 'tags' cannot be encoded as JSON: "
        "Object of type set is not JSON serializable"
    )
    assert not bad.outputs


def test_nul_in_what_a_job_says_is_shown_or_refused_not_lost(
    server: Running, client: Client
) -> None:
    # The server stores no NUL in text, and one NUL refuses the whole request
    # it travels in: logs and errors show it as U+FFFD, an output holding one
    # fails its job, and the results reported beside it still count.
    worker = Worker(server.grpc_target, slots=4, shell=True)
    together = threading.Barrier(3, timeout=RUN_TIMEOUT)

    @worker.handler("noisy")
    def noisy(ctx: JobContext) -> dict[str, str]:
        print("a\x00b")
        together.wait()
        return {"ok": "yes"}

    @worker.handler("nul-output")
    def nul_output(ctx: JobContext) -> dict[str, str]:
        together.wait()
        return {"x": "a\x00b"}

    @worker.handler("plain")
    def plain(ctx: JobContext) -> dict[str, str]:
        together.wait()
        return {"fine": "1"}

    wf, detail = run_one(
        server,
        client,
        worker,
        {
            "noisy": {"run": "noisy"},
            "bad": {"run": "nul-output", "retries": 2},
            "plain": {"run": "plain"},
            "shell": {"run": "printf 'c\\000d\\n'; printf 'e\\000f\\n' >&2; exit 3"},
        },
    )

    noisy_job = job_by_id(detail, "noisy")
    assert (noisy_job.status, dict(noisy_job.outputs)) == (
        jobs_pb2.JOB_STATE_SUCCEEDED,
        {"ok": "yes"},
    )
    assert streams(client, wf, "noisy", detail.run.run_id)[0] == "a\ufffdb\n"
    assert dict(job_by_id(detail, "plain").outputs) == {"fine": "1"}
    bad = job_by_id(detail, "bad")
    assert (bad.status, bad.attempt) == (jobs_pb2.JOB_STATE_FAILED, 0)
    assert bad.output == "output 'x' holds a NUL character"
    shell = job_by_id(detail, "shell")
    assert shell.status == jobs_pb2.JOB_STATE_FAILED
    assert shell.output == "exit code 3: e\ufffdf"
    assert streams(client, wf, "shell", detail.run.run_id) == ("c\ufffdd\n", "e\ufffdf\n")


def test_register_refuses_what_cannot_be_a_handler() -> None:
    worker = Worker()

    def generator(ctx: JobContext) -> Iterator[str]:
        yield "x"

    with pytest.raises(TypeError, match="'gen' is a generator function"):
        worker.register("gen", generator)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'nothing' is not callable"):
        worker.register("nothing", None)  # type: ignore[arg-type]
