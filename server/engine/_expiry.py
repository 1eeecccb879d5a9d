"""The reaper's alarm clock.

The reaper sleeps until the earliest lease expiry it read from the database
(no longer than its interval). A lease granted or extended on this replica
after that read, and expiring sooner, shortens the sleep to its expiry, so a
job's timeout is enforced when it passes rather than at the next interval.
"""

from __future__ import annotations

import threading
import time

from trellis.server.engine._machine.common import NO_DEADLINE


class ExpiryAlarm:
    """Wakes the reaper at the earliest lease expiry; safe from any thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        # The earliest expiry announced since the reaper last read the database.
        self._announced = NO_DEADLINE
        self._closed = False

    def announce(self, expires_at_ms: int) -> None:
        """A lease that expires at ``expires_at_ms`` was granted or extended
        (and committed)."""
        # Unlocked first look: most leases expire after one already announced.
        if expires_at_ms >= self._announced:
            return
        with self._cond:
            if expires_at_ms < self._announced:
                self._announced = expires_at_ms
                self._cond.notify_all()

    def reading(self) -> None:
        """The reaper is about to read the earliest expiry from the database,
        which includes every lease announced so far."""
        with self._cond:
            self._announced = NO_DEADLINE

    def sleep(self, now_ms: int, until_ms: int) -> None:
        """Sleeps from ``now_ms`` until ``until_ms`` (database clock), or until
        the earliest lease announced since ``reading`` expires, if sooner;
        ``close`` ends the sleep."""
        with self._cond:
            start = time.monotonic()
            while not self._closed:
                wake_ms = min(until_ms, self._announced)
                remaining = start + (wake_ms - now_ms) / 1000 - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
