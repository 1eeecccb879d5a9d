"""Cursors of the event log: ``(tx, id)`` as a fixed-width string.

Both numbers are written as 16 lowercase hex digits, so comparing two
cursors as strings compares them as positions in the log.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from trellis.server.core.errors import InvalidArgument

# Both halves are signed 64-bit columns: the first hex digit is below 8.
_CURSOR = re.compile(r"[0-7][0-9a-f]{15}[0-7][0-9a-f]{15}")
# "now": the stream's own start (StreamEvents), not a position in the log.
NOW = "now"


class Cursor(NamedTuple):
    tx: int
    id: int

    def encode(self) -> str:
        return f"{self.tx:016x}{self.id:016x}"


START = Cursor(0, 0)


def decode(text: str, field: str = "after_cursor") -> Cursor:
    """The cursor ``text`` spells (empty: before the first event)."""
    if not text:
        return START
    if not _CURSOR.fullmatch(text):
        raise InvalidArgument(
            f"{field} {text[:80]!r} is not a cursor of the event log "
            "(give one an event carried, or leave it empty)"
        )
    return Cursor(int(text[:16], 16), int(text[16:], 16))


__all__ = ["NOW", "START", "Cursor", "decode"]
