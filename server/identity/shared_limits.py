"""Rate limits that every replica on one PostgreSQL spends together.

Each (bucket, key) is a row of ``rate_limit_buckets`` holding the meter of
:mod:`ratelimit` (its level, and when it last changed by the database clock,
which all replicas share). Tokens are taken by one statement: an ``INSERT ...
ON CONFLICT DO UPDATE`` that drains the meter for the time since its last
change and adds the tokens if they fit under the limit. When they do not fit
it changes nothing and returns no row; a refusal, like the in-process
limiter's, costs nothing, and only then is the meter read again for
``Retry-After``.

A statement per call is a round trip per call, which the worker protocol
(100,000/min, the hot path) cannot afford. So a replica takes
``requests // 1000`` tokens at once (a *block*; at least one) and hands them
out itself until they are spent or a window has passed. Nothing is admitted
that was not taken from the shared meter first; what the meter cannot see is
when a replica spends what it holds, so within any window at most one block
per replica and key more than the limit can go through (0.1 % of the limit
per replica). Tokens left in a block at the end of its window are dropped:
they count as spent. The sign-in, public and general limits are below 2,000,
so their blocks are of one token: exact, with one round trip per call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from trellis.server.core import _sql
from trellis.server.core.db import PG_NOW_MS, Database
from trellis.server.core.errors import Unavailable
from trellis.server.identity import ratelimit
from trellis.server.identity.ratelimit import Limit, Verdict

__all__ = ["BLOCK_FRACTION", "SharedRateLimiter", "block_size"]

# A block is this fraction of a bucket's limit.
BLOCK_FRACTION: Final = 1000
# Drained rows of a bucket are deleted once per this many takes of it.
SWEEP_EVERY: Final = 1024

# The meter of ratelimit._Meter, in SQL: the level drained for the time since
# updated_at_ms, then the tokens added if they fit (the same float slack).
_DRAINED = (
    "GREATEST(0, b.level - GREATEST(0, excluded.updated_at_ms - b.updated_at_ms) / :drain_ms)"
)
_TAKE: Final = _sql.Sql(
    f"""
    INSERT INTO rate_limit_buckets AS b (bucket, key, level, updated_at_ms)
    VALUES (:bucket, :key, :tokens, {PG_NOW_MS})
    ON CONFLICT (bucket, key) DO UPDATE
    SET level = {_DRAINED} + :tokens,
        updated_at_ms = GREATEST(b.updated_at_ms, excluded.updated_at_ms)
    WHERE {_DRAINED} + :tokens <= :requests + 1e-9
    RETURNING level, updated_at_ms
    """
)
_READ: Final = _sql.Sql(
    f"""
    SELECT level, updated_at_ms, {PG_NOW_MS} AS now_ms FROM rate_limit_buckets
    WHERE bucket = :bucket AND key = :key
    """
)
_SWEEP: Final = _sql.Sql(
    f"""
    DELETE FROM rate_limit_buckets
    WHERE bucket = :bucket AND level <= ({PG_NOW_MS} - updated_at_ms) / :drain_ms
    """
)


def block_size(limit: Limit) -> int:
    """How many tokens a replica takes from the shared meter at once."""
    return max(1, limit.requests // BLOCK_FRACTION)


@dataclass
class _Block:
    """Tokens a replica took for one key and has not handed out yet."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    tokens: int = 0
    # The shared meter's level just after the block was taken.
    level: float = 0.0
    expires: float = 0.0  # time.monotonic()


@dataclass(frozen=True, slots=True)
class _Taken:
    allowed: bool
    level: float  # the shared meter's, after the take (or now, when refused)
    now: float  # the database clock, epoch seconds


