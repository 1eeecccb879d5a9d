"""Hand-offs: jobs that a transaction makes ready, leased within that same
transaction to claimers waiting on this replica, and delivered to them once it
has committed.

This is what keeps enqueue-to-start latency low with idle workers: a waiting
assignment stream starts the jobs without a claim transaction of its own.
The same goes for a busy one: the transaction that ends some of its leases (a
report) claims jobs for the slots they free, so that a worker draining a queue
gets its next batch as its report commits.
Everything about which stream holds which job lives here: a stream's slots,
the jobs promised to it by transactions under way (``offer``), those
delivered and not yet taken (``Handoff.deliver``), the slots its own claims
may fill (``Stream.fill``), and the hand-back of jobs leased to a stream that
left before it took them (``release``).

The one invariant, kept by ``Stream._check`` after every change made under
the dispatcher's lock::

    len(held) + claiming + reserved + len(items) <= slots

``held`` are the leases its worker runs, ``claiming`` the slots its own claim
is filling, ``reserved`` the jobs promised to it by transactions under way,
``items`` those delivered and not yet taken. A stream therefore never holds
more jobs than it has slots, however hand-offs and its own claims interleave.
A transaction that ends held leases takes them out of ``held`` when it
reserves their slots (and puts them back if it rolls back).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from trellis.server.core import _sql
from trellis.server.core._sql import Sql
from trellis.server.engine._capabilities import Capabilities, Commands, commands_of
from trellis.server.engine._machine.claims import CLAIM_TEMPLATE, ClaimAsk, Claimed, claim, grant
from trellis.server.engine._machine.common import (
    Effects,
    Events,
    lock_runs_of_leases,
    topic_worker,
)
from trellis.server.engine._machine.limits import within_limits
from trellis.server.engine._notify import Notifier, Ready, Subscription, WorkKey
from trellis.server.engine._states import JobState, LeaseState, RunEventType

log = logging.getLogger(__name__)

# A write transaction of the service: ``fn(conn, now)`` returns its result and
# the wake-ups to fire after it commits.
Write = Callable[[Callable[[Connection, int], tuple[None, Effects]]], None]

# A claim among the jobs of some runs (those a transaction just made ready).
# PostgreSQL's "lock not available", the answer to FOR UPDATE NOWAIT.
_LOCK_NOT_AVAILABLE = "55P03"
_LEASE_READY = Sql(
    CLAIM_TEMPLATE.format(keys="= :key AND command = :command AND run_id IN_LIST(:runs)")
)
_RELEASE_LEASES = Sql(
    f"""UPDATE leases SET state = '{LeaseState.RELEASED}', finished_at_ms = :now
    WHERE id IN_LIST(:ids) AND org_id = :org AND state = '{LeaseState.ACTIVE}'
    RETURNING job_id"""
)
_REQUEUE_JOBS = Sql(
    f"""UPDATE jobs SET state = '{JobState.QUEUED}', started_at_ms = 0
    WHERE id IN_LIST(:ids) AND state = '{JobState.RUNNING}'
    RETURNING run_id, "key", label_key, command"""
)


class Stream:
    """One waiting claimer with ``slots``: what it holds, and what is on the
    way to it. Its counts change only under the dispatcher's lock."""

    __slots__ = (
        "_claiming",
        "_closed",
        "_held",
        "_items",
        "_lock",
        "_notifier",
        "_reserved",
        "capabilities",
        "labels",
        "org",
        "owner",
        "refills",
        "slots",
        "sub",
        "ttl_secs",
        "worker_id",
    )

    def __init__(
        self,
        lock: threading.Lock,
        notifier: Notifier,
        sub: Subscription,
        *,
        org: str,
        worker_id: str,
        ttl_secs: int,
        owner: str,
        slots: int,
        labels: tuple[str, ...] = (),
        capabilities: Capabilities | None = None,
        refills: bool = False,
    ) -> None:
        self._lock = lock
        self._notifier = notifier
        self.sub = sub
        self.org = org
        self.worker_id = worker_id
        self.ttl_secs = ttl_secs
        # The principal that leases handed to this claimer are bound to.
        self.owner = owner
        self.slots = slots
        self.labels = labels
        self.capabilities = capabilities
        # Whether the slots that its leases free are filled by the
        # transaction that ends them (see ``Dispatcher.offer``).
        self.refills = refills
        self._held: set[str] = set()
        self._claiming = 0
        self._reserved = 0
        self._items: list[Claimed] = []
        self._closed = False

    # The callers of these two hold the lock.

    def _room(self) -> int:
        if self._closed:
            return 0
        return self.slots - len(self._held) - self._claiming - self._reserved - len(self._items)

    def _check(self) -> None:
        if self._room() < 0:
            raise AssertionError(
                f"stream of {self.worker_id!r} over its {self.slots} slots: "
                f"{len(self._held)} held, {self._claiming} claiming, {self._reserved} promised, "
                f"{len(self._items)} delivered"
            )

    # ------------------------------------------------------------ the claimer's side

    def take(self) -> list[Claimed]:
        """The jobs delivered to this stream since the last call; its worker
        now holds them."""
        with self._lock:
            items, self._items = self._items, []
            self._held.update(c.lease_id for c in items)
            self._check()
        return items

    def fill(self, claim: Callable[[int], list[Claimed]], work: Ready) -> list[Claimed]:
        """Claims for the free slots that no hand-off has promised, with
        ``claim(n)``; the slots are set aside first, so that a hand-off cannot
        fill them at the same time. ``work`` is the ready work given to this
        stream before the claim: passed on to other claimers if it is full."""
        with self._lock:
            budget = max(0, self._room())
            self._claiming = budget
        got: list[Claimed] = []
        try:
            got = claim(budget) if budget > 0 else []
        finally:
            with self._lock:
                if len(got) > budget:
                    raise AssertionError(f"a claim for {budget} slot(s) leased {len(got)} jobs")
                self._claiming = 0
                self._held.update(c.lease_id for c in got)
                self._check()
                accepting = len(self._held) < self.slots
            self._notifier.set_accepting(self.sub, accepting)
            if work and not accepting:
                # Full: ready work given to this stream may be left over.
                self._notifier.pass_on(self.sub, work)
        return got

    def held_leases(self) -> list[str]:
        with self._lock:
            return sorted(self._held)

    def settle(self, states: Mapping[str, str]) -> list[str]:
        """Drops the held leases that are no longer active (``states`` as
        read from the database); returns those cancelled."""
        with self._lock:
            cancelled = [lid for lid in self._held if states.get(lid) == LeaseState.CANCELLED]
            self._held = {lid for lid in self._held if states.get(lid) == LeaseState.ACTIVE}
        return cancelled

    def take_work(self) -> dict[WorkKey, int]:
        return self._notifier.take_work(self.sub)

    def wait(self, timeout: float) -> bool:
        return self.sub.wait(timeout)

    def leases_changed(self) -> bool:
        """Whether a lease of this stream's worker may have changed since the
        last call: its topic fired (each change fires it once committed),
        unless the change was a report whose transaction refilled the
        stream, which keeps ``held`` itself."""
        return self.sub.topic_fired()


