"""Runs a job's command with ``/bin/sh -c`` and turns what it prints into logs and outputs."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Literal, Protocol

from ._inputs import compact_json

StreamName = Literal["stdout", "stderr"]

_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")
# GitHub Actions' classic workflow command; the name ends at the first "::".
_SET_OUTPUT = re.compile(r"^::set-output name=(?P<name>.*?)::(?P<value>.*)$")
# A line longer than this is logged in pieces rather than held back whole.
_MAX_LINE = 64 * 1024
_READ_SIZE = 64 * 1024
# How long pipes may stay open once the shell has exited (a background child
# still holding them) before the rest of the process group is killed.
_EOF_GRACE = 1.0


def env_name(*parts: str) -> str:
    """``env_name("build-a", "out.url") == "BUILD_A_OUT_URL"``: upper case, each
    character that is not an ASCII letter or digit replaced by ``_``."""
    return "_".join(_NON_ALNUM.sub("_", part).upper() for part in parts)


def upstream_env(upstream_outputs: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """``TRELLIS_UPSTREAM_<PARENT>_<NAME>`` variables for the outputs of a job's parents."""
    return {
        env_name("TRELLIS_UPSTREAM", parent, name): value
        for parent, outputs in upstream_outputs.items()
        for name, value in outputs.items()
    }


INPUT_PREFIX = "TRELLIS_INPUT_"


def input_env(inputs: Mapping[str, Any]) -> dict[str, str]:
    """``TRELLIS_INPUT_<NAME>`` variables for a run's inputs: the name upper
    case with ``-`` (and anything else not an ASCII letter or digit) as
    ``_``, as the server derives it; a string value as it is, any other as
    compact JSON (``true``, ``3``, ``{"a":1}``).

    Raises ValueError for a string holding a NUL character, which no
    environment variable can carry.
    """
    result: dict[str, str] = {}
    for name, value in inputs.items():
        text = value if isinstance(value, str) else compact_json(value)
        if "\0" in text:
            raise ValueError(
                f"input {name!r} holds a NUL character, which an environment variable cannot carry"
            )
        result[env_name("TRELLIS_INPUT", name)] = text
    return result


