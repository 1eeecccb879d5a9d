"""Leases: heartbeats, the reports that end them (completions and
failures), the reaper of expired ones, and the cancellation question a worker
asks about its job."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from trellis.server.core._group_commit import GroupCommit, Member
from trellis.server.core.errors import InvalidArgument
from trellis.server.core.principal import Principal
from trellis.server.core.times import timestamp
from trellis.server.engine import _machine as machine
from trellis.server.engine._machine import Effects, Result, Verdict
from trellis.server.engine._states import JobState
from trellis.server.engine.service._base import Base
from trellis.server.engine.service._checks import MAX_BATCH, check_text, ttl
from trellis.v1 import workers_pb2

# The reaper ends at most this many leases per transaction.
REAP_BATCH = 500


@dataclass(frozen=True)
class Reports:
    """Results reported in one call, by the principal ``owner`` of ``org``."""

    org: str
    owner: str
    results: Sequence[Result]


class LeaseOps(Base):
    # Concurrent reports share transactions (set up by the service).
    _reports: GroupCommit[Reports, list[Verdict]]

    def heartbeat(
        self, principal: Principal, lease_id: str, ttl_secs: int | None = None
    ) -> workers_pb2.HeartbeatResponse:
        if not lease_id:
            raise InvalidArgument("lease_id: required")
        lease_ttl = ttl(ttl_secs) if ttl_secs else None
        org, owner = principal.org_id, principal.subject
        expires, cancelled = self._write(
            lambda conn, now: (
                machine.heartbeat(
                    conn, org=org, owner=owner, lease_id=lease_id, ttl_secs=lease_ttl, now=now
                ),
                Effects(),
            )
        )
        # A shorter TTL may bring the lease's expiry before the reaper's wake.
        self._expiry.announce(expires)
        return workers_pb2.HeartbeatResponse(
            lease_id=lease_id, expires_at=timestamp(expires), cancelled=cancelled
        )

    def report(self, principal: Principal, results: Sequence[Result]) -> list[Verdict]:
        """Applies completions and failures in one transaction; only leases of
        the caller's subject count."""
        for i, res in enumerate(results):
            if not res.lease_id:
                raise InvalidArgument("lease_id: required")
            check_text(res.error, f"results[{i}].error")
            for key, value in res.outputs.items():
                check_text(key, f"results[{i}].outputs")
                check_text(value, f"results[{i}].outputs[{key!r}]")
            if len(res.error) > 64 * 1024:
                raise InvalidArgument("error: longer than 64 KiB")
            if sum(len(k) + len(v) for k, v in res.outputs.items()) > 1 << 20:
                raise InvalidArgument("outputs: larger than 1 MiB")
        if len(results) > MAX_BATCH:
            raise InvalidArgument(f"results: at most {MAX_BATCH} at once")
        if not results:
            return []
        return self._reports.submit(Reports(principal.org_id, principal.subject, results))

    def _report_group(self, members: Sequence[Member[Reports, list[Verdict]]]) -> None:
        """Runs a group of reports in one transaction, one judgement per org."""
        per_org: dict[str, list[Member[Reports, list[Verdict]]]] = defaultdict(list)
        for member in members:
            per_org[member.work.org].append(member)
        answers: dict[str, list[Verdict]] = {}  # per org, in the order of its members

        def tx(conn: Connection, now: int) -> tuple[None, Effects]:
            effects = Effects()
            for org in sorted(per_org):
                group = per_org[org]
                verdicts, more = machine.report_results(
                    conn,
                    is_pg=self.db.is_postgres,
                    org=org,
                    reports=[(m.work.owner, res) for m in group for res in m.work.results],
                    now=now,
                )
                effects.merge(more)
                answers[org] = verdicts
            return None, effects

        self._write(tx)
        for org, group in per_org.items():
            start = 0
            for m in group:
                m.succeed(answers[org][start : start + len(m.work.results)])
                start += len(m.work.results)

    def is_job_cancelled(
        self, principal: Principal, workflow_id: str, job_id: str, run_id: str = ""
    ) -> bool:
        def tx(conn: Connection, _now: int) -> bool:
            ref = self._job_ref(conn, principal.org_id, workflow_id, job_id, run_id)
            return ref is not None and bool(ref.state == JobState.CANCELLED)

        return self._read(tx)

    def reap(self) -> int:
        """One pass of the lease reaper; returns how many leases expired."""
        total = 0
        while True:
            n = self._write(
                lambda conn, now: machine.reap(
                    conn,
                    is_pg=self.db.is_postgres,
                    now=now,
                    max_lost_leases=self.max_lost_leases,
                    limit=REAP_BATCH,
                )
            )
            total += n
            if n < REAP_BATCH:
                return total

    def wait_for_expiry(self, max_secs: float) -> None:
        """Sleeps until the earliest active lease expires, at most ``max_secs``.

        A lease granted or extended on this replica meanwhile that expires
        sooner shortens the sleep; ``close`` ends it. Leases of other
        replicas are seen when this one next reads the database.
        """
        self._expiry.reading()
        now, earliest = self._read(lambda conn, now: (now, machine.next_expiry(conn)))
        until = now + int(max_secs * 1000)
        self._expiry.sleep(now, until if earliest is None else min(until, earliest))


__all__ = ["LeaseOps", "Reports"]
