"""Machine users (token-authenticated service accounts) and their callback backends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, select, update

from trellis.server.core.pagination import KeyValue
from trellis.server.identity.store._common import (
    Conflict,
    _check_lengths,
    _first,
    _insert,
    _keyset_rows,
    _new_id,
    _rowcount,
    machine_backends,
    machine_users,
)


@dataclass(frozen=True, slots=True)
class MachineUser:
    id: str
    org_id: str
    username: str
    name: str
    hint: str
    enabled: bool
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class MachineBackend:
    id: str
    org_id: str
    machine_user_id: str
    name: str
    callback_url: str
    description: str
    created_at_ms: int
    updated_at_ms: int


def _machine_user(r: Mapping[Any, Any]) -> MachineUser:
    return MachineUser(
        id=r["id"],
        org_id=r["org_id"],
        username=r["username"],
        name=r["name"],
        hint=r["hint"],
        enabled=bool(r["enabled"]),
        created_at_ms=r["created_at_ms"],
        updated_at_ms=r["updated_at_ms"],
    )


def create_machine_user(
    conn: Connection,
    org_id: str,
    *,
    username: str,
    name: str,
    digest: str,
    hint: str,
    now_ms: int,
    enabled: bool = True,
) -> MachineUser:
    """Stores a machine user whose token the caller minted (``TokenKind.MACHINE_USER``)."""
    values: dict[str, Any] = {
        "id": _new_id(),
        "org_id": org_id,
        "username": username,
        "name": name,
        "digest": digest,
        "hint": hint,
        "enabled": enabled,
        "created_at_ms": now_ms,
        "updated_at_ms": now_ms,
    }
    _insert(conn, machine_users, values, f"machine user {username!r} exists")
    return _machine_user(values)


def get_machine_user(conn: Connection, org_id: str, machine_user_id: str) -> MachineUser | None:
    row = _first(
        conn,
        select(machine_users).where(
            machine_users.c.org_id == org_id, machine_users.c.id == machine_user_id
        ),
    )
    return None if row is None else _machine_user(row)


def get_machine_user_by_username(
    conn: Connection, org_id: str, username: str
) -> MachineUser | None:
    row = _first(
        conn,
        select(machine_users).where(
            machine_users.c.org_id == org_id, machine_users.c.username == username
        ),
    )
    return None if row is None else _machine_user(row)


def get_machine_user_by_digest(conn: Connection, digest: str) -> MachineUser | None:
    """The enabled machine user whose token has this digest, of whichever org.

    S0 validate-machine-user and Basic auth also name a username: compare it
    with the record's.
    """
    row = _first(
        conn,
        select(machine_users).where(
            machine_users.c.digest == digest, machine_users.c.enabled.is_(True)
        ),
    )
    return None if row is None else _machine_user(row)


def list_machine_users(
    conn: Connection,
    org_id: str,
    *,
    after: Sequence[KeyValue] | None = None,
    limit: int | None = None,
) -> list[MachineUser]:
    """The org's machine users, oldest first: ``(created_at_ms, id)``, the sort
    key ``after`` resumes from."""
    conditions = [machine_users.c.org_id == org_id]
    order = ((machine_users.c.created_at_ms, False), (machine_users.c.id, False))
    return _keyset_rows(
        conn, machine_users, conditions, order, _machine_user, after=after, limit=limit
    )


def set_machine_user_enabled(
    conn: Connection, org_id: str, machine_user_id: str, enabled: bool, *, now_ms: int
) -> bool:
    stmt = (
        update(machine_users)
        .where(machine_users.c.org_id == org_id, machine_users.c.id == machine_user_id)
        .values(enabled=enabled, updated_at_ms=now_ms)
    )
    return _rowcount(conn.execute(stmt)) == 1


# ------------------------------------------------------------------ backends


def _backend(r: Mapping[Any, Any]) -> MachineBackend:
    return MachineBackend(
        id=r["id"],
        org_id=r["org_id"],
        machine_user_id=r["machine_user_id"],
        name=r["name"],
        callback_url=r["callback_url"],
        description=r["description"],
        created_at_ms=r["created_at_ms"],
        updated_at_ms=r["updated_at_ms"],
    )


def register_backend(
    conn: Connection,
    org_id: str,
    machine_user_id: str,
    *,
    name: str,
    callback_url: str,
    now_ms: int,
    description: str = "",
    replace: bool = False,
) -> tuple[MachineBackend, bool]:
    """Registers a machine user's callback backend by name.

    Returns the backend and whether it was created. A name the machine user
    has registered already is a :class:`Conflict`, unless ``replace``: then that
    backend gets the new URL and description and keeps its id.
    """
    key = and_(
        machine_backends.c.org_id == org_id,
        machine_backends.c.machine_user_id == machine_user_id,
        machine_backends.c.name == name,
    )
    changes = {"callback_url": callback_url, "description": description, "updated_at_ms": now_ms}
    values: dict[str, Any] = {
        "id": _new_id(),
        "org_id": org_id,
        "machine_user_id": machine_user_id,
        "name": name,
        "created_at_ms": now_ms,
        **changes,
    }
    _check_lengths(machine_backends, values)
    taken = f"backend {name!r} is registered already; set replace to change it"
    if not replace:
        _insert(conn, machine_backends, values, taken)
        return _backend(values), True
    # Update first, insert otherwise; a concurrent first registration makes the
    # insert conflict, and the update then finds the row the other one made.
    for _ in range(2):
        rows = list(
            conn.execute(
                update(machine_backends).where(key).values(changes).returning(*machine_backends.c)
            ).mappings()
        )
        if rows:
            return _backend(rows[0]), False
        try:
            _insert(conn, machine_backends, values, "backend registered concurrently")
        except Conflict:
            continue
        return _backend(values), True
    raise Conflict(f"backend {name!r} is being registered concurrently; try again")


def list_backends(
    conn: Connection, org_id: str, *, machine_user_id: str | None = None
) -> list[MachineBackend]:
    conditions = [machine_backends.c.org_id == org_id]
    if machine_user_id is not None:
        conditions.append(machine_backends.c.machine_user_id == machine_user_id)
    rows = conn.execute(
        select(machine_backends)
        .where(*conditions)
        .order_by(machine_backends.c.created_at_ms, machine_backends.c.id)
    ).mappings()
    return [_backend(r) for r in rows]
