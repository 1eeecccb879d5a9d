"""The job state machine, in SQL.

Every function here runs inside one transaction handed to it by the service
layer and returns the wake-ups (``Effects``) to fire once that transaction has
committed. Nothing here sleeps, waits or talks to the network. The states a
job, lease and run move through are in ``_states``.
"""

from trellis.server.engine._machine.claims import (
    ClaimAsk,
    Claimed,
    claim,
    eligible_label_keys,
    touch_worker,
)
from trellis.server.engine._machine.common import (
    Effects,
    Events,
    events,
    jobs,
    leases,
    log_chunks,
    new_id,
    runs,
    topic_run,
    topic_worker,
    workers,
)
from trellis.server.engine._machine.lease_changes import heartbeat, next_expiry, reap
from trellis.server.engine._machine.logs import push_logs
from trellis.server.engine._machine.reports import Result, Verdict, report_results
from trellis.server.engine._machine.run_changes import NewRun, cancel_run, create_runs

__all__ = [
    "ClaimAsk",
    "Claimed",
    "Effects",
    "Events",
    "NewRun",
    "Result",
    "Verdict",
    "cancel_run",
    "claim",
    "create_runs",
    "eligible_label_keys",
    "events",
    "heartbeat",
    "jobs",
    "leases",
    "log_chunks",
    "new_id",
    "next_expiry",
    "push_logs",
    "reap",
    "report_results",
    "runs",
    "topic_run",
    "topic_worker",
    "touch_worker",
    "workers",
]
