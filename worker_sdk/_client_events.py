"""The event log's calls of :class:`Client`: pages of events, and a follower
that resumes where it stopped."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import grpc

from trellis.v1 import events_pb2  # type: ignore[import-not-found, unused-ignore]

from ._channel import Connection, _server_stream, _unary
from ._errors import ConnectionLost, DeadlineExceeded, TrellisError

__all__ = ["EventsMixin", "event_type", "event_type_name", "events_pb2"]

_PREFIX = "EVENT_TYPE_"
# Consecutive reopenings of a follow without an event before giving up.
_MAX_RESUMES = 5


def event_type(name: str | int) -> int:
    """The ``EventType`` value of ``name``: ``"job_failed"``, ``"JOB_FAILED"``
    and ``"EVENT_TYPE_JOB_FAILED"`` all name the same type (a number is
    taken as it is). Raises ``ValueError`` for an unknown name."""
    if isinstance(name, int):
        return name
    key = name.strip().upper()
    if not key.startswith(_PREFIX):
        key = _PREFIX + key
    try:
        return int(events_pb2.EventType.Value(key))
    except ValueError:
        known = ", ".join(
            n.removeprefix(_PREFIX).lower()
            for n, _ in events_pb2.EventType.items()
            if n != "EVENT_TYPE_UNSPECIFIED"
        )
        raise ValueError(f"unknown event type {name!r} (one of: {known})") from None


def event_type_name(value: int) -> str:
    """``EVENT_TYPE_JOB_FAILED`` -> ``job_failed``."""
    try:
        return str(events_pb2.EventType.Name(value)).removeprefix(_PREFIX).lower()
    except ValueError:
        return str(value)


class _EventRpc:
    def __init__(self, ch: grpc.Channel) -> None:
        s, m = "EventService", events_pb2
        self.ListEvents = _unary(ch, s, "ListEvents", m.ListEventsRequest, m.ListEventsResponse)
        self.StreamEvents = _server_stream(ch, s, "StreamEvents", m.StreamEventsRequest, m.Event)


def _filter(
    run_id: str | None, workflow_id: str | None, job_id: str | None, types: Iterable[str | int]
) -> events_pb2.EventFilter:
    return events_pb2.EventFilter(
        run_id=run_id or "",
        workflow_id=workflow_id or "",
        job_id=job_id or "",
        types=[events_pb2.EventType.Name(event_type(t)) for t in types],
    )


class EventsMixin:
    """:class:`Client`'s reads of the event log."""

    _conn: Connection
    timeout: float
    _event_rpc: _EventRpc | None = None

    if TYPE_CHECKING:

        def _wrap(self, err: grpc.RpcError) -> TrellisError: ...
        def _backoff(self, attempt: int) -> float: ...
        def _resumable(self, err: TrellisError) -> bool: ...

    def _events(self) -> _EventRpc:
        if self._event_rpc is None:
            self._event_rpc = _EventRpc(self._conn.channel)
        return self._event_rpc

    def list_events(
        self,
        after_cursor: str = "",
        *,
        run_id: str | None = None,
        workflow_id: str | None = None,
        job_id: str | None = None,
        types: Iterable[str | int] = (),
        page_size: int = 100,
    ) -> events_pb2.ListEventsResponse:
        """One page of the organization's events after ``after_cursor``
        (empty: the oldest kept), oldest first: ``events`` and the
        ``next_cursor`` to ask for the next page with. Filters combine;
        ``types`` are names such as ``"job_failed"`` (see :func:`event_type`).
        A cursor of an event no longer kept raises :class:`FailedPrecondition`."""
        request = events_pb2.ListEventsRequest(
            after_cursor=after_cursor,
            filter=_filter(run_id, workflow_id, job_id, types),
            page_size=page_size,
        )
        try:
            response: events_pb2.ListEventsResponse = self._events().ListEvents(
                request, timeout=self.timeout, metadata=self._conn.metadata
            )
        except grpc.RpcError as err:
            raise self._wrap(err) from err
        return response

    def follow_events(
        self,
        after_cursor: str = "",
        *,
        run_id: str | None = None,
        workflow_id: str | None = None,
        job_id: str | None = None,
        types: Iterable[str | int] = (),
        timeout: float | None = None,
    ) -> Iterator[events_pb2.Event]:
        """The organization's events after ``after_cursor`` (empty: the
        oldest kept; ``"now"``: only new ones), then new ones as they commit,
        in cursor order, until the caller stops iterating. A dropped
        connection or a server restart is resumed after the last event
        yielded: none is skipped or repeated. Raises
        :class:`DeadlineExceeded` ``timeout`` seconds after the first call."""
        flt = _filter(run_id, workflow_id, job_id, types)
        deadline = None if timeout is None else time.monotonic() + timeout
        resumes = 0
        cursor = after_cursor
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded(
                    f"event follow ended after {timeout or 0:g} s",
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
            call = self._events().StreamEvents(
                events_pb2.StreamEventsRequest(after_cursor=cursor, filter=flt),
                timeout=remaining,
                metadata=self._conn.metadata,
            )
            error: TrellisError | None = None
            try:
                for event in call:
                    cursor = event.cursor
                    resumes = 0
                    yield event
            except grpc.RpcError as err:
                error = self._wrap(err)
                error.__cause__ = err
            finally:
                call.cancel()
            if error is not None and not self._resumable(error):
                raise error
            if resumes >= _MAX_RESUMES:
                raise error or ConnectionLost(
                    "the event stream keeps ending early", grpc.StatusCode.UNAVAILABLE
                )
            resumes += 1
            time.sleep(self._backoff(resumes))
