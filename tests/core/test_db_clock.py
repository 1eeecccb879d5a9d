"""The engine's clock is the database's: on PostgreSQL it is read through a
measured offset rather than a query per transaction, and must still agree
with the server's own clock."""

from __future__ import annotations

import time

from sqlalchemy import text

from trellis.server.core.db import connect

# Half a loopback round trip plus scheduling noise on a loaded 2-core machine;
# a wrong offset (seconds or hours) or a wrong unit is far outside it.
AGREEMENT_MS = 250


def _database_ms(db_url: str) -> tuple[int, int, int]:
    """(engine clock, database clock, engine clock again), read in a row."""
    db = connect(db_url)
    try:
        with db.read() as conn:
            before = db.now_ms(conn)
            if db.is_postgres:
                query = "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
            else:
                query = "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
            database = int(conn.execute(text(query)).scalar_one())
            after = db.now_ms(conn)
        return before, database, after
    finally:
        db.dispose()


def test_the_engine_clock_agrees_with_the_database_clock(database_url: str) -> None:
    before, database, after = _database_ms(database_url)
    assert before - AGREEMENT_MS <= database <= after + AGREEMENT_MS
    assert after >= before


def test_the_engine_clock_never_goes_backwards(database_url: str) -> None:
    db = connect(database_url)
    try:
        with db.read() as conn:
            readings = [db.now_ms(conn) for _ in range(2000)]
    finally:
        db.dispose()
    assert readings == sorted(readings)
    assert readings[-1] - readings[0] < 60_000
    assert abs(readings[-1] - time.time() * 1000) < 60_000
