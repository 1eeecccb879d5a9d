"""Claims: a worker's unary claim (with an optional wait), and the assignment
stream that pushes jobs to a connected worker as they become ready."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from sqlalchemy import Connection

from trellis.server.core import _sql
from trellis.server.core._group_commit import GroupCommit, Member
from trellis.server.core.errors import InvalidArgument
from trellis.server.core.principal import Principal
from trellis.server.engine import _machine as machine
from trellis.server.engine import _render as render
from trellis.server.engine._capabilities import Capabilities, commands_of
from trellis.server.engine._dispatch import Stream
from trellis.server.engine._machine import ClaimAsk, Claimed, Effects
from trellis.server.engine.service._checks import MAX_BATCH, check_worker, ttl
from trellis.server.engine.service._workers import WorkerOps
from trellis.v1 import workers_pb2

MAX_WAIT_SECS = 60
MAX_SLOTS = 1000
_LEASE_STATES = _sql.Sql("SELECT id, state FROM leases WHERE id IN_LIST(:ids)")


class ClaimOps(WorkerOps):
    # Concurrent claims share transactions (set up by the service).
    _claims: GroupCommit[ClaimAsk, list[Claimed]]

    def _claim_group(self, members: Sequence[Member[ClaimAsk, list[Claimed]]]) -> None:
        """Runs a group of claims in one transaction (see ``_group_commit``)."""
        asks = [m.work for m in members]

        def tx(conn: Connection, now: int) -> tuple[list[list[Claimed]], Effects]:
            return machine.claim(conn, is_pg=self.db.is_postgres, asks=asks, now=now)

        granted = self._write(tx)
        for member, claimed in zip(members, granted, strict=True):
            member.succeed(claimed)

    def claim(
        self,
        principal: Principal,
        worker_id: str,
        labels: Sequence[str],
        *,
        ttl_secs: int | None = None,
        max_jobs: int = 1,
        wait_secs: float = 0,
        is_active: Callable[[], bool] = lambda: True,
        capabilities: Capabilities | None = None,
    ) -> list[workers_pb2.Assignment]:
        """Claims up to ``max_jobs`` jobs that the worker can run, waiting up
        to ``wait_secs`` for one; the leases are bound to the caller's
        subject."""
        check_worker(worker_id, labels, capabilities)
        lease_ttl = ttl(ttl_secs)
        if not 1 <= max_jobs <= MAX_BATCH:
            raise InvalidArgument(f"max_jobs: must be between 1 and {MAX_BATCH}")
        if not 0 <= wait_secs <= MAX_WAIT_SECS:
            raise InvalidArgument(f"wait_secs: must be between 0 and {MAX_WAIT_SECS}")
        org, owner = principal.org_id, principal.subject
        ask = ClaimAsk(org, worker_id, tuple(labels), lease_ttl, max_jobs, owner, capabilities)
        deadline = time.monotonic() + wait_secs
        with self.notifier.subscribe(work=(org, labels), commands=commands_of(capabilities)) as sub:
            while True:
                work = self.notifier.take_work(sub)
                got = [render.assignment(c, worker_id) for c in self._claims.submit(ask)]
                remaining = deadline - time.monotonic()
                if got or remaining <= 0 or self.closing or not is_active():
                    if len(got) == max_jobs:
                        # Full: ready work given to this caller may be left.
                        self.notifier.decline(sub, work)
                    return got
                sub.wait(min(remaining, self.poll_interval))

    def assignments(
        self,
        principal: Principal,
        worker_id: str,
        labels: Sequence[str],
        *,
        slots: int = 1,
        ttl_secs: int | None = None,
        is_active: Callable[[], bool] = lambda: True,
        capabilities: Capabilities | None = None,
    ) -> Iterator[workers_pb2.StreamAssignmentsResponse]:
        """Pushes ready jobs that one connected worker can run, never more
        than ``slots`` unfinished at once (``_dispatch`` keeps that count),
        and tells it which of its leases were cancelled."""
        check_worker(worker_id, labels, capabilities)
        lease_ttl = ttl(ttl_secs)
        slots = slots or 1
        if not 1 <= slots <= MAX_SLOTS:
            raise InvalidArgument(f"slots: must be between 1 and {MAX_SLOTS}")
        org, owner = principal.org_id, principal.subject
        self._register(org, worker_id, labels, capabilities)

        def claim(n: int) -> list[Claimed]:
            return self._claims.submit(
                ClaimAsk(org, worker_id, tuple(labels), lease_ttl, n, owner, capabilities)
            )

        with self.dispatch.open(
            org,
            worker_id,
            labels,
            slots=slots,
            ttl_secs=lease_ttl,
            owner=owner,
            commands=commands_of(capabilities),
            capabilities=capabilities,
            refills=True,
            topics=(machine.topic_worker(org, worker_id),),
        ) as stream:
            # The held leases are read when they may have changed since the
            # last read (see ``Stream.leases_changed``), and after each wait
            # that ran out: a busy stream does not read them for each batch.
            must_read = True
            while is_active() and not self.closing:
                handed = stream.take()
                if handed:
                    # Leased by the transaction that made them ready.
                    yield workers_pb2.StreamAssignmentsResponse(
                        assignments=[render.assignment(c, worker_id) for c in handed]
                    )
                    continue
                cancelled: list[str] = []
                if stream.leases_changed() or must_read:
                    cancelled = self._settle(stream)
                must_read = False
                got = stream.fill(claim, stream.take_work())
                if got or cancelled:
                    yield workers_pb2.StreamAssignmentsResponse(
                        assignments=[render.assignment(c, worker_id) for c in got],
                        cancelled_lease_ids=cancelled,
                    )
                    # Slots freed while the batch was on its way are
                    # filled at once, which keeps batches large under load.
                    continue
                must_read = not stream.wait(self.poll_interval)

    def _settle(self, stream: Stream) -> list[str]:
        """Drops the stream's finished leases; returns those cancelled."""
        held = stream.held_leases()
        if not held:
            return []
        states = dict(self._read(lambda conn, _now: _sql.query(conn, _LEASE_STATES, ids=held)))
        return stream.settle(states)


__all__ = ["ClaimOps"]
