"""Request rate limiting shared by the REST and gRPC transports.

Algorithm: a token bucket, stored in its GCRA / "leaky meter" form. Each (bucket, key)
holds a fill ``level`` (requests not yet drained) and the time it was last updated; the
meter drains at ``requests / window_secs`` per second and a request is admitted while one
more unit fits under ``requests``. Why this rather than a sliding-window counter:

* exact and O(1): two floats per key, no per-request timestamps (a sliding log would hold
  100,000 of them for a busy worker) and no estimate from the previous window;
* no boundary burst of fixed windows (2N requests around the edge), and a refused client
  gets an exact ``Retry-After``: the time until one unit has drained;
* a full window of idleness restores the whole budget, which is what ``X-RateLimit-Reset``
  promises.

Bound: at most ``requests`` at once and ``requests`` per window sustained; in the worst
case a full burst followed by steady use admits ``2 * requests - 1`` within one window,
as any token bucket does. Refused requests cost nothing, so a client that keeps retrying
while refused is not locked out for longer.

Memory: a key whose meter has drained to zero is indistinguishable from an unknown key, so
it is dropped by a lazy sweep that runs once per as many checks as the bucket tracks keys
(amortised O(1)). Each bucket tracks at most ``max_keys_per_bucket`` keys (default
:data:`DEFAULT_MAX_KEYS`, about 160 bytes each plus the key itself); at the cap the least
recently used key is forgotten. Forgetting a key resets its budget, but pushing one key out
takes that many fresh keys, each with a whole budget of its own, so eviction gives a flooder
nothing it did not already have.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

__all__ = [
    "AUTH",
    "BATCH",
    "BY_ADDRESS",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_KEYS",
    "GENERAL",
    "PUBLIC",
    "WORKER",
    "Limit",
    "Limiter",
    "RateLimiter",
    "Verdict",
    "grpc_metadata",
    "headers",
    "parse_limit",
    "resolve_limits",
    "verdict",
]

AUTH: Final = "auth"  # keyed by client IP: sign-in and token exchange
PUBLIC: Final = "public"  # keyed by client IP: other calls without credentials (discovery)
GENERAL: Final = "general"  # keyed by principal: ordinary API calls
BATCH: Final = "batch"  # keyed by principal: calls that act on many items at once
WORKER: Final = "worker"  # keyed by principal: the worker protocol (claim, heartbeat, ...)
# Counted per client address, before any credential is looked at; the others per principal.
BY_ADDRESS: Final = frozenset({AUTH, PUBLIC})

DEFAULT_MAX_KEYS: Final = 50_000

# Float slack for "one more unit fits": 60 / 7 * 7 is 60.00000000000001.
_EPSILON: Final = 1e-9
# A bucket with few keys is still swept now and then, but not on every check.
_MIN_SWEEP_INTERVAL: Final = 1024


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``requests`` per ``window_secs`` for each key of a bucket."""

    requests: int
    window_secs: float

    def __post_init__(self) -> None:
        if isinstance(self.requests, bool) or not isinstance(self.requests, int):
            raise TypeError("requests must be an int")
        if self.requests < 1:
            raise ValueError(f"requests must be at least 1, got {self.requests}")
        if not (math.isfinite(self.window_secs) and self.window_secs > 0):
            raise ValueError(f"window_secs must be a positive number, got {self.window_secs}")

    @property
    def drain_interval(self) -> float:
        """Seconds for one request's worth of the meter to drain."""
        return self.window_secs / self.requests


