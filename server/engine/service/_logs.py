"""Logs: chunks pushed under a lease, listed, and followed until the job is
over."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, select

from trellis.server.core.errors import InvalidArgument, NotFound
from trellis.server.core.principal import Principal
from trellis.server.engine import _machine as machine
from trellis.server.engine import _render as render
from trellis.server.engine._machine import jobs, log_chunks
from trellis.server.engine._states import TERMINAL, LogStream
from trellis.server.engine.service._base import Base
from trellis.server.engine.service._checks import check_text
from trellis.v1 import logs_pb2

MAX_CHUNK_BYTES = 1 << 20
STREAM_NAMES = {
    logs_pb2.LOG_STREAM_STDOUT: LogStream.STDOUT,
    logs_pb2.LOG_STREAM_STDERR: LogStream.STDERR,
}


class LogOps(Base):
    def push_logs(
        self, principal: Principal, lease_id: str, chunks: Sequence[logs_pb2.LogChunk]
    ) -> int:
        if not lease_id:
            raise InvalidArgument("lease_id: required")
        rows = []
        for i, c in enumerate(chunks):
            stream = STREAM_NAMES.get(c.stream) if c.stream else LogStream.STDOUT
            if stream is None:
                raise InvalidArgument(f"chunks[{i}].stream: must be stdout or stderr")
            if len(c.data) > MAX_CHUNK_BYTES:
                raise InvalidArgument(f"chunks[{i}].data: larger than 1 MiB")
            check_text(c.data, f"chunks[{i}].data")
            rows.append(
                {
                    "stream": stream,
                    "sequence": c.sequence,
                    "data": c.data,
                    "timestamp_ms": c.timestamp.ToMilliseconds(),
                }
            )
        org, owner = principal.org_id, principal.subject
        return self._write(
            lambda conn, now: machine.push_logs(
                conn, org=org, owner=owner, lease_id=lease_id, chunks=rows, now=now
            )
        )

    def list_logs(
        self,
        principal: Principal,
        workflow_id: str,
        job_id: str,
        *,
        run_id: str = "",
        after_id: int = 0,
    ) -> logs_pb2.ListLogsResponse:
        def tx(conn: Connection, _now: int) -> logs_pb2.ListLogsResponse:
            ref = self._job_ref(conn, principal.org_id, workflow_id, job_id, run_id)
            if ref is None:
                return logs_pb2.ListLogsResponse()
            rows = conn.execute(
                select(log_chunks)
                .where(log_chunks.c.job_id == ref.id, log_chunks.c.id > after_id)
                .order_by(log_chunks.c.id)
            ).mappings()
            return logs_pb2.ListLogsResponse(
                run_id=ref.run_id, chunks=[render.log_chunk(r) for r in rows]
            )

        return self._read(tx)

    def follow_logs(
        self,
        principal: Principal,
        workflow_id: str,
        job_id: str,
        *,
        run_id: str = "",
        after_id: int = 0,
        is_active: Callable[[], bool] = lambda: True,
    ) -> Iterator[logs_pb2.FollowLogsResponse]:
        """Replays chunks after ``after_id`` and follows until the job is over.

        The job's state is read before its chunks: a worker can only push
        while it holds an active lease, so once a terminal state is seen, the
        chunk read that follows holds everything there will ever be. (The one
        exception, what a cancelled job prints while it stops, lands in the
        history after the follower has ended.)
        """
        org = principal.org_id
        ref = self._read(lambda conn, _now: self._job_ref(conn, org, workflow_id, job_id, run_id))
        if ref is None:
            raise NotFound(f"workflow {workflow_id!r} has no run yet")
        with self.notifier.subscribe(machine.topic_logs(ref.id)) as sub:
            while is_active() and not self.closing:

                def tx(conn: Connection, _now: int, after: int = after_id) -> tuple[str, list[Any]]:
                    state = conn.execute(
                        select(jobs.c.state).where(jobs.c.id == ref.id)
                    ).scalar_one()
                    rows = (
                        conn.execute(
                            select(log_chunks)
                            .where(log_chunks.c.job_id == ref.id, log_chunks.c.id > after)
                            .order_by(log_chunks.c.id)
                            .limit(1000)
                        )
                        .mappings()
                        .all()
                    )
                    return state, list(rows)

                state, rows = self._read(tx)
                if rows:
                    after_id = rows[-1]["id"]
                    yield logs_pb2.FollowLogsResponse(chunks=[render.log_chunk(r) for r in rows])
                    continue
                if state in TERMINAL:
                    yield logs_pb2.FollowLogsResponse(
                        job_finished=True,
                        job_state=render.JOB_STATES[state],
                    )
                    return
                sub.wait(self.poll_interval)


__all__ = ["LogOps"]
