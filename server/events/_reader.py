"""Reading the event log: pages after a cursor, and followers that replay
then wait for new events.

On PostgreSQL the ids of concurrent transactions commit out of order, so
events are ordered by ``(tx, id)`` (``tx``: the writing transaction's id)
and a read returns only events of transactions below its snapshot's
``xmin``: every such transaction has ended, so no event can still appear
before the last one returned, and a follower that resumes after it misses
none. An event becomes readable once every transaction older than its own
has ended (usually within milliseconds). On SQLite the one writer commits
ids in order and ``tx`` is 0.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.struct_pb2 import Struct
from sqlalchemy import Connection, RowMapping, func, literal_column, select, tuple_
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

from trellis.server.core.db import Database
from trellis.server.core.errors import FailedPrecondition, InvalidArgument, Unavailable
from trellis.server.core.eventlog import EventType, topic_events
from trellis.server.core.models import EventRow, table
from trellis.server.core.principal import Principal
from trellis.server.core.times import timestamp
from trellis.server.events._cursor import NOW, START, Cursor, decode
from trellis.v1 import events_pb2

log = logging.getLogger(__name__)

events = table(EventRow)

DEFAULT_PAGE = 100
MAX_PAGE = 1000
# A follower reads at most this many events per query.
FOLLOW_PAGE = 500
# After a wake-up that found nothing readable yet (PostgreSQL: an older
# transaction is still open), the follower looks again this soon, then
# twice as late each time, up to its poll interval.
HELD_BACK_RETRY_SECS = 0.02

_HORIZON: ColumnClause[int] = literal_column(
    "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
)
_TYPES = {t.value: t for t in EventType}


class Waiter(Protocol):
    def wait(self, timeout: float) -> bool: ...


class Wakeups(Protocol):
    """What followers wait on: the engine's notifier (bridged across
    replicas on PostgreSQL)."""

    def subscribe(self, *topics: str) -> AbstractContextManager[Waiter]: ...


@dataclass(frozen=True, slots=True)
class Filter:
    """Which events to read; empty fields match every event."""

    workflow_id: str = ""
    run_id: str = ""
    job_key: str = ""
    types: frozenset[EventType] = frozenset()

    @classmethod
    def of(cls, msg: events_pb2.EventFilter | None) -> Filter:
        """The filter of a request; an unknown type is INVALID_ARGUMENT."""
        if msg is None:
            return cls()
        types: set[EventType] = set()
        for value in msg.types:
            name = events_pb2.EventType.Name(value) if value in _TYPE_NUMBERS else ""
            found = _TYPES.get(name.removeprefix("EVENT_TYPE_"))
            if found is None:
                raise InvalidArgument(f"filter.types: {value!r} is not an event type")
            types.add(found)
        return cls(msg.workflow_id, msg.run_id, msg.job_id, frozenset(types))

    def where(self) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = []
        if self.workflow_id:
            conds.append(events.c.workflow_id == self.workflow_id)
        if self.run_id:
            conds.append(events.c.run_id == self.run_id)
        if self.job_key:
            conds.append(events.c.job_key == self.job_key)
        if self.types:
            conds.append(events.c.type.in_(sorted(self.types)))
        return conds


_TYPE_NUMBERS = frozenset(events_pb2.EventType.values())
# Stored type -> the contract's value.
_TYPE_VALUES = {name.removeprefix("EVENT_TYPE_"): name for name, _ in events_pb2.EventType.items()}


def cursor_of(row: RowMapping) -> Cursor:
    return Cursor(int(row["tx"]), int(row["id"]))


def render(row: RowMapping) -> events_pb2.Event:
    """The contract's Event of a row of ``events``."""
    event = events_pb2.Event(
        cursor=cursor_of(row).encode(),
        type=_TYPE_VALUES.get(str(row["type"]), "EVENT_TYPE_UNSPECIFIED"),
        occurred_at=timestamp(row["time_ms"]),
        workflow_id=row["workflow_id"],
        workflow_version=row["workflow_version"],
        run_id=row["run_id"],
        job_id=row["job_key"],
        attempt=row["attempt"],
        message=row["message"],
    )
    data = _decoded(row["data"])
    if data:
        struct = Struct()
        struct.update(data)
        event.data.CopyFrom(struct)
    return event


