"""The service layer: every operation of Trellis, over one database.

The gRPC servicers (and through them the REST bridge) are thin edges over
this class. Each state change is one transaction; wake-ups are fired only
after it commits. Results are the contract's messages.

Every operation a caller asks for takes the caller's ``Principal``: it works
within ``principal.org_id``, binds leases to ``principal.subject``, and the
audited ones (creating, running and cancelling) take the client address the
edge saw as ``ip`` and record it with the subject and kind of the principal.
"""

from __future__ import annotations

from trellis.server.core._group_commit import GroupCommit
from trellis.server.core.db import Database
from trellis.server.engine._notify import Notifier
from trellis.server.engine.service._claims import ClaimOps
from trellis.server.engine.service._leases import LeaseOps
from trellis.server.engine.service._lifecycle import LifecycleOps
from trellis.server.engine.service._logs import LogOps
from trellis.server.engine.service._recovery import RecoveryOps
from trellis.server.engine.service._runs import RunOps
from trellis.server.engine.service._starts import MAX_BATCH_RUNS, RunRequest, StartOps
from trellis.server.engine.service._triggers import CATCH_UP_POLICIES, CatchUp, TriggerOps


class Service(LifecycleOps, TriggerOps, StartOps, RunOps, RecoveryOps, ClaimOps, LeaseOps, LogOps):
    """All of Trellis' behaviour; safe to call from many threads at once."""

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        *,
        poll_interval: float = 2.0,
        offline_after_ms: int = 60_000,
        max_lost_leases: int = 3,
    ) -> None:
        super().__init__(
            db,
            notifier,
            poll_interval=poll_interval,
            offline_after_ms=offline_after_ms,
            max_lost_leases=max_lost_leases,
        )
        # Concurrent starts, concurrent claims and concurrent reports share transactions.
        self._starts = GroupCommit(self._start_group)
        self._claims = GroupCommit(self._claim_group)
        self._reports = GroupCommit(self._report_group)


__all__ = ["CATCH_UP_POLICIES", "MAX_BATCH_RUNS", "CatchUp", "RunRequest", "Service"]
