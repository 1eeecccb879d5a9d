"""Unit tests of the worker SDK: no Trellis server needed.

The worker tests run against a small in-process fake of the worker protocol
that records what the SDK sends, so ordering and batching can be asserted.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import random
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from conftest import wait_until

from trellis.v1 import logs_pb2, logs_pb2_grpc, workers_pb2, workers_pb2_grpc
from trellis.worker_sdk import (
    Aborted,
    Client,
    ConnectionLost,
    InvalidArgument,
    JobCancelled,
    JobContext,
    LeaseLost,
    NotFound,
    StopReason,
    TrellisError,
    Unauthenticated,
    Worker,
)

# Backoff's jitter bounds and the shell runner's kills and timeouts are not part of
# the SDK's API and cannot be timed deterministically through a running Worker.
from trellis.worker_sdk._backoff import Backoff
from trellis.worker_sdk._shell import run_shell
from trellis.worker_sdk.cli import add_client_commands, format_table

OK = 0
ABORTED = grpc.StatusCode.ABORTED.value[0]


# -- the shell runner -----------------------------------------------------------


def collect() -> tuple[list[tuple[str, str]], Callable[[Any, str], None]]:
    lines: list[tuple[str, str]] = []

    def on_line(stream: Any, line: str) -> None:
        lines.append((stream, line))

    return lines, on_line


def test_shell_streams_lines_and_collects_outputs() -> None:
    lines, on_line = collect()
    result = run_shell(
        "echo one; echo two >&2; echo '::set-output name=n::42'; printf tail",
        on_line=on_line,
    )
    assert result.exit_code == 0
    assert result.outputs == {"n": "42"}
    assert not result.timed_out and not result.stopped
    assert [line for s, line in lines if s == "stdout"] == [
        "one\n",
        "::set-output name=n::42\n",
        "tail",
    ]
    assert [line for s, line in lines if s == "stderr"] == ["two\n"]


def test_shell_set_output_on_stderr_is_only_logged() -> None:
    lines, on_line = collect()
    result = run_shell("echo '::set-output name=n::1' >&2", on_line=on_line)
    assert result.outputs == {}
    assert lines == [("stderr", "::set-output name=n::1\n")]


def test_shell_failure_reports_exit_code_and_last_stderr_line() -> None:
    result = run_shell("echo first >&2; echo 'last words' >&2; echo out; exit 3")
    assert result.exit_code == 3
    assert result.last_stderr == "last words"
    assert result.error() == "exit code 3: last words"
    assert run_shell("exit 5").error() == "exit code 5"


def test_shell_passes_the_environment() -> None:
    result = run_shell(
        'echo "::set-output name=v::$TRELLIS_JOB_ID-$FOO"',
        env={"TRELLIS_JOB_ID": "j1", "FOO": "bar", "PATH": os.environ["PATH"]},
    )
    assert result.outputs == {"v": "j1-bar"}


def test_shell_handles_undecodable_bytes_and_long_lines() -> None:
    lines, on_line = collect()
    result = run_shell(
        "printf 'bad \\377 byte\\n'; head -c 200000 /dev/zero | tr '\\0' x; echo",
        on_line=on_line,
    )
    assert result.exit_code == 0
    assert lines[0] == ("stdout", "bad \ufffd byte\n")
    long_parts = [line for _, line in lines[1:]]
    assert all(len(p) <= 64 * 1024 + 1 for p in long_parts)
    assert "".join(long_parts) == "x" * 200000 + "\n"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _child_pid(lines: list[tuple[str, str]]) -> int:
    for _, line in lines:
        if line.startswith("child "):
            return int(line.split()[1])
    raise AssertionError("no child pid logged")


def test_shell_timeout_kills_the_whole_process_group() -> None:
    lines, on_line = collect()
    started = time.monotonic()
    result = run_shell("sleep 30 & echo child $!; wait", timeout=0.5, on_line=on_line)
    elapsed = time.monotonic() - started
    assert result.timed_out
    assert not result.stopped
    assert result.exit_code == -signal.SIGKILL
    assert elapsed < 5
    child = _child_pid(lines)
    wait_until(lambda: not _alive(child), timeout=5)


def test_shell_cancel_sends_sigterm_to_the_group() -> None:
    cancelled = threading.Event()
    lines, record = collect()

    def on_line(stream: Any, line: str) -> None:
        record(stream, line)
        cancelled.set()  # the trap is in place once the shell prints

    result = run_shell(
        "trap 'echo got TERM; exit 7' TERM; sleep 30 & echo child $!; wait",
        cancelled=cancelled,
        on_line=on_line,
    )
    assert result.stopped
    assert not result.timed_out
    assert result.exit_code == 7
    assert ("stdout", "got TERM\n") in lines
    wait_until(lambda: not _alive(_child_pid(lines)), timeout=5)


def test_shell_cancel_escalates_to_sigkill_after_the_grace() -> None:
    cancelled = threading.Event()
    started = time.monotonic()
    result = run_shell(
        "trap '' TERM; echo ready; sleep 30",
        cancelled=cancelled,
        # Cancel once the trap is in place, or SIGTERM would simply work.
        on_line=lambda stream, line: cancelled.set(),
        kill_grace=0.3,
    )
    assert result.stopped
    assert result.exit_code == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_shell_does_not_wait_for_background_children_holding_the_pipes() -> None:
    lines, on_line = collect()
    started = time.monotonic()
    result = run_shell("sleep 30 & echo child $!; echo done", on_line=on_line)
    assert result.exit_code == 0
    assert time.monotonic() - started < 5
    wait_until(lambda: not _alive(_child_pid(lines)), timeout=5)


def test_shell_killed_by_signal_error_text() -> None:
    result = run_shell("kill -9 $$")
    assert result.exit_code == -signal.SIGKILL
    assert result.error() == "killed by signal SIGKILL"


# -- backoff ------------------------------------------------------------------------


def test_backoff_draws_within_the_exponential_ceiling() -> None:
    backoff = Backoff(base=0.1, cap=10.0, rng=random.Random(7).random)
    for n in range(40):
        ceiling = min(10.0, 0.1 * 2**n)
        assert backoff.ceiling() == pytest.approx(ceiling)
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceiling


def test_backoff_uses_full_jitter_and_resets() -> None:
    backoff = Backoff(base=1.0, cap=8.0, rng=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    backoff.reset()
    assert backoff.next_delay() == 1.0
    zero = Backoff(base=1.0, cap=8.0, rng=lambda: 0.0)
    assert zero.next_delay() == 0.0


def test_backoff_spreads_delays() -> None:
    delays = [Backoff(base=1.0, cap=10.0).next_delay() for _ in range(200)]
    assert min(delays) < 0.2 and max(delays) > 0.8


def test_backoff_survives_huge_attempt_counts() -> None:
    backoff = Backoff(base=0.1, cap=10.0)
    backoff.attempt = 10_000
    assert 0.0 <= backoff.next_delay() <= 10.0


def test_backoff_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(base=2, cap=1)


# -- error wrapping --------------------------------------------------------------


def test_error_hierarchy() -> None:
    assert issubclass(LeaseLost, JobCancelled)
    assert issubclass(JobCancelled, TrellisError)
    assert issubclass(ConnectionLost, TrellisError)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_client_wraps_connection_errors() -> None:
    # Short pauses between the stream's reopenings: giving up is what is tested.
    with Client(f"127.0.0.1:{free_port()}", timeout=1, resume_delay=0.001) as client:
        with pytest.raises(ConnectionLost) as info:
            client.list_workflows()
        assert "cannot reach Trellis at 127.0.0.1:" in str(info.value)
        with pytest.raises(ConnectionLost):
            list(client.follow_logs("wf", "job"))


# -- the job context ---------------------------------------------------------------


class RecordingSink:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def append(self, ctx: JobContext, stream: Any, data: str) -> None:
        self.lines.append((stream, data))


def make_job(**kw: Any) -> Any:
    job = workers_pb2.QueuedJob(
        job_id=kw.get("job_id", "j"),
        workflow_id="wf",
        run_id="run",
        command=kw.get("command", "cmd"),
        attempt=kw.get("attempt", 0),
        env=kw.get("env", {}),
        timeout_secs=kw.get("timeout_secs", 0),
    )
    for parent, values in kw.get("upstream", {}).items():
        job.upstream_outputs[parent].values.update(values)
    return job


def test_job_context_exposes_the_job() -> None:
    sink = RecordingSink()
    ctx = JobContext(
        make_job(attempt=3, env={"A": "1"}, upstream={"p": {"o": "v"}}), "lease-1", sink
    )
    assert (ctx.job_id, ctx.workflow_id, ctx.run_id, ctx.attempt) == ("j", "wf", "run", 3)
    assert ctx.lease_id == "lease-1"
    assert ctx.env == {"A": "1"}
    assert ctx.upstream_outputs == {"p": {"o": "v"}}
    ctx.log("hello")
    ctx.log("already\n", stream="stderr")
    assert sink.lines == [("stdout", "hello\n"), ("stderr", "already\n")]
    with pytest.raises(ValueError):
        ctx.log("x", stream="stdin")  # type: ignore[arg-type]


# -- the worker against a fake server ------------------------------------------------


class FakeTrellis(workers_pb2_grpc.WorkerServiceServicer, logs_pb2_grpc.LogServiceServicer):
    """Records the worker protocol; pushes whatever the test queues."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pushes: queue.Queue[Any] = queue.Queue()
        self.stream_requests: list[Any] = []
        self.metadata: list[dict[str, str]] = []
        self.events: list[tuple[str, str]] = []  # ("logs"|"result", lease_id)
        self.results: dict[str, Any] = {}
        self.report_calls = 0
        self.report_failures = 0  # answer UNAVAILABLE this many times first
        self.chunks: dict[str, list[Any]] = {}
        self.heartbeats: list[str] = []
        self.heartbeat_answers: dict[str, dict[str, bool]] = {}
        self.stream_closed = threading.Event()  # a StreamAssignments call ended
        self.list_workers_error: tuple[grpc.StatusCode, str] | None = None

    def _meta(self, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})

    def RegisterWorker(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._meta(context)
        return workers_pb2.Worker(worker_id=request.worker_id, labels=request.labels)

    def StreamAssignments(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with self.lock:
            self.stream_requests.append(request)
        try:
            while context.is_active():
                try:
                    yield self.pushes.get(timeout=0.05)
                except queue.Empty:
                    continue
        finally:
            self.stream_closed.set()

    def ListWorkers(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._meta(context)
        if self.list_workers_error is not None:
            context.abort(*self.list_workers_error)
        return workers_pb2.ListWorkersResponse()

    def StreamHeartbeats(
        self, request_iterator: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        for request in request_iterator:
            with self.lock:
                self.heartbeats.append(request.lease_id)
                answer = self.heartbeat_answers.get(request.lease_id, {})
            yield workers_pb2.HeartbeatResponse(lease_id=request.lease_id, **answer)

    def ReportResults(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._meta(context)
        with self.lock:
            self.report_calls += 1
            if self.report_failures:
                self.report_failures -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
            statuses = []
            for result in request.results:
                body = result.complete if result.HasField("complete") else result.fail
                seen = body.lease_id in self.results
                if not seen:
                    self.results[body.lease_id] = result
                    self.events.append(("result", body.lease_id))
                statuses.append(
                    workers_pb2.JobResultStatus(
                        lease_id=body.lease_id, code=ABORTED if seen else OK
                    )
                )
        return workers_pb2.ReportResultsResponse(statuses=statuses)

    def PushLogs(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.lock:
            if request.lease_id in self.results:
                context.abort(grpc.StatusCode.ABORTED, "lease finished")
            self.chunks.setdefault(request.lease_id, []).extend(request.chunks)
            self.events.append(("logs", request.lease_id))
        return logs_pb2.PushLogsResponse(accepted=len(request.chunks))

    # -- test helpers

    def assign(self, *assignments: Any, cancelled: tuple[str, ...] = ()) -> None:
        self.pushes.put(
            workers_pb2.StreamAssignmentsResponse(
                assignments=assignments, cancelled_lease_ids=cancelled
            )
        )

    def result(self, lease_id: str, timeout: float = 10.0) -> Any:
        wait_until(lambda: lease_id in self.results, timeout)
        return self.results[lease_id]


def assignment(lease_id: str, command: str, *, ttl: int = 30, **kw: Any) -> Any:
    return workers_pb2.Assignment(
        job=make_job(job_id=kw.pop("job_id", lease_id), command=command, **kw),
        lease=workers_pb2.Lease(lease_id=lease_id, ttl_secs=ttl),
    )


@pytest.fixture
def fake() -> Iterator[tuple[FakeTrellis, str]]:
    servicer = FakeTrellis()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    workers_pb2_grpc.add_WorkerServiceServicer_to_server(servicer, server)
    logs_pb2_grpc.add_LogServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture
def make_worker(
    fake: tuple[FakeTrellis, str],
) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def make(**kw: Any) -> Worker:
        worker = Worker(fake[1], **kw)
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop(drain=False)


def completed(result: Any) -> dict[str, str]:
    assert result.HasField("complete"), result
    return dict(result.complete.outputs)


def failed(result: Any) -> tuple[str, bool]:
    assert result.HasField("fail"), result
    return result.fail.error, result.fail.retryable


def test_worker_runs_handlers_and_reports_outputs(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    worker = make_worker(
        worker_id="w-1",
        labels=["gpu", "linux"],
        slots=3,
        lease_ttl_secs=45,
        token="tok",
        organization_id="org-7",
    )
    seen: list[JobContext] = []

    @worker.handler("add")
    def add(ctx: JobContext) -> dict[str, object]:
        seen.append(ctx)
        return {"sum": 1 + 2, "from": ctx.upstream_outputs["p"]["o"]}

    worker.register("quiet", lambda ctx: None)
    worker.start()
    server.assign(assignment("l1", "add", upstream={"p": {"o": "v"}}), assignment("l2", "quiet"))
    assert completed(server.result("l1")) == {"sum": "3", "from": "v"}
    assert completed(server.result("l2")) == {}
    request = server.stream_requests[0]
    assert request.worker_id == "w-1"
    assert list(request.labels) == ["gpu", "linux"]
    assert (request.slots, request.lease_ttl_secs) == (3, 45)
    assert all(
        m.get("authorization") == "Bearer tok" and m.get("x-organization-id") == "org-7"
        for m in server.metadata
    )
    # Nothing logged, nothing pushed; short jobs send no heartbeats.
    assert not server.chunks and not server.heartbeats
    assert seen[0].job_id == "l1"
    wait_until(lambda: worker.running_jobs == 0)


def test_worker_flushes_logs_before_the_result(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    worker = make_worker()

    @worker.handler("talk")
    def talk(ctx: JobContext) -> None:
        ctx.log("out 1")
        ctx.log("err 1", stream="stderr")
        ctx.log("out 2")

    worker.start()
    server.assign(assignment("l1", "talk"))
    server.result("l1")
    assert server.events[-1] == ("result", "l1")
    assert ("logs", "l1") in server.events
    chunks = server.chunks["l1"]
    assert [(c.stream, c.sequence, c.data) for c in chunks] == [
        (logs_pb2.LOG_STREAM_STDOUT, 0, "out 1\n"),
        (logs_pb2.LOG_STREAM_STDERR, 0, "err 1\n"),
        (logs_pb2.LOG_STREAM_STDOUT, 1, "out 2\n"),
    ]
    assert all(c.job_id == "l1" and c.workflow_id == "wf" for c in chunks)


def test_worker_ships_logs_of_long_jobs_while_they_run(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    worker = make_worker()
    release = threading.Event()

    @worker.handler("slow")
    def slow(ctx: JobContext) -> None:
        ctx.log("early")
        release.wait(10)

    worker.start()
    server.assign(assignment("l1", "slow"))
    wait_until(lambda: "l1" in server.chunks, timeout=3)
    assert "l1" not in server.results
    release.set()
    server.result("l1")


@pytest.mark.parametrize(
    ("raise_", "expected"),
    [
        (ValueError("bad input"), ("ValueError: bad input", True)),
        (KeyError("k"), ("KeyError: 'k'", True)),
        (RuntimeError(), ("RuntimeError", True)),
        (JobCancelled("stop"), ("cancelled", False)),
    ],
)
def test_worker_turns_exceptions_into_failures(
    fake: tuple[FakeTrellis, str],
    make_worker: Callable[..., Worker],
    raise_: Exception,
    expected: tuple[str, bool],
) -> None:
    server, _ = fake
    worker = make_worker()

    @worker.handler("boom")
    def boom(ctx: JobContext) -> None:
        raise raise_

    worker.start()
    server.assign(assignment("l1", "boom"))
    assert failed(server.result("l1")) == expected


def test_worker_without_handler_or_shell_fails_permanently(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    make_worker().start()
    server.assign(assignment("l1", "echo hi"))
    assert failed(server.result("l1")) == ("no handler for command 'echo hi'", False)


def test_worker_runs_shell_commands(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    make_worker(shell=True).start()
    server.assign(
        assignment(
            "l1",
            'echo "::set-output name=got::$TRELLIS_UPSTREAM_BUILD_URL/$X/$TRELLIS_ATTEMPT"',
            env={"X": "y"},
            attempt=2,
            upstream={"build": {"url": "u"}},
        ),
        assignment("l2", "echo oops >&2; exit 2"),
        assignment("l3", "sleep 10", timeout_secs=1),
    )
    assert completed(server.result("l1")) == {"got": "u/y/2"}
    assert [c.data for c in server.chunks["l1"]] == ["::set-output name=got::u/y/2\n"]
    assert failed(server.result("l2")) == ("exit code 2: oops", True)
    assert failed(server.result("l3")) == ("timed out after 1 s", True)


def test_worker_stops_cancelled_jobs(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    worker = make_worker(slots=2, shell=True)
    started = threading.Event()

    @worker.handler("wait")
    def wait(ctx: JobContext) -> None:
        started.set()
        ctx.cancelled.wait(10)
        ctx.raise_if_cancelled()

    worker.start()
    server.assign(assignment("l1", "wait"), assignment("l2", "sleep 30"))
    assert started.wait(5)
    wait_until(lambda: worker.running_jobs == 2)
    begun = time.monotonic()
    server.assign(cancelled=("l1", "l2"))
    assert failed(server.result("l1")) == ("cancelled", False)
    assert failed(server.result("l2")) == ("cancelled", False)
    assert time.monotonic() - begun < 5


def test_worker_heartbeats_long_jobs_and_drops_lost_leases(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    worker = make_worker(lease_ttl_secs=1)
    stopped: list[StopReason | None] = []

    @worker.handler("long")
    def long(ctx: JobContext) -> None:
        ctx.log("working")
        ctx.cancelled.wait(10)
        stopped.append(ctx.stop_reason)

    worker.start()
    server.assign(assignment("l1", "long", ttl=1))
    wait_until(lambda: len(server.heartbeats) >= 2, timeout=5)
    with server.lock:
        server.heartbeat_answers["l1"] = {"lease_lost": True}
    wait_until(lambda: bool(stopped), timeout=5)
    assert stopped == [StopReason.LEASE_LOST]
    # stop() returns once every result it holds has been reported.
    worker.stop(drain=True, timeout=5)
    assert "l1" not in server.results  # a lost lease is not reported


def test_worker_heartbeat_cancel_answer_cancels(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    server.heartbeat_answers["l1"] = {"cancelled": True}
    worker = make_worker(lease_ttl_secs=1)
    worker.register("long", lambda ctx: ctx.cancelled.wait(10) and None)
    worker.start()
    server.assign(assignment("l1", "long", ttl=1))
    assert failed(server.result("l1")) == ("cancelled", False)


def test_worker_enforces_handler_timeouts(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    worker = make_worker()
    worker.register("stuck", lambda ctx: ctx.cancelled.wait(10) and None)
    worker.start()
    server.assign(assignment("l1", "stuck", timeout_secs=1))
    assert failed(server.result("l1", timeout=5)) == ("timed out after 1 s", True)


def test_worker_batches_results(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    worker = make_worker(slots=8)
    worker.register("noop", lambda ctx: None)
    worker.start()
    n = 400
    server.assign(*(assignment(f"l{i}", "noop") for i in range(n)))
    wait_until(lambda: len(server.results) == n)
    assert server.report_calls < n / 4
    wait_until(lambda: worker.running_jobs == 0)


def test_worker_retries_reports_after_transport_errors(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    server.report_failures = 2
    worker = make_worker()
    worker.register("noop", lambda ctx: {"ok": "yes"})
    worker.start()
    server.assign(assignment("l1", "noop"))
    assert completed(server.result("l1")) == {"ok": "yes"}
    assert server.report_calls == 3


def test_stop_drains_running_jobs(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    worker = make_worker()
    started = threading.Event()
    release = threading.Event()

    def slow(ctx: JobContext) -> dict[str, str]:
        started.set()
        release.wait(10)
        return {"done": "1"}

    worker.register("slow", slow)
    worker.start()
    server.assign(assignment("l1", "slow"))
    assert started.wait(5)
    stopper = threading.Thread(target=worker.stop, kwargs={"drain": True, "timeout": 10})
    stopper.start()
    # Stopping closes the assignment stream first, then waits for the job.
    assert server.stream_closed.wait(5)
    assert stopper.is_alive() and "l1" not in server.results
    release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert completed(server.results["l1"]) == {"done": "1"}
    assert worker.running_jobs == 0


def test_stop_hands_back_unfinished_jobs(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    worker = make_worker(slots=1)
    started = threading.Event()
    release = threading.Event()

    def stubborn(ctx: JobContext) -> None:
        started.set()
        release.wait(10)  # ignores cancellation

    worker.register("stubborn", stubborn)
    worker.start()
    server.assign(assignment("l1", "stubborn"), assignment("l2", "stubborn"))
    assert started.wait(5)
    stopper = threading.Thread(target=worker.stop, kwargs={"drain": True, "timeout": 0.2})
    stopper.start()
    try:
        # Both are handed back while the handler still runs.
        for lease in ("l1", "l2"):  # running, and waiting for the busy slot
            assert failed(server.result(lease, timeout=5)) == ("worker shutting down", True)
    finally:
        release.set()
        stopper.join(10)
    assert not stopper.is_alive()


def test_worker_reconnects_when_the_server_appears(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trellis.worker_sdk")
    port = free_port()
    worker = Worker(f"127.0.0.1:{port}")
    worker.register("noop", lambda ctx: {"x": "1"})
    worker.start()
    try:
        # A few failed attempts first.
        wait_until(
            lambda: sum("cannot stream assignments" in r.getMessage() for r in caplog.records) >= 2
        )
        servicer = FakeTrellis()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        workers_pb2_grpc.add_WorkerServiceServicer_to_server(servicer, server)
        logs_pb2_grpc.add_LogServiceServicer_to_server(servicer, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        try:
            servicer.assign(assignment("l1", "noop"))
            assert completed(servicer.result("l1", timeout=20)) == {"x": "1"}
        finally:
            worker.stop(drain=False)
            server.stop(0)
    finally:
        worker.stop(drain=False)


def test_worker_validates_arguments() -> None:
    with pytest.raises(ValueError):
        Worker(slots=0)
    with pytest.raises(ValueError):
        Worker(lease_ttl_secs=0)
    with pytest.raises(TypeError):
        Worker(labels="gpu")
    worker = Worker()
    worker.register("a", lambda ctx: None)
    with pytest.raises(ValueError):
        worker.register("a", lambda ctx: None)
    assert worker.worker_id.startswith(f"{socket.gethostname()}-{os.getpid()}-")
    worker.stop()  # never started: a no-op
    with pytest.raises(RuntimeError):
        worker.start()


# -- the command line -----------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trellis")
    add_client_commands(p.add_subparsers(dest="command", required=True))
    return p


def test_cli_parses_every_subcommand() -> None:
    p = parser()
    args = p.parse_args(
        ["worker", "--labels", "a,b", "--slots", "4", "--lease-ttl", "9", "--target", "h:1"]
    )
    assert (args.labels, args.slots, args.lease_ttl, args.target) == ("a,b", 4, 9, "h:1")
    args = p.parse_args(["run", "wf", "--wait", "--follow"])
    assert (args.workflow_id, args.wait, args.follow) == ("wf", True, True)
    assert p.parse_args(["status", "--run", "r1"]).run_id == "r1"
    assert p.parse_args(["status", "wf"]).workflow_id == "wf"
    args = p.parse_args(["logs", "wf", "job", "--run", "r", "--follow", "--token", "t"])
    assert (args.workflow_id, args.job_id, args.run_id, args.follow, args.token) == (
        "wf",
        "job",
        "r",
        True,
        "t",
    )
    assert callable(p.parse_args(["workflows"]).func)


def test_cli_reports_unreachable_server_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRELLIS_TARGET", f"127.0.0.1:{free_port()}")
    args = parser().parse_args(["workflows"])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("trellis: error: cannot reach Trellis at 127.0.0.1:")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_format_table() -> None:
    assert format_table(("A", "LONGER"), [("x", ""), ("yyy", "z")]) == ("A    LONGER\nx\nyyy  z")


# -- environment, secrets and errors, through the worker and the client ---------------


def log_text(server: FakeTrellis, lease_id: str) -> str:
    with server.lock:
        return "".join(c.data for c in server.chunks.get(lease_id, []))


def test_shell_jobs_get_the_base_and_passed_names_only(
    fake: tuple[FakeTrellis, str],
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, _ = fake
    token = "trl_mu_" + "A" * 49
    secrets = {
        "TRELLIS_TOKEN": "jwt-of-someone",
        "TRELLIS_PASSWORD": "pw-1234",
        "OWN_TOKEN": "worker-token-1",
        "OTHER_TRELLIS_TOKEN": token,
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
    }
    for name, value in {
        **secrets,
        "LC_ALL": "C.UTF-8",
        "AWS_REGION": "eu",
        "CI": "1",
        "UNNAMED": "x",
    }.items():
        monkeypatch.setenv(name, value)
    worker = make_worker(
        shell=True,
        token="worker-token-1",
        pass_env=["CI", "AWS_*", "OWN_TOKEN", "OTHER_TRELLIS_TOKEN"],
        secret_env=["AWS_SECRET_*"],
    )
    worker.start()
    # The job echoes every secret value it knows of: each is masked.
    server.assign(assignment("l1", "env; echo " + " ".join(secrets.values())))
    assert completed(server.result("l1")) == {}  # its logs were pushed first
    text = log_text(server, "l1")
    seen = dict(line.split("=", 1) for line in text.splitlines()[:-1] if "=" in line)
    assert seen["PATH"] == os.environ["PATH"]
    assert (seen["LC_ALL"], seen["AWS_REGION"], seen["CI"]) == ("C.UTF-8", "eu", "1")
    for name in (*secrets, "UNNAMED"):
        assert name not in seen, name
    assert text.splitlines()[-1] == " ".join(["***"] * len(secrets))
    for value in secrets.values():
        assert value not in text


@pytest.mark.parametrize(
    ("pass_env", "secret_env", "message"),
    [
        (["TRELLIS_PASSWORD"], [], "TRELLIS_PASSWORD is a Trellis credential"),
        (["KEY"], ["KEY"], "KEY is also marked secret"),
        (["A-B"], [], "'A-B' is not a variable name"),
        ([], ["*X"], "secret_env: '*X' is not a variable name"),
    ],
)
def test_worker_refuses_environments_it_cannot_give(
    pass_env: list[str], secret_env: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Worker(pass_env=pass_env, secret_env=secret_env)
    with pytest.raises(TypeError):
        Worker(pass_env="CI", secret_env=[])


def test_handler_logs_mask_secrets_also_across_writes(
    fake: tuple[FakeTrellis, str],
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, _ = fake
    monkeypatch.setenv("S_TOKEN", "tok-12345")
    monkeypatch.setenv("S_SHORT", "abc")
    monkeypatch.setenv("S_LINES", "two\nlines-x")
    worker = make_worker(secret_env=["S_*"])

    @worker.handler("talk")
    def talk(ctx: JobContext) -> dict[str, str]:
        for piece in (
            "a tok-12345 b tok-12345\n",
            # Too short to mask without mangling ordinary text.
            "abc\n",
            # Multi-line secrets are masked line by line.
            "two\nlines-x\n",
            # Written in pieces, a secret is still masked.
            "x tok-1",
            "2345 y\n",
            "tok-12345tok",
        ):
            print(piece, end="", flush=True)
        return {"out": "tok-12345!"}

    worker.start()
    server.assign(assignment("l1", "talk"))
    assert completed(server.result("l1")) == {"out": "***!"}
    assert log_text(server, "l1") == "a *** b ***\nabc\ntwo\n***\nx *** y\n***tok"


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.UNAVAILABLE, ConnectionLost),
        (grpc.StatusCode.ABORTED, Aborted),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.DATA_LOSS, TrellisError),
    ],
)
def test_client_raises_the_error_class_of_each_code(
    fake: tuple[FakeTrellis, str], code: grpc.StatusCode, kind: type[TrellisError]
) -> None:
    server, target = fake
    server.list_workers_error = (code, "workflow 'x' not found")
    with Client(target, timeout=5) as client, pytest.raises(TrellisError) as info:
        client.list_workers()
    err = info.value
    assert type(err) is kind
    assert err.code is code
    assert str(err).endswith("workflow 'x' not found")
    assert not isinstance(err, grpc.RpcError)


def test_client_errors_without_details_name_their_code(fake: tuple[FakeTrellis, str]) -> None:
    server, target = fake
    server.list_workers_error = (grpc.StatusCode.NOT_FOUND, "")
    with Client(target, timeout=5) as client, pytest.raises(NotFound) as info:
        client.list_workers()
    assert str(info.value) == "not found"


def test_client_reads_target_and_token_from_the_environment(
    fake: tuple[FakeTrellis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, target = fake
    monkeypatch.setenv("TRELLIS_TARGET", target)
    monkeypatch.setenv("TRELLIS_TOKEN", "sekret")
    monkeypatch.setenv("TRELLIS_ORGANIZATION_ID", "org-9")
    with Client(timeout=5) as client:
        assert client.target == target
        client.list_workers()
    sent = server.metadata[-1]
    assert (sent["authorization"], sent["x-organization-id"]) == ("Bearer sekret", "org-9")


def test_raise_if_cancelled_names_the_first_stop_reason(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    server.heartbeat_answers["lost"] = {"lease_lost": True}
    worker = make_worker(slots=2, lease_ttl_secs=1)
    raised: dict[str, BaseException | None] = {}
    stopped = threading.Event()
    release = threading.Event()

    @worker.handler("watch")
    def watch(ctx: JobContext) -> None:
        ctx.raise_if_cancelled()  # not stopped: returns
        ctx.cancelled.wait(10)
        if ctx.lease_id == "lost":
            stopped.set()
            release.wait(10)
        try:
            ctx.raise_if_cancelled()
            raised[ctx.lease_id] = None
        except JobCancelled as exc:
            raised[ctx.lease_id] = exc

    worker.register("noop", lambda ctx: None)
    worker.start()
    server.assign(assignment("cancelled", "watch"), assignment("lost", "watch", ttl=1))
    wait_until(lambda: worker.running_jobs == 2)
    server.assign(cancelled=("cancelled",))
    assert failed(server.result("cancelled")) == ("cancelled", False)
    assert type(raised["cancelled"]) is JobCancelled

    assert stopped.wait(5)  # the lease is lost; now it is cancelled too
    server.assign(cancelled=("lost",))
    # Assignments are taken in order: once this one ran, so had the cancel.
    server.assign(assignment("probe", "noop"))
    assert completed(server.result("probe")) == {}
    release.set()
    wait_until(lambda: "lost" in raised)
    assert isinstance(raised["lost"], LeaseLost)
    worker.stop(drain=True, timeout=5)
    assert "lost" not in server.results


# -- ::set-output and the environment of shell jobs ----------------------------------

SET_OUTPUT_LINES = [
    ("::set-output name=url::https://x.test/a", {"url": "https://x.test/a"}),
    ("::set-output name=url::https://x.test/a\n", {"url": "https://x.test/a"}),
    ("::set-output name=crlf::v\r\n", {"crlf": "v"}),
    ("::set-output name=empty::", {"empty": ""}),
    ("::set-output name=a::b::c", {"a": "b::c"}),
    ("::set-output name=spaced::  two  words ", {"spaced": "  two  words "}),
    ("::set-output name=ml::one%0Atwo%0Dthree%25four", {"ml": "one\ntwo\rthree%four"}),
    ("::set-output name=lit::%250A", {"lit": "%0A"}),
    # Not the command: only logged.
    ("set-output name=a::b", {}),
    (" ::set-output name=a::b", {}),
    ("::set-output name=::b", {}),
    ("::set-output name=a", {}),
    ("::set-env name=a::b", {}),
    ("echo ::set-output name=a::b", {}),
]


def test_shell_jobs_set_outputs_with_the_classic_command_only(
    fake: tuple[FakeTrellis, str], make_worker: Callable[..., Worker]
) -> None:
    server, _ = fake
    make_worker(shell=True, slots=4).start()
    server.assign(
        *(
            assignment(f"l{i}", 'printf "%s" "$LINE"', env={"LINE": line})
            for i, (line, _) in enumerate(SET_OUTPUT_LINES)
        )
    )
    for i, (line, outputs) in enumerate(SET_OUTPUT_LINES):
        assert completed(server.result(f"l{i}")) == outputs, line
        assert log_text(server, f"l{i}") == line  # its logs were pushed first


def test_shell_jobs_get_the_job_env_upstream_outputs_and_trellis_variables(
    fake: tuple[FakeTrellis, str],
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, _ = fake
    monkeypatch.setenv("A", "base")
    monkeypatch.setenv("B", "base")
    make_worker(shell=True, pass_env=["A", "B"]).start()
    upstream = {
        "build-1": {"artifact.url": "s3://b/x", "size": "3"},
        "test": {},
        "déjà vu": {"x": "y"},
    }
    server.assign(
        assignment(
            "l1",
            "env",
            job_id="j",
            attempt=2,
            env={"A": "job", "TRELLIS_JOB_ID": "spoofed"},
            upstream=upstream,
        )
    )
    assert completed(server.result("l1")) == {}
    seen = dict(line.split("=", 1) for line in log_text(server, "l1").splitlines())
    # The worker's base, then the job's own variables, then Trellis's, which win.
    assert (seen["A"], seen["B"]) == ("job", "base")
    assert {k: v for k, v in seen.items() if k.startswith("TRELLIS_")} == {
        "TRELLIS_JOB_ID": "j",
        "TRELLIS_RUN_ID": "run",
        "TRELLIS_WORKFLOW_ID": "wf",
        "TRELLIS_ATTEMPT": "2",
        # Upper case, anything but ASCII letters and digits as _.
        "TRELLIS_UPSTREAM_BUILD_1_ARTIFACT_URL": "s3://b/x",
        "TRELLIS_UPSTREAM_BUILD_1_SIZE": "3",
        "TRELLIS_UPSTREAM_D_J__VU_X": "y",
    }
