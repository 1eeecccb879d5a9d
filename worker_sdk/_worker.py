"""The worker: takes assigned jobs, runs them in slots, reports what became of them."""

from __future__ import annotations

import logging
import os
import queue
import secrets
import signal
import socket
import threading
import time
import types
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from . import _output
from ._assignments import AssignmentStream, Requests
from ._channel import Connection
from ._context import JobContext, StopReason
from ._env import PASS_ENV_VAR, SECRET_ENV_VAR, job_env_policy, names_from_env
from ._errors import TrellisError
from ._handlers import Handler, check_handler
from ._heartbeat import Heartbeater
from ._jobs import HeldJob, Ledger
from ._logs import LogShipper
from ._pb import workers_pb2
from ._redact import Redactor
from ._reporter import Reporter, fail_result
from ._runner import JobRunner

_log = logging.getLogger("trellis.worker_sdk")

H = TypeVar("H", bound=Handler)

# How long stop() waits for slot threads whose jobs it has told to stop:
# a shell job gets SIGTERM and, 5 s later, SIGKILL.
_SLOT_EXIT_GRACE = 6.0
_RESULT_FLUSH_TIMEOUT = 10.0


def default_worker_id() -> str:
    """``<hostname>-<pid>-<6 hex digits>``: unique even for several workers per process."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """Runs jobs the Trellis server assigns to it.

    Jobs whose ``command`` names a registered handler run that handler; with
    ``shell=True`` any other command runs under ``/bin/sh -c``. The worker
    tells the server which commands it has handlers for and whether it runs
    shell commands, so that it is given only jobs it can run; handlers are
    registered before :meth:`start` (one registered later counts from the
    next reconnection).

    Args:
        target: ``host:port`` of the Trellis gRPC server.
        worker_id: defaults to ``<hostname>-<pid>-<random>``.
        labels: the labels jobs may require of the worker.
        slots: how many jobs run at once (one thread each); also the most
            jobs the server assigns to this worker at a time.
        lease_ttl_secs: lease time to live; heartbeats go every third of it.
        token: sent as ``authorization: Bearer <token>`` on every call
            (a personal access token or a machine user's token, which
            outlive access tokens); default: ``TRELLIS_TOKEN``. The server
            requires the ``jobs:work`` scope.
        organization_id: sent as ``x-organization-id`` on every call;
            default: ``TRELLIS_ORGANIZATION_ID``. Personal access tokens
            need it.
        shell: run commands without a handler as shell commands.
        pass_env: the worker's environment variables shell jobs get besides
            the base ones (``PATH``, ``HOME``, ``USER``, ``LOGNAME``,
            ``SHELL``, ``LANG``, ``LANGUAGE``, ``LC_*``, ``TZ``, ``TMPDIR``):
            names, or prefixes ending in ``*``; default:
            ``TRELLIS_WORKER_PASS_ENV`` (comma-separated). Credentials
            (``TRELLIS_TOKEN``, ``TRELLIS_PASSWORD``,
            ``TRELLIS_ADMIN_PASSWORD``, the worker's token, any Trellis-issued
            token) and ``secret_env`` variables are never passed.
        secret_env: variables (names or ``PREFIX*``) jobs never get and whose
            values are masked as ``***`` in job logs, outputs and errors,
            like the credentials; default: ``TRELLIS_WORKER_SECRET_ENV``
            (comma-separated). Both are applied to the environment as it is
            when the worker is made.
        channel: use this gRPC channel (not closed by the worker) instead of
            opening one to ``target``.

    Example::

        worker = Worker("localhost:50051", labels=["linux"], slots=4)

        @worker.handler("resize")
        def resize(ctx: JobContext) -> dict[str, str]:
            ctx.log(f"resizing for run {ctx.run_id}")
            return {"url": "s3://bucket/out.png"}

        worker.run()
    """

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        worker_id: str | None = None,
        labels: Sequence[str] = (),
        slots: int = 1,
        lease_ttl_secs: int = 30,
        token: str | None = None,
        organization_id: str | None = None,
        shell: bool = False,
        pass_env: Sequence[str] | None = None,
        secret_env: Sequence[str] | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        if isinstance(labels, str):
            raise TypeError("labels must be a sequence of strings, not one string")
        if not 1 <= slots <= 1000:
            raise ValueError("slots must be between 1 and 1000")
        if not 1 <= lease_ttl_secs <= 3600:
            raise ValueError("lease_ttl_secs must be between 1 and 3600")
        self.target = target
        self.worker_id = worker_id or default_worker_id()
        self.labels = tuple(labels)
        self.slots = slots
        self.lease_ttl_secs = lease_ttl_secs
        self.shell = shell
        self._token = token or os.environ.get("TRELLIS_TOKEN") or None
        self._organization_id = organization_id or os.environ.get("TRELLIS_ORGANIZATION_ID") or None
        self._env_policy = job_env_policy(
            os.environ,
            pass_env=names_from_env(os.environ, PASS_ENV_VAR) if pass_env is None else pass_env,
            secret_env=(
                names_from_env(os.environ, SECRET_ENV_VAR) if secret_env is None else secret_env
            ),
            token=self._token,
        )
        self._redactor = Redactor(self._env_policy.secrets)
        self._channel = channel
        self._handlers: dict[str, Handler] = {}

        self._lock = threading.Lock()
        self._jobs = Ledger(self._lock, self._submit, self._discard_logs)
        self._ticker_cv = threading.Condition(threading.Lock())
        self._queue: queue.SimpleQueue[HeldJob | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._slot_threads: list[threading.Thread] = []
        self._started = False
        self._stopping = threading.Event()
        self._abort_drain = False
        self._closed = threading.Event()
        # Set when the server refused the worker's credentials: run() raises it.
        self._refused: TrellisError | None = None
        # Heartbeats go on while stop() drains and reports, so the ticker has
        # its own stop signal, given once the results are out.
        self._ticker_stop = threading.Event()
        self._conn: Connection | None = None
        self._logs: LogShipper | None = None
        self._reporter: Reporter | None = None
        self._heartbeats: Heartbeater | None = None
        self._runner: JobRunner | None = None
        self._stream: AssignmentStream | None = None

    # -- handlers ---------------------------------------------------------

    def handler(self, name: str) -> Callable[[H], H]:
        """Decorator: jobs whose ``command`` is ``name`` run the decorated function."""

        def decorate(fn: H) -> H:
            self.register(name, fn)
            return fn

        return decorate

    def register(self, name: str, fn: Handler) -> None:
        """Makes ``fn`` the handler of jobs whose ``command`` is ``name``.

        While it runs, what ``fn`` writes to ``sys.stdout`` and ``sys.stderr``
        (``print()``) goes to the job's log; an ``async def`` handler runs
        to completion on an event loop of its own in the slot's thread.
        """
        if not name:
            raise ValueError("a handler needs a non-empty command name")
        check_handler(name, fn)
        if name in self._handlers:
            raise ValueError(f"a handler for {name!r} is already registered")
        self._handlers[name] = fn

    # -- life cycle -------------------------------------------------------

    @property
    def running_jobs(self) -> int:
        """Jobs received and not finished yet (running or waiting for a free slot)."""
        return self._jobs.running

    def start(self) -> None:
        """Connects and starts taking jobs in background threads; returns at once.

        Connection failures are retried forever with backoff; see :meth:`stop`.
        """
        with self._lock:
            if self._started:
                raise RuntimeError("a Worker can be started only once")
            self._started = True
        conn = self._conn = Connection(
            self.target,
            token=self._token,
            organization_id=self._organization_id,
            channel=self._channel,
        )
        self._logs = LogShipper(conn, redactor=self._redactor)
        self._reporter = Reporter(conn, self._logs, self._jobs.reported)
        self._heartbeats = Heartbeater(conn, self._on_heartbeat)
        self._runner = JobRunner(
            self._handlers,
            env_policy=self._env_policy,
            redactor=self._redactor,
            logs=self._logs,
            time_limit=self._start_time_limit,
        )
        self._stream = AssignmentStream(
            conn,
            worker_id=self.worker_id,
            target=self.target,
            lock=self._lock,
            stopping=self._stopping,
            requests=self._requests,
            on_response=self._on_assignments,
            on_refused=self._on_refused,
        )
        self._logs.start()
        self._reporter.start()
        self._heartbeats.start()
        for i in range(self.slots):
            t = threading.Thread(target=self._slot_loop, name=f"trellis-slot-{i}", daemon=True)
            self._slot_threads.append(t)
        self._threads = [
            threading.Thread(target=self._ticker_loop, name="trellis-ticker", daemon=True),
            threading.Thread(target=self._stream.run, name="trellis-stream", daemon=True),
        ]
        _output.install()
        for t in (*self._slot_threads, *self._threads):
            t.start()

    def run(self, *, drain_timeout: float = 30.0) -> None:
        """Runs the worker until :meth:`stop` is called; blocks.

        Raises :class:`Unauthenticated` or :class:`PermissionDenied` when the
        server refuses the worker's credentials (it then stops at once rather
        than retrying).

        From the main thread it also handles SIGTERM and SIGINT: the first one
        stops taking jobs and drains for up to ``drain_timeout`` seconds, a
        second one stops without waiting.
        """
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, frame: types.FrameType | None) -> None:
                drain = not self._stopping.is_set()
                _log.info(
                    "received %s: %s",
                    signal.Signals(signum).name,
                    "draining" if drain else "stopping now",
                )
                threading.Thread(
                    target=self.stop,
                    kwargs={"drain": drain, "timeout": drain_timeout},
                    name="trellis-stop",
                    daemon=True,
                ).start()

            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            self.start()
            # A timed wait keeps the main thread responsive to signals.
            while not self._closed.wait(0.5):
                pass
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self._refused is not None:
            raise self._refused

    def stop(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Stops taking jobs, then finishes or hands back the ones it holds, and closes.

        With ``drain``, running jobs get up to ``timeout`` seconds to finish.
        Jobs still running after that (all of them without ``drain``), and jobs
        that were waiting for a slot, are told to stop and reported as retryable
        failures ("worker shutting down"), so another worker picks them up at
        once instead of after their lease expires. Safe to call more than once
        and from any thread; a later ``drain=False`` call cuts a drain short.
        """
        with self._lock:
            if not self._started:
                self._started = True  # a stopped worker cannot be started either
                self._stopping.set()
                self._closed.set()
                return
            first = not self._stopping.is_set()
            self._stopping.set()
            if not drain:
                self._abort_drain = True
                self._jobs.idle.notify_all()
        if not first:
            if threading.current_thread() not in self._slot_threads:
                self._closed.wait()
            return
        if threading.current_thread() in self._slot_threads:
            # Called from a handler: draining would wait for that very job,
            # and a slot cannot join itself. Stop from a thread of our own.
            threading.Thread(
                target=self._shutdown,
                args=(drain, timeout),
                name="trellis-stop",
                daemon=True,
            ).start()
            return
        self._shutdown(drain, timeout)

    def _shutdown(self, drain: bool, timeout: float) -> None:
        assert self._stream is not None
        self._stream.cancel()

        # Jobs that never got a slot have not started: give them back now.
        for job in self._jobs.undecided():
            self._jobs.abandon(job, StopReason.SHUTDOWN, unstarted_only=True)

        if drain:
            self._jobs.wait_idle(timeout, lambda: self._abort_drain)
        for job in self._jobs.undecided():
            self._jobs.abandon(job, StopReason.SHUTDOWN)

        for _ in self._slot_threads:
            self._queue.put(None)
        slot_deadline = time.monotonic() + _SLOT_EXIT_GRACE
        for t in self._slot_threads:
            t.join(max(0.0, slot_deadline - time.monotonic()))

        assert self._reporter and self._heartbeats and self._logs and self._conn
        self._reporter.close(_RESULT_FLUSH_TIMEOUT)
        with self._ticker_cv:
            self._ticker_stop.set()
            self._ticker_cv.notify_all()
        self._heartbeats.close()
        self._logs.close()
        for t in self._threads:
            t.join(5.0)
        self._conn.close()
        _output.uninstall()
        self._closed.set()
        _log.info("worker %s stopped", self.worker_id)

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the assignment stream --------------------------------------------

    def _requests(self) -> Requests:
        """What the worker asks for on each connection, with what it runs."""
        capabilities = workers_pb2.WorkerCapabilities(
            handlers=sorted(self._handlers), shell=self.shell
        )
        registration = workers_pb2.RegisterWorkerRequest(
            worker_id=self.worker_id, labels=self.labels, capabilities=capabilities
        )
        request = workers_pb2.StreamAssignmentsRequest(
            worker_id=self.worker_id,
            labels=self.labels,
            lease_ttl_secs=self.lease_ttl_secs,
            slots=self.slots,
            capabilities=capabilities,
        )
        return registration, request

    def _on_refused(self, err: TrellisError) -> None:
        self._refused = err
        threading.Thread(target=self.stop, name="trellis-stop", daemon=True).start()

    def _on_assignments(self, response: workers_pb2.StreamAssignmentsResponse) -> None:
        now = time.monotonic()
        sink = self._logs
        assert sink is not None
        for assignment in response.assignments:
            lease = assignment.lease
            ctx = JobContext(assignment.job, lease.lease_id, sink)
            job = HeldJob(ctx, lease.ttl_secs or self.lease_ttl_secs, now)
            if self._jobs.add(job, self._stopping):
                self._jobs.abandon(job, StopReason.SHUTDOWN)
            else:
                self._queue.put(job)
        for lease_id in response.cancelled_lease_ids:
            self._jobs.stop_job(lease_id, StopReason.CANCELLED)

    # -- running jobs -----------------------------------------------------

    def _slot_loop(self) -> None:
        runner = self._runner
        assert runner is not None
        while True:
            job = self._queue.get()
            if job is None:
                return
            stopped = self._jobs.begin(job)
            if stopped is None:
                continue
            try:
                outcome = None if stopped else runner.execute(job, shell=self.shell)
            except BaseException as exc:  # a slot must survive whatever a job does
                _log.exception("job %s crashed its slot", job.ctx.job_id)
                outcome = fail_result(job.ctx.lease_id, f"{type(exc).__name__}: {exc}", True)
            self._jobs.finish(job, runner.masked(outcome))

    def _submit(self, lease_id: str, result: workers_pb2.JobResult) -> None:
        assert self._reporter is not None
        self._reporter.submit(lease_id, result)

    def _discard_logs(self, lease_id: str) -> None:
        if self._logs is not None:
            self._logs.discard(lease_id)

    # -- heartbeats and time limits ---------------------------------------

    def _ticker_loop(self) -> None:
        """Sends due heartbeats and enforces handler time limits."""
        assert self._heartbeats is not None
        tick = max(0.05, self.lease_ttl_secs / 6.0)
        while not self._ticker_stop.is_set():
            now = time.monotonic()
            due, expired, next_look = self._jobs.due(now, now + tick)
            if due:
                self._heartbeats.send(due)
            for job in expired:
                _log.info("job %s timed out after %d s", job.ctx.job_id, job.ctx.timeout_secs)
                self._jobs.abandon(job, StopReason.TIMEOUT)
            with self._ticker_cv:
                self._ticker_cv.wait(max(0.0, next_look - time.monotonic()))

    def _start_time_limit(self, job: HeldJob, secs: int) -> None:
        with self._ticker_cv:
            job.deadline = time.monotonic() + secs
            self._ticker_cv.notify()

    def _on_heartbeat(self, answer: workers_pb2.HeartbeatResponse) -> None:
        if answer.lease_lost:
            self._jobs.stop_job(answer.lease_id, StopReason.LEASE_LOST)
        elif answer.cancelled:
            self._jobs.stop_job(answer.lease_id, StopReason.CANCELLED)
