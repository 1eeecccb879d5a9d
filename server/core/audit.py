"""The append-only audit log."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from sqlalchemy import ColumnElement, Connection, Table, insert

from trellis.server.core.errors import InvalidArgument
from trellis.server.identity.store._common import (
    DEFAULT_LIMIT,
    Page,
    _page,
    _page_bounds,
    audit_events,
)

AuditResult = Literal["success", "failure", "denied"]
_AUDIT_RESULTS: Final = frozenset(get_args(AuditResult))


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    org_id: str
    at_ms: int
    actor: str
    actor_kind: str
    action: str
    resource: str
    result: str
    ip: str
    detail: dict[str, Any] = field(compare=False)


def _audit(m: Mapping[Any, Any]) -> AuditEvent:
    return AuditEvent(
        id=m["id"],
        org_id=m["org_id"],
        at_ms=m["at_ms"],
        actor=m["actor"],
        actor_kind=m["actor_kind"],
        action=m["action"],
        resource=m["resource"],
        result=m["result"],
        ip=m["ip"],
        detail=dict(m["detail"] or {}),
    )


def _clip(tbl: Table, column: str, value: str) -> str:
    limit = getattr(tbl.c[column].type, "length", None)
    return value[:limit] if limit else value


def append_audit(
    conn: Connection,
    org_id: str,
    *,
    at_ms: int,
    action: str,
    result: AuditResult,
    actor: str = "",
    actor_kind: str = "",
    resource: str = "",
    ip: str = "",
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Appends an audit event and returns its id (ids grow with insertion).

    Over-long strings are cut to their column rather than failing the write.
    ``detail`` must be JSON-serialisable and must not hold secrets.
    """
    if result not in _AUDIT_RESULTS:
        raise InvalidArgument(f"result must be one of {sorted(_AUDIT_RESULTS)}, got {result!r}")
    values = {
        "org_id": org_id,
        "at_ms": at_ms,
        "actor": _clip(audit_events, "actor", actor),
        "actor_kind": _clip(audit_events, "actor_kind", actor_kind),
        "action": _clip(audit_events, "action", action),
        "resource": _clip(audit_events, "resource", resource),
        "result": result,
        "ip": _clip(audit_events, "ip", ip),
        "detail": dict(detail or {}),
    }
    stmt = insert(audit_events).values(values).returning(audit_events.c.id)
    return int(conn.execute(stmt).scalar_one())


def list_audit(
    conn: Connection,
    org_id: str,
    *,
    actor: str | None = None,
    action: str | None = None,
    resource: str | None = None,
    result: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> Page[AuditEvent]:
    """The org's audit events, newest first; filters are exact matches, the time
    range is ``since_ms <= at_ms < until_ms``."""
    limit, offset = _page_bounds(limit, offset)
    a = audit_events.c
    conditions: list[ColumnElement[bool]] = [a.org_id == org_id]
    for column, wanted in ((a.actor, actor), (a.action, action), (a.resource, resource)):
        if wanted is not None:
            conditions.append(column == wanted)
    if result is not None:
        conditions.append(a.result == result)
    if since_ms is not None:
        conditions.append(a.at_ms >= since_ms)
    if until_ms is not None:
        conditions.append(a.at_ms < until_ms)
    order = (a.at_ms.desc(), a.id.desc())
    return _page(conn, audit_events, conditions, order, limit, offset, _audit)