def _decoded(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        decoded = json.loads(value)
        return decoded if isinstance(decoded, dict) else None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True, slots=True)
class Page:
    rows: Sequence[RowMapping]
    # Where the next read starts: after the last event examined.
    next: Cursor


class EventLog:
    """The readers of the event log over one database."""

    def __init__(
        self,
        db: Database,
        wakeups: Wakeups,
        *,
        poll_interval: float,
        closing: Callable[[], bool] = lambda: False,
    ) -> None:
        self.db = db
        self.wakeups = wakeups
        self.poll_interval = poll_interval
        self._closing = closing

    # ------------------------------------------------------------------ reads

    def list_events(
        self,
        principal: Principal,
        *,
        after_cursor: str = "",
        filter: events_pb2.EventFilter | None = None,
        page_size: int = 0,
    ) -> events_pb2.ListEventsResponse:
        """One page of the org's events after ``after_cursor``, oldest first."""
        org = principal.org_id
        flt = Filter.of(filter)
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        page = self._read(lambda conn: self._first_page(conn, org, after_cursor, flt, size))
        return events_pb2.ListEventsResponse(
            events=[render(r) for r in page.rows], next_cursor=page.next.encode()
        )

    def follow(
        self,
        org: str,
        *,
        after_cursor: str = "",
        filter: Filter | None = None,
        is_active: Callable[[], bool] = lambda: True,
        until: Callable[[RowMapping], bool] | None = None,
        opened: Callable[[], None] | None = None,
    ) -> Iterator[RowMapping]:
        """The org's events after ``after_cursor`` as rows, then new ones as
        they become readable, until ``is_active`` turns false, the service
        closes, or ``until`` is true of an event yielded. ``opened`` is
        called once the first page is read: from then on, every event that
        commits is one the follower yields."""
        flt = filter or Filter()
        first = functools.partial(
            self._first_page, org=org, text=after_cursor, flt=flt, size=FOLLOW_PAGE
        )
        pages = self._pages(org, first, flt, topic_events(org), is_active=is_active, opened=opened)
        for rows in pages:
            for row in rows:
                yield row
                if until is not None and until(row):
                    return

    def head(self, org: str) -> Cursor:
        """The position after every event of ``org`` readable now, and before
        every one still to become readable: a follower from here misses none
        that commits after this call."""
        return self._read(
            lambda conn: Page((), self._head(conn, org, self._horizon(conn), now=True))
        ).next

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
    ) -> Iterator[Sequence[RowMapping]]:
        """The events of run ``run_id`` after ``after`` (a ``head``), a page
        at a time, as they become readable (the same order and wake-ups as
        ``follow``, but woken by ``topic``, which writers of the run's events
        fire), until ``is_active`` turns false or the service closes."""
        flt = Filter(run_id=run_id, job_key=job_key, types=frozenset(types))
        start = Cursor(*after)
        first = functools.partial(self._page, org=org, after=start, flt=flt)
        return self._pages(org, first, flt, topic, is_active=is_active)

    def _pages(
        self,
        org: str,
        first: Callable[[Connection], Page],
        flt: Filter,
        topic: str,
        *,
        is_active: Callable[[], bool],
        opened: Callable[[], None] | None = None,
    ) -> Iterator[Sequence[RowMapping]]:
        with self.wakeups.subscribe(topic) as sub:
            page = self._read(first)
            if opened is not None:
                opened()
            retry = HELD_BACK_RETRY_SECS
            # A wake-up came and nothing has become readable since.
            held = False
            after: Cursor | None = None
            while True:
                if page.rows:
                    yield page.rows
                if not is_active() or self._closing():
                    return
                if page.next != after:
                    held = False
                if len(page.rows) < FOLLOW_PAGE:
                    if held and self.db.is_postgres:
                        # Something committed that is not readable yet: an
                        # older transaction (of any database of the server)
                        # is still open. Looked at again until it is.
                        sub.wait(min(retry, self.poll_interval))
                        retry *= 2
                    else:
                        retry = HELD_BACK_RETRY_SECS
                        held = sub.wait(self.poll_interval)
                    if not is_active() or self._closing():
                        return
                after = page.next
                page = self._read(functools.partial(self._page, org=org, after=after, flt=flt))

    def stream_events(
        self,
        principal: Principal,
        *,
        after_cursor: str = "",
        filter: events_pb2.EventFilter | None = None,
        is_active: Callable[[], bool] = lambda: True,
        opened: Callable[[], None] | None = None,
    ) -> Iterator[events_pb2.Event]:
        """Replays the org's events after ``after_cursor``, then follows
        (``opened``: see ``follow``)."""
        flt = Filter.of(filter)
        for row in self.follow(
            principal.org_id,
            after_cursor=after_cursor,
            filter=flt,
            is_active=is_active,
            opened=opened,
        ):
            yield render(row)

    # --------------------------------------------------------------- plumbing

    def _read(self, fn: Callable[[Connection], Page]) -> Page:
        try:
            with self.db.read() as conn:
                return fn(conn)
        except OperationalError as exc:
            log.warning("database unavailable: %s", exc.orig)
            raise Unavailable("database unavailable; try again") from exc

    def _first_page(self, conn: Connection, org: str, text: str, flt: Filter, size: int) -> Page:
        if text == NOW:
            return Page((), self._head(conn, org, self._horizon(conn), now=True))
        after = decode(text)
        if after != START:
            # Pruned means older than the oldest event kept: an event deleted
            # otherwise, or a cursor between events (PostgreSQL's "now" is
            # (horizon, 0)), is still a position in the log.
            # A cursor past every id given out is none of this log's: it
            # would skip the events still to come.
            last_id = select(func.max(events.c.id)).scalar_subquery()
            oldest = conn.execute(
                select(events.c.tx, events.c.id, last_id.label("last_id"))
                .where(events.c.org_id == org)
                .order_by(events.c.tx, events.c.id)
                .limit(1)
            ).first()
            if oldest is not None and after.id > int(oldest.last_id):
                raise FailedPrecondition(
                    "after_cursor is past the end of the log: not a cursor it gave out (or "
                    "one whose events were pruned); read again from an empty cursor"
                )
            if oldest is not None and after < Cursor(int(oldest.tx), int(oldest.id)):
                raise FailedPrecondition(
                    "after_cursor names an event the log no longer keeps (older than "
                    "EVENT_RETENTION_DAYS): events after it may have been pruned; read "
                    "again from an empty cursor (the oldest event kept)"
                )
        return self._page(conn, org=org, after=after, flt=flt, size=size)

    def _horizon(self, conn: Connection) -> int | None:
        """On PostgreSQL, the oldest transaction still running as the read's
        snapshot sees it: events of lower transactions are all readable."""
        if not self.db.is_postgres:
            return None
        value = conn.execute(select(_HORIZON)).scalar_one()
        return int(value)

    def _head(self, conn: Connection, org: str, horizon: int | None, *, now: bool) -> Cursor:
        """The org's last readable event (``now``: or, on PostgreSQL, the
        horizon itself, before every event still to become readable)."""
        if horizon is not None and now:
            return Cursor(horizon, 0)
        q = select(events.c.tx, events.c.id).where(events.c.org_id == org)
        if horizon is not None:
            q = q.where(events.c.tx < horizon)
        row = conn.execute(q.order_by(events.c.tx.desc(), events.c.id.desc()).limit(1)).first()
        return START if row is None else Cursor(int(row.tx), int(row.id))

    def _page(
        self, conn: Connection, *, org: str, after: Cursor, flt: Filter, size: int = FOLLOW_PAGE
    ) -> Page:
        horizon = self._horizon(conn)
        q = select(events).where(
            events.c.org_id == org,
            tuple_(events.c.tx, events.c.id) > tuple_(after.tx, after.id),
            *flt.where(),
        )
        if horizon is not None:
            q = q.where(events.c.tx < horizon)
        rows = conn.execute(q.order_by(events.c.tx, events.c.id).limit(size)).mappings().all()
        last = cursor_of(rows[-1]) if rows else after
        if len(rows) < size and flt != Filter():
            # Every readable event was examined: the next read starts after
            # the last of them, matched or not.
            last = max(last, self._head(conn, org, horizon, now=False))
        return Page(rows, last)


__all__ = ["Cursor", "EventLog", "Filter", "Page", "Wakeups", "cursor_of", "render"]
