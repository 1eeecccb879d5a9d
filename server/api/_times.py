"""Epoch milliseconds, as the identity service keeps times, <-> ``google.protobuf.Timestamp``.

Each REST surface spells a Timestamp as its document does (the bridge's
``TimeFormat``), so the servicers deal in Timestamps only.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from trellis.server.core.errors import InvalidArgument


def timestamp(ms: int | None) -> timestamp_pb2.Timestamp | None:
    """The Timestamp of epoch milliseconds; None (the field left unset) for no time."""
    if not ms:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def millis(message: Message, field: str) -> int | None:
    """The epoch milliseconds of a message's Timestamp field; None when it is unset."""
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    return stamp.ToMilliseconds()


def parse_iso(text: str, field: str) -> int | None:
    """An ISO 8601 time as epoch milliseconds (UTC unless it says otherwise)."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"{field}: not an ISO 8601 time: {text[:40]!r}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)
