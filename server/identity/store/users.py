"""Users of an organization: profile, password, roles, soft deletion and TOTP."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, or_, select, update

from trellis.server.core.pagination import KeyValue
from trellis.server.identity.store._common import (
    DEFAULT_LIMIT,
    Page,
    _check_lengths,
    _first,
    _guarded_rows,
    _insert,
    _json_list_has,
    _keyset_rows,
    _new_id,
    _page,
    _page_bounds,
    _rowcount,
    _strings,
    users,
)
from trellis.server.identity.store.sessions import revoke_user_sessions


@dataclass(frozen=True, slots=True)
class User:
    id: str
    org_id: str
    username: str
    email: str
    roles: tuple[str, ...]
    enabled: bool
    created_at_ms: int
    updated_at_ms: int
    last_login_ms: int | None
    deleted_at_ms: int | None
    # Needed by login; kept out of repr so that logging a user leaks nothing.
    password_hash: str = field(repr=False)
    totp_secret: str | None = field(repr=False)
    totp_last_step: int | None = field(repr=False)

    @property
    def mfa_enabled(self) -> bool:
        return self.totp_secret is not None


def _user(r: Mapping[Any, Any]) -> User:
    return User(
        id=r["id"],
        org_id=r["org_id"],
        username=r["username"],
        email=r["email"],
        roles=tuple(r["roles"]),
        enabled=bool(r["enabled"]),
        created_at_ms=r["created_at_ms"],
        updated_at_ms=r["updated_at_ms"],
        last_login_ms=r["last_login_ms"],
        deleted_at_ms=r["deleted_at_ms"],
        password_hash=r["password_hash"],
        totp_secret=r["totp_secret"],
        totp_last_step=r["totp_last_step"],
    )


def _user_key(org_id: str, user_id: str) -> ColumnElement[bool]:
    return and_(users.c.org_id == org_id, users.c.id == user_id)


_NOT_DELETED = users.c.deleted_at_ms.is_(None)


def create_user(
    conn: Connection,
    org_id: str,
    *,
    username: str,
    email: str,
    password_hash: str,
    now_ms: int,
    roles: Iterable[str] = (),
    enabled: bool = True,
) -> User:
    """A new user. Raises Conflict when the username is taken in the org, also by
    a deleted user (see ``UserRow``)."""
    values: dict[str, Any] = {
        "id": _new_id(),
        "org_id": org_id,
        "username": username,
        "email": email,
        "password_hash": password_hash,
        "roles": _strings(roles, "roles"),
        "enabled": enabled,
        "totp_secret": None,
        "totp_last_step": None,
        "created_at_ms": now_ms,
        "updated_at_ms": now_ms,
        "last_login_ms": None,
        "deleted_at_ms": None,
    }
    _insert(conn, users, values, f"username {username!r} is taken")
    return _user(values)


def get_user(
    conn: Connection, org_id: str, user_id: str, *, include_deleted: bool = False
) -> User | None:
    conditions = [_user_key(org_id, user_id)]
    if not include_deleted:
        conditions.append(_NOT_DELETED)
    row = _first(conn, select(users).where(*conditions))
    return None if row is None else _user(row)


def get_user_by_username(conn: Connection, org_id: str, username: str) -> User | None:
    """The user a login names (deleted users cannot log in; disabled ones are
    returned, with ``enabled`` False, for the caller to refuse)."""
    row = _first(
        conn,
        select(users).where(users.c.org_id == org_id, users.c.username == username, _NOT_DELETED),
    )
    return None if row is None else _user(row)


def list_users(
    conn: Connection,
    org_id: str,
    *,
    role: str | None = None,
    enabled: bool | None = None,
    include_deleted: bool = False,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> Page[User]:
    """Users of the org, oldest first, optionally those holding ``role`` or with
    the given ``enabled`` flag."""
    limit, offset = _page_bounds(limit, offset)
    conditions = _user_filters(conn, org_id, role, enabled, include_deleted)
    order = (users.c.created_at_ms, users.c.id)
    return _page(conn, users, conditions, order, limit, offset, _user)


def list_users_after(
    conn: Connection,
    org_id: str,
    *,
    role: str | None = None,
    enabled: bool | None = None,
    include_deleted: bool = False,
    after: Sequence[KeyValue] | None = None,
    limit: int | None = None,
) -> list[User]:
    """The users ``list_users`` lists, oldest first: ``(created_at_ms, id)``, the
    sort key ``after`` resumes from."""
    conditions = _user_filters(conn, org_id, role, enabled, include_deleted)
    order = ((users.c.created_at_ms, False), (users.c.id, False))
    return _keyset_rows(conn, users, conditions, order, _user, after=after, limit=limit)


def _user_filters(
    conn: Connection, org_id: str, role: str | None, enabled: bool | None, include_deleted: bool
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [users.c.org_id == org_id]
    if not include_deleted:
        conditions.append(_NOT_DELETED)
    if enabled is not None:
        conditions.append(users.c.enabled == enabled)
    if role is not None:
        conditions.append(_json_list_has(conn, users.c.roles, role))
    return conditions


def _update_user(
    conn: Connection, org_id: str, user_id: str, values: dict[str, Any], *, deleted: bool = False
) -> User | None:
    _check_lengths(users, values)
    state = users.c.deleted_at_ms.is_not(None) if deleted else _NOT_DELETED
    stmt = update(users).where(_user_key(org_id, user_id), state).values(values).returning(*users.c)
    rows = _guarded_rows(conn, stmt, "conflicting user")
    return _user(rows[0]) if rows else None


def update_user(
    conn: Connection,
    org_id: str,
    user_id: str,
    *,
    now_ms: int,
    email: str | None = None,
    roles: Iterable[str] | None = None,
    enabled: bool | None = None,
) -> User | None:
    """Changes the fields given (None = unchanged; ``roles`` replaces the set).

    None when there is no such (non-deleted) user. Disabling a user also revokes
    their live sessions, so nobody can refresh their way past it.
    """
    values: dict[str, Any] = {"updated_at_ms": now_ms}
    if email is not None:
        values["email"] = email
    if roles is not None:
        values["roles"] = _strings(roles, "roles")
    if enabled is not None:
        values["enabled"] = enabled
    user = _update_user(conn, org_id, user_id, values)
    if user is not None and enabled is False:
        revoke_user_sessions(conn, org_id, user_id, now_ms=now_ms)
    return user


def set_password(
    conn: Connection, org_id: str, user_id: str, password_hash: str, *, now_ms: int
) -> bool:
    """Replaces the password hash. Whether other sessions survive is the caller's call
    (``revoke_user_sessions``)."""
    values = {"password_hash": password_hash, "updated_at_ms": now_ms}
    return _update_user(conn, org_id, user_id, values) is not None


def delete_user(conn: Connection, org_id: str, user_id: str, *, now_ms: int) -> bool:
    """Soft-deletes a user (restorable) and revokes their live sessions.

    False when there is no such non-deleted user. PATs are kept (a restore
    brings them back); authenticators must check the owner of a PAT on use.
    """
    values = {"deleted_at_ms": now_ms, "updated_at_ms": now_ms}
    if _update_user(conn, org_id, user_id, values) is None:
        return False
    revoke_user_sessions(conn, org_id, user_id, now_ms=now_ms)
    return True


def restore_user(conn: Connection, org_id: str, user_id: str, *, now_ms: int) -> User | None:
    """Undoes :func:`delete_user`; None when there is no such deleted user."""
    values = {"deleted_at_ms": None, "updated_at_ms": now_ms}
    return _update_user(conn, org_id, user_id, values, deleted=True)


def record_login(
    conn: Connection,
    org_id: str,
    user_id: str,
    *,
    now_ms: int,
    password_hash: str | None = None,
) -> bool:
    """Stamps ``last_login_ms``; ``password_hash`` stores a rehash made at login
    (``passwords.needs_rehash``). Not a profile change: ``updated_at_ms`` stays."""
    values: dict[str, Any] = {"last_login_ms": now_ms}
    if password_hash is not None:
        values["password_hash"] = password_hash
    return _update_user(conn, org_id, user_id, values) is not None


def set_totp_secret(
    conn: Connection, org_id: str, user_id: str, secret: str | None, *, now_ms: int
) -> bool:
    """Enrols (a secret) or removes (None) TOTP; the replay marker starts afresh."""
    values = {"totp_secret": secret, "totp_last_step": None, "updated_at_ms": now_ms}
    return _update_user(conn, org_id, user_id, values) is not None


def record_totp_step(conn: Connection, org_id: str, user_id: str, step: int) -> bool:
    """Marks TOTP ``step`` used; False if that step or a later one already was.

    Atomic, so of two concurrent logins with the same code only one passes
    (``totp.verify`` alone cannot know about the other).
    """
    stmt = (
        update(users)
        .where(
            _user_key(org_id, user_id),
            _NOT_DELETED,
            users.c.totp_secret.is_not(None),
            or_(users.c.totp_last_step.is_(None), users.c.totp_last_step < step),
        )
        .values(totp_last_step=step)
    )
    return _rowcount(conn.execute(stmt)) == 1
