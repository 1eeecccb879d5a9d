"""Login sessions and refresh-token rotation, revoked access tokens (jtis), purging."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, delete, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from trellis.server.identity.store._common import (
    _check_lengths,
    _first,
    _guarded_rows,
    _insert,
    _insert_ignore,
    _new_id,
    _rowcount,
    _strings,
    oauth_codes,
    retired_refresh,
    revoked_jtis,
    sessions,
)


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    org_id: str
    user_id: str
    client_id: str | None
    scopes: tuple[str, ...]
    generation: int
    created_at_ms: int
    expires_at_ms: int
    revoked_at_ms: int | None

    def is_live(self, now_ms: int) -> bool:
        return self.revoked_at_ms is None and now_ms < self.expires_at_ms


@dataclass(frozen=True, slots=True)
class RefreshRotation:
    """What :func:`rotate_refresh` did.

    ``rotated``: the presented token was current; ``session`` now expects the new one.
    ``reused``: the token had already been rotated away, i.e. it was stolen or
    replayed; ``session`` (as returned) is revoked. ``unknown``: no live session
    has this token (never issued, purged, wrong client, or the session is revoked
    or expired); ``session`` is None.
    """

    outcome: Literal["rotated", "reused", "unknown"]
    session: Session | None


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """Rows removed by :func:`purge_expired`, per table."""

    revoked_jtis: int
    sessions: int
    retired_refresh_tokens: int
    oauth_codes: int


def _session(r: Mapping[Any, Any]) -> Session:
    return Session(
        id=r["id"],
        org_id=r["org_id"],
        user_id=r["user_id"],
        client_id=r["client_id"],
        scopes=tuple(r["scopes"]),
        generation=r["generation"],
        created_at_ms=r["created_at_ms"],
        expires_at_ms=r["expires_at_ms"],
        revoked_at_ms=r["revoked_at_ms"],
    )


def create_session(
    conn: Connection,
    org_id: str,
    user_id: str,
    *,
    refresh_digest: str,
    expires_at_ms: int,
    now_ms: int,
    client_id: str | None = None,
    scopes: Iterable[str] = (),
) -> Session:
    """A new session whose current refresh token has ``refresh_digest``.

    The session's lifetime is absolute: rotations do not extend it.
    """
    values: dict[str, Any] = {
        "id": _new_id(),
        "org_id": org_id,
        "user_id": user_id,
        "client_id": client_id,
        "scopes": _strings(scopes, "scopes"),
        "refresh_digest": refresh_digest,
        "generation": 0,
        "created_at_ms": now_ms,
        "expires_at_ms": expires_at_ms,
        "revoked_at_ms": None,
    }
    _insert(conn, sessions, values, "refresh token already in use")
    return _session(values)


def get_session(conn: Connection, org_id: str, session_id: str) -> Session | None:
    row = _first(
        conn, select(sessions).where(sessions.c.org_id == org_id, sessions.c.id == session_id)
    )
    return None if row is None else _session(row)


def rotate_refresh(
    conn: Connection,
    old_digest: str,
    new_digest: str,
    *,
    now_ms: int,
    client_id: str | None = None,
) -> RefreshRotation:
    """Exchanges the refresh token ``old_digest`` for ``new_digest``; see
    :class:`RefreshRotation` for the outcomes.

    ``client_id`` must be the client the session was issued to (None for a
    first-party session); a token presented by another client is ``unknown``
    and rotates nothing. Atomic: of two concurrent rotations of one token, one
    is ``rotated`` and the other ``reused`` (which revokes the session). That
    is the point of reuse detection, and it also means a client that retries
    a refresh whose answer it lost has to log in again.
    """
    same_client = (
        sessions.c.client_id.is_(None) if client_id is None else sessions.c.client_id == client_id
    )
    stmt = (
        update(sessions)
        .where(
            sessions.c.refresh_digest == old_digest,
            sessions.c.revoked_at_ms.is_(None),
            sessions.c.expires_at_ms > now_ms,
            same_client,
        )
        .values(refresh_digest=new_digest, generation=sessions.c.generation + 1)
        .returning(*sessions.c)
    )
    rows = _guarded_rows(conn, stmt, "refresh token already in use")
    if rows:
        session = _session(rows[0])
        retired = {
            "digest": old_digest,
            "org_id": session.org_id,
            "session_id": session.id,
            "retired_at_ms": now_ms,
            "expires_at_ms": session.expires_at_ms,
        }
        _insert(conn, retired_refresh, retired, "refresh token already retired")
        return RefreshRotation("rotated", session)
    reused = _first(
        conn,
        select(retired_refresh.c.org_id, retired_refresh.c.session_id).where(
            retired_refresh.c.digest == old_digest
        ),
    )
    if reused is None:
        return RefreshRotation("unknown", None)
    conn.execute(
        update(sessions)
        .where(sessions.c.id == reused["session_id"], sessions.c.revoked_at_ms.is_(None))
        .values(revoked_at_ms=now_ms)
    )
    return RefreshRotation("reused", get_session(conn, reused["org_id"], reused["session_id"]))


def revoke_session(conn: Connection, org_id: str, session_id: str, *, now_ms: int) -> bool:
    """Revokes a live session; False if unknown or already revoked."""
    stmt = (
        update(sessions)
        .where(
            sessions.c.org_id == org_id,
            sessions.c.id == session_id,
            sessions.c.revoked_at_ms.is_(None),
        )
        .values(revoked_at_ms=now_ms)
    )
    return _rowcount(conn.execute(stmt)) == 1


def revoke_user_sessions(conn: Connection, org_id: str, user_id: str, *, now_ms: int) -> int:
    """Revokes every unrevoked session of a user; returns how many."""
    stmt = (
        update(sessions)
        .where(
            sessions.c.org_id == org_id,
            sessions.c.user_id == user_id,
            sessions.c.revoked_at_ms.is_(None),
        )
        .values(revoked_at_ms=now_ms)
    )
    return _rowcount(conn.execute(stmt))


# ------------------------------------------------------------------ revoked access tokens


def revoke_jti(conn: Connection, org_id: str, jti: str, *, expires_at_ms: int) -> None:
    """Denylists an access token until ``expires_at_ms`` (its ``exp``). Idempotent."""
    values = {"jti": jti, "org_id": org_id, "expires_at_ms": expires_at_ms}
    _check_lengths(revoked_jtis, values)
    _insert_ignore(conn, revoked_jtis, values, "jti")


def claim_jti(conn: Connection, org_id: str, jti: str, *, expires_at_ms: int) -> bool:
    """Denylists an access token like :func:`revoke_jti`, and says whether this
    call was the one that did it (False: it was denylisted already).

    Atomic (one INSERT ... ON CONFLICT DO NOTHING), so of two concurrent
    exchanges of one access token exactly one wins: the basis of reuse
    detection when a JWT is presented to be refreshed.
    """
    values = {"jti": jti, "org_id": org_id, "expires_at_ms": expires_at_ms}
    _check_lengths(revoked_jtis, values)
    # RETURNING rather than rowcount: psycopg reports no rowcount for this statement.
    returning = revoked_jtis.c.jti
    if conn.dialect.name == "postgresql":
        pg_stmt = postgresql.insert(revoked_jtis).values(values)
        row = conn.execute(
            pg_stmt.on_conflict_do_nothing(index_elements=["jti"]).returning(returning)
        ).first()
    else:
        lite_stmt = sqlite.insert(revoked_jtis).values(values)
        row = conn.execute(
            lite_stmt.on_conflict_do_nothing(index_elements=["jti"]).returning(returning)
        ).first()
    return row is not None


def is_jti_revoked(conn: Connection, jti: str) -> bool:
    """Whether the token was revoked. jtis are random, so no org is needed; a purged
    entry's token has expired and is refused on its ``exp`` anyway."""
    stmt = select(literal(1)).where(revoked_jtis.c.jti == jti)
    return conn.execute(stmt).first() is not None


