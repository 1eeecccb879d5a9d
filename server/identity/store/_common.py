"""Plumbing shared by the store's areas: table handles, paging, savepointed writes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Executable,
    RowMapping,
    String,
    Table,
    exists,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from trellis.server.core.errors import Conflict as Conflict
from trellis.server.core.errors import InvalidArgument
from trellis.server.core.models import (
    ApiTokenRow,
    AuditEventRow,
    MachineBackendRow,
    MachineUserRow,
    OAuthClientRow,
    OAuthCodeRow,
    OrganizationRow,
    PolicyRow,
    RetiredRefreshTokenRow,
    RevokedJtiRow,
    SessionRow,
    SigningKeyRow,
    UserRow,
    table,
)
from trellis.server.core.pagination import KeyValue, after_key
from trellis.server.core.paging import DEFAULT_LIMIT as DEFAULT_LIMIT
from trellis.server.core.paging import MAX_LIMIT as MAX_LIMIT
from trellis.server.core.paging import Page as Page
from trellis.server.core.paging import page_bounds, page_of

T = TypeVar("T")

orgs = table(OrganizationRow)
users = table(UserRow)
signing_keys = table(SigningKeyRow)
sessions = table(SessionRow)
retired_refresh = table(RetiredRefreshTokenRow)
revoked_jtis = table(RevokedJtiRow)
api_tokens = table(ApiTokenRow)
machine_users = table(MachineUserRow)
machine_backends = table(MachineBackendRow)
oauth_clients = table(OAuthClientRow)
oauth_codes = table(OAuthCodeRow)
policies = table(PolicyRow)
audit_events = table(AuditEventRow)

# The store's areas page by offset (their surfaces document limit/offset).
_page_bounds = page_bounds
_page = page_of


def _new_id() -> str:
    return uuid.uuid4().hex


def _strings(values: Iterable[str], what: str) -> list[str]:
    """A list of distinct strings in first-seen order; a bare string is a mistake."""
    if isinstance(values, str):
        # Iterating "admin" would store five one-letter roles.
        raise TypeError(f"{what} must be a sequence of strings, not a string")
    out = list(dict.fromkeys(values))
    for value in out:
        if not isinstance(value, str):
            raise TypeError(f"{what} must contain strings, got {type(value).__name__}")
    return out


def _check_lengths(tbl: Table, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        column_type = tbl.c[key].type
        # Text is a String without a length.
        limit = column_type.length if isinstance(column_type, String) else None
        if limit and isinstance(value, str) and len(value) > limit:
            raise InvalidArgument(f"{key} must be at most {limit} characters")


def _rowcount(result: CursorResult[Any]) -> int:
    return int(result.rowcount)


def _guarded(conn: Connection, stmt: Executable, conflict: str) -> CursorResult[Any]:
    """Runs ``stmt`` in a savepoint; a uniqueness violation becomes :class:`Conflict`.

    Without the savepoint PostgreSQL would abort the caller's whole transaction.
    The result is read inside the savepoint by the caller only for RETURNING
    statements, which :func:`_guarded_rows` does.
    """
    try:
        with conn.begin_nested():
            return conn.execute(stmt)
    except IntegrityError as exc:
        raise Conflict(conflict) from exc


def _guarded_rows(conn: Connection, stmt: Executable, conflict: str) -> list[RowMapping]:
    try:
        with conn.begin_nested():
            return list(conn.execute(stmt).mappings())
    except IntegrityError as exc:
        raise Conflict(conflict) from exc


def _insert(conn: Connection, tbl: Table, values: Mapping[str, Any], conflict: str) -> None:
    _check_lengths(tbl, values)
    _guarded(conn, insert(tbl).values(dict(values)), conflict)


def _insert_ignore(conn: Connection, tbl: Table, values: Mapping[str, Any], key: str) -> None:
    """INSERT that does nothing when a row with the same ``key`` exists (atomic)."""
    if conn.dialect.name == "postgresql":
        pg_stmt = postgresql.insert(tbl).values(dict(values))
        conn.execute(pg_stmt.on_conflict_do_nothing(index_elements=[key]))
    else:
        lite_stmt = sqlite.insert(tbl).values(dict(values))
        conn.execute(lite_stmt.on_conflict_do_nothing(index_elements=[key]))


def _keyset_rows(
    conn: Connection,
    tbl: Table,
    conditions: Sequence[ColumnElement[bool]],
    order: Sequence[tuple[Any, bool]],
    record: Callable[[RowMapping], T],
    *,
    after: Sequence[KeyValue] | None,
    limit: int | None,
) -> list[T]:
    """``tbl``'s rows matching ``conditions`` in ``order`` ((column, descending)
    pairs that end in a unique column), strictly after the sort key ``after``
    when given, at most ``limit`` of them when given."""
    where = list(conditions)
    if after is not None:
        columns = [column for column, _ in order]
        where.append(after_key(columns, after, descending=[desc for _, desc in order]))
    stmt = select(tbl).where(*where).order_by(*(c.desc() if d else c for c, d in order))
    if limit is not None:
        stmt = stmt.limit(limit)
    return [record(r) for r in conn.execute(stmt).mappings()]


def _json_list_has(conn: Connection, column: Any, value: str) -> ColumnElement[bool]:
    """``value`` is an element of the JSON list in ``column``."""
    # JSON is json on PostgreSQL and text on SQLite; each has a set-returning
    # function whose rows have a "value" column.
    if conn.dialect.name == "postgresql":
        elements = func.json_array_elements_text(column).table_valued("value")
    else:
        elements = func.json_each(column).table_valued("value")
    return exists(select(literal(1)).select_from(elements).where(elements.c.value == value))


def _first(conn: Connection, stmt: Executable) -> RowMapping | None:
    return conn.execute(stmt).mappings().first()
