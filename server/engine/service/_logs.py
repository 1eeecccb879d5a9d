"""Logs: chunks pushed under a lease, listed, and followed until the job is
over."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, RowMapping, select

from trellis.server.core.errors import InvalidArgument, NotFound
from trellis.server.core.eventlog import EventType
from trellis.server.core.principal import Principal
from trellis.server.engine import _machine as machine
from trellis.server.engine import _render as render
from trellis.server.engine._machine import jobs, log_chunks
from trellis.server.engine._states import TERMINAL, LogStream, RunEventType
from trellis.server.engine.service._base import Base
from trellis.server.engine.service._checks import check_text
from trellis.v1 import logs_pb2

MAX_CHUNK_BYTES = 1 << 20
# The most chunks one page of ListLogs holds.
MAX_LOG_PAGE = 1000
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
        page_size: int = 0,
        page_token: str = "",
    ) -> logs_pb2.ListLogsResponse:
        """A job's log chunks in order, of ``run_id`` or the latest run: all of
        them, or a page at a time. A page token keeps to the run its first
        page read, even when a newer run starts in between."""
        scope = f"logs\x00{principal.org_id}\x00{workflow_id}\x00{job_id}\x00{run_id}"
        after = self._after(scope, page_token)
        if after is not None:
            run_id, after_id = str(after[0]), max(after_id, int(after[1]))
        size = self._page_size(page_size, 0, MAX_LOG_PAGE) if page_size else None

        def tx(conn: Connection, _now: int) -> logs_pb2.ListLogsResponse:
            ref = self._job_ref(conn, principal.org_id, workflow_id, job_id, run_id)
            if ref is None:
                return logs_pb2.ListLogsResponse()
            q = (
                select(log_chunks)
                .where(log_chunks.c.job_id == ref.id, log_chunks.c.id > after_id)
                .order_by(log_chunks.c.id)
            )
            rows = conn.execute(q if size is None else q.limit(size + 1)).mappings().all()
            page = rows if size is None else rows[:size]
            resp = logs_pb2.ListLogsResponse(
                run_id=ref.run_id, chunks=[render.log_chunk(r) for r in page]
            )
            if size is not None and len(rows) > size:
                last = (ref.run_id, int(page[-1]["id"]))
                resp.next_page_token = self._tokens().encode(scope, last)
            return resp

        return self._read(tx)

    def follow_logs(
        self,
        principal: Principal,
        workflow_id: str,
        job_id: str,
        *,
        events: RunEvents,
        run_id: str = "",
        after_id: int = 0,
        is_active: Callable[[], bool] = lambda: True,
    ) -> Iterator[logs_pb2.FollowLogsResponse]:
        """Replays chunks after ``after_id`` and follows until the job is over.

        The follow is a view of the event log: each push that stored chunks
        appended a JOB_LOGGED event, and the job's end is an event too. The
        replay reads the chunks up to the current end from the chunks
        themselves (they are kept as long as the run; events only as long as
        their retention), from a position of the log taken before it; then
        every event of the job after that position wakes a read of the chunks
        after the last one sent.

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
        # Taken before the replay's read: whatever commits after it is an
        # event after this position.
        start = events.head(org)
        last = after_id
        pages = events.follow_run(
            org,
            ref.run_id,
            after=start,
            job_key=job_id,
            types=LOG_VIEW_TYPES,
            topic=machine.topic_run(ref.run_id),
            is_active=lambda: is_active() and not self.closing,
        )
        # The replay first, then a read after each page of the job's events.
        for _page in itertools.chain([()], pages):
            while True:
                state, rows = self._read(
                    functools.partial(_state_and_chunks, job=ref.id, after=last)
                )
                if rows:
                    last = int(rows[-1]["id"])
                    yield logs_pb2.FollowLogsResponse(chunks=[render.log_chunk(r) for r in rows])
                if len(rows) < FOLLOW_CHUNKS:
                    break
            if state in TERMINAL:
                yield logs_pb2.FollowLogsResponse(
                    job_finished=True, job_state=render.JOB_STATES[state]
                )
                return


class RunEvents(Protocol):
    """The event log's follower of a run's events (``trellis.server.events.EventLog``)."""

    def head(self, org: str) -> tuple[int, int]: ...

    def follow_run(
        self,
        org: str,
        run_id: str,
        *,
        after: tuple[int, int],
        job_key: str = "",
        types: Collection[EventType] = (),
        topic: str,
        is_active: Callable[[], bool] = lambda: True,
    ) -> Iterator[Sequence[RowMapping]]: ...


# The events of a job that its log follower reads: its pushes and its ends.
LOG_VIEW_TYPES = (
    RunEventType.JOB_LOGGED,
    RunEventType.JOB_SUCCEEDED,
    RunEventType.JOB_FAILED,
    RunEventType.JOB_SKIPPED,
    RunEventType.JOB_CANCELLED,
)
# A follower reads at most this many chunks per query.
FOLLOW_CHUNKS = 1000


def _state_and_chunks(
    conn: Connection, _now: int, *, job: int, after: int
) -> tuple[str, list[Any]]:
    state = conn.execute(select(jobs.c.state).where(jobs.c.id == job)).scalar_one()
    rows = conn.execute(
        select(log_chunks)
        .where(log_chunks.c.job_id == job, log_chunks.c.id > after)
        .order_by(log_chunks.c.id)
        .limit(FOLLOW_CHUNKS)
    )
    return str(state), list(rows.mappings())


__all__ = ["LOG_VIEW_TYPES", "LogOps", "RunEvents"]