def purge_revoked_jtis(conn: Connection, *, now_ms: int) -> int:
    """Drops denylist entries whose tokens have expired; returns how many.

    Callers should purge with a margin for the verifier's clock-skew leeway
    (``jwt_keys.CLOCK_SKEW_LEEWAY_SECS``): pass ``now_ms - leeway``.
    """
    stmt = delete(revoked_jtis).where(revoked_jtis.c.expires_at_ms <= now_ms)
    return _rowcount(conn.execute(stmt))


# ------------------------------------------------------------------ purge


def purge_expired(conn: Connection, *, now_ms: int) -> PurgeCounts:
    """Drops everything whose expiry has passed: denylisted jtis, sessions (revoked
    or not) with their retired refresh tokens, and authorization codes."""
    return PurgeCounts(
        revoked_jtis=purge_revoked_jtis(conn, now_ms=now_ms),
        sessions=_rowcount(
            conn.execute(delete(sessions).where(sessions.c.expires_at_ms <= now_ms))
        ),
        retired_refresh_tokens=_rowcount(
            conn.execute(delete(retired_refresh).where(retired_refresh.c.expires_at_ms <= now_ms))
        ),
        oauth_codes=_rowcount(
            conn.execute(delete(oauth_codes).where(oauth_codes.c.expires_at_ms <= now_ms))
        ),
    )
