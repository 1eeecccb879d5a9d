"""Database engines, transactions and the database clock.

SQLite (the embedded default) runs in WAL mode with a busy timeout; writes
start with ``BEGIN IMMEDIATE`` so two writers never deadlock on a lock
upgrade. A server checkpoints the WAL on a thread of its own and keeps it
under a size limit (see ``_wal``). PostgreSQL is reached through psycopg 3;
claims use ``FOR UPDATE SKIP LOCKED`` there (see ``engine._machine.claims``).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

from trellis.server.core import _sql, _wal
from trellis.server.core._wal import CHECKPOINT_INTERVAL, WalKeeper

# The database clock in epoch milliseconds, as SQL: the one clock of every replica.
PG_NOW_MS = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
_NOW_PG = _sql.Sql("SELECT " + PG_NOW_MS)
# How often PostgreSQL's clock is measured again (see _PgClock).
CLOCK_RECHECK_SECS = 10.0
log = logging.getLogger(__name__)


class _PgClock:
    """PostgreSQL's clock, read through this process's monotonic clock.

    Replicas agree on lease expiry because every time comes from the database
    server. Asking it costs a round trip per transaction, so the offset
    between its clock and this process's monotonic clock is measured instead
    (from the quickest of a few readings, at the middle of its round trip) and
    measured again every ``CLOCK_RECHECK_SECS``. A monotonic clock never jumps,
    so the error stays within half a local round trip plus the drift between
    two quartz clocks over that interval: well under a millisecond.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._measuring = threading.Lock()
        self._offset_ms = 0.0
        self._checked_at: float | None = None
        self._last = 0

    def now_ms(self, conn: Connection) -> int:
        checked = self._checked_at
        due = checked is None or time.monotonic() - checked > CLOCK_RECHECK_SECS
        # One thread measures; until the first measurement the others wait for
        # it, afterwards they go on with the offset they have.
        if due and self._measuring.acquire(blocking=checked is None):
            try:
                if self._checked_at is checked:
                    self._measure(conn)
            finally:
                self._measuring.release()
        now = int(time.monotonic() * 1000 + self._offset_ms)
        # A new measurement may move the offset by a fraction of a millisecond;
        # times handed out never go backwards.
        with self._lock:
            self._last = now = max(now, self._last)
        return now

    def _measure(self, conn: Connection) -> None:
        best: tuple[float, float] | None = None
        for _ in range(3):
            before = time.monotonic()
            (server_ms,) = _sql.scalars(conn, _NOW_PG)
            after = time.monotonic()
            if best is None or after - before < best[0]:
                best = (after - before, int(server_ms) - (before + after) / 2 * 1000)
        assert best is not None
        with self._lock:
            self._offset_ms, self._checked_at = best[1], time.monotonic()


