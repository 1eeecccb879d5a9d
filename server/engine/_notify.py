"""Wake-ups for waiters (assignment streams, long polls, log and event followers).

A waiter subscribes, then re-reads the database, then waits; a writer fires
after its transaction commits. Subscribing before reading means a fire that
lands between the read and the wait is never lost.

Two kinds of wake-up:

- **Topics** (a run's events, a job's log, a worker's leases) wake every
  subscriber of the topic.
- **Ready work** wakes one claimer per job that became claimable: a
  subscriber that can run the job (its labels cover the job's, and it runs
  any command or has a handler for the job's) and that has a free slot, taken
  in turn; one with a handler for the command before one that runs anything.
  Waking every idle stream for each job would make all but one of them run
  an empty claim, each a write transaction, which is what an idle fleet
  of workers would otherwise spend its server on. The work is recorded on the
  claimer it was given to; a claimer that fills up, or leaves, before it
  could take that work passes it on (``take_work``/``pass_on``), so a job is
  not left waiting for the poll while another claimer could take it.

A claimer waiting with free slots may also carry a **mailbox**: a writer
whose transaction makes jobs ready can then lease them to it inside that
same transaction (``reserve``, then ``deliver`` after the commit), and the
claimer starts them without a claim transaction of its own. This is what
keeps enqueue-to-start latency low with idle workers.

Across replicas on PostgreSQL, both also go out with ``NOTIFY`` and a listener
thread fires them locally. Waits always have a timeout, so polling remains
the fallback when a notification is missed.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from trellis.server.engine._capabilities import MAX_HANDLER_CHARS, Commands, required, runs

log = logging.getLogger(__name__)

CHANNEL = "trellis_events"
# (org, label key, command) of jobs that became claimable
WorkKey = tuple[str, str, str]
# how many jobs of each key became claimable
Ready = Mapping[WorkKey, int]


class Mailbox:
    """Jobs leased to a waiting claimer by another transaction, until it takes
    them. Guarded by the notifier's lock."""

    __slots__ = ("closed", "free", "items", "org", "owner", "reserved", "ttl_secs", "worker_id")

    def __init__(self, org: str, worker_id: str, ttl_secs: int, owner: str = "") -> None:
        self.org = org
        self.worker_id = worker_id
        self.ttl_secs = ttl_secs
        # The principal that leases handed to this claimer are bound to.
        self.owner = owner
        # Free slots as the claimer last counted them (0 until it says).
        self.free = 0
        # Jobs promised by transactions still under way.
        self.reserved = 0
        self.items: list[Any] = []
        self.closed = False

    def room(self) -> int:
        return self.free - self.reserved - len(self.items)