DEFAULT_LIMITS: Final[Mapping[str, Limit]] = MappingProxyType(
    {
        AUTH: Limit(5, 60.0),
        # Resource servers fetch JWKS and discovery routinely, often many behind one address.
        PUBLIC: Limit(1000, 60.0),
        GENERAL: Limit(100, 60.0),
        BATCH: Limit(10, 60.0),
        # Far above what any worker sends (a busy one heartbeats and claims a few times a
        # second), so it only stops a runaway loop, never a legitimate worker.
        WORKER: Limit(100_000, 60.0),
    }
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one :meth:`RateLimiter.check`, with what the headers need."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # epoch seconds at which the full budget is back
    retry_after_secs: int  # >= 1 when refused, 0 when allowed


class Limiter(Protocol):
    """What the auth interceptor counts calls with: this module's in-process
    :class:`RateLimiter`, or the counters replicas share (``shared_limits``)."""

    def limit(self, bucket: str) -> Limit: ...

    def check(self, bucket: str, key: str) -> Verdict: ...


def resolve_limits(overrides: Mapping[str, Limit] | None = None) -> dict[str, Limit]:
    """The default buckets with ``overrides`` applied; an override may add a bucket."""
    return {**DEFAULT_LIMITS, **(overrides or {})}


_LIMIT_TEXT: Final = re.compile(
    r"\s*(?P<requests>\d+)\s*/\s*(?P<amount>\d+(?:\.\d+)?)?\s*(?P<unit>s|sec|m|min|h|hour)?\s*"
)
_UNIT_SECS: Final[Mapping[str, float]] = MappingProxyType(
    {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
)


def parse_limit(text: str) -> Limit:
    """Read a limit as written in configuration: ``100/60`` (seconds), ``10/30s``, ``5/min``."""
    match = _LIMIT_TEXT.fullmatch(text)
    if match is None or (match["amount"] is None and match["unit"] is None):
        raise ValueError(f"rate limit {text!r} is not of the form '<requests>/<seconds>'")
    amount = float(match["amount"]) if match["amount"] is not None else 1.0
    unit = _UNIT_SECS[match["unit"]] if match["unit"] is not None else 1.0
    return Limit(int(match["requests"]), amount * unit)


class _Meter:
    """The state of one key: how full its meter was at ``updated``."""

    __slots__ = ("level", "updated")

    def __init__(self, updated: float) -> None:
        self.level = 0.0
        self.updated = updated

    def level_at(self, now: float, limit: Limit) -> float:
        # A clock that stepped back drains nothing rather than refilling the meter.
        elapsed = max(0.0, now - self.updated)
        return max(0.0, self.level - elapsed / limit.drain_interval)


class _Bucket:
    """The keys of one bucket, in least-recently-used order, behind one lock."""

    def __init__(self, limit: Limit, max_keys: int) -> None:
        self.limit = limit
        self.max_keys = max_keys
        self.lock = threading.Lock()
        self.meters: OrderedDict[str, _Meter] = OrderedDict()
        self.checks_since_sweep = 0

    def meter(self, key: str, now: float) -> _Meter:
        """The key's meter, marked most recently used; new keys may evict the oldest."""
        meter = self.meters.get(key)
        if meter is not None:
            self.meters.move_to_end(key)
            return meter
        while len(self.meters) >= self.max_keys:
            self.meters.popitem(last=False)
        meter = self.meters[key] = _Meter(now)
        return meter

    def maybe_sweep(self, now: float) -> None:
        """Drop drained keys once per ``len(meters)`` checks, keeping checks O(1) amortised."""
        self.checks_since_sweep += 1
        if self.checks_since_sweep < max(len(self.meters), _MIN_SWEEP_INTERVAL):
            return
        self.checks_since_sweep = 0
        drained = [k for k, m in self.meters.items() if m.level_at(now, self.limit) <= 0.0]
        for key in drained:
            del self.meters[key]


class RateLimiter:
    """Thread-safe per-(bucket, key) limiter; see the module docstring for the algorithm."""

    def __init__(
        self,
        overrides: Mapping[str, Limit] | None = None,
        *,
        max_keys_per_bucket: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_keys_per_bucket < 1:
            raise ValueError("max_keys_per_bucket must be at least 1")
        # The bucket table is fixed here and only read afterwards, so it needs no lock;
        # each bucket locks its own keys, and buckets never contend with one another.
        self._buckets: Final = {
            name: _Bucket(limit, max_keys_per_bucket)
            for name, limit in resolve_limits(overrides).items()
        }
        self._clock = clock

    def limit(self, bucket: str) -> Limit:
        """The limit of ``bucket``."""
        return self._bucket(bucket).limit

    def tracked_keys(self, bucket: str) -> int:
        """How many keys ``bucket`` currently remembers (for metrics and tests)."""
        state = self._bucket(bucket)
        with state.lock:
            return len(state.meters)

    def check(self, bucket: str, key: str, now: float | None = None) -> Verdict:
        """Count one request of ``key`` against ``bucket`` if it fits, and say whether it did.

        ``now`` is epoch seconds (``time.time()`` by default); tests pass it to move time.
        """
        state = self._bucket(bucket)
        at = self._clock() if now is None else now
        limit = state.limit
        with state.lock:
            meter = state.meter(key, at)
            level = meter.level_at(at, limit)
            allowed = level + 1.0 <= limit.requests + _EPSILON
            if allowed:
                level += 1.0
            meter.level = level
            meter.updated = max(meter.updated, at)
            state.maybe_sweep(at)
        return verdict(limit, level, at, allowed)

    def _bucket(self, name: str) -> _Bucket:
        state = self._buckets.get(name)
        if state is None:
            raise ValueError(f"unknown rate-limit bucket {name!r}")
        return state


def verdict(limit: Limit, level: float, now: float, allowed: bool) -> Verdict:
    """The verdict of a meter at ``level`` (after the request, if admitted) at ``now``."""
    interval = limit.drain_interval
    remaining = max(0, math.floor(limit.requests - level + _EPSILON))
    # Round waits up: a client told to come back at a whole second must find room then.
    reset_at = math.ceil(now + level * interval - _EPSILON)
    retry_after = 0
    if not allowed:
        wait = (level - (limit.requests - 1)) * interval
        retry_after = max(1, math.ceil(wait - _EPSILON))
    return Verdict(allowed, limit.requests, remaining, reset_at, retry_after)


def headers(verdict: Verdict) -> dict[str, str]:
    """The HTTP response headers describing ``verdict``; Retry-After only when refused."""
    result = {
        "X-RateLimit-Limit": str(verdict.limit),
        "X-RateLimit-Remaining": str(verdict.remaining),
        "X-RateLimit-Reset": str(verdict.reset_at),
    }
    if not verdict.allowed:
        result["Retry-After"] = str(verdict.retry_after_secs)
    return result


def grpc_metadata(verdict: Verdict) -> tuple[tuple[str, str], ...]:
    """The same as :func:`headers` as gRPC metadata, whose keys must be lower case."""
    return tuple((name.lower(), value) for name, value in headers(verdict).items())
