"""The leases a worker holds, and how each one's attempt is decided."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ._context import JobContext, StopReason
from ._pb import workers_pb2
from ._reporter import fail_result

_log = logging.getLogger("trellis.worker_sdk")


class HeldJob:
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


class Ledger:
    """The jobs a worker received and has not seen reported yet.

    An attempt is decided once, by whichever comes first: its handler
    returning, a shutdown, its time limit; the result goes to ``submit``.
    A job stays held (and heartbeated) until the server has its result.
    ``lock`` is the worker's own, so that taking a job and checking whether
    the worker stops happen together.
    """

    def __init__(
        self,
        lock: threading.Lock,
        submit: Callable[[str, workers_pb2.JobResult], None],
        discard_logs: Callable[[str], None],
    ) -> None:
        self._lock = lock
        self.idle = threading.Condition(lock)  # notified as jobs finish
        self._submit = submit
        self._discard_logs = discard_logs
        self._jobs: dict[str, HeldJob] = {}
        self.running = 0

    def add(self, job: HeldJob, stopping: threading.Event) -> bool:
        """Holds ``job``; returns whether the worker is stopping (checked together)."""
        with self._lock:
            self._jobs[job.ctx.lease_id] = job
            self.running += 1
            return stopping.is_set()

    def begin(self, job: HeldJob) -> bool | None:
        """Marks a job taken by a slot. None: already decided, skip it;
        otherwise whether it was told to stop before it started."""
        with self._lock:
            if job.decided:
                return None
            job.started = True
            return job.ctx.stop_reason is not None

    def finish(self, job: HeldJob, outcome: workers_pb2.JobResult | None) -> None:
        """Records how a job's attempt ended and queues its result."""
        ctx = job.ctx
        with self._lock:
            if job.decided:
                return  # handed back earlier (shutdown, timeout)
            result = self._decide(job, outcome)
        if result is not None:
            self._submit(ctx.lease_id, result)
        else:
            self._discard_logs(ctx.lease_id)

    def abandon(self, job: HeldJob, reason: StopReason, *, unstarted_only: bool = False) -> None:
        """Stops a job and reports it now, without waiting for its handler."""
        with self._lock:
            if job.decided or (unstarted_only and job.started):
                return
            job.ctx._request_stop(reason)
            result = self._decide(job, None)
        if result is not None:
            self._submit(job.ctx.lease_id, result)

    def stop_job(self, lease_id: str, reason: StopReason) -> None:
        """Asks a job to stop; its result is decided when its handler returns."""
        with self._lock:
            job = self._jobs.get(lease_id)
            if job is None or job.decided:
                return
            job.ctx._request_stop(reason)
        _log.info("job %s (lease %s): %s", job.ctx.job_id, lease_id, reason.value)

    def undecided(self) -> list[HeldJob]:
        with self._lock:
            return [job for job in self._jobs.values() if not job.decided]

    def reported(self, lease_ids: list[str]) -> None:
        """The server has these results: the leases are no longer held."""
        with self._lock:
            for lease_id in lease_ids:
                self._jobs.pop(lease_id, None)
        for lease_id in lease_ids:
            self._discard_logs(lease_id)

    def wait_idle(self, timeout: float, cut_short: Callable[[], bool]) -> None:
        """Waits up to ``timeout`` s for the running jobs to finish, or until
        ``cut_short()`` (read under the lock; wake waiters via ``idle``)."""
        end = time.monotonic() + timeout
        with self.idle:
            while self.running and not cut_short():
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                self.idle.wait(remaining)

    def due(
        self, now: float, horizon: float
    ) -> tuple[list[workers_pb2.HeartbeatRequest], list[HeldJob], float]:
        """The heartbeats due at ``now``, the jobs whose time limit ran out,
        and when to look again (at most ``horizon``)."""
        due: list[workers_pb2.HeartbeatRequest] = []
        expired: list[HeldJob] = []
        next_look = horizon
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
                        next_look = min(next_look, job.deadline)
        return due, expired, next_look

    def _decide(
        self, job: HeldJob, outcome: workers_pb2.JobResult | None
    ) -> workers_pb2.JobResult | None:
        """Picks the result to report (None: report nothing). Holds the lock."""
        job.decided = True
        self.running -= 1
        if not self.running:
            self.idle.notify_all()
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
