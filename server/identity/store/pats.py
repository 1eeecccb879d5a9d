"""Personal access tokens, stored as digests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, Connection, and_, or_, select, update

from trellis.server.core.pagination import KeyValue
from trellis.server.identity.store._common import (
    _first,
    _insert,
    _keyset_rows,
    _new_id,
    _rowcount,
    _strings,
    api_tokens,
)

# last_used_at_ms of a PAT is a hint for humans; writing it on every request
# would turn each authenticated read into a write transaction.
TOUCH_INTERVAL_MS: Final = 60_000


@dataclass(frozen=True, slots=True)
class Pat:
    """A personal access token, without its digest."""

    id: str
    org_id: str
    user_id: str
    name: str
    hint: str
    scopes: tuple[str, ...]
    created_at_ms: int
    expires_at_ms: int | None
    last_used_at_ms: int | None
    revoked_at_ms: int | None


def _pat(r: Mapping[Any, Any]) -> Pat:
    return Pat(
        id=r["id"],
        org_id=r["org_id"],
        user_id=r["user_id"],
        name=r["name"],
        hint=r["hint"],
        scopes=tuple(r["scopes"]),
        created_at_ms=r["created_at_ms"],
        expires_at_ms=r["expires_at_ms"],
        last_used_at_ms=r["last_used_at_ms"],
        revoked_at_ms=r["revoked_at_ms"],
    )


def _live_pat(now_ms: int) -> ColumnElement[bool]:
    return and_(
        api_tokens.c.revoked_at_ms.is_(None),
        or_(api_tokens.c.expires_at_ms.is_(None), api_tokens.c.expires_at_ms > now_ms),
    )


def create_pat(
    conn: Connection,
    org_id: str,
    user_id: str,
    *,
    name: str,
    digest: str,
    hint: str,
    scopes: Iterable[str],
    now_ms: int,
    expires_at_ms: int | None = None,
) -> Pat:
    """Stores a PAT minted by the caller (``secrets_.new_token(TokenKind.PAT)``)."""
    values: dict[str, Any] = {
        "id": _new_id(),
        "org_id": org_id,
        "user_id": user_id,
        "name": name,
        "digest": digest,
        "hint": hint,
        "scopes": _strings(scopes, "scopes"),
        "created_at_ms": now_ms,
        "expires_at_ms": expires_at_ms,
        "last_used_at_ms": None,
        "revoked_at_ms": None,
    }
    _insert(conn, api_tokens, values, "token already exists")
    return _pat(values)


def list_pats(
    conn: Connection,
    org_id: str,
    *,
    user_id: str | None = None,
    include_revoked: bool = False,
    after: Sequence[KeyValue] | None = None,
    limit: int | None = None,
) -> list[Pat]:
    """PATs of the org (of one user when ``user_id`` is given), newest first:
    ``(created_at_ms desc, id)``, the sort key ``after`` resumes from."""
    conditions: list[ColumnElement[bool]] = [api_tokens.c.org_id == org_id]
    if user_id is not None:
        conditions.append(api_tokens.c.user_id == user_id)
    if not include_revoked:
        conditions.append(api_tokens.c.revoked_at_ms.is_(None))
    order = ((api_tokens.c.created_at_ms, True), (api_tokens.c.id, False))
    return _keyset_rows(conn, api_tokens, conditions, order, _pat, after=after, limit=limit)


def get_pat(conn: Connection, org_id: str, pat_id: str) -> Pat | None:
    row = _first(
        conn, select(api_tokens).where(api_tokens.c.org_id == org_id, api_tokens.c.id == pat_id)
    )
    return None if row is None else _pat(row)


def get_pat_by_digest(conn: Connection, digest: str, *, now_ms: int) -> Pat | None:
    """The live (unrevoked, unexpired) PAT with this digest, of whichever org.

    The owner is not checked here: the caller must confirm the user still
    exists and is enabled (``get_user``), and narrow the scopes to the
    owner's current roles.
    """
    row = _first(conn, select(api_tokens).where(api_tokens.c.digest == digest, _live_pat(now_ms)))
    return None if row is None else _pat(row)


def revoke_pat(
    conn: Connection, org_id: str, pat_id: str, *, now_ms: int, user_id: str | None = None
) -> bool:
    """Revokes a PAT (only one of ``user_id``'s, when given); False if there is no
    such unrevoked token."""
    conditions = [
        api_tokens.c.org_id == org_id,
        api_tokens.c.id == pat_id,
        api_tokens.c.revoked_at_ms.is_(None),
    ]
    if user_id is not None:
        conditions.append(api_tokens.c.user_id == user_id)
    stmt = update(api_tokens).where(*conditions).values(revoked_at_ms=now_ms)
    return _rowcount(conn.execute(stmt)) == 1


def touch_pat(
    conn: Connection, pat_id: str, *, now_ms: int, min_interval_ms: int = TOUCH_INTERVAL_MS
) -> bool:
    """Stamps ``last_used_at_ms`` unless it is fresher than ``min_interval_ms``.

    Callers can skip the write transaction altogether when the record they
    authenticated with is fresh enough.
    """
    stmt = (
        update(api_tokens)
        .where(
            api_tokens.c.id == pat_id,
            or_(
                api_tokens.c.last_used_at_ms.is_(None),
                api_tokens.c.last_used_at_ms <= now_ms - min_interval_ms,
            ),
        )
        .values(last_used_at_ms=now_ms)
    )
    return _rowcount(conn.execute(stmt)) == 1
