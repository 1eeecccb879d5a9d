"""Epoch milliseconds, as the identity service keeps times, <-> ``google.protobuf.Timestamp``.

Each REST surface spells a Timestamp as its document does (the bridge's
``TimeFormat``), so the servicers deal in Timestamps only.
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message


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
