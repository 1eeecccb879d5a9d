"""Organizations: the tenants every other record belongs to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from sqlalchemy import Connection, select, update

from trellis.server.core.errors import InvalidArgument
from trellis.server.core.pagination import KeyValue
from trellis.server.identity.store._common import (
    DEFAULT_LIMIT,
    Page,
    _check_lengths,
    _first,
    _guarded_rows,
    _insert,
    _keyset_rows,
    _new_id,
    _page,
    _page_bounds,
    orgs,
)

OrgStatus = Literal["active", "suspended"]
_ORG_STATUSES: Final = frozenset(get_args(OrgStatus))


@dataclass(frozen=True, slots=True)
class Organization:
    id: str
    name: str
    status: str
    created_at_ms: int
    updated_at_ms: int


def _org(r: Mapping[Any, Any]) -> Organization:
    return Organization(
        id=r["id"],
        name=r["name"],
        status=r["status"],
        created_at_ms=r["created_at_ms"],
        updated_at_ms=r["updated_at_ms"],
    )


def _check_org_status(status: str) -> None:
    if status not in _ORG_STATUSES:
        raise InvalidArgument(f"status must be 'active' or 'suspended', got {status!r}")


def create_org(
    conn: Connection,
    *,
    name: str,
    now_ms: int,
    org_id: str | None = None,
    status: OrgStatus = "active",
) -> Organization:
    """A new organization; ``org_id`` is generated unless given (e.g. "default")."""
    _check_org_status(status)
    org = Organization(org_id or _new_id(), name, status, now_ms, now_ms)
    values = {
        "id": org.id,
        "name": name,
        "status": status,
        "created_at_ms": now_ms,
        "updated_at_ms": now_ms,
    }
    _insert(conn, orgs, values, f"an organization named {name!r} or with this id exists")
    return org


def get_org(conn: Connection, org_id: str) -> Organization | None:
    row = _first(conn, select(orgs).where(orgs.c.id == org_id))
    return None if row is None else _org(row)


def list_orgs(
    conn: Connection,
    *,
    status: OrgStatus | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> Page[Organization]:
    """Organizations, oldest first."""
    limit, offset = _page_bounds(limit, offset)
    conditions = [] if status is None else [orgs.c.status == status]
    order = (orgs.c.created_at_ms, orgs.c.id)
    return _page(conn, orgs, conditions, order, limit, offset, _org)


def list_orgs_after(
    conn: Connection,
    *,
    status: OrgStatus | None = None,
    after: Sequence[KeyValue] | None = None,
    limit: int | None = None,
) -> list[Organization]:
    """Organizations, oldest first: ``(created_at_ms, id)``, the sort key
    ``after`` resumes from."""
    conditions = [] if status is None else [orgs.c.status == status]
    order = ((orgs.c.created_at_ms, False), (orgs.c.id, False))
    return _keyset_rows(conn, orgs, conditions, order, _org, after=after, limit=limit)


def _update_org(conn: Connection, org_id: str, values: dict[str, Any]) -> Organization | None:
    _check_lengths(orgs, values)
    stmt = update(orgs).where(orgs.c.id == org_id).values(values).returning(*orgs.c)
    rows = _guarded_rows(conn, stmt, f"an organization named {values.get('name')!r} exists")
    return _org(rows[0]) if rows else None


def update_org(conn: Connection, org_id: str, *, name: str, now_ms: int) -> Organization | None:
    """Renames an organization; None if it does not exist."""
    return _update_org(conn, org_id, {"name": name, "updated_at_ms": now_ms})


def set_org_status(
    conn: Connection, org_id: str, status: OrgStatus, *, now_ms: int
) -> Organization | None:
    """Suspends or activates an organization; None if it does not exist.

    The store does not consult the status anywhere: refusing a suspended org's
    credentials is the authenticator's job.
    """
    _check_org_status(status)
    return _update_org(conn, org_id, {"status": status, "updated_at_ms": now_ms})
