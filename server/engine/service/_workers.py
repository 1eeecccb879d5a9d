"""The worker registry: who has connected, with which labels and
capabilities, and whether each is idle, busy or offline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from trellis.server.core import _sql
from trellis.server.core.pagination import after_key
from trellis.server.core.principal import Principal
from trellis.server.core.times import timestamp
from trellis.server.engine import _machine as machine
from trellis.server.engine._capabilities import Capabilities
from trellis.server.engine._machine import Effects, leases, workers
from trellis.server.engine._states import LeaseState
from trellis.server.engine.service._base import Base
from trellis.server.engine.service._checks import check_worker
from trellis.v1 import workers_pb2

MAX_WORKERS_PAGE = 1000


class WorkerOps(Base):
    def register_worker(
        self,
        principal: Principal,
        worker_id: str,
        labels: Sequence[str],
        capabilities: Capabilities | None = None,
    ) -> workers_pb2.Worker:
        return self._register(principal.org_id, worker_id, labels, capabilities)

    def _register(
        self,
        org: str,
        worker_id: str,
        labels: Sequence[str],
        capabilities: Capabilities | None = None,
    ) -> workers_pb2.Worker:
        check_worker(worker_id, labels, capabilities)

        def tx(conn: Connection, now: int) -> tuple[None, Effects]:
            with _sql.pipelined(conn) as batch:
                machine.touch_worker(
                    batch,
                    org=org,
                    worker_id=worker_id,
                    labels=labels,
                    capabilities=capabilities,
                    now=now,
                )
            return None, Effects()

        self._write(tx)
        (worker,) = self._read(
            lambda conn, now: self._workers(conn, now, org, worker_id=worker_id)[0]
        )
        return worker

    def list_workers(
        self, principal: Principal, *, page_size: int = 0, page_token: str = ""
    ) -> workers_pb2.ListWorkersResponse:
        """The org's workers in id order; without a ``page_size``, all of them
        (as the REST path documents), else a page at a time with signed page
        tokens bound to the org."""
        org = principal.org_id
        size = self._page_size(page_size, 0, MAX_WORKERS_PAGE) if page_size else 0
        scope = f"workers\x00{org}"
        after = self._after(scope, page_token)

        def tx(conn: Connection, now: int) -> workers_pb2.ListWorkersResponse:
            found, more = self._workers(conn, now, org, after=after, limit=size)
            resp = workers_pb2.ListWorkersResponse(workers=found)
            if more:
                resp.next_page_token = self._tokens().encode(scope, (found[-1].worker_id,))
            return resp

        return self._read(tx)

    def _workers(
        self,
        conn: Connection,
        now: int,
        org: str,
        *,
        worker_id: str | None = None,
        after: tuple[Any, ...] | None = None,
        limit: int = 0,
    ) -> tuple[list[workers_pb2.Worker], bool]:
        """The org's workers (or one of them), idle, busy or offline, after
        the key ``after``, at most ``limit`` (0: all); and whether there are
        more."""
        workers_q = select(workers).where(workers.c.org_id == org)
        if worker_id is not None:
            workers_q = workers_q.where(workers.c.worker_id == worker_id)
        if after is not None:
            workers_q = workers_q.where(
                after_key((workers.c.worker_id,), after, descending=(False,))
            )
        workers_q = workers_q.order_by(workers.c.worker_id)
        if limit:
            workers_q = workers_q.limit(limit + 1)
        rows = conn.execute(workers_q).all()
        more = bool(limit) and len(rows) > limit
        rows = rows[:limit] if limit else rows
        held_q = select(leases.c.worker_id, leases.c.workflow_id, leases.c.job_key).where(
            leases.c.org_id == org, leases.c.state == LeaseState.ACTIVE
        )
        if worker_id is not None:
            held_q = held_q.where(leases.c.worker_id == worker_id)
        elif limit or after is not None:
            held_q = held_q.where(leases.c.worker_id.in_([r.worker_id for r in rows]))
        held: dict[str, str] = {}
        for holder, wf, key in conn.execute(held_q):
            held.setdefault(holder, f"{wf}/{key}")
        out = []
        for row in rows:
            msg = workers_pb2.Worker(
                worker_id=row.worker_id,
                labels=row.labels,
                registered_at=timestamp(row.registered_at_ms),
                last_heartbeat=timestamp(row.last_heartbeat_ms),
            )
            capabilities = Capabilities.from_json(row.capabilities)
            if capabilities is not None:
                msg.capabilities.handlers.extend(capabilities.handlers)
                msg.capabilities.shell = capabilities.shell
            if row.worker_id in held:
                msg.current_job = held[row.worker_id]
                msg.status = workers_pb2.WORKER_STATUS_BUSY
            elif now - row.last_heartbeat_ms > self.offline_after_ms:
                msg.status = workers_pb2.WORKER_STATUS_OFFLINE
            else:
                msg.status = workers_pb2.WORKER_STATUS_IDLE
            out.append(msg)
        return out, more


__all__ = ["WorkerOps"]
