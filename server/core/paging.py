"""Offset paging, for the documented surfaces that page by ``limit`` and
``offset`` and report the total (``X-Total-Count``).

Listings of the canonical API page by signed keyset tokens instead
(``pagination``); these helpers serve the paths whose documentation fixes
``limit``/``offset``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import ColumnElement, Connection, RowMapping, Table, func, select

from trellis.server.core.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_LIMIT: Final = 50
# S2: "limit (default: 50, max: 1000)"; larger requests are clamped, not refused.
MAX_LIMIT: Final = 1000


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing and the number of matching rows (``X-Total-Count``)."""

    items: tuple[T, ...]
    total: int


def page_bounds(limit: int, offset: int) -> tuple[int, int]:
    """``limit`` clamped to ``MAX_LIMIT``; negative bounds are refused."""
    if limit < 0 or offset < 0:
        raise InvalidArgument("limit and offset must not be negative")
    return min(limit, MAX_LIMIT), offset


def count(conn: Connection, tbl: Table, conditions: Sequence[ColumnElement[bool]]) -> int:
    return int(conn.execute(select(func.count()).select_from(tbl).where(*conditions)).scalar_one())


def page_of(
    conn: Connection,
    tbl: Table,
    conditions: Sequence[ColumnElement[bool]],
    order_by: Sequence[Any],
    limit: int,
    offset: int,
    record: Callable[[RowMapping], T],
) -> Page[T]:
    """One page of ``tbl``'s rows matching ``conditions`` (bounds already checked
    with ``page_bounds``), with the total for ``X-Total-Count``."""
    rows = conn.execute(
        select(tbl).where(*conditions).order_by(*order_by).limit(limit).offset(offset)
    ).mappings()
    return Page(tuple(record(r) for r in rows), count(conn, tbl, conditions))


__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Page", "count", "page_bounds", "page_of"]
