"""The append-only audit log, and the one writer of its rows.

Every layer audits through here: ``append_audit`` writes one event and
returns its id; ``audit_row`` builds a row that a caller on a hot path adds
to a batch of its own with ``AUDIT_INSERT`` (``_sql.Batch.insert``), so an
audited change costs no round trip of its own. Both cut over-long strings to
their columns and store the same values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from sqlalchemy import ColumnElement, Connection, select

from trellis.server.core import _sql
from trellis.server.core.errors import InvalidArgument
from trellis.server.core.models import AuditEventRow, table
from trellis.server.core.pagination import KeyValue, after_key
from trellis.server.core.paging import DEFAULT_LIMIT, Page, page_bounds, page_of

audit_events = table(AuditEventRow)

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


_COLUMNS: Final = {
    "org_id": "text",
    "at_ms": "bigint",
    "actor": "text",
    "actor_kind": "text",
    "action": "text",
    "resource": "text",
    "result": "text",
    "ip": "text",
    "detail": "json",
}
AUDIT_INSERT: Final = _sql.Insert("audit_events", _COLUMNS)
_INSERT_ONE: Final = _sql.Sql(
    f"INSERT INTO audit_events ({', '.join(_COLUMNS)})"
    f" VALUES ({', '.join(':' + c for c in _COLUMNS)}) RETURNING id"
)
# Column lengths, read once: rows are cut to them rather than failing the write.
_LENGTHS: Final = {
    c: getattr(audit_events.c[c].type, "length", None) or 0 for c in _COLUMNS if c != "detail"
}


def audit_row(
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
) -> dict[str, Any]:
    """One audit event as a row of ``AUDIT_INSERT``.

    ``detail`` must be JSON-serialisable and must not hold secrets.
    """
    if result not in _AUDIT_RESULTS:
        raise InvalidArgument(f"result must be one of {sorted(_AUDIT_RESULTS)}, got {result!r}")
    values = {
        "org_id": org_id,
        "at_ms": at_ms,
        "actor": actor,
        "actor_kind": actor_kind,
        "action": action,
        "resource": resource,
        "result": result,
        "ip": ip,
    }
    row: dict[str, Any] = {
        k: str(v)[: _LENGTHS[k]] if isinstance(v, str) and _LENGTHS[k] else v
        for k, v in values.items()
    }
    row["detail"] = _sql.to_json(dict(detail or {}))
    return row


def write_audit(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Appends the events ``rows`` (from ``audit_row``) in one statement."""
    _sql.insert(conn, AUDIT_INSERT, rows)


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
    row = audit_row(
        org_id,
        at_ms=at_ms,
        action=action,
        result=result,
        actor=actor,
        actor_kind=actor_kind,
        resource=resource,
        ip=ip,
        detail=detail,
    )
    (new_id,) = _sql.scalars(conn, _INSERT_ONE, **row)
    return int(new_id)


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
    limit, offset = page_bounds(limit, offset)
    conditions = _filters(org_id, actor, action, resource, result, since_ms, until_ms)
    order = [column.desc() for column in _ORDER]
    return page_of(conn, audit_events, conditions, order, limit, offset, _audit)


def list_audit_after(
    conn: Connection,
    org_id: str,
    *,
    actor: str | None = None,
    action: str | None = None,
    resource: str | None = None,
    result: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    after: Sequence[KeyValue] | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[AuditEvent]:
    """At most ``limit`` of the events ``list_audit`` lists, in its order, strictly
    after the sort key ``after`` (``audit_key`` of the last event seen) when given."""
    conditions = _filters(org_id, actor, action, resource, result, since_ms, until_ms)
    if after is not None:
        conditions.append(after_key(_ORDER, after, descending=(True, True)))
    stmt = (
        select(audit_events)
        .where(*conditions)
        .order_by(*(column.desc() for column in _ORDER))
        .limit(max(1, limit))
    )
    return [_audit(m) for m in conn.execute(stmt).mappings()]


def audit_key(event: AuditEvent) -> tuple[int, int]:
    """The sort key of an event in the listing order, for ``after``."""
    return event.at_ms, event.id


# Newest first; the id breaks ties between events of one millisecond.
_ORDER: Final = (audit_events.c.at_ms, audit_events.c.id)


def _filters(
    org_id: str,
    actor: str | None,
    action: str | None,
    resource: str | None,
    result: str | None,
    since_ms: int | None,
    until_ms: int | None,
) -> list[ColumnElement[bool]]:
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
    return conditions


__all__ = [
    "AUDIT_INSERT",
    "AuditEvent",
    "AuditResult",
    "append_audit",
    "audit_key",
    "audit_row",
    "list_audit",
    "list_audit_after",
    "write_audit",
]
