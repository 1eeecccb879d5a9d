"""Wake-ups between replicas on one PostgreSQL, with LISTEN/NOTIFY."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from trellis.server.engine._capabilities import MAX_HANDLER_CHARS
from trellis.server.engine._notify import Notifier, Ready, WorkKey

log = logging.getLogger(__name__)

CHANNEL = "trellis_events"


def encode(topics: list[str], ready: Ready) -> str:
    """A NOTIFY payload; ``*`` when it would pass PostgreSQL's 8000-byte cap.

    A command longer than any handler name (a shell script) is sent as the
    empty command, which no handler has either: only claimers that run any
    command can take it, wherever it is spelled out.
    """
    merged: dict[WorkKey, int] = {}
    for (o, k, c), n in ready.items():
        key = (o, k, c if len(c) <= MAX_HANDLER_CHARS else "")
        merged[key] = merged.get(key, 0) + n
    payload = json.dumps({"t": topics, "r": [[o, k, c, n] for (o, k, c), n in merged.items()]})
    return payload if len(payload) <= 7000 else "*"


def decode(payload: str) -> tuple[list[str], dict[WorkKey, int]] | None:
    """The topics and ready work of a payload; None for ``*`` (wake everyone)."""
    if payload == "*":
        return None
    data = json.loads(payload)
    return list(data["t"]), {(o, k, c): int(n) for o, k, c, n in data["r"]}


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
        self._pending_ready: dict[WorkKey, int] = {}
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

    def _publish(self, topics: list[str], ready: Ready) -> None:
        with self._pending_cv:
            self._pending.update(dict.fromkeys(topics))
            for key, n in ready.items():
                self._pending_ready[key] = self._pending_ready.get(key, 0) + n
            self._pending_cv.notify()

    def _send(self) -> None:
        import psycopg

        conn: Any = None
        try:
            while True:
                with self._pending_cv:
                    while not (self._pending or self._pending_ready or self._stop.is_set()):
                        self._pending_cv.wait()
                    if self._stop.is_set():
                        return
                    payload = encode(list(self._pending), self._pending_ready)
                    self._pending, self._pending_ready = {}, {}
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
                            self._deliver(note.payload)
            except Exception:
                if self._stop.is_set():
                    return
                log.warning("LISTEN connection lost; retrying", exc_info=True)
                self._stop.wait(1.0)

    def _deliver(self, payload: str) -> None:
        try:
            decoded = decode(payload)
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable wake-up payload %.80r; waking everyone", payload)
            decoded = None
        if decoded is None:
            self._notifier.wake_all()
        else:
            self._notifier.fire_local(*decoded)


__all__ = ["CHANNEL", "PgBridge", "decode", "encode"]
