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
from ._backoff import Backoff
from ._channel import Connection
from ._context import JobContext, StopReason
from ._env import PASS_ENV_VAR, SECRET_ENV_VAR, job_env_policy, names_from_env
from ._errors import TrellisError, rpc_code, rpc_details, wrap_rpc_error
from ._handlers import Handler, check_handler, run_handler
from ._heartbeat import Heartbeater
from ._logs import LogShipper
from ._pb import workers_pb2
from ._redact import Redactor
from ._reporter import Reporter, complete_result, fail_result
from ._shell import job_env, run_shell

_log = logging.getLogger("trellis.worker_sdk")

H = TypeVar("H", bound=Handler)

# A stream that stayed up this long proves the server is healthy again.
_HEALTHY_AFTER = 10.0
# How long stop() waits for slot threads whose jobs it has told to stop:
# a shell job gets SIGTERM and, 5 s later, SIGKILL.
_SLOT_EXIT_GRACE = 6.0
_RESULT_FLUSH_TIMEOUT = 10.0


def default_worker_id() -> str:
    """``<hostname>-<pid>-<6 hex digits>``: unique even for several workers per process."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class _Job:
    """The worker's bookkeeping for one held lease."""

    __slots__ = ("ctx", "deadline", "decided", "interval", "last_beat", "started", "ttl")

    def __init__(self, ctx: JobContext, ttl: int, now: float) -> None:
        self.ctx = ctx
        self.ttl = ttl
        self.interval = ttl / 3.0
        # Counting from receipt means a job shorter than ttl/3 never heartbeats.
        self.last_beat = now
        # When a handler job's own time limit runs out (monotonic clock).
        self.deadline: float | None = None
        self.started = False
        # A result was queued (or, for a lost lease, nothing will be): later
        # outcomes of the same attempt are ignored.
        self.decided = False


