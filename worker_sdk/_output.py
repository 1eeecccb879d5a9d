"""Sends what a handler writes to ``sys.stdout`` and ``sys.stderr`` to its job's log.

While a worker runs, both are routers that look up the job of the calling
context: slots run in threads of their own, each with its own context, so
concurrent jobs never mix, and writes from anywhere else reach the real
streams. ``asyncio`` tasks inherit the context of the slot that runs them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from contextvars import ContextVar, Token
from typing import Any, TextIO, cast

from ._context import JobContext, LogSink, LogStreamName

# A line longer than this goes to the log in pieces rather than held back whole.
_MAX_LINE = 64 * 1024


class _LineWriter:
    """Gathers writes into lines, so ``print("a", "b")`` is one log line."""

    __slots__ = ("_emit", "_lock", "_pending")

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._pending = ""
        # Threads a handler starts in its own context write here too.
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            data = self._pending + text
            end = data.rfind("\n") + 1
            if end:
                self._emit(data[:end])
            rest = data[end:]
            while len(rest) >= _MAX_LINE:
                self._emit(rest[:_MAX_LINE])
                rest = rest[_MAX_LINE:]
            self._pending = rest
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._emit(self._pending)
                self._pending = ""


class JobOutput:
    """The stdout and stderr of one handler call: ``with JobOutput(ctx, sink):``
    routes the calling context's writes to the job's log, and logs what is
    pending on exit."""

    __slots__ = ("_token", "stderr", "stdout")

    def __init__(self, ctx: JobContext, sink: LogSink) -> None:
        def emitter(stream: LogStreamName) -> Callable[[str], None]:
            return lambda text: sink.append(ctx, stream, text)

        self.stdout = _LineWriter(emitter("stdout"))
        self.stderr = _LineWriter(emitter("stderr"))
        self._token: Token[JobOutput | None] | None = None

    def __enter__(self) -> JobOutput:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        self.stdout.flush()
        self.stderr.flush()


_current: ContextVar[JobOutput | None] = ContextVar("trellis_job_output", default=None)


class _Router:
    """Stands in for ``sys.stdout`` or ``sys.stderr``."""

    def __init__(self, stream: LogStreamName, real: TextIO | None) -> None:
        self._stream: LogStreamName = stream
        # None where the process has no such stream: Python's print() then
        # writes nothing, and so does the router outside jobs.
        self.real = real

    def _job(self) -> _LineWriter | None:
        out = _current.get()
        if out is None:
            return None
        return out.stdout if self._stream == "stdout" else out.stderr

    def write(self, text: str) -> int:
        job = self._job()
        if job is not None:
            return job.write(text)
        return self.real.write(text) if self.real is not None else len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        job = self._job()
        if job is not None:
            job.flush()
        elif self.real is not None:
            self.real.flush()

    def isatty(self) -> bool:
        if self._job() is not None or self.real is None:
            return False
        return self.real.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


_lock = threading.Lock()
_installs = 0
_routers: tuple[_Router, _Router] | None = None


def install() -> None:
    """Puts the routers in place (once for all workers of the process)."""
    global _installs, _routers
    with _lock:
        _installs += 1
        if _installs > 1:
            return
        out = _Router("stdout", sys.stdout)
        err = _Router("stderr", sys.stderr)
        sys.stdout = cast(TextIO, out)
        sys.stderr = cast(TextIO, err)
        _routers = (out, err)


def uninstall() -> None:
    """Undoes :func:`install` once the last worker has stopped."""
    global _installs, _routers
    with _lock:
        _installs -= 1
        if _installs or _routers is None:
            return
        out, err = _routers
        _routers = None
        # Someone who replaced a router since keeps theirs.
        if sys.stdout is cast(TextIO, out):
            sys.stdout = cast(TextIO, out.real)
        if sys.stderr is cast(TextIO, err):
            sys.stderr = cast(TextIO, err.real)