class SharedRateLimiter:
    """:class:`ratelimit.Limiter` over ``rate_limit_buckets`` (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        overrides: Mapping[str, Limit] | None = None,
        *,
        max_keys: int = ratelimit.DEFAULT_MAX_KEYS,
        sweep_every: int = SWEEP_EVERY,
    ) -> None:
        if not db.is_postgres:
            raise ValueError("shared rate limits need PostgreSQL; SQLite has one process")
        self._db = db
        self._limits: Final = ratelimit.resolve_limits(overrides)
        self._max_keys = max_keys
        self._sweep_every = sweep_every
        self._lock = threading.Lock()
        self._blocks: dict[tuple[str, str], _Block] = {}
        self._takes = dict.fromkeys(self._limits, 0)

    def limit(self, bucket: str) -> Limit:
        limit = self._limits.get(bucket)
        if limit is None:
            raise ValueError(f"unknown rate-limit bucket {bucket!r}")
        return limit

    def check(self, bucket: str, key: str) -> Verdict:
        limit = self.limit(bucket)
        size = block_size(limit)
        if size == 1:
            taken = self._take(bucket, key, limit, 1)
            return ratelimit.verdict(limit, taken.level, taken.now, taken.allowed)
        block = self._block(bucket, key)
        with block.lock:
            if not block.tokens or time.monotonic() >= block.expires:
                taken = self._take(bucket, key, limit, size)
                if not taken.allowed:
                    # Near the limit a whole block no longer fits; one token may.
                    size = 1
                    taken = self._take(bucket, key, limit, size)
                if not taken.allowed:
                    return ratelimit.verdict(limit, taken.level, taken.now, False)
                block.tokens, block.level = size, taken.level
                block.expires = time.monotonic() + limit.window_secs
            block.tokens -= 1
            # What the block still holds is not spent yet.
            return ratelimit.verdict(limit, block.level - block.tokens, time.time(), True)

    def _block(self, bucket: str, key: str) -> _Block:
        with self._lock:
            block = self._blocks.get((bucket, key))
            if block is None:
                if len(self._blocks) >= self._max_keys:
                    self._forget_blocks()
                block = self._blocks[(bucket, key)] = _Block()
            return block

    def _forget_blocks(self) -> None:
        """Drops blocks with nothing left to hand out, else the oldest (under the
        lock). A dropped block's tokens count as spent: it only ever admits less."""
        now = time.monotonic()
        for name, block in list(self._blocks.items()):
            if not block.lock.locked() and (not block.tokens or block.expires <= now):
                del self._blocks[name]
        if len(self._blocks) >= self._max_keys:
            del self._blocks[next(iter(self._blocks))]

    def _take(self, bucket: str, key: str, limit: Limit, tokens: int) -> _Taken:
        """Takes ``tokens`` from the shared meter if they fit."""
        drain_ms = limit.drain_interval * 1000.0
        params = {"bucket": bucket, "key": key}
        try:
            # One statement commits on its own: no BEGIN and COMMIT round trips.
            with self._db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                rows = _sql.query(
                    c, _TAKE, **params, tokens=tokens, drain_ms=drain_ms, requests=limit.requests
                )
                read = [] if rows else _sql.query(c, _READ, **params)
                self._maybe_sweep(c, bucket, drain_ms)
        except OperationalError as exc:
            raise Unavailable("the rate-limit counters are unreachable; try again") from exc
        if rows:
            return _Taken(True, float(rows[0].level), int(rows[0].updated_at_ms) / 1000.0)
        if not read:  # drained and swept in between: an empty meter
            return _Taken(False, 0.0, time.time())
        row = read[0]
        elapsed_ms = max(0, int(row.now_ms) - int(row.updated_at_ms))
        level = max(0.0, float(row.level) - elapsed_ms / drain_ms)
        return _Taken(False, level, int(row.now_ms) / 1000.0)

    def _maybe_sweep(self, conn: Connection, bucket: str, drain_ms: float) -> None:
        """Now and then deletes the bucket's drained rows: an empty meter and no
        row mean the same."""
        with self._lock:
            self._takes[bucket] += 1
            due = self._takes[bucket] >= self._sweep_every
            if due:
                self._takes[bucket] = 0
        if due:
            _sql.execute(conn, _SWEEP, bucket=bucket, drain_ms=drain_ms)
