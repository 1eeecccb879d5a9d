"""Wake-ups for waiters (assignment streams, log and event followers).

A waiter subscribes to topics, then re-reads the database, then waits; a
writer fires topics after its transaction commits. Subscribing before reading
means a fire that lands between the read and the wait is never lost.

Across replicas on PostgreSQL, fired topics also go out with ``NOTIFY`` and a
listener thread fires them locally. Waits always have a timeout, so polling
remains the fallback when a notification is missed.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

CHANNEL = "trellis_events"


class Subscription:
    """A flag set by any fire of the subscribed topics."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Waits for a fire (or the timeout) and re-arms; True if fired."""
        fired = self._event.wait(timeout)
        self._event.clear()
        return fired


class Notifier:
    """Topic-based wake-ups within a process, optionally bridged to PostgreSQL."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}
        self._timers: list[tuple[float, int, str]] = []
        self._timer_seq = 0
        self._timer_cv = threading.Condition(self._lock)
        self._closed = False
        self._publish: Any = None
        self._timer_thread = threading.Thread(
            target=self._run_timers, name="trellis-timers", daemon=True
        )
        self._timer_thread.start()

    @contextmanager
    def subscribe(self, *topics: str) -> Iterator[Subscription]:
        sub = Subscription()
        with self._lock:
            for topic in topics:
                self._subs.setdefault(topic, set()).add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                for topic in topics:
                    subs = self._subs.get(topic)
                    if subs is not None:
                        subs.discard(sub)
                        if not subs:
                            del self._subs[topic]

    def fire_local(self, topics: Iterable[str]) -> None:
        with self._lock:
            targets = [sub for t in topics for sub in self._subs.get(t, ())]
        for sub in targets:
            sub.set()

    def fire(self, topics: Iterable[str]) -> None:
        """Wakes subscribers here and, when bridged, on every other replica."""
        topics = list(dict.fromkeys(topics))
        if not topics:
            return
        self.fire_local(topics)
        publish = self._publish
        if publish is not None:
            try:
                publish(topics)
            except Exception:  # the polling fallback covers a lost notification
                log.warning("could not publish wake-ups", exc_info=True)

    def fire_at(self, when: float, topic: str) -> None:
        """Fires ``topic`` locally at monotonic time ``when`` (retry backoff)."""
        with self._timer_cv:
            self._timer_seq += 1
            heapq.heappush(self._timers, (when, self._timer_seq, topic))
            self._timer_cv.notify()

    def wake_all(self) -> None:
        """Wakes every waiter (shutdown)."""
        with self._lock:
            targets = [sub for subs in self._subs.values() for sub in subs]
        for sub in targets:
            sub.set()

    def close(self) -> None:
        with self._timer_cv:
            self._closed = True
            self._timer_cv.notify()
        self.wake_all()

    def set_publisher(self, publish: Any) -> None:
        self._publish = publish

    def _run_timers(self) -> None:
        while True:
            with self._timer_cv:
                while not self._closed and (
                    not self._timers or self._timers[0][0] > time.monotonic()
                ):
                    timeout = self._timers[0][0] - time.monotonic() if self._timers else None
                    self._timer_cv.wait(timeout)
                if self._closed:
                    return
                _, _, topic = heapq.heappop(self._timers)
            self.fire_local([topic])


class PgBridge:
    """Carries fired topics between replicas with PostgreSQL LISTEN/NOTIFY.

    Fired topics are sent by a thread of their own: the writer that fired
    them has already woken this replica's waiters and answers its caller at
    once, and topics fired while a send is under way go out together.
    """

    def __init__(self, notifier: Notifier, conninfo: str) -> None:
        self._notifier = notifier
        self._conninfo = conninfo
        self._stop = threading.Event()
        self._pending: dict[str, None] = {}
        self._pending_cv = threading.Condition()
        self._own_pid = 0
        self._thread = threading.Thread(target=self._listen, name="trellis-listen", daemon=True)
        self._sender = threading.Thread(target=self._send, name="trellis-notify", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._sender.start()
        self._notifier.set_publisher(self._publish)

    def stop(self) -> None:
        self._notifier.set_publisher(None)
        with self._pending_cv:
            self._stop.set()
            self._pending_cv.notify()
        self._sender.join(5.0)

    def _publish(self, topics: list[str]) -> None:
        with self._pending_cv:
            self._pending.update(dict.fromkeys(topics))
            self._pending_cv.notify()

    def _send(self) -> None:
        import psycopg

        conn: Any = None
        try:
            while True:
                with self._pending_cv:
                    while not self._pending and not self._stop.is_set():
                        self._pending_cv.wait()
                    if self._stop.is_set():
                        return
                    topics, self._pending = list(self._pending), {}
                payload = "\n".join(topics)
                # NOTIFY payloads are capped at 8000 bytes; an oversized batch
                # degrades to a wake-everything marker rather than failing.
                if len(payload) > 7000:
                    payload = "*"
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self._conninfo, autocommit=True)
                        self._own_pid = conn.info.backend_pid
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                except Exception:  # the polling fallback covers a lost notification
                    log.warning("could not publish wake-ups", exc_info=True)
                    self._stop.wait(0.5)
        finally:
            if conn is not None:
                conn.close()

    def _listen(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            if note.pid == self._own_pid:
                                continue  # fired here already, before it was sent
                            if note.payload == "*":
                                self._notifier.wake_all()
                            else:
                                self._notifier.fire_local(note.payload.split("\n"))
            except Exception:
                if self._stop.is_set():
                    return
                log.warning("LISTEN connection lost; retrying", exc_info=True)
                self._stop.wait(1.0)
