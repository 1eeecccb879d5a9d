"""Opaque, tamper-evident keyset page tokens, and the SQL that resumes after one.

A page token names the sort key of the last item a caller saw, so the next page
starts strictly after it: items that arrive or vanish meanwhile never shift a
page or repeat an item, unlike an offset. The token is signed with a key that
every replica of one database shares (:func:`page_token_key`), so a caller can
neither forge a position nor reuse a token with other filters: the token binds
the listing's *scope* (its name and filters), and a token from another listing
is refused with INVALID_ARGUMENT.

Format: ``base64url(json([scope_digest, key...]) + mac)`` where ``mac`` is the
first 16 bytes of HMAC-SHA256 over the JSON. Nothing in it is meant to be read
by callers; only the server interprets it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, Connection, and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from trellis.server.core.errors import InvalidArgument
from trellis.server.core.models import ServerSecretRow, table

__all__ = [
    "KeyValue",
    "PageTokens",
    "after_key",
    "page_size",
    "page_token_key",
    "server_secret",
]

#: A sort-key component a token can carry.
KeyValue = str | int

_MAC_BYTES: Final = 16
_SCOPE_BYTES: Final = 8
_KEY_NAME: Final = "page_tokens"
_secrets = table(ServerSecretRow)


def page_size(requested: int, *, default: int, maximum: int) -> int:
    """The page size to serve: ``default`` when unset (0), larger ones clamped
    to ``maximum`` as AIP-158 allows; a negative size is refused."""
    if requested < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(requested or default, maximum)


@dataclass(frozen=True, slots=True)
class PageTokens:
    """Signs and reads page tokens with one installation-wide key."""

    key: bytes

    def encode(self, scope: str, after: Sequence[KeyValue]) -> str:
        """A token that resumes the listing ``scope`` after the sort key ``after``."""
        body = json.dumps([self._scope(scope), *after], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(body + self._mac(body)).rstrip(b"=").decode()

    def decode(self, scope: str, token: str) -> tuple[KeyValue, ...]:
        """The sort key a token resumes after; INVALID_ARGUMENT when the token
        was not made by this installation for this same listing."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidArgument("page_token: not a token from a previous response")
        values = json.loads(body)
        if not isinstance(values, list) or not values or values[0] != self._scope(scope):
            raise InvalidArgument("page_token: from a listing with other filters")
        key = tuple(values[1:])
        if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in key):
            raise InvalidArgument("page_token: not a token from a previous response")
        return key

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self.key, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def _scope(self, scope: str) -> str:
        # A digest keeps filters (which may name users or labels) out of the token.
        digest = hmac.new(self.key, b"scope:" + scope.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:_SCOPE_BYTES]).rstrip(b"=").decode()


def after_key(
    columns: Sequence[Any], key: Sequence[KeyValue], *, descending: Sequence[bool]
) -> ColumnElement[bool]:
    """Rows strictly after ``key`` in the order ``columns`` (each ascending or
    descending), as one boolean expression: ``(a > x) OR (a = x AND b > y) ...``.

    Written out rather than as a row-value comparison because the columns may
    sort in different directions; with an index on the columns both databases
    still seek to the first row.
    """
    if len(columns) != len(key) or len(columns) != len(descending):
        raise InvalidArgument("page_token: not a token from a previous response")
    terms: list[ColumnElement[bool]] = []
    for i, (column, value, desc) in enumerate(zip(columns, key, descending, strict=True)):
        equal = [c == v for c, v in zip(columns[:i], key[:i], strict=True)]
        terms.append(and_(*equal, column < value if desc else column > value))
    return or_(*terms)


def page_token_key(conn: Connection, now_ms: int) -> bytes:
    """The installation's page-token key, created by the first replica to ask."""
    return server_secret(conn, now_ms, _KEY_NAME)


def server_secret(conn: Connection, now_ms: int, name: str) -> bytes:
    """The installation's 32-byte key called ``name``, created by the first replica to ask.

    ``INSERT`` of a fresh key that loses a race to another replica is ignored
    (the primary key decides), and both then read the one stored key.
    """
    row = conn.execute(select(_secrets.c.value).where(_secrets.c.name == name)).first()
    if row is None:
        fresh = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        values = {"name": name, "value": fresh, "created_at_ms": now_ms}
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(dialect.insert(_secrets).values(values).on_conflict_do_nothing())
        row = conn.execute(select(_secrets.c.value).where(_secrets.c.name == name)).one()
    return base64.urlsafe_b64decode(row[0])
