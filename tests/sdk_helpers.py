"""Helpers for the SDK and CLI end-to-end tests (``tests/test_sdk_*.py``).

Real servers (the ``start_server`` fixture), real workers (``Worker`` in the
test process, or worker processes), and the SDK's own ``Client``. Nothing is
mocked and nothing sleeps for a fixed time: waits are ``wait_until`` on a
condition, ``Client.wait_for_run`` or blocking reads with timeouts.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from conftest import ROOT, Running

from trellis.v1 import runs_pb2
from trellis.worker_sdk import Client, Worker

# Bounds for waits, so a broken server fails a test instead of hanging it.
RUN_TIMEOUT = 30.0
PROC_TIMEOUT = 30.0

TRELLIS = ROOT / ".venv" / "bin" / "trellis"
PYTHON = sys.executable
WORKER_PROC = Path(__file__).resolve().parent / "sdk_worker_proc.py"


# Shell lines that wait (up to a minute) until the file named by $GO exists:
# a job that runs exactly as long as the test needs it to.
WAIT_FOR_GO = 'i=0; while [ ! -e "$GO" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\n'


def uid(prefix: str = "wf") -> str:
    """A fresh id, so that tests never share workflows."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def trellis(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the ``trellis`` command with ``args`` (``stdin`` its input)."""
    return subprocess.run(
        [str(TRELLIS), *args],
        capture_output=True,
        text=True,
        timeout=PROC_TIMEOUT,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single ``trellis: error:`` line a failed command printed, without the prefix."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trellis: error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0].removeprefix("trellis: error: ")


def client_for(running: Running | str) -> Client:
    target = running if isinstance(running, str) else running.grpc_target
    return Client(target, timeout=RUN_TIMEOUT)


@contextlib.contextmanager
def started_worker(worker: Worker) -> Iterator[Worker]:
    """Starts ``worker`` and stops it (without draining) when the block ends."""
    worker.start()
    try:
        yield worker
    finally:
        worker.stop(drain=False, timeout=5.0)


def job_by_id(detail: runs_pb2.RunDetail, job_id: str) -> Any:
    for job in detail.jobs:
        if job.id == job_id:
            return job
    raise AssertionError(f"run {detail.run.run_id} has no job {job_id!r}")


def run_events(client: Client, run_id: str) -> list[runs_pb2.RunEvent]:
    """Every event of a terminal run (the stream ends with the run)."""
    return list(client.stream_run_events(run_id, timeout=RUN_TIMEOUT))


def log_text(client: Client, workflow_id: str, job_id: str, run_id: str) -> str:
    return "".join(c.data for c in client.list_logs(workflow_id, job_id, run_id))


class Proc:
    """A child process whose stdout and stderr lines are read by threads, so
    a test can wait for a line with a timeout (a blocking read, no sleeps)."""

    def __init__(self, args: Sequence[str | os.PathLike[str]], **kwargs: Any) -> None:
        self.popen = subprocess.Popen(
            [os.fspath(a) for a in args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            **kwargs,
        )
        self.stdout_lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_lines: queue.Queue[str | None] = queue.Queue()
        self.stdout_seen: list[str] = []
        self.stderr_seen: list[str] = []
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._read, args=(self.popen.stdout, self.stdout_lines), daemon=True
            ),
            threading.Thread(
                target=self._read, args=(self.popen.stderr, self.stderr_lines), daemon=True
            ),
        ]
        for t in self._readers:
            t.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @staticmethod
    def _read(pipe: IO[str], lines: queue.Queue[str | None]) -> None:
        for line in pipe:
            lines.put(line)
        lines.put(None)

    def _expect(
        self, lines: queue.Queue[str | None], seen: list[str], needle: str, timeout: float
    ) -> str:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:  # end of the pipe: nothing more will come
                lines.put(None)
                break
            seen.append(line)
            if needle in line:
                return line
        raise AssertionError(
            f"no line with {needle!r} within {timeout} s (exit code {self.popen.poll()}); "
            f"stdout: {''.join(self.stdout_seen)!r} stderr: {''.join(self.stderr_seen)!r}"
        )

    def expect_stdout(self, needle: str, timeout: float = PROC_TIMEOUT) -> str:
        """The first new stdout line containing ``needle``."""
        return self._expect(self.stdout_lines, self.stdout_seen, needle, timeout)

    def expect_stderr(self, needle: str, timeout: float = PROC_TIMEOUT) -> str:
        """The first new stderr line containing ``needle``."""
        return self._expect(self.stderr_lines, self.stderr_seen, needle, timeout)

    def wait(self, timeout: float = PROC_TIMEOUT) -> int:
        code = self.popen.wait(timeout)
        for t in self._readers:
            t.join(5.0)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10.0)
