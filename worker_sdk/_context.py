"""What a handler sees of the job it runs."""

from __future__ import annotations

import enum
import threading
from typing import Any, Literal, Protocol

from ._errors import JobCancelled, LeaseLost
from ._inputs import from_struct
from ._pb import workers_pb2

LogStreamName = Literal["stdout", "stderr"]


class StopReason(enum.Enum):
    """Why the worker asked a job to stop; decides what (if anything) is reported."""

    CANCELLED = "cancelled"  # the run was cancelled: report a non-retryable failure
    LEASE_LOST = "lease lost"  # the lease is gone: report nothing
    SHUTDOWN = "worker shutting down"  # handed back with a retryable failure
    TIMEOUT = "timed out"  # the job's own time limit passed: retryable failure


class LogSink(Protocol):
    """Where :meth:`JobContext.log` puts lines (the worker's log shipper)."""

    def append(self, ctx: JobContext, stream: LogStreamName, data: str) -> None: ...


class JobContext:
    """One attempt of one job, as a handler sees it.

    Attributes:
        job_id, workflow_id, run_id, command, name: identify the job.
        attempt: 0 for the first attempt, 1 for the first retry, ...
        lease_id: the lease the worker holds for this attempt.
        timeout_secs: the job's time limit (0: none).
        enqueued_at_ms: when the server queued this attempt (epoch milliseconds).
        stop_reason: why the job was asked to stop (None while it may run on).
        cancelled: set when the job is cancelled, its lease is lost, its time
            limit passes or the worker shuts down; long handlers should check it
            (or call :meth:`raise_if_cancelled`) and return early.
    """

    __slots__ = (
        "_env",
        "_inputs",
        "_job",
        "_sink",
        "_upstream",
        "attempt",
        "cancelled",
        "command",
        "enqueued_at_ms",
        "job_id",
        "lease_id",
        "name",
        "run_id",
        "stop_reason",
        "timeout_secs",
        "workflow_id",
    )

    def __init__(self, job: workers_pb2.QueuedJob, lease_id: str, sink: LogSink) -> None:
        # The job's maps are converted on first use only: most handlers never
        # read them, and for tiny jobs the conversion would be a real cost.
        self._job = job
        self._sink = sink
        self._env: dict[str, str] | None = None
        self._inputs: dict[str, Any] | None = None
        self._upstream: dict[str, dict[str, str]] | None = None
        self.job_id: str = job.job_id
        self.workflow_id: str = job.workflow_id
        self.run_id: str = job.run_id
        self.command: str = job.command
        self.name: str = job.name
        self.attempt: int = job.attempt
        self.timeout_secs: int = job.timeout_secs
        self.enqueued_at_ms: int = job.enqueued_at.ToMilliseconds()
        self.lease_id = lease_id
        self.cancelled = threading.Event()
        # Set by the worker before `cancelled`; None while the job may run on.
        self.stop_reason: StopReason | None = None

    @property
    def env(self) -> dict[str, str]:
        """The job's environment variables from its workflow definition."""
        if self._env is None:
            self._env = dict(self._job.env)
        return self._env

    @property
    def inputs(self) -> dict[str, Any]:
        """The run's inputs (declared defaults filled in) as plain values, as
        JSON parsing gives them: ``str``, ``int`` (a whole number within
        ±2**53), ``float``, ``bool``, ``None``, lists and dicts.

        The same dict on every read of this attempt; changing it changes
        nothing beyond this context."""
        if self._inputs is None:
            self._inputs = from_struct(self._job.inputs)
        return self._inputs

    @property
    def upstream_outputs(self) -> dict[str, dict[str, str]]:
        """Outputs of the job's direct parents: parent job id -> name -> value."""
        if self._upstream is None:
            self._upstream = {
                parent: dict(outputs.values)
                for parent, outputs in self._job.upstream_outputs.items()
            }
        return self._upstream

    def log(self, message: str, *, stream: LogStreamName = "stdout") -> None:
        """Adds a line to the job's log.

        Lines are buffered and shipped in batches (every 200 ms, at 64 KiB, and
        always before the job's result is reported); a newline is added when the
        message does not end with one.
        """
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
        if not message.endswith("\n"):
            message += "\n"
        self._sink.append(self, stream, message)

    def raise_if_cancelled(self) -> None:
        """Raises :class:`JobCancelled` (:class:`LeaseLost` if the lease is gone)
        once the job has been asked to stop."""
        if self.cancelled.is_set():
            reason = self.stop_reason
            if reason is StopReason.LEASE_LOST:
                raise LeaseLost(f"lease {self.lease_id} of job {self.job_id} was lost")
            text = reason.value if reason is not None else StopReason.CANCELLED.value
            raise JobCancelled(f"job {self.job_id}: {text}")

    def _request_stop(self, reason: StopReason) -> bool:
        # Called by the worker under its lock, so "first reason wins" holds.
        if self.stop_reason is not None:
            return False
        self.stop_reason = reason
        self.cancelled.set()
        return True

    def __repr__(self) -> str:
        return (
            f"JobContext(workflow_id={self.workflow_id!r}, job_id={self.job_id!r}, "
            f"run_id={self.run_id!r}, attempt={self.attempt}, lease_id={self.lease_id!r})"
        )
