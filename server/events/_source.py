"""The event log as the webhook deliverer reads it (``_webhooks.EventReader``)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict

from trellis.server.core.errors import FailedPrecondition
from trellis.server.core.principal import Principal, PrincipalKind
from trellis.server.events._reader import EventLog
from trellis.v1 import events_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Event:
    cursor: str
    type: int
    time_ms: int
    workflow_id: str
    workflow_version: int
    run_id: str
    job_id: str
    attempt: int
    message: str
    data: Mapping[str, Any]


def _event(e: events_pb2.Event) -> _Event:
    return _Event(
        cursor=e.cursor,
        type=int(e.type),
        time_ms=e.occurred_at.ToMilliseconds(),
        workflow_id=e.workflow_id,
        workflow_version=e.workflow_version,
        run_id=e.run_id,
        job_id=e.job_id,
        attempt=e.attempt,
        message=e.message,
        data=MessageToDict(e.data) if e.HasField("data") else {},
    )


def _reader_of(org_id: str) -> Principal:
    # The log's readers act for a principal; the deliverer reads for the org.
    return Principal(
        org_id=org_id,
        subject="system:webhooks",
        kind=PrincipalKind.ANONYMOUS,
        scopes=frozenset({"workflows:read"}),
    )


class LogSource:
    """Pages of the event log through its public reader."""

    def __init__(self, log_: EventLog) -> None:
        self.log = log_

    def read_after(
        self, org_id: str, after_cursor: str, types: Collection[int], limit: int
    ) -> tuple[Sequence[_Event], str]:
        flt = events_pb2.EventFilter(types=sorted(types))  # type: ignore[arg-type]
        try:
            page = self.log.list_events(
                _reader_of(org_id), after_cursor=after_cursor, filter=flt, page_size=limit
            )
        except FailedPrecondition:
            # The position was pruned (a subscription disabled for longer than
            # the retention): go on from the oldest event kept.
            log.warning("webhook cursor %s of %s was pruned; resuming", after_cursor, org_id)
            page = self.log.list_events(
                _reader_of(org_id), after_cursor="", filter=flt, page_size=limit
            )
        return [_event(e) for e in page.events], page.next_cursor or after_cursor

    def head_cursor(self, org_id: str) -> str:
        page = self.log.list_events(_reader_of(org_id), after_cursor="now", page_size=1)
        return str(page.next_cursor)