def job_env(
    *,
    job_id: str,
    run_id: str,
    workflow_id: str,
    attempt: int,
    env: Mapping[str, str],
    upstream_outputs: Mapping[str, Mapping[str, str]],
    base: Mapping[str, str],
    inputs: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The environment of a shell job: ``base`` (what it inherits from the
    worker, see ``_env``), then the job's own variables, then the ``TRELLIS_*``
    ones, which win.

    The ``TRELLIS_INPUT_*`` variables are exactly the run's ``inputs``: any
    that ``base`` or ``env`` carry are dropped, so that a job can tell an
    input the run was not given from one it was. Input values only ever
    reach the command this way, never in its text.
    """
    result = {
        name: value
        for source in (base, env)
        for name, value in source.items()
        if not name.startswith(INPUT_PREFIX)
    }
    result.update(
        {
            "TRELLIS_JOB_ID": job_id,
            "TRELLIS_RUN_ID": run_id,
            "TRELLIS_WORKFLOW_ID": workflow_id,
            "TRELLIS_ATTEMPT": str(attempt),
        }
    )
    result.update(upstream_env(upstream_outputs))
    if inputs:
        result.update(input_env(inputs))
    return result


def _unescape(value: str) -> str:
    # The escapes GitHub's toolkit applies to command values: %25 last so that
    # "%250A" reads back as the literal "%0A".
    return value.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def parse_set_output(line: str) -> tuple[str, str] | None:
    """``(name, value)`` for a ``::set-output name=<name>::<value>`` line, else None.

    The trailing newline is ignored; ``%0A``, ``%0D`` and ``%25`` in the value
    stand for a newline, a carriage return and ``%`` as in GitHub Actions.
    """
    match = _SET_OUTPUT.match(line.rstrip("\r\n"))
    if match is None or not match["name"]:
        return None
    return match["name"], _unescape(match["value"])


@dataclass
class ShellResult:
    """How a shell command ended."""

    exit_code: int | None
    """The exit status; negative when killed by a signal, None if never collected."""
    outputs: dict[str, str] = field(default_factory=dict)
    timed_out: bool = False
    """It ran past its time limit and was killed."""
    stopped: bool = False
    """It was stopped because the ``cancelled`` event was set."""
    last_stderr: str = ""
    """The last non-empty line written to stderr (without the newline)."""

    def error(self) -> str:
        """The failure text for a non-zero exit: ``exit code N: <last stderr line>``."""
        code = self.exit_code
        if code is not None and code < 0:
            try:
                text = f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                text = f"killed by signal {-code}"
        else:
            text = f"exit code {code}"
        return f"{text}: {self.last_stderr}" if self.last_stderr else text


class _Pipe:
    """Splits one output pipe into lines."""

    def __init__(self, stream: StreamName, pipe: IO[bytes]) -> None:
        self.stream = stream
        self.pipe = pipe
        self.pending = b""


def run_shell(
    command: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    cancelled: _Flag | None = None,
    on_line: Callable[[StreamName, str], None] | None = None,
    kill_grace: float = 5.0,
    poll_interval: float = 0.05,
    cwd: str | None = None,
) -> ShellResult:
    """Runs ``command`` with ``/bin/sh -c`` in its own process group.

    Each line the command prints (newline kept, at most 64 KiB) goes to
    ``on_line`` as it comes; ``::set-output`` lines on stdout also become
    outputs. Past ``timeout`` seconds the whole process group is killed. Once
    ``cancelled`` is set it gets SIGTERM, then SIGKILL ``kill_grace`` seconds
    later. Everything happens on the calling thread (a selector over both
    pipes): a worker slot costs no extra threads.
    """
    result = ShellResult(exit_code=None)
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        # A new session makes the shell a process group leader, so signals
        # reach every process the command started, not just the shell.
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    selector = selectors.DefaultSelector()
    for pipe in (_Pipe("stdout", proc.stdout), _Pipe("stderr", proc.stderr)):
        selector.register(pipe.pipe, selectors.EVENT_READ, pipe)

    def emit(pipe: _Pipe, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace")
        if pipe.stream == "stdout":
            parsed = parse_set_output(line)
            if parsed is not None:
                result.outputs[parsed[0]] = parsed[1]
        else:
            stripped = line.rstrip("\r\n")
            if stripped.strip():
                result.last_stderr = stripped[:1000]
        if on_line is not None:
            on_line(pipe.stream, line)

    deadline = time.monotonic() + timeout if timeout else None
    term_sent_at: float | None = None
    killed = False
    exited_at: float | None = None
    last_output = 0.0
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is None:
                if deadline is not None and now >= deadline:
                    result.timed_out = True
                    _signal_group(proc.pid, signal.SIGKILL)
                    killed = True
                    deadline = None
                if cancelled is not None and cancelled.is_set() and term_sent_at is None:
                    if not killed:
                        result.stopped = True
                        _signal_group(proc.pid, signal.SIGTERM)
                    term_sent_at = now
                if term_sent_at is not None and not killed and now - term_sent_at >= kill_grace:
                    _signal_group(proc.pid, signal.SIGKILL)
                    killed = True
            elif not selector.get_map():
                break

            if not selector.get_map():
                # Both pipes closed while the process runs on: wait for it.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=poll_interval)
                continue
            ready = selector.select(poll_interval)
            quiet_since = None if exited_at is None else max(exited_at, last_output)
            if (
                not ready
                and quiet_since is not None
                and time.monotonic() - quiet_since >= _EOF_GRACE
            ):
                # The shell is gone and the pipes stay open but silent:
                # something it started in the background holds them. End it
                # with the job.
                _signal_group(proc.pid, signal.SIGKILL)
                break
            for key, _ in ready:
                pipe = key.data
                assert isinstance(pipe, _Pipe)
                chunk = os.read(key.fd, _READ_SIZE)
                last_output = time.monotonic()
                if not chunk:
                    selector.unregister(key.fileobj)
                    if pipe.pending:
                        emit(pipe, pipe.pending)
                        pipe.pending = b""
                    continue
                lines = (pipe.pending + chunk).split(b"\n")
                pipe.pending = lines.pop()
                for raw in lines:
                    # A line completed by this read can be longer than the
                    # cap when most of it was pending: it goes out in pieces
                    # too (the last one keeps the newline).
                    line = raw + b"\n"
                    while len(line) > _MAX_LINE + 1:
                        emit(pipe, line[:_MAX_LINE])
                        line = line[_MAX_LINE:]
                    emit(pipe, line)
                while len(pipe.pending) >= _MAX_LINE:
                    emit(pipe, pipe.pending[:_MAX_LINE])
                    pipe.pending = pipe.pending[_MAX_LINE:]
        for key in list(selector.get_map().values()):
            pipe = key.data
            assert isinstance(pipe, _Pipe)
            if pipe.pending:
                emit(pipe, pipe.pending)
    finally:
        selector.close()
        proc.stdout.close()
        proc.stderr.close()
        if proc.poll() is None:
            # Only on an error above: never leave the command running unwatched.
            _signal_group(proc.pid, signal.SIGKILL)
        result.exit_code = proc.wait()
    return result


class _Flag(Protocol):
    """Anything with ``is_set()``, such as a ``threading.Event``."""

    def is_set(self) -> bool: ...


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
