"""Plain SQL for the engine's hot paths, run on the driver's cursor.

Building, cache-keying and executing a SQLAlchemy Core statement costs about
0.2-0.3 ms of Python; the SQL itself often takes less than a tenth of that on
SQLite. A claim or a batch of completions runs ten or so statements inside
the one write transaction that every other writer waits for, so the engine's
hot statements are written here once as text and handed to the DBAPI cursor of
the transaction's connection. Everything else keeps using Core.

Statements use ``:name`` placeholders and macros that differ by dialect:

- ``IN_LIST(:ids)``: membership in a list given as one parameter. PostgreSQL
  gets ``= ANY(:ids)`` (one prepared plan for every list length), SQLite
  ``IN (SELECT value FROM json_each(:ids))`` (no cap on the number of
  variables, so no chunking).
- ``FOR_UPDATE``, ``FOR_UPDATE_SKIP_LOCKED``, ``FOR_UPDATE_NOWAIT`` and ``FOR_UPDATE_OF_LEASES``:
  row locks on PostgreSQL, nothing on SQLite (whose writers are serialised
  already).

``Insert`` writes many rows of one table; ``pipelined`` sends the writes of a
step in one round trip on PostgreSQL. JSON columns are bound as JSON text
(PostgreSQL casts the untyped parameter) and read back through ``from_json``:
SQLite returns text, psycopg a value.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import namedtuple
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

_PLACEHOLDER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")
_IN_LIST = re.compile(r"IN_LIST\((:[a-z_][a-z0-9_]*)\)")
# From this many rows on, PostgreSQL inserts go through unnest (see Insert).
UNNEST_FROM = 16
# Longer macros first: FOR_UPDATE is a prefix of the others.
_LOCKS = (
    ("FOR_UPDATE_SKIP_LOCKED", "FOR UPDATE SKIP LOCKED"),
    ("FOR_UPDATE_NOWAIT", "FOR UPDATE NOWAIT"),
    ("FOR_UPDATE_OF_LEASES", "FOR UPDATE OF l"),
    ("FOR_UPDATE", "FOR UPDATE"),
)


class Sql:
    """One statement, rendered for both dialects when it is defined."""

    __slots__ = ("_list_params", "_pg", "_rows", "_sqlite")

    def __init__(self, text: str) -> None:
        text = " ".join(text.split())
        self._list_params = frozenset(m[1:] for m in _IN_LIST.findall(text))
        sqlite = _IN_LIST.sub(r"IN (SELECT value FROM json_each(\1))", text)
        pg = _IN_LIST.sub(r"= ANY(\1)", text)
        for macro, lock in _LOCKS:
            sqlite = sqlite.replace(" " + macro, "")
            pg = pg.replace(macro, lock)
        self._sqlite = sqlite
        self._pg = _PLACEHOLDER.sub(r"%(\1)s", pg.replace("%", "%%"))
        self._rows: dict[tuple[str, ...], type] = {}

    def render(self, is_pg: bool) -> str:
        return self._pg if is_pg else self._sqlite

    def _params(self, is_pg: bool, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """The driver's parameters: lists as arrays (psycopg) or JSON text (SQLite)."""
        if not self._list_params:
            return params
        as_list = list if is_pg else (lambda v: json.dumps(list(v)))
        return {k: as_list(v) if k in self._list_params else v for k, v in params.items()}

    def run(self, cur: Any, is_pg: bool, params: Mapping[str, Any]) -> None:
        """Executes on ``cur``. On PostgreSQL, statements over lists are not
        prepared: a generic plan for ``id = ANY($1)`` cannot know the list is
        short and, made while a table was small, scans it whole ever after;
        a plan for the actual list looks the ids up."""
        if is_pg and self._list_params:
            cur.execute(self._pg, self._params(is_pg, params), prepare=False)
        else:
            cur.execute(self.render(is_pg), self._params(is_pg, params))

    def row_type(self, names: tuple[str, ...]) -> type:
        row = self._rows.get(names)
        if row is None:
            row = self._rows[names] = namedtuple("Row", names)
        return row


