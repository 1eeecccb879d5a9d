"""Persistence of the JWT signing keys (``jwt_keys.KeyRing``)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, delete, select, update

from trellis.server.identity.jwt_keys import KeyState, SigningKey
from trellis.server.identity.store._common import (
    _check_lengths,
    _guarded,
    _insert,
    _rowcount,
    signing_keys,
)


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def _ms(seconds: object) -> int | None:
    if seconds is None:
        return None
    assert isinstance(seconds, int | float)
    return round(seconds * 1000)


def load_signing_keys(conn: Connection) -> list[SigningKey]:
    """Every stored key, for ``KeyRing(...)``. Times come back at millisecond precision."""
    rows = conn.execute(select(signing_keys).order_by(signing_keys.c.created_at_ms)).mappings()
    return [
        SigningKey.from_dict(
            {
                "kid": r["kid"],
                "alg": r["alg"],
                "state": r["state"],
                "created_at": _seconds(r["created_at_ms"]),
                "rotated_at": _seconds(r["rotated_at_ms"]),
                "private_key_pem": r["private_pem"],
            }
        )
        for r in rows
    ]


def save_signing_key(conn: Connection, key: SigningKey) -> None:
    """Inserts or updates one key (by kid). Conflict if it would make a second active key."""
    data = key.to_dict()
    values = {
        "alg": data["alg"],
        "state": data["state"],
        "created_at_ms": _ms(data["created_at"]),
        "rotated_at_ms": _ms(data["rotated_at"]),
        "private_pem": data["private_key_pem"],
    }
    conflict = "another signing key is already active"
    _check_lengths(signing_keys, {"kid": key.kid, **values})
    stmt = update(signing_keys).where(signing_keys.c.kid == key.kid).values(values)
    if _rowcount(_guarded(conn, stmt, conflict)) == 0:
        _insert(conn, signing_keys, {"kid": key.kid, **values}, conflict)


def save_signing_keys(conn: Connection, keys: Iterable[SigningKey]) -> None:
    """Saves a ring's snapshot (``KeyRing.keys``) after a rotation or retirement.

    The demoted key is written before the new active one, so the one-active-key
    index is never violated midway.
    """
    for key in sorted(keys, key=lambda k: k.state is KeyState.ACTIVE):
        save_signing_key(conn, key)


def delete_signing_key(conn: Connection, kid: str) -> bool:
    """Forgets a key (a retired one, once no token it signed can be presented)."""
    return _rowcount(conn.execute(delete(signing_keys).where(signing_keys.c.kid == kid))) == 1