def normalize_url(url: str) -> str:
    """Accepts the usual ``postgresql://`` form and picks the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class _Writer:
    """SQLite's write connection, kept out of the pool.

    Writers take turns on the write lock anyway; checking a connection out of
    the pool and back in (with its reset) for each one costs as much Python
    as the statements of a small transaction.
    """

    def __init__(self) -> None:
        self._conn: Connection | None = None

    def get(self, engine: Engine) -> Connection:
        """The connection (called under the write lock); a new one after a failure."""
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            conn = self._conn = engine.connect()
        return conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


@dataclass(frozen=True)
class Database:
    """An engine plus what the engine needs to know about its dialect."""

    engine: Engine
    is_postgres: bool
    # SQLite has one writer at a time. Queuing writers on a lock here rather
    # than in SQLite's busy handler (which sleeps in growing steps of up to
    # 100 ms) keeps write latency at the cost of the transaction itself.
    _write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # SQLite's WAL, when checkpoints run in the background (see connect).
    _wal_keeper: WalKeeper | None = field(default=None, repr=False)

    _pg_clock: _PgClock = field(default_factory=lambda: _PgClock(), repr=False)
    _writer: _Writer = field(default_factory=_Writer, repr=False)

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A read-write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        if self.is_postgres:
            with self.engine.begin() as conn:
                yield conn
            return
        with self._write_lock:
            if self._wal_keeper is not None:
                self._wal_keeper.before_write()
            conn = self._writer.get(self.engine)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction with one snapshot; on SQLite it does not take
        the write lock."""
        with self.engine.connect() as raw:
            conn = raw.execution_options(trellis_readonly=True)
            if self.is_postgres:
                # One snapshot for the whole read: under READ COMMITTED each
                # statement sees the commits made since the one before, so a
                # run's jobs and their leases could be read from two moments.
                # A read-only transaction never fails to serialize.
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def now_ms(self, conn: Connection) -> int:
        """The database clock, in epoch milliseconds.

        SQLite's clock is this process's (the file is local). PostgreSQL's is
        the server's, shared by every replica; see ``_PgClock``.
        """
        if not self.is_postgres:
            return time.time_ns() // 1_000_000
        return self._pg_clock.now_ms(conn)

    def dispose(self) -> None:
        with self._write_lock:
            self._writer.close()
        self.engine.dispose()

    @contextlib.contextmanager
    def background_checkpoints(self, interval: float = CHECKPOINT_INTERVAL) -> Iterator[None]:
        """Runs SQLite's WAL checkpoints on a thread of their own while the
        block runs (nothing to do on PostgreSQL). The WAL is emptied first
        (an unclean stop leaves it full) and again at the block's end."""
        wal = self._wal_keeper
        if wal is None:
            yield
            return
        stop = threading.Event()
        worker = threading.Thread(
            target=wal.run, args=(interval, stop), name="trellis-checkpoint", daemon=True
        )
        try:
            wal.open()
            worker.start()
            yield
        finally:
            stop.set()
            if worker.is_alive():
                worker.join(timeout=30)
            else:
                wal.close()


def connect(
    url: str,
    *,
    pool_size: int = 8,
    background_checkpoints: bool = False,
    wal_limit_bytes: int | None = None,
) -> Database:
    """Creates the engine for ``url`` (a SQLite file path URL or PostgreSQL).

    With ``background_checkpoints`` (a long-running server), SQLite's
    connections do not checkpoint the WAL themselves: the commit that crosses
    SQLite's threshold would otherwise copy a thousand pages and fsync inside
    somebody's request (a 10 ms stall every few dozen transactions). The
    caller then runs ``Database.background_checkpoints``, which keeps the WAL
    under ``wal_limit_bytes`` (default ``_wal.LIMIT_BYTES``).
    """
    wal_limit = _wal.LIMIT_BYTES if wal_limit_bytes is None else wal_limit_bytes
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        write_lock = threading.Lock()
        keeper = None
        if background_checkpoints and parsed.database and parsed.database != ":memory:":
            keeper = WalKeeper(parsed.database, wal_limit, write_lock)
        _configure_sqlite(engine, autocheckpoint=keeper is None, wal_limit=wal_limit)
        return Database(engine, is_postgres=False, _write_lock=write_lock, _wal_keeper=keeper)
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        # No pre-ping: it would cost a round trip per transaction. Recycled
        # connections and the service's retry cover dropped ones.
        pool_recycle=300,
    )
    return Database(engine, is_postgres=True)


def _configure_sqlite(engine: Engine, *, autocheckpoint: bool, wal_limit: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module so that the
        # "begin" hook below decides how each transaction starts.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        # When SQLite restarts the WAL itself (a checkpoint caught up while
        # no reader was on the log), the file is cut back as well.
        cur.execute(f"PRAGMA journal_size_limit={_wal.trigger(wal_limit)}")
        if not autocheckpoint:
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # On the driver's connection: a statement through SQLAlchemy costs
        # several times what SQLite takes to begin.
        raw = conn.connection.driver_connection
        assert raw is not None
        begin = (
            "BEGIN" if conn.get_execution_options().get("trellis_readonly") else "BEGIN IMMEDIATE"
        )
        try:
            raw.execute(begin)
        except sqlite3.Error as exc:
            # As SQLAlchemy raises it: callers catch DBAPIError (a database
            # locked past the busy timeout is "unavailable", not a fault).
            raise DBAPIError.instance(begin, None, exc, sqlite3.Error) from exc


def upgrade_schema(db: Database, revision: str = "head") -> None:
    """Brings the schema to the newest Alembic revision (or to ``revision``)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parents[1] / "migrations"))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