class Handoff:
    """The jobs one transaction promised (``promised``, a stream once per job)
    and leased (``handed``) to waiting streams."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        self.promised: list[Stream] = []
        self.handed: list[tuple[Stream, Claimed]] = []
        # Held leases that the transaction ends, taken out of their streams.
        self.ending: list[tuple[Stream, set[str]]] = []

    def abandon(self) -> None:
        """The transaction rolled back: its promises are void, and the leases
        it was ending are held again."""
        self._dispatcher._restore(self.ending)
        self._dispatcher._settle(self.promised, [])
        self.promised, self.handed, self.ending = [], [], []

    def deliver(self) -> None:
        """The transaction committed: its leases go to their streams (what a
        stream that left meanwhile can no longer take is handed back)."""
        if self.promised or self.ending:
            self._dispatcher._settle(self.promised, self.handed, [s for s, _ in self.ending])
        self.promised, self.handed, self.ending = [], [], []


class Dispatcher:
    """The hand-offs of one service to its waiting streams."""

    def __init__(self, notifier: Notifier, *, is_pg: bool, write: Write) -> None:
        self._notifier = notifier
        self._is_pg = is_pg
        self._write = write
        self._lock = threading.Lock()
        self._streams: dict[Subscription, Stream] = {}

    @contextmanager
    def open(
        self,
        org: str,
        worker_id: str,
        labels: Iterable[str],
        *,
        slots: int,
        ttl_secs: int,
        owner: str,
        commands: Commands = None,
        capabilities: Capabilities | None = None,
        refills: bool = False,
        topics: Sequence[str] = (),
    ) -> Iterator[Stream]:
        """A stream that ready jobs of ``org`` matching ``labels`` and
        ``commands`` (None: any; given ``capabilities``, those they name)
        are handed to, at most ``slots`` unfinished at once; also woken by
        ``topics``. Jobs delivered and not taken when it closes are handed
        back.

        With ``refills``, the stream also gets jobs from the transactions
        that end its leases: the slots they free are filled there, before
        its worker asks (a claim with the worker's ``labels`` and
        ``capabilities``)."""
        if capabilities is not None:
            commands = commands_of(capabilities)
        with self._notifier.subscribe(*topics, work=(org, labels), commands=commands) as sub:
            stream = Stream(
                self._lock,
                self._notifier,
                sub,
                org=org,
                worker_id=worker_id,
                ttl_secs=ttl_secs,
                owner=owner,
                slots=slots,
                labels=tuple(labels),
                capabilities=capabilities,
                refills=refills,
            )
            with self._lock:
                self._streams[sub] = stream
            try:
                yield stream
            finally:
                with self._lock:
                    del self._streams[sub]
                    stream._closed = True
                    left, stream._items = stream._items, []
                self.hand_back(org, left)

    # ------------------------------------------------------------ the writer's side

    def offer(self, conn: Connection, now: int, effects: Effects) -> Handoff:
        """Leases the ready jobs of ``effects`` to streams waiting here with
        room, inside the transaction that made them ready, and fills the
        slots of streams here whose leases it ended (its caller then
        ``deliver``s or ``abandon``s the hand-off)."""
        handoff = Handoff(self)
        if not effects.ready_runs and not effects.ended:
            return handoff
        try:
            # Only jobs of ``ready_runs`` are looked for: without them, there
            # is nothing to hand off.
            ready = list(effects.ready.items()) if effects.ready_runs else []
            for (org, key, command), n in ready:
                streams = self._reserve((org, key, command), n)
                if not streams:
                    continue
                handoff.promised.extend(streams)
                claimed = _lease_ready(
                    conn,
                    is_pg=self._is_pg,
                    org=org,
                    key=key,
                    command=command,
                    runs=effects.ready_runs,
                    to=streams,
                    now=now,
                    effects=effects,
                )
                handoff.handed.extend(zip(streams, claimed, strict=False))
            # After the hand-off of the ready jobs, which picks the claimers
            # that suit them best (a handler before a shell).
            self._refill(conn, now, effects, handoff)
        except BaseException:
            handoff.abandon()
            raise
        return handoff

    def _refill(self, conn: Connection, now: int, effects: Effects, handoff: Handoff) -> None:
        """Claims, for each stream here whose leases the transaction ends,
        jobs for its free slots (those leases' among them).

        The worker that reported is then sent its next jobs once the report
        has committed, without a claim transaction of its own.
        """
        if not effects.ended:
            return
        asks: list[ClaimAsk] = []
        takers: list[Stream] = []
        kept: dict[tuple[str, str], set[str]] = {}
        with self._lock:
            for stream in self._streams.values():
                worker = (stream.org, stream.worker_id)
                ended = effects.ended.get(worker)
                if not ended or not stream.refills or stream._closed:
                    continue
                mine = stream._held & ended
                if not mine:
                    continue
                stream._held -= mine
                kept.setdefault(worker, set()).update(mine)
                handoff.ending.append((stream, mine))
                n = stream._room()
                if n > 0:
                    stream._reserved += n
                    handoff.promised.extend([stream] * n)
                    takers.append(stream)
                    asks.append(
                        ClaimAsk(
                            stream.org,
                            stream.worker_id,
                            stream.labels,
                            stream.ttl_secs,
                            n,
                            stream.owner,
                            stream.capabilities,
                        )
                    )
                stream._check()
        # A worker whose ended leases these streams all held needs no wake-up
        # by its topic: the hand-off wakes its streams.
        for worker, lease_ids in kept.items():
            if lease_ids == effects.ended[worker]:
                effects.topics.discard(topic_worker(*worker))
        if not asks:
            return
        try:
            # This transaction holds the runs of the leases it ends already:
            # a run of the jobs claimed here that another transaction holds
            # is not waited for, since that one may wait for ours. The
            # claim is undone instead and the workers claim for themselves.
            # (SQLite has one writer: nothing to wait for, no savepoint needed.)
            with conn.begin_nested() if self._is_pg else nullcontext():
                granted, more = claim(conn, is_pg=self._is_pg, asks=asks, now=now, nowait=True)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            effects.topics.update(topic_worker(s.org, s.worker_id) for s in takers)
            return
        effects.merge(more)
        for stream, got in zip(takers, granted, strict=True):
            handoff.handed.extend((stream, c) for c in got)

    def _restore(self, ending: Sequence[tuple[Stream, set[str]]]) -> None:
        """Puts back the leases a rolled-back transaction was ending."""
        with self._lock:
            for stream, lease_ids in ending:
                if not stream._closed:
                    stream._held |= lease_ids

    def _reserve(self, key: WorkKey, n: int) -> list[Stream]:
        """Promises up to ``n`` jobs of ``key`` to streams that can run them
        and have room, one each in turn; a stream appears once per job."""
        with self._lock:

            def has_room(sub: Subscription) -> bool:
                stream = self._streams.get(sub)
                return stream is not None and stream._room() > 0

            picked: list[Stream] = []
            for able in self._notifier.able(key, n, has_room):
                room = {self._streams[sub]: self._streams[sub]._room() for sub in able}
                while len(picked) < n and room:
                    for stream in list(room):
                        if room[stream] <= 0:
                            del room[stream]
                            continue
                        room[stream] -= 1
                        picked.append(stream)
                        if len(picked) == n:
                            break
            for stream in picked:
                stream._reserved += 1
                stream._check()
        if picked:
            self._notifier.to_back(key[0], (s.sub for s in dict.fromkeys(picked)))
        return picked

    def _settle(
        self,
        promised: list[Stream],
        handed: list[tuple[Stream, Claimed]],
        freed: Sequence[Stream] = (),
    ) -> None:
        """Ends the promises of one transaction: what it leased goes into the
        streams, unless a stream has closed meanwhile. A stream it ``freed``
        slots of and had too few jobs for accepts ready work again: its own
        claim would find none that this transaction did not see."""
        per_stream: dict[Stream, list[Claimed]] = {s: [] for s in promised}
        for stream, claimed in handed:
            per_stream[stream].append(claimed)
        woken: list[Stream] = []
        undelivered: dict[str, list[Claimed]] = {}
        with self._lock:
            for stream, items in per_stream.items():
                stream._reserved -= promised.count(stream)
                if stream._closed:
                    undelivered.setdefault(stream.org, []).extend(items)
                elif items:
                    stream._items.extend(items)
                    woken.append(stream)
                stream._check()
            accepting = [(s, s._room() > 0) for s in freed if not s._closed]
        for stream, room in accepting:
            self._notifier.set_accepting(stream.sub, room)
        for stream in woken:
            stream.sub.set()
        for org, items in undelivered.items():
            self.hand_back(org, items)

    def hand_back(self, org: str, undelivered: Sequence[Claimed]) -> None:
        """Queues again jobs leased to a stream that left before taking them."""
        if not undelivered:
            return
        ids = [c.lease_id for c in undelivered]
        try:
            self._write(
                lambda conn, now: (None, self.release(conn, org=org, lease_ids=ids, now=now))
            )
        except Exception:  # the leases then expire and the reaper retries them
            log.warning("could not hand back %d undelivered job(s)", len(ids), exc_info=True)

    def release(self, conn: Connection, *, org: str, lease_ids: Sequence[str], now: int) -> Effects:
        """Hands back leases that never reached their worker: each job is
        queued again as it was, without spending an attempt."""
        effects = Effects()
        ids = sorted(lease_ids)
        with _sql.pipelined(conn) as batch:
            lock_runs_of_leases(batch, self._is_pg, ids)
            released = batch.query(_RELEASE_LEASES, ids=ids, org=org, now=now)
        job_ids = sorted(job_id for (job_id,) in released.rows)
        if not job_ids:
            return effects
        ev = Events(org, now)
        for run_id, key, lk, command in _sql.query(conn, _REQUEUE_JOBS, ids=job_ids):
            ev.add(run_id, RunEventType.JOB_QUEUED, key, msg="handed back undelivered")
            effects.ready[(org, lk, command)] += 1
        with _sql.pipelined(conn) as batch:
            ev.flush(batch, effects)
        return effects


def _lease_ready(
    conn: Connection,
    *,
    is_pg: bool,
    org: str,
    key: str,
    command: str,
    runs: Iterable[str],
    to: Sequence[Stream],
    now: int,
    effects: Effects,
) -> list[Claimed]:
    """Leases ready jobs of label set ``key`` running ``command`` in ``runs``,
    one to each of ``to`` as far as there are jobs; returns them in that order.

    The caller holds the locks of ``runs`` (or created them), so no run lock
    is taken here, and jobs other claimers hold are skipped, never waited on.
    """
    rows = _sql.query(
        conn,
        _LEASE_READY,
        org=org,
        key=key,
        command=command,
        runs=sorted(runs),
        now=now,
        n=len(to),
    )
    if not rows:
        return []
    effects.ready[(org, key, command)] -= len(rows)
    rows = sorted(within_limits(conn, is_pg=is_pg, rows=rows, now=now), key=lambda r: r.id)
    if not rows:
        return []
    return grant(
        conn,
        is_pg=is_pg,
        org=org,
        rows=rows,
        to=[(s.worker_id, s.ttl_secs, s.owner) for s in to[: len(rows)]],
        now=now,
        effects=effects,
        lock_runs=False,
    )


__all__ = ["Dispatcher", "Handoff", "Stream"]
