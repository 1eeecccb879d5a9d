"""OAuth2 clients and authorization codes."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, select, update

from trellis.server.core.pagination import KeyValue
from trellis.server.identity.store._common import (
    _check_lengths,
    _first,
    _insert,
    _keyset_rows,
    _new_id,
    _rowcount,
    _strings,
    oauth_clients,
    oauth_codes,
    sessions,
)


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """An OAuth2 client; ``id`` is the client_id. No secret digest, ever."""

    id: str
    org_id: str
    name: str
    is_public: bool
    secret_hint: str | None
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    created_at_ms: int
    updated_at_ms: int
    revoked_at_ms: int | None


@dataclass(frozen=True, slots=True)
class OAuthCode:
    org_id: str
    client_id: str
    user_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    code_challenge: str | None
    created_at_ms: int
    expires_at_ms: int
    used_at_ms: int | None


@dataclass(frozen=True, slots=True)
class CodeRedemption:
    """What :func:`consume_oauth_code` did.

    Only ``redeemed`` carries a usable code, and only one call per code ever
    gets it. ``reused`` (already redeemed; RFC 6749 4.1.2 wants the tokens it
    produced revoked), ``expired`` and ``unknown`` are refusals; ``code`` is set
    for the first two so the caller can audit them.
    """

    outcome: Literal["redeemed", "reused", "expired", "unknown"]
    code: OAuthCode | None


def _client(r: Mapping[Any, Any]) -> OAuthClient:
    return OAuthClient(
        id=r["id"],
        org_id=r["org_id"],
        name=r["name"],
        is_public=r["secret_digest"] is None,
        secret_hint=r["secret_hint"],
        redirect_uris=tuple(r["redirect_uris"]),
        grant_types=tuple(r["grant_types"]),
        scopes=tuple(r["scopes"]),
        created_at_ms=r["created_at_ms"],
        updated_at_ms=r["updated_at_ms"],
        revoked_at_ms=r["revoked_at_ms"],
    )


def create_oauth_client(
    conn: Connection,
    org_id: str,
    *,
    name: str,
    secret_digest: str | None,
    secret_hint: str | None,
    redirect_uris: Iterable[str],
    grant_types: Iterable[str],
    scopes: Iterable[str],
    now_ms: int,
    client_id: str | None = None,
) -> OAuthClient:
    """A confidential client (with the digest of a ``TokenKind.CLIENT_SECRET`` the
    caller minted) or a public one (``secret_digest=None``, PKCE only)."""
    values: dict[str, Any] = {
        "id": client_id or _new_id(),
        "org_id": org_id,
        "name": name,
        "secret_digest": secret_digest,
        "secret_hint": secret_hint,
        "redirect_uris": _strings(redirect_uris, "redirect_uris"),
        "grant_types": _strings(grant_types, "grant_types"),
        "scopes": _strings(scopes, "scopes"),
        "created_at_ms": now_ms,
        "updated_at_ms": now_ms,
        "revoked_at_ms": None,
    }
    _insert(conn, oauth_clients, values, "client id already exists")
    return _client(values)


def get_oauth_client(
    conn: Connection, org_id: str, client_id: str, *, include_revoked: bool = False
) -> OAuthClient | None:
    conditions = [oauth_clients.c.org_id == org_id, oauth_clients.c.id == client_id]
    if not include_revoked:
        conditions.append(oauth_clients.c.revoked_at_ms.is_(None))
    row = _first(conn, select(oauth_clients).where(*conditions))
    return None if row is None else _client(row)


def list_oauth_clients(
    conn: Connection,
    org_id: str,
    *,
    include_revoked: bool = False,
    after: Sequence[KeyValue] | None = None,
    limit: int | None = None,
) -> list[OAuthClient]:
    """The org's clients, oldest first: ``(created_at_ms, id)``, the sort key
    ``after`` resumes from."""
    conditions = [oauth_clients.c.org_id == org_id]
    if not include_revoked:
        conditions.append(oauth_clients.c.revoked_at_ms.is_(None))
    order = ((oauth_clients.c.created_at_ms, False), (oauth_clients.c.id, False))
    return _keyset_rows(conn, oauth_clients, conditions, order, _client, after=after, limit=limit)


def update_oauth_client(
    conn: Connection,
    org_id: str,
    client_id: str,
    *,
    now_ms: int,
    name: str | None = None,
    redirect_uris: Iterable[str] | None = None,
    grant_types: Iterable[str] | None = None,
    scopes: Iterable[str] | None = None,
) -> OAuthClient | None:
    """Changes the fields given (None = unchanged); None for an unknown or revoked
    client. Confidential/public cannot change (the secret is shown only once)."""
    values: dict[str, Any] = {"updated_at_ms": now_ms}
    if name is not None:
        values["name"] = name
    if redirect_uris is not None:
        values["redirect_uris"] = _strings(redirect_uris, "redirect_uris")
    if grant_types is not None:
        values["grant_types"] = _strings(grant_types, "grant_types")
    if scopes is not None:
        values["scopes"] = _strings(scopes, "scopes")
    _check_lengths(oauth_clients, values)
    rows = list(
        conn.execute(
            update(oauth_clients)
            .where(
                oauth_clients.c.org_id == org_id,
                oauth_clients.c.id == client_id,
                oauth_clients.c.revoked_at_ms.is_(None),
            )
            .values(values)
            .returning(*oauth_clients.c)
        ).mappings()
    )
    return _client(rows[0]) if rows else None


def revoke_oauth_client(conn: Connection, org_id: str, client_id: str, *, now_ms: int) -> bool:
    """Revokes a client (S3 "delete") and every session issued to it.

    Its unredeemed codes die with it: :func:`authenticate_oauth_client` refuses
    a revoked client, so nobody can redeem them.
    """
    stmt = (
        update(oauth_clients)
        .where(
            oauth_clients.c.org_id == org_id,
            oauth_clients.c.id == client_id,
            oauth_clients.c.revoked_at_ms.is_(None),
        )
        .values(revoked_at_ms=now_ms)
    )
    if _rowcount(conn.execute(stmt)) != 1:
        return False
    conn.execute(
        update(sessions)
        .where(
            sessions.c.org_id == org_id,
            sessions.c.client_id == client_id,
            sessions.c.revoked_at_ms.is_(None),
        )
        .values(revoked_at_ms=now_ms)
    )
    return True


def find_oauth_client(conn: Connection, client_id: str) -> OAuthClient | None:
    """The unrevoked client with this client_id, of whichever org (the authorize
    endpoint has no org header: the client decides it)."""
    row = _first(
        conn,
        select(oauth_clients).where(
            oauth_clients.c.id == client_id, oauth_clients.c.revoked_at_ms.is_(None)
        ),
    )
    return None if row is None else _client(row)


def authenticate_oauth_client(
    conn: Connection, client_id: str, secret_digest: str | None
) -> OAuthClient | None:
    """The unrevoked client if the credentials fit, else None.

    A confidential client needs the digest of its secret; a public client must
    present none (sending a secret to a public client is a mistake worth
    refusing, not ignoring).
    """
    row = _first(
        conn,
        select(oauth_clients).where(
            oauth_clients.c.id == client_id, oauth_clients.c.revoked_at_ms.is_(None)
        ),
    )
    if row is None:
        return None
    stored: str | None = row["secret_digest"]
    if stored is None or secret_digest is None:
        return _client(row) if stored is None and secret_digest is None else None
    return _client(row) if hmac.compare_digest(stored, secret_digest) else None


# ------------------------------------------------------------------ authorization codes


def _code(r: Mapping[Any, Any]) -> OAuthCode:
    return OAuthCode(
        org_id=r["org_id"],
        client_id=r["client_id"],
        user_id=r["user_id"],
        redirect_uri=r["redirect_uri"],
        scopes=tuple(r["scopes"]),
        code_challenge=r["code_challenge"],
        created_at_ms=r["created_at_ms"],
        expires_at_ms=r["expires_at_ms"],
        used_at_ms=r["used_at_ms"],
    )


def create_oauth_code(
    conn: Connection,
    org_id: str,
    *,
    digest: str,
    client_id: str,
    user_id: str,
    redirect_uri: str,
    scopes: Iterable[str],
    code_challenge: str | None,
    expires_at_ms: int,
    now_ms: int,
) -> OAuthCode:
    """Stores an authorization code the caller minted (``TokenKind.AUTH_CODE``)."""
    values: dict[str, Any] = {
        "digest": digest,
        "org_id": org_id,
        "client_id": client_id,
        "user_id": user_id,
        "redirect_uri": redirect_uri,
        "scopes": _strings(scopes, "scopes"),
        "code_challenge": code_challenge,
        "created_at_ms": now_ms,
        "expires_at_ms": expires_at_ms,
        "used_at_ms": None,
    }
    _insert(conn, oauth_codes, values, "authorization code already exists")
    return _code(values)


def consume_oauth_code(conn: Connection, digest: str, *, now_ms: int) -> CodeRedemption:
    """Redeems a code: at most one call ever gets ``redeemed``, even concurrently.

    The code is spent before the caller checks client, redirect_uri and PKCE
    verifier against it, so a code presented by the wrong party is burnt too
    (it was leaked; the rightful client's attempt then shows up as ``reused``).
    """
    stmt = (
        update(oauth_codes)
        .where(
            oauth_codes.c.digest == digest,
            oauth_codes.c.used_at_ms.is_(None),
            oauth_codes.c.expires_at_ms > now_ms,
        )
        .values(used_at_ms=now_ms)
        .returning(*oauth_codes.c)
    )
    row = conn.execute(stmt).mappings().first()
    if row is not None:
        return CodeRedemption("redeemed", _code(row))
    row = _first(conn, select(oauth_codes).where(oauth_codes.c.digest == digest))
    if row is None:
        return CodeRedemption("unknown", None)
    code = _code(row)
    return CodeRedemption("reused" if code.used_at_ms is not None else "expired", code)
