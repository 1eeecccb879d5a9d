"""The engine layer: workflow definitions, runs, and the scheduling of their jobs
(claim, report, reap, and dispatch of hand-offs to waiting workers).

This module is the engine's public face; other layers import from here (and
the definition model from ``trellis.server.engine.definitions``).

- ``Service``: every operation, each taking the caller's ``Principal``.
- ``Notifier`` (wake-ups within a process) and ``PgBridge`` (between replicas
  on one PostgreSQL), which a server wires to its service.
- ``Dispatcher``/``Stream``: the hand-off of ready jobs to waiting streams
  (``Service.dispatch``), with the slot invariant they keep.
- ``Capabilities``, ``Result``, ``Verdict``, ``Claimed``: what callers hand in
  and get back.
- The stored states, as ``StrEnum``s.
"""

from trellis.server.engine._capabilities import Capabilities
from trellis.server.engine._dispatch import Dispatcher, Stream
from trellis.server.engine._machine import Claimed, Result, Verdict
from trellis.server.engine._notify import Notifier, Subscription
from trellis.server.engine._pgbridge import PgBridge
from trellis.server.engine._scheduler import Scheduler
from trellis.server.engine._states import (
    TERMINAL,
    AuditAction,
    JobState,
    LeaseState,
    LogStream,
    RunEventType,
    RunState,
)
from trellis.server.engine.service import (
    CATCH_UP_POLICIES,
    MAX_BATCH_RUNS,
    CatchUp,
    RunRequest,
    Service,
)

__all__ = [
    "CATCH_UP_POLICIES",
    "MAX_BATCH_RUNS",
    "TERMINAL",
    "AuditAction",
    "Capabilities",
    "CatchUp",
    "Claimed",
    "Dispatcher",
    "JobState",
    "LeaseState",
    "LogStream",
    "Notifier",
    "PgBridge",
    "Result",
    "RunEventType",
    "RunRequest",
    "RunState",
    "Scheduler",
    "Service",
    "Stream",
    "Subscription",
    "Verdict",
]
