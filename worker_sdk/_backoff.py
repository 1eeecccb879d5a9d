"""Exponential backoff with full jitter."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays for reconnect and retry loops.

    The n-th delay (from 0) is uniform in ``[0, min(cap, base * 2**n)]`` ("full
    jitter"): many workers that lost the same server spread their reconnects
    instead of arriving together when it comes back.
    """

    def __init__(
        self,
        base: float = 0.1,
        cap: float = 10.0,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rng = rng
        self.attempt = 0

    def ceiling(self, attempt: int | None = None) -> float:
        """The largest delay the given (default: next) attempt can draw."""
        n = self.attempt if attempt is None else attempt
        # Past 2**63 the float product overflows; by then the cap has long won.
        return min(self.cap, self.base * 2.0 ** min(n, 63))

    def next_delay(self) -> float:
        """Draws the next delay and moves on to the following attempt."""
        delay = self._rng() * self.ceiling()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Starts over from the shortest delay (after a success)."""
        self.attempt = 0