class Subscription:
    """A flag set by any fire of the subscribed topics (or by ready work)."""

    __slots__ = ("_event", "accepting", "commands", "labels", "mailbox", "work")

    def __init__(
        self,
        labels: frozenset[str] = frozenset(),
        mailbox: Mailbox | None = None,
        commands: Commands = None,
    ) -> None:
        self._event = threading.Event()
        self.labels = labels
        # The commands this claimer runs (None: any).
        self.commands = commands
        self.mailbox = mailbox
        # Ready work given to this claimer and not yet taken (guarded by the
        # notifier's lock).
        self.work: dict[WorkKey, int] = {}
        # A claimer clears this while it has no free slot, so that ready work
        # goes to another one.
        self.accepting = True

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Waits for a fire (or the timeout) and re-arms; True if fired."""
        fired = self._event.wait(timeout)
        self._event.clear()
        return fired


class Notifier:
    """Wake-ups within a process, optionally bridged to PostgreSQL."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}
        # Per org, claimers in the order they are next in line for work.
        self._claimers: dict[str, OrderedDict[Subscription, None]] = {}
        # Per org, how many of its claimers have a handler for each command.
        self._handled: dict[str, Counter[str]] = {}
        self._timers: list[tuple[float, int, WorkKey]] = []
        self._timer_seq = 0
        self._timer_cv = threading.Condition(self._lock)
        self._closed = False
        self._publish: Any = None
        self._timer_thread = threading.Thread(
            target=self._run_timers, name="trellis-timers", daemon=True
        )
        self._timer_thread.start()

    @contextmanager
    def subscribe(
        self,
        *topics: str,
        work: tuple[str, Iterable[str]] | None = None,
        mailbox: Mailbox | None = None,
        commands: Commands = None,
    ) -> Iterator[Subscription]:
        """Subscribes to ``topics`` and, with ``work=(org, labels)``, to the
        org's ready work that those labels and ``commands`` (None: any) can
        take, optionally through a ``mailbox`` (the subscriber then calls
        ``close_mailbox`` before it leaves, and hands back what it did not
        take)."""
        sub = Subscription(frozenset(work[1]) if work else frozenset(), mailbox, commands)
        with self._lock:
            for topic in topics:
                self._subs.setdefault(topic, set()).add(sub)
            if work:
                self._claimers.setdefault(work[0], OrderedDict())[sub] = None
                if commands:
                    self._handled.setdefault(work[0], Counter()).update(commands)
        try:
            yield sub
        finally:
            sub.accepting = False
            with self._lock:
                if mailbox is not None:
                    mailbox.closed = True
                for topic in topics:
                    subs = self._subs.get(topic)
                    if subs is not None:
                        subs.discard(sub)
                        if not subs:
                            del self._subs[topic]
                if work:
                    line = self._claimers.get(work[0])
                    if line is not None:
                        line.pop(sub, None)
                        if not line:
                            del self._claimers[work[0]]
                    handled = self._handled.get(work[0])
                    if handled is not None and commands:
                        handled.subtract(commands)
                        if not +handled:
                            del self._handled[work[0]]
            # Work given to a claimer that leaves goes to another one.
            self.pass_on(sub)

    def fire_local(self, topics: Iterable[str], ready: Ready | None = None) -> None:
        with self._lock:
            targets = [sub for t in topics for sub in self._subs.get(t, ())]
            for key, n in (ready or {}).items():
                targets.extend(self._next_claimers(key, n))
        for sub in targets:
            sub.set()

    def _able(
        self, key: WorkKey, n: int, mailboxes: bool = False
    ) -> tuple[list[Subscription], list[Subscription]]:
        """Accepting claimers (with ``mailboxes``: only those with room) that
        can run a job of ``key``, in line order, at most ``n`` of each kind:
        those with a handler for its command, which go first, and those that
        run any command, which can take other jobs too. The caller holds the
        lock."""
        org, label_key, command = key
        line = self._claimers.get(org)
        first: list[Subscription] = []
        then: list[Subscription] = []
        if not line or n <= 0:
            return first, then
        need = required(label_key)
        handled = self._handled.get(org)
        prefer = handled is not None and handled[command] > 0
        for sub in line:
            if not (sub.accepting and need <= sub.labels and runs(sub.commands, command)):
                continue
            if mailboxes and (sub.mailbox is None or sub.mailbox.room() <= 0):
                continue
            if prefer and sub.commands:
                first.append(sub)
                if len(first) == n:
                    break
            elif len(then) < n:
                then.append(sub)
                if not prefer and len(then) == n:
                    break
        return first, then

    def _next_claimers(self, key: WorkKey, n: int) -> list[Subscription]:
        """Up to ``n`` claimers able to take a job of ``key``, in turn (the
        caller holds the lock)."""
        first, then = self._able(key, n)
        picked = (first + then)[:n]
        if not picked:
            return []
        line = self._claimers[key[0]]
        for i, sub in enumerate(picked):
            line.move_to_end(sub)  # to the back of the line
            # Each picked claimer holds its share of the n jobs.
            share = n // len(picked) + (1 if i < n % len(picked) else 0)
            sub.work[key] = sub.work.get(key, 0) + share
        return picked

    def take_work(self, sub: Subscription) -> dict[WorkKey, int]:
        """The ready work given to ``sub`` since the last call (a claimer
        calls this before it claims)."""
        with self._lock:
            work, sub.work = sub.work, {}
        return work

    def pass_on(self, sub: Subscription, work: Ready | None = None) -> None:
        """Gives ``work`` (by default, whatever ``sub`` still holds) to other
        claimers; the caller has set ``sub.accepting`` to False, so it is not
        picked again."""
        if work is None:
            work = self.take_work(sub)
        if work:
            self.fire_local((), work)

    # ------------------------------------------------------------ mailboxes

    def reserve(self, key: WorkKey, n: int) -> list[Subscription]:
        """Promises up to ``n`` jobs of ``key`` (org, label key, command) to
        claimers that can run them with room in their mailboxes, one each in
        turn; a claimer appears once per job.

        The caller leases the jobs within its transaction, then ``deliver``s
        them (or ``unreserve``s what it could not lease).
        """
        with self._lock:
            picked: list[Subscription] = []
            for able in self._able(key, n, mailboxes=True):
                room = {sub: sub.mailbox.room() for sub in able if sub.mailbox is not None}
                while len(picked) < n and room:
                    for sub in list(room):
                        if room[sub] <= 0:
                            del room[sub]
                            continue
                        room[sub] -= 1
                        picked.append(sub)
                        if len(picked) == n:
                            break
            if not picked:
                return []
            line = self._claimers[key[0]]
            for sub in dict.fromkeys(picked):
                assert sub.mailbox is not None
                sub.mailbox.reserved += picked.count(sub)
                line.move_to_end(sub)
            return picked

    def unreserve(self, sub: Subscription, n: int = 1) -> None:
        with self._lock:
            if sub.mailbox is not None:
                sub.mailbox.reserved -= n

    def deliver(self, sub: Subscription, n: int, items: Iterable[Any]) -> list[Any]:
        """Puts ``items`` (``n`` of them were reserved) in ``sub``'s mailbox and
        wakes it; returns them instead if the claimer has left meanwhile."""
        items = list(items)
        with self._lock:
            mb = sub.mailbox
            if mb is None:
                return items
            mb.reserved -= n
            if mb.closed:
                return items
            mb.items.extend(items)
        sub.set()
        return []

    def take_delivered(self, sub: Subscription) -> list[Any]:
        """What was delivered to ``sub``'s mailbox; the slots they take are no
        longer counted as free."""
        with self._lock:
            mb = sub.mailbox
            if mb is None or not mb.items:
                return []
            items, mb.items = mb.items, []
            mb.free -= len(items)
            return items

    def claim_budget(self, sub: Subscription, free: int) -> int:
        """Records ``free`` (the claimer's own count of its free slots) and
        returns how many of them its own claim may fill now: those not
        promised to or waiting in its mailbox. Until the next ``set_free``,
        the mailbox has no room."""
        with self._lock:
            mb = sub.mailbox
            if mb is None:
                return free
            mb.free = free
            budget = max(0, mb.room())
            mb.free -= budget
            return budget

    def set_free(self, sub: Subscription, free: int) -> None:
        """The claimer's own count of its free slots (taken items included)."""
        with self._lock:
            if sub.mailbox is not None:
                sub.mailbox.free = free

    def close_mailbox(self, sub: Subscription) -> list[Any]:
        """Stops deliveries to ``sub``; returns what was delivered and not taken."""
        with self._lock:
            mb = sub.mailbox
            if mb is None:
                return []
            mb.closed = True
            mb.free = 0
            items, mb.items = mb.items, []
            return items

    def fire(self, topics: Iterable[str], ready: Ready | None = None) -> None:
        """Wakes subscribers here and, when bridged, on every other replica."""
        topics = list(dict.fromkeys(topics))
        ready = {k: n for k, n in (ready or {}).items() if n > 0}
        if not topics and not ready:
            return
        self.fire_local(topics, ready)
        publish = self._publish
        if publish is not None:
            try:
                publish(topics, ready)
            except Exception:  # the polling fallback covers a lost notification
                log.warning("could not publish wake-ups", exc_info=True)

    def fire_at(self, when: float, key: WorkKey) -> None:
        """Announces one job of ``key`` as ready at monotonic time ``when`` (a
        retry's backoff), on this replica only: claimers on other replicas
        find it when they next poll."""
        with self._timer_cv:
            self._timer_seq += 1
            heapq.heappush(self._timers, (when, self._timer_seq, key))
            self._timer_cv.notify()

    def wake_all(self) -> None:
        """Wakes every waiter (shutdown, or a notification too large to send)."""
        with self._lock:
            targets = {sub for subs in self._subs.values() for sub in subs}
            targets.update(sub for line in self._claimers.values() for sub in line)
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
                _, _, key = heapq.heappop(self._timers)
            self.fire_local((), {key: 1})


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
