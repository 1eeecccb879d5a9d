"""The states and kinds the engine stores, as typed values.

Each member's value is the text stored in the database (and spelled in SQL),
so rows written before these types existed read back unchanged; a ``StrEnum``
member compares and hashes as its value.
"""

from __future__ import annotations

from enum import StrEnum

from trellis.server.core.eventlog import EventType


class JobState(StrEnum):
    """pending -> queued -> running -> succeeded | failed, with running ->
    queued again for a retry; skipped and cancelled are the other ends."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.SKIPPED, JobState.CANCELLED})
UNFINISHED = (JobState.PENDING, JobState.QUEUED, JobState.RUNNING)


class LeaseState(StrEnum):
    """Only an active, unexpired lease may change its job."""

    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"  # lost: its worker stopped heartbeating
    TIMED_OUT = "timed_out"  # its job's timeout passed
    CANCELLED = "cancelled"
    RELEASED = "released"  # handed back before it reached its worker


class RunState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# The engine writes the event log's types (one definition, in core); the
# name stays for the engine's callers.
RunEventType = EventType


class LogStream(StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"


class AuditAction(StrEnum):
    """The engine's changes that the audit log records."""

    WORKFLOW_CREATE = "workflow.create"
    WORKFLOW_RUN = "workflow.run"
    RUN_CANCEL = "run.cancel"


__all__ = [
    "TERMINAL",
    "UNFINISHED",
    "AuditAction",
    "JobState",
    "LeaseState",
    "LogStream",
    "RunEventType",
    "RunState",
]