class Insert:
    """A multi-row INSERT into one table.

    SQLite runs it once per row (in-process, that costs little). PostgreSQL
    gets, for many rows, one statement over ``unnest``-ed arrays, one array per
    column: psycopg's per-row work for ``executemany`` costs more than dumping
    the arrays from about a dozen rows up (measured: 500 event rows 12 -> 7 ms).
    """

    __slots__ = (
        "_columns",
        "_consts",
        "_pg",
        "_pg_head",
        "_pg_rows",
        "_pg_values",
        "_sqlite",
        "_suffix",
    )

    def __init__(
        self,
        table: str,
        columns: Mapping[str, str],
        *,
        constants: Mapping[str, str] | None = None,
        on_conflict: str = "",
    ) -> None:
        """``columns`` maps each column given per row to its PostgreSQL type;
        ``constants`` maps the others to SQL literals."""
        self._columns = tuple(columns)
        consts = dict(constants or {})
        names = ", ".join(f'"{c}"' for c in (*columns, *consts))
        suffix = f" {on_conflict}" if on_conflict else ""
        values = ", ".join([f":{c}" for c in columns] + list(consts.values()))
        self._sqlite = f"INSERT INTO {table} ({names}) VALUES ({values}){suffix}"
        # Arrays of JSON go as text[]: psycopg sends lists of str as text.
        arrays = ", ".join(f"%({c})s::{'text' if t == 'json' else t}[]" for c, t in columns.items())
        picks = ", ".join(
            [f"u.{c}::json" if t == "json" else f"u.{c}" for c, t in columns.items()]
            + list(consts.values())
        )
        self._pg = (
            f"INSERT INTO {table} ({names}) SELECT {picks}"
            f" FROM unnest({arrays}) AS u({', '.join(self._columns)}){suffix}"
        )
        self._pg_rows = _PLACEHOLDER.sub(r"%(\1)s", self._sqlite)
        self._pg_head = f"INSERT INTO {table} ({names}) VALUES "
        self._consts = tuple(consts.values())
        self._suffix = suffix
        # A few rows go as one multi-row VALUES (one statement, not one per
        # row); its text per row count, made on first use.
        self._pg_values: dict[int, str] = {}

    def run(self, cur: Any, is_pg: bool, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        if is_pg and len(rows) >= UNNEST_FROM:
            cur.execute(self._pg, {c: [r[c] for r in rows] for c in self._columns})
        elif is_pg and len(rows) > 1:
            cur.execute(self._values(len(rows)), [r[c] for r in rows for c in self._columns])
        else:
            _run_many(cur, self._pg_rows if is_pg else self._sqlite, rows)

    def _values(self, n: int) -> str:
        text = self._pg_values.get(n)
        if text is None:
            row = "(" + ", ".join(["%s"] * len(self._columns) + list(self._consts)) + ")"
            text = self._pg_head + ", ".join([row] * n) + self._suffix
            self._pg_values[n] = text
        return text


def insert(conn: Connection, ins: Insert, rows: Sequence[Mapping[str, Any]]) -> None:
    """Inserts ``rows`` (mappings with every column of ``ins``)."""
    with pipelined(conn) as batch:
        batch.insert(ins, rows)


def _is_pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


@contextlib.contextmanager
def _cursor(conn: Connection, sql: Sql, params: Any) -> Iterator[Any]:
    """The transaction's driver cursor; driver errors become SQLAlchemy's, so
    that callers handle a deadlock or a lost database as they do for Core."""
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        yield cur
    except dbapi_error as exc:
        raise DBAPIError.instance(
            sql.render(_is_pg(conn)), params, exc, dbapi_error, dialect=conn.dialect
        ) from exc
    finally:
        cur.close()


def query(conn: Connection, sql: Sql, **params: Any) -> list[Any]:
    """Runs a statement that returns rows; rows are named tuples."""
    is_pg = _is_pg(conn)
    with _cursor(conn, sql, params) as cur:
        sql.run(cur, is_pg, params)
        return _fetch(cur, sql)


def scalars(conn: Connection, sql: Sql, **params: Any) -> list[Any]:
    """The first column of every row."""
    is_pg = _is_pg(conn)
    with _cursor(conn, sql, params) as cur:
        sql.run(cur, is_pg, params)
        return [r[0] for r in cur.fetchall()]


def execute(conn: Connection, sql: Sql, **params: Any) -> int:
    """Runs a statement; returns the number of rows it changed."""
    is_pg = _is_pg(conn)
    with _cursor(conn, sql, params) as cur:
        sql.run(cur, is_pg, params)
        return int(cur.rowcount)


def _run_many(cur: Any, text: str, batch: Sequence[Mapping[str, Any]]) -> None:
    if len(batch) == 1:
        # One row needs no executemany (psycopg runs that as a pipeline of its own).
        cur.execute(text, batch[0])
    elif batch:
        cur.executemany(text, batch)


class Pending:
    """The rows of a query sent in a batch, readable once the batch has ended."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: list[Any] | None = None

    @property
    def rows(self) -> list[Any]:
        if self._rows is None:
            raise RuntimeError("a batched query's rows are read after its batch")
        return self._rows


def _fetch(cur: Any, sql: Sql) -> list[Any]:
    if cur.description is None:
        return []
    row = sql.row_type(tuple(d[0] for d in cur.description))
    return [row(*r) for r in cur.fetchall()]


class Batch:
    """Statements sent together (see ``pipelined``); queries answer afterwards."""

    def __init__(self, conn: Connection, cur: Any) -> None:
        self._is_pg = _is_pg(conn)
        self._conn = conn
        self._cur = cur
        self._queries: list[tuple[Any, Sql, Pending]] = []

    @property
    def is_pg(self) -> bool:
        return self._is_pg

    def query(self, sql: Sql, **params: Any) -> Pending:
        """Sends a query; its rows are in the answer once the batch has ended."""
        pending = Pending()
        cur = self._conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        self._queries.append((cur, sql, pending))
        sql.run(cur, self._is_pg, params)
        if not self._is_pg:
            # SQLite's rows are read at once: later statements on the same
            # connection must not run under a half-read SELECT.
            pending._rows = _fetch(cur, sql)
        return pending

    def _collect(self) -> None:
        for cur, sql, pending in self._queries:
            if pending._rows is None:
                pending._rows = _fetch(cur, sql)

    def _close(self) -> None:
        for cur, _, _ in self._queries:
            cur.close()

    def execute(self, sql: Sql, **params: Any) -> None:
        sql.run(self._cur, self._is_pg, params)

    def insert(self, ins: Insert, rows: Sequence[Mapping[str, Any]]) -> None:
        ins.run(self._cur, self._is_pg, rows)

    def execute_many(self, sql: Sql, rows: Iterable[Mapping[str, Any]]) -> None:
        _run_many(self._cur, sql.render(self._is_pg), [sql._params(self._is_pg, r) for r in rows])


@contextlib.contextmanager
def pipelined(conn: Connection) -> Iterator[Batch]:
    """Runs the statements given to the batch in one round trip on PostgreSQL.

    psycopg's pipeline mode sends them without waiting for each answer; they
    still run in order, in the transaction, and the first error is raised
    when the block ends, after which the queries' rows can be read. SQLite
    runs them one by one (there is no network).
    """
    raw = conn.connection.dbapi_connection
    assert raw is not None
    dbapi_error = conn.dialect.loaded_dbapi.Error
    batch: Batch | None = None
    try:
        with contextlib.closing(raw.cursor()) as cur:
            with contextlib.ExitStack() as stack:
                # The pipeline ends (and its answers arrive) before the
                # cursors are read and closed.
                if _is_pg(conn):
                    stack.enter_context(raw.pipeline())
                batch = Batch(conn, cur)
                yield batch
            batch._collect()
    except dbapi_error as exc:
        raise DBAPIError.instance(None, None, exc, dbapi_error, dialect=conn.dialect) from exc
    finally:
        if batch is not None:
            batch._close()


def to_json(value: Any) -> str:
    # The same spelling SQLAlchemy's JSON type writes, so stored texts compare.
    return json.dumps(value)


def from_json(value: Any) -> Any:
    """A JSON column's value: text from SQLite, already decoded from psycopg."""
    return json.loads(value) if isinstance(value, str) else value
