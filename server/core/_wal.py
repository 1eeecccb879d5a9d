"""SQLite's write-ahead log in a server: checkpoints on a thread of their own,
and a bound on the log's size.

A PASSIVE checkpoint never waits for, nor blocks, readers and writers, but it
cannot restart the log: SQLite restarts it only at a write that begins while
every frame has been copied and no reader is still on the log, which never
happens while writes and reads keep coming. The file then grows by everything
written (gigabytes an hour under load) and keeps that size.

So once the file passes half its limit (``trigger``), ``WalKeeper`` follows
the PASSIVE checkpoint with a RESTART one. That one holds off writers (queued
on the database's write lock, not in SQLite's busy handler), waits up to
``RESET_WAIT_MS`` for the readers still on the log, and copies what the
PASSIVE one could not; the next write then starts the log from its beginning
and cuts the file back to the trigger (``journal_size_limit``). The other half
of the limit absorbs what arrives before the checkpoint thread notices; a
write that still finds the file past the limit restarts the log first, so the
file exceeds the limit by one transaction at most. A reader that outstays the
wait postpones the next attempt, with a doubling back-off, so that a long read
does not stall the writers again at every turn.

The log is emptied (a TRUNCATE checkpoint, which also shortens the file to
nothing) at start, where an unclean stop may have left it large, at a clean
stop, and once writes stop: SQLite itself would restart it only at the next
write. Under load RESTART serves instead, as it costs the waiting writers a
third of what TRUNCATE does (no file to shorten, then to grow again).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time

# How often the checkpoint thread copies the WAL into the database file.
CHECKPOINT_INTERVAL = 0.5
# The size a server keeps SQLite's WAL under.
LIMIT_BYTES = 32 * 1024 * 1024
# How often the checkpoint thread looks at the WAL's size (a stat).
POLL_SECS = 0.02
# How long restarting or emptying the WAL waits for readers still on it;
# writers wait meanwhile, so this stays short and a failed attempt is retried.
RESET_WAIT_MS = 100
# The longest wait before a restart is tried again after a reader outstayed
# RESET_WAIT_MS (the wait doubles from CHECKPOINT_INTERVAL).
RESET_MAX_BACKOFF_SECS = 8.0
log = logging.getLogger(__name__)


def trigger(limit: int) -> int:
    """The WAL size past which the checkpoint thread restarts the log."""
    return max(1, limit // 2)


class WalKeeper:
    """Checkpoints and bounds the WAL of the SQLite file ``path``.

    ``write_lock`` is the lock every writer of the process holds for the
    length of its transaction; ``open`` before use, ``close`` after.
    """

    def __init__(self, path: str, limit: int, write_lock: threading.Lock) -> None:
        if limit <= 0:
            raise ValueError(f"WAL limit {limit}: must be positive")
        self.limit = limit
        self.trigger = trigger(limit)
        self._path = path
        self._wal_path = f"{path}-wal"
        self._write_lock = write_lock
        # Guards the connection, shared by the checkpoint thread and a writer
        # that finds the log past the limit, and the state below.
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self._failed = 0
        # Frames in the log at the last PASSIVE checkpoint.
        self._frames = -1
        # The file's size when the log was last restarted: until a write
        # starts it again (and cuts the file back), it is no longer "over".
        self._restarted_size = -1

    def open(self) -> None:
        """Connects and empties what an unclean stop left in the log."""
        # The sqlite3 module lets other threads run while SQLite works.
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout={RESET_WAIT_MS}")
        conn.execute(f"PRAGMA journal_size_limit={self.trigger}")
        with self._lock:
            self._conn = conn
        self.reset("TRUNCATE")

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _size(self) -> int:
        try:
            return os.stat(self._wal_path).st_size
        except FileNotFoundError:
            return 0

    def _over(self, bound: int) -> bool:
        """The file is past ``bound``, was written since the last restart,
        and no back-off is running."""
        size = self._size()
        return size > bound and size != self._restarted_size and self._may_retry()

    def before_write(self) -> None:
        """Called by a writer holding the write lock: restarts a log past the limit."""
        if self._conn is not None and self._over(self.limit):
            self._reset_locked("RESTART")

    def run(self, interval: float, stop: threading.Event) -> None:
        """The checkpoint thread: until ``stop``, then empties the log and closes."""
        passive_due = time.monotonic() + interval
        try:
            while not stop.wait(min(POLL_SECS, interval)):
                now = time.monotonic()
                if now >= passive_due or self._over(self.trigger):
                    passive_due = now + interval
                    try:
                        self.checkpoint()
                    except sqlite3.Error:
                        log.warning("WAL checkpoint failed; retrying", exc_info=True)
            self.reset("TRUNCATE")
        except sqlite3.Error:
            log.warning("WAL not emptied at shutdown", exc_info=True)
        finally:
            self.close()

    def checkpoint(self) -> None:
        """A PASSIVE checkpoint, then restarting the log when it is past the
        trigger, or emptying it once copied whole with no write since the
        last checkpoint."""
        with self._lock:
            if self._conn is None:
                return
            (_busy, frames, copied) = self._conn.execute(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchone()
            idle = frames > 0 and frames == copied == self._frames
            self._frames = frames
        if idle and self._may_retry():
            self.reset("TRUNCATE")
        elif self._over(self.trigger):
            self.reset("RESTART")

    def reset(self, mode: str) -> bool:
        """A RESTART or TRUNCATE checkpoint; False when a reader outstayed the wait."""
        with self._write_lock:
            return self._reset_locked(mode)

    def _may_retry(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _reset_locked(self, mode: str) -> bool:
        with self._lock:
            if self._conn is None:
                return False
            (busy, frames, _copied) = self._conn.execute(
                f"PRAGMA wal_checkpoint({mode})"
            ).fetchone()
            if not busy:
                self._restarted_size = self._size()
                if self._failed:
                    log.info("WAL restarted after %d attempts", self._failed + 1)
                self._failed, self._backoff, self._retry_at = 0, 0.0, 0.0
                return True
            self._failed += 1
            self._backoff = min(RESET_MAX_BACKOFF_SECS, max(CHECKPOINT_INTERVAL, self._backoff * 2))
            self._retry_at = time.monotonic() + self._backoff
            if self._failed == 1:
                log.warning(
                    "WAL of %d frames not restarted: a read stayed on it over %d ms; retrying",
                    frames,
                    RESET_WAIT_MS,
                )
            return False
