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

A claimer that waits with free slots may also take jobs straight from the
transaction that made them ready: that hand-off is ``_dispatch``'s, which
picks its claimers from the line kept here (``able``, ``to_back``).

Across replicas on PostgreSQL, both also go out with ``NOTIFY`` and a listener
thread fires them locally (``_pgbridge``). Waits always have a timeout, so polling remains
the fallback when a notification is missed.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from trellis.server.engine._capabilities import Commands, required, runs

log = logging.getLogger(__name__)

# (org, label key, command) of jobs that became claimable
WorkKey = tuple[str, str, str]
# how many jobs of each key became claimable
Ready = Mapping[WorkKey, int]


class Subscription:
    """A flag set by any fire of the subscribed topics (or by ready work)."""

    __slots__ = ("_event", "_seen", "accepting", "commands", "fires", "labels", "work")

    def __init__(self, labels: frozenset[str] = frozenset(), commands: Commands = None) -> None:
        self._event = threading.Event()
        self.labels = labels
        # The commands this claimer runs (None: any).
        self.commands = commands
        # Ready work given to this claimer and not yet taken (guarded by the
        # notifier's lock).
        self.work: dict[WorkKey, int] = {}
        # Cleared (through ``set_accepting`` or ``decline``) while the claimer
        # has no free slot, so that ready work goes to another one.
        self.accepting = True
        # Counts the fires of subscribed topics (not ready work, nor a direct
        # ``set``). Writers only increment it and the reader keeps what it
        # saw apart, so no lock is needed: two increments that race still
        # change it.
        self.fires = 0
        self._seen = 0

    def set(self) -> None:
        self._event.set()

    def topic_fired(self) -> bool:
        """Whether a topic fired since the last call (one reader only)."""
        fires = self.fires
        fired, self._seen = fires != self._seen, fires
        return fired

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
        commands: Commands = None,
    ) -> Iterator[Subscription]:
        """Subscribes to ``topics`` and, with ``work=(org, labels)``, to the
        org's ready work that those labels and ``commands`` (None: any) can
        take."""
        sub = Subscription(frozenset(work[1]) if work else frozenset(), commands)
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
            topical = [sub for t in topics for sub in self._subs.get(t, ())]
            targets: list[Subscription] = []
            for key, n in (ready or {}).items():
                targets.extend(self._next_claimers(key, n))
        for sub in topical:
            sub.fires += 1
            sub.set()
        for sub in targets:
            sub.set()

    def able(
        self, key: WorkKey, n: int, keep: Callable[[Subscription], bool] | None = None
    ) -> tuple[list[Subscription], list[Subscription]]:
        """Accepting claimers (only those ``keep`` keeps) that can run a job of
        ``key``, in line order, at most ``n`` of each kind: those with a
        handler for its command, which go first, and those that run any
        command, which can take other jobs too."""
        with self._lock:
            return self._able(key, n, keep)

    def _able(
        self, key: WorkKey, n: int, keep: Callable[[Subscription], bool] | None = None
    ) -> tuple[list[Subscription], list[Subscription]]:
        """``able``, for a caller that holds the lock."""
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
            if keep is not None and not keep(sub):
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
        claimers; ``sub`` no longer accepts work, so it is not picked again."""
        if work is None:
            work = self.take_work(sub)
        if work:
            self.fire_local((), work)

    def set_accepting(self, sub: Subscription, accepting: bool) -> None:
        """Whether ``sub`` has a free slot for ready work."""
        sub.accepting = accepting

    def decline(self, sub: Subscription, work: Ready) -> None:
        """``sub`` is full: it takes no more ready work, and ``work`` given to
        it goes to other claimers."""
        sub.accepting = False
        self.pass_on(sub, work)

    def to_back(self, org: str, subs: Iterable[Subscription]) -> None:
        """Puts ``subs`` at the back of the org's line (they were just served)."""
        with self._lock:
            line = self._claimers.get(org)
            if line is None:
                return
            for sub in subs:
                if sub in line:
                    line.move_to_end(sub)

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
            sub.fires += 1
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


__all__ = ["Notifier", "Ready", "Subscription", "WorkKey"]
