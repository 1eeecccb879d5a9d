"""The JSON of one event as the WebSocket pushes it, and the ``types`` filter.

An event renders in the Provisioning document's event format::

    {"event_type": "job_succeeded", "timestamp": "2026-01-05T10:00:00.120Z",
     "data": {...}, "metadata": {"cursor": "...", "run_id": "...", ...}}

``event_type`` is the REST spelling of ``trellis.v1.EventType`` (the value's name
without ``EVENT_TYPE_``, lower-cased), the same as in every other JSON answer that
names an event type; ``types=`` takes these spellings (and the full names).
``timestamp`` is RFC 3339 in UTC. ``metadata.cursor`` is the event's cursor, to
reconnect with (``?cursor=``) and resume after it.
"""

from __future__ import annotations

import json

from trellis.v1 import events_pb2, options_pb2

from ._codec import enum_codec, render_message
from ._json_values import CodecError, Json
from ._times import time_renderer

EVENT_TYPES = enum_codec(events_pb2.EventType.DESCRIPTOR)
_RFC3339 = time_renderer(options_pb2.TIME_FORMAT_UNSPECIFIED)


def event_json(event: events_pb2.Event) -> Json:
    """One event in the WebSocket's event format."""
    data = render_message(event.data) if event.HasField("data") else {}
    assert isinstance(data, dict)
    if event.message and "message" not in data:
        data["message"] = event.message
    metadata: dict[str, Json] = {"cursor": event.cursor}
    if event.workflow_id:
        metadata["workflow_id"] = event.workflow_id
    if event.workflow_version:
        metadata["workflow_version"] = event.workflow_version
    if event.run_id:
        metadata["run_id"] = event.run_id
    if event.job_id:
        metadata["job_id"] = event.job_id
    if event.attempt:
        metadata["attempt"] = event.attempt
    return {
        "event_type": EVENT_TYPES.render(event.type),
        "timestamp": _RFC3339(event.occurred_at) if event.HasField("occurred_at") else None,
        "data": data,
        "metadata": metadata,
    }


def event_text(event: events_pb2.Event) -> str:
    """:func:`event_json` as the text of one WebSocket message."""
    return json.dumps(event_json(event), separators=(",", ":"), ensure_ascii=False)


def parse_types(text: str) -> list[int]:
    """The event types of a comma-separated ``types`` parameter (empty: all).

    Raises:
        CodecError: a name that is no event type, naming it.
    """
    types: list[int] = []
    for name in text.split(","):
        name = name.strip()
        if name:
            number = EVENT_TYPES.parse_text(name, "types")
            if number == events_pb2.EVENT_TYPE_UNSPECIFIED:
                raise CodecError("types", f"{name!r} is no event type")
            if number not in types:
                types.append(number)
    return types