# Answers after which reconnecting is pointless.
_REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


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
        self._idle = threading.Condition(self._lock)  # notified as jobs finish
        self._ticker_cv = threading.Condition(threading.Lock())
        self._jobs: dict[str, _Job] = {}
        self._running = 0
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._slot_threads: list[threading.Thread] = []
        self._call: grpc.Call | None = None  # the open StreamAssignments call
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
        return self._running

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
        self._reporter = Reporter(conn, self._logs, self._on_reported)
        self._heartbeats = Heartbeater(conn, self._on_heartbeat)
        self._logs.start()
        self._reporter.start()
        self._heartbeats.start()
        for i in range(self.slots):
            t = threading.Thread(target=self._slot_loop, name=f"trellis-slot-{i}", daemon=True)
            self._slot_threads.append(t)
        self._threads = [
            threading.Thread(target=self._ticker_loop, name="trellis-ticker", daemon=True),
            threading.Thread(target=self._assignment_loop, name="trellis-stream", daemon=True),
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
                self._idle.notify_all()
            call = self._call
        if not first:
            if threading.current_thread() not in self._slot_threads:
                self._closed.wait()
            return
        if threading.current_thread() in self._slot_threads:
            # Called from a handler: draining would wait for that very job,
            # and a slot cannot join itself. Stop from a thread of our own.
            threading.Thread(
                target=self._shutdown,
                args=(call, drain, timeout),
                name="trellis-stop",
                daemon=True,
            ).start()
            return
        self._shutdown(call, drain, timeout)

    def _shutdown(self, call: grpc.Call | None, drain: bool, timeout: float) -> None:
        if call is not None:
            call.cancel()

        # Jobs that never got a slot have not started: give them back now.
        for job in self._snapshot():
            self._abandon(job, StopReason.SHUTDOWN, unstarted_only=True)

        if drain:
            end = time.monotonic() + timeout
            with self._idle:
                while self._running and not self._abort_drain:
                    remaining = end - time.monotonic()
                    if remaining <= 0:
                        break
                    self._idle.wait(remaining)
        for job in self._snapshot():
            self._abandon(job, StopReason.SHUTDOWN)

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

    def _capabilities(self) -> workers_pb2.WorkerCapabilities:
        """What this worker runs, as the server is told."""
        return workers_pb2.WorkerCapabilities(handlers=sorted(self._handlers), shell=self.shell)

    def _assignment_loop(self) -> None:
        assert self._conn is not None
        conn = self._conn
        backoff = Backoff(base=0.1, cap=10.0)
        failures = 0
        while not self._stopping.is_set():
            opened = time.monotonic()
            capabilities = self._capabilities()
            request = workers_pb2.StreamAssignmentsRequest(
                worker_id=self.worker_id,
                labels=self.labels,
                lease_ttl_secs=self.lease_ttl_secs,
                slots=self.slots,
                capabilities=capabilities,
            )
            registration = workers_pb2.RegisterWorkerRequest(
                worker_id=self.worker_id, labels=self.labels, capabilities=capabilities
            )
            try:
                conn.workers.RegisterWorker(registration, timeout=10.0, metadata=conn.metadata)
                call = conn.workers.StreamAssignments(request, metadata=conn.metadata)
                with self._lock:
                    if self._stopping.is_set():
                        call.cancel()
                        break
                    self._call = call
                _log.info("worker %s connected to %s", self.worker_id, self.target)
                failures = 0
                for response in call:
                    backoff.reset()
                    self._on_assignments(response)
                _log.info("assignment stream ended by the server; reconnecting")
            except grpc.RpcError as err:
                if self._stopping.is_set():
                    break
                if rpc_code(err) in _REFUSED:
                    # Retrying cannot mend a missing, revoked or too narrow
                    # credential: stop, and let run() say why.
                    self._refused = wrap_rpc_error(err)
                    _log.error(
                        "the server refused this worker (%s: %s); stopping",
                        rpc_code(err).name,
                        rpc_details(err),
                    )
                    threading.Thread(target=self.stop, name="trellis-stop", daemon=True).start()
                    break
                failures += 1
                # Say it once, then now and then: a worker waiting for its
                # server should not flood the log.
                _log.log(
                    logging.WARNING if failures % 10 == 1 else logging.DEBUG,
                    "cannot stream assignments from %s (%s: %s); retrying",
                    self.target,
                    rpc_code(err).name,
                    rpc_details(err),
                )
            except Exception:
                if self._stopping.is_set():
                    break
                _log.exception("assignment stream failed")
            finally:
                with self._lock:
                    self._call = None
            if time.monotonic() - opened >= _HEALTHY_AFTER:
                backoff.reset()
            self._stopping.wait(backoff.next_delay())

    def _on_assignments(self, response: workers_pb2.StreamAssignmentsResponse) -> None:
        now = time.monotonic()
        sink = self._logs
        assert sink is not None
        for assignment in response.assignments:
            lease = assignment.lease
            ctx = JobContext(assignment.job, lease.lease_id, sink)
            job = _Job(ctx, lease.ttl_secs or self.lease_ttl_secs, now)
            with self._lock:
                self._jobs[ctx.lease_id] = job
                self._running += 1
                stopping = self._stopping.is_set()
            if stopping:
                self._abandon(job, StopReason.SHUTDOWN)
            else:
                self._queue.put(job)
        for lease_id in response.cancelled_lease_ids:
            self._stop_job(lease_id, StopReason.CANCELLED)

    # -- running jobs -----------------------------------------------------

    def _slot_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.decided:
                    continue
                job.started = True
                stopped = job.ctx.stop_reason is not None
            try:
                outcome = None if stopped else self._execute(job)
            except BaseException as exc:  # a slot must survive whatever a job does
                _log.exception("job %s crashed its slot", job.ctx.job_id)
                outcome = fail_result(job.ctx.lease_id, f"{type(exc).__name__}: {exc}", True)
            self._finish(job, self._masked(outcome))

    def _execute(self, job: _Job) -> workers_pb2.JobResult | None:
        ctx = job.ctx
        handler = self._handlers.get(ctx.command)
        if handler is not None:
            return self._run_handler(job, handler)
        if self.shell:
            return self._run_shell(ctx)
        return fail_result(ctx.lease_id, f"no handler for command '{ctx.command}'", False)

    def _run_handler(self, job: _Job, handler: Handler) -> workers_pb2.JobResult:
        ctx = job.ctx
        if ctx.timeout_secs:
            with self._ticker_cv:
                job.deadline = time.monotonic() + ctx.timeout_secs
                self._ticker_cv.notify()
        assert self._logs is not None
        return run_handler(handler, ctx, self._logs)

    def _run_shell(self, ctx: JobContext) -> workers_pb2.JobResult | None:
        sink = self._logs
        assert sink is not None
        env = job_env(
            job_id=ctx.job_id,
            run_id=ctx.run_id,
            workflow_id=ctx.workflow_id,
            attempt=ctx.attempt,
            env=ctx.env,
            upstream_outputs=ctx.upstream_outputs,
            base=self._env_policy.inherited,
        )
        result = run_shell(
            ctx.command,
            env=env,
            timeout=ctx.timeout_secs or None,
            cancelled=ctx.cancelled,
            on_line=lambda stream, line: sink.append(ctx, stream, line),
        )
        if result.stopped:
            return None  # _finish reports according to the stop reason
        if result.timed_out:
            return fail_result(ctx.lease_id, f"timed out after {ctx.timeout_secs} s", True)
        if result.exit_code == 0:
            return complete_result(ctx.lease_id, result.outputs)
        return fail_result(ctx.lease_id, result.error(), True)

    def _masked(self, result: workers_pb2.JobResult | None) -> workers_pb2.JobResult | None:
        """``result`` with the secrets a job may have put in it masked: its
        error and outputs are readable by more people than the worker."""
        if result is None or not self._redactor:
            return result
        if result.HasField("fail"):
            result.fail.error = self._redactor.redact(result.fail.error)
        else:
            outputs = result.complete.outputs
            for key, value in list(outputs.items()):
                outputs[key] = self._redactor.redact(value)
        return result

    def _finish(self, job: _Job, outcome: workers_pb2.JobResult | None) -> None:
        """Records how a job's attempt ended and queues its result."""
        ctx = job.ctx
        with self._lock:
            if job.decided:
                return  # handed back earlier (shutdown, timeout)
            result = self._decide(job, outcome)
        if result is not None:
            assert self._reporter is not None
            self._reporter.submit(ctx.lease_id, result)
        elif self._logs is not None:
            self._logs.discard(ctx.lease_id)

    def _decide(
        self, job: _Job, outcome: workers_pb2.JobResult | None
    ) -> workers_pb2.JobResult | None:
        """Picks the result to report (None: report nothing). Holds the lock."""
        job.decided = True
        self._running -= 1
        if not self._running:
            self._idle.notify_all()
        ctx = job.ctx
        reason = ctx.stop_reason
        if reason is StopReason.LEASE_LOST:
            self._jobs.pop(ctx.lease_id, None)
            return None
        if reason is StopReason.CANCELLED:
            return fail_result(ctx.lease_id, "cancelled", False)
        if reason is StopReason.SHUTDOWN:
            return fail_result(ctx.lease_id, StopReason.SHUTDOWN.value, True)
        if reason is StopReason.TIMEOUT:
            return fail_result(ctx.lease_id, f"timed out after {ctx.timeout_secs} s", True)
        if outcome is None:
            return fail_result(ctx.lease_id, "job stopped", True)
        return outcome

    def _abandon(self, job: _Job, reason: StopReason, *, unstarted_only: bool = False) -> None:
        """Stops a job and reports it now, without waiting for its handler."""
        with self._lock:
            if job.decided or (unstarted_only and job.started):
                return
            job.ctx._request_stop(reason)
            result = self._decide(job, None)
        if result is not None:
            assert self._reporter is not None
            self._reporter.submit(job.ctx.lease_id, result)

    def _stop_job(self, lease_id: str, reason: StopReason) -> None:
        """Asks a job to stop; its result is decided when its handler returns."""
        with self._lock:
            job = self._jobs.get(lease_id)
            if job is None or job.decided:
                return
            job.ctx._request_stop(reason)
        _log.info("job %s (lease %s): %s", job.ctx.job_id, lease_id, reason.value)

    def _snapshot(self) -> list[_Job]:
        with self._lock:
            return [job for job in self._jobs.values() if not job.decided]

    def _on_reported(self, lease_ids: list[str]) -> None:
        with self._lock:
            for lease_id in lease_ids:
                self._jobs.pop(lease_id, None)
        logs = self._logs
        if logs is not None:
            for lease_id in lease_ids:
                logs.discard(lease_id)

    # -- heartbeats and time limits ---------------------------------------

    def _ticker_loop(self) -> None:
        """Sends due heartbeats and enforces handler time limits."""
        assert self._heartbeats is not None
        tick = max(0.05, self.lease_ttl_secs / 6.0)
        while not self._ticker_stop.is_set():
            now = time.monotonic()
            due: list[workers_pb2.HeartbeatRequest] = []
            expired: list[_Job] = []
            next_deadline = now + tick
            with self._lock:
                for lease_id, job in self._jobs.items():
                    if job.ctx.stop_reason is StopReason.LEASE_LOST:
                        continue
                    if now - job.last_beat >= job.interval:
                        job.last_beat = now
                        due.append(
                            workers_pb2.HeartbeatRequest(lease_id=lease_id, lease_ttl_secs=job.ttl)
                        )
                    if job.deadline is not None and not job.decided:
                        if now >= job.deadline:
                            expired.append(job)
                        else:
                            next_deadline = min(next_deadline, job.deadline)
            if due:
                self._heartbeats.send(due)
            for job in expired:
                _log.info("job %s timed out after %d s", job.ctx.job_id, job.ctx.timeout_secs)
                self._abandon(job, StopReason.TIMEOUT)
            with self._ticker_cv:
                self._ticker_cv.wait(max(0.0, next_deadline - time.monotonic()))

    def _on_heartbeat(self, answer: workers_pb2.HeartbeatResponse) -> None:
        if answer.lease_lost:
            self._stop_job(answer.lease_id, StopReason.LEASE_LOST)
        elif answer.cancelled:
            self._stop_job(answer.lease_id, StopReason.CANCELLED)
