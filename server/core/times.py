"""Epoch milliseconds, as the database keeps times, <-> ``google.protobuf.Timestamp``,
as the canonical messages carry them.

Rows hold 0 (or NULL) for a time that has not come; a message leaves the field
unset. Each REST surface then spells a Timestamp as its document does (the
bridge's ``TimeFormat``).
"""

from __future__ import annotations

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

__all__ = ["millis", "timestamp"]


def timestamp(ms: int | None) -> Timestamp | None:
    """The Timestamp of epoch milliseconds; None (the field left unset) for no time."""
    if not ms:
        return None
    seconds, rest = divmod(ms, 1000)
    return Timestamp(seconds=seconds, nanos=rest * 1_000_000)


def millis(message: Message, field: str) -> int | None:
    """The epoch milliseconds of a message's Timestamp field; None when it is unset."""
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToMilliseconds()
