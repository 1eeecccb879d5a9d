"""Webhook subscriptions and their delivery from the event log.

The event log is the outbox. A subscription's ``cursor`` is its position in
the log; the deliverer reads the matching events after it and sends them one
at a time, in cursor order (head of line: event k+1 waits until k is
delivered or finally failed). Attempts are recorded in
``webhook_deliveries`` a group at a time (``_RECORD_GROUP``, ``_RECORD_SECS``,
and at every failure), and the cursor moves in the same transaction, so a
crash between the receivers' answers and that commit sends the group's events
again with the same ``webhook-id`` (derived from subscription and event):
delivery is at least once, and nothing is written on the job path.

Across replicas one deliverer at a time holds a subscription, by a lease on
its row (``UPDATE ... SET owner = me WHERE owner IS NULL OR owner_until_ms <
now``), renewed by every record it writes and kept while it delivers (a
clean stop hands it back); a record that finds the lease gone is rolled back.

A failed attempt (no 2xx, no answer, a refused address) is retried after a
delay drawn uniformly from ``[0, min(cap, base * 2**n))`` (exponential
backoff, full jitter) until the event's first attempt is ``max_age`` old; then
the attempt is recorded as failed and the subscription moves on.

Backends registered by machine users are subscriptions too (``source``
"backend"), made and kept in step with ``machine_backends`` by the deliverer:
they receive RUN_CREATED of runs started by a trigger (``data.trigger`` other
than "call") in their organization and RUN_FINISHED of runs their machine
user started (``data.created_by``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import logging
import random
import secrets
import threading
import time
import tomllib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeVar

import httpx
from sqlalchemy import Connection, and_, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError

from trellis.server.core.audit import append_audit
from trellis.server.core.callback_urls import check_callback_url
from trellis.server.core.db import Database
from trellis.server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from trellis.server.core.models import (
    MachineBackendRow,
    WebhookDeliveryRow,
    WebhookSubscriptionRow,
    table,
)
from trellis.server.core.pagination import PageTokens, after_key, page_size, page_token_key
from trellis.server.core.principal import Principal
from trellis.server.events._egress import EgressRefused, GuardedClient
from trellis.server.events._signing import (
    backend_secret,
    create_keys,
    new_secret,
    seal,
    seal_key,
    secret_hint,
    signed_request,
    unseal,
)
from trellis.v1 import events_pb2

__all__ = [
    "Deliverer",
    "DeliveryRecord",
    "DeliverySettings",
    "EventReader",
    "LoggedEvent",
    "WebhookRecord",
    "Webhooks",
    "event_name",
    "event_names",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

subs = table(WebhookSubscriptionRow)
deliveries = table(WebhookDeliveryRow)
backends = table(MachineBackendRow)

_PREFIX: Final = "EVENT_TYPE_"
# Seed 002's names for the events of its tasks and batches.
_ALIASES: Final = {
    "task.completed": "job.succeeded",
    "task.failed": "job.failed",
    "batch.completed": "run.finished",
}
_RETRYABLE_PG_CODES: Final = frozenset({"40001", "40P01"})
_ANSWER_CHARS: Final = 2000
_ERROR_CHARS: Final = 500


def event_name(type_value: int) -> str:
    """``EVENT_TYPE_JOB_SUCCEEDED`` → ``job.succeeded``: the name webhooks use."""
    name = events_pb2.EventType.Name(type_value)
    head, _, rest = name.removeprefix(_PREFIX).lower().partition("_")
    return f"{head}.{rest}"


_BY_NAME: Final = {
    event_name(v): v
    for v in events_pb2.EventType.values()
    if v != events_pb2.EVENT_TYPE_UNSPECIFIED
}


def event_names(given: Iterable[str], field: str = "event_types") -> list[str]:
    """Canonical names of ``given`` (dotted, enum or seed names; "*" or
    nothing: every event, an empty list); InvalidArgument names an unknown one."""
    names: dict[str, None] = {}
    for raw in given:
        text = raw.strip()
        if text == "*":
            return []
        key = text.lower()
        if key.upper().startswith(_PREFIX) or "." not in key:
            key = key.upper().removeprefix(_PREFIX)
            head, _, rest = key.lower().partition("_")
            key = f"{head}.{rest}"
        key = _ALIASES.get(key, key)
        if key not in _BY_NAME:
            known = ", ".join(sorted(_BY_NAME))
            raise InvalidArgument(f"{field}: unknown event type {text[:64]!r} (known: {known})")
        names[key] = None
    return list(names)


# ------------------------------------------------------------------ the reader


class LoggedEvent(Protocol):
    """What the deliverer reads of an event of the log."""

    @property
    def cursor(self) -> str: ...
    @property
    def type(self) -> int: ...
    @property
    def time_ms(self) -> int: ...
    @property
    def workflow_id(self) -> str: ...
    @property
    def workflow_version(self) -> int: ...
    @property
    def run_id(self) -> str: ...
    @property
    def job_id(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def message(self) -> str: ...
    @property
    def data(self) -> Mapping[str, Any]: ...


class EventReader(Protocol):
    """The event log as the deliverer reads it."""

    def read_after(
        self, org_id: str, after_cursor: str, types: Collection[int], limit: int
    ) -> tuple[Sequence[LoggedEvent], str]:
        """At most ``limit`` events of ``org_id`` after ``after_cursor`` of
        ``types`` (empty: all), oldest first, and the cursor to continue from
        (that of the last event examined; ``after_cursor`` when none)."""
        ...

    def head_cursor(self, org_id: str) -> str:
        """The cursor of the newest event a reader can see now ("" when none)."""
        ...


# ------------------------------------------------------------------ records


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    id: str
    org_id: str
    source: str
    backend_id: str
    url: str
    description: str
    event_types: tuple[str, ...]
    enabled: bool
    secret_hint: str
    cursor: str
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class CreatedWebhook:
    webhook: WebhookRecord
    # Shown once, never stored in the clear.
    secret: str


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    delivery_id: str
    webhook_id: str
    event_cursor: str
    event_type: str
    attempt: int
    status: str
    status_code: int
    answer: str
    error: str
    attempted_at_ms: int
    next_attempt_ms: int | None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def _record(row: Any) -> WebhookRecord:
    return WebhookRecord(
        id=row.id,
        org_id=row.org_id,
        source=row.source,
        backend_id=row.backend_id or "",
        url=row.url,
        description=row.description,
        event_types=tuple(row.event_types or ()),
        enabled=bool(row.enabled),
        secret_hint=row.secret_hint,
        cursor=row.cursor,
        created_at_ms=row.created_at_ms,
        updated_at_ms=row.updated_at_ms,
    )


def _delivery(row: Any) -> DeliveryRecord:
    return DeliveryRecord(
        delivery_id=row.delivery_id,
        webhook_id=row.subscription_id,
        event_cursor=row.event_cursor,
        event_type=row.event_type,
        attempt=row.attempt,
        status=row.status,
        status_code=row.status_code,
        answer=row.answer,
        error=row.error,
        attempted_at_ms=row.attempted_at_ms,
        next_attempt_ms=row.next_attempt_ms,
    )


def _new_id() -> str:
    return "wh_" + secrets.token_hex(12)


def _audit(
    conn: Connection, actor: Principal, now: int, action: str, webhook_id: str, **detail: Any
) -> None:
    append_audit(
        conn,
        actor.org_id,
        at_ms=now,
        action=action,
        result="success",
        actor=actor.subject,
        actor_kind=actor.kind.value,
        resource=f"webhook:{webhook_id}",
        detail={"name": actor.name, **detail},
    )


def _write(db: Database, fn: Callable[[Connection, int], T]) -> T:
    """``fn`` in one write transaction, run again after a serialization failure."""
    for attempt in range(5):
        try:
            with db.write() as conn:
                return fn(conn, db.now_ms(conn))
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) in _RETRYABLE_PG_CODES and attempt < 4:
                continue
            raise
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ the service

DELIVERY_STATUSES: Final = ("delivered", "retrying", "failed")
_LIST_MAX: Final = 1000


class Webhooks:
    """Subscriptions: create, list, change, delete, and their delivery record."""

    def __init__(self, db: Database, reader: EventReader) -> None:
        self.db = db
        self.reader = reader

    def create(
        self,
        actor: Principal,
        url: str,
        *,
        event_types: Iterable[str] = (),
        description: str = "",
        enabled: bool = True,
    ) -> CreatedWebhook:
        check_callback_url(url, "url")
        names = event_names(event_types)
        if len(description) > 2000:
            raise InvalidArgument("description: at most 2000 characters")
        secret = new_secret()
        # Events committed from now on: the head before the row exists.
        head = self.reader.head_cursor(actor.org_id)

        webhook_id = _new_id()

        def op(conn: Connection, now: int) -> WebhookRecord:
            row: dict[str, Any] = {
                "id": webhook_id,
                "org_id": actor.org_id,
                "source": "api",
                "backend_id": None,
                "url": url,
                "description": description,
                "event_types": names,
                "enabled": enabled,
                "secret_sealed": seal(conn, now, secret),
                "secret_hint": secret_hint(secret),
                "cursor": head,
                "attempts": 0,
                "first_attempt_ms": None,
                "next_attempt_ms": None,
                "owner": None,
                "owner_until_ms": None,
                "created_at_ms": now,
                "updated_at_ms": now,
            }
            conn.execute(insert(subs).values(row))
            _audit(conn, actor, now, "webhook.create", webhook_id, url=url, event_types=names)
            return _record(conn.execute(select(subs).where(subs.c.id == webhook_id)).one())

        return CreatedWebhook(_write(self.db, op), secret)

    def list(self, actor: Principal, *, size: int = 0, token: str = "") -> Page[WebhookRecord]:
        limit = page_size(size, default=_LIST_MAX, maximum=_LIST_MAX)
        scope = f"webhooks:{actor.org_id}"
        with self.db.read() as conn:
            tokens = PageTokens(page_token_key(conn, self.db.now_ms(conn)))
            query = select(subs).where(subs.c.org_id == actor.org_id)
            if token:
                key = tokens.decode(scope, token)
                cols = [subs.c.created_at_ms, subs.c.id]
                query = query.where(after_key(cols, key, descending=[False, False]))
            rows = conn.execute(
                query.order_by(subs.c.created_at_ms, subs.c.id).limit(limit + 1)
            ).all()
        items = [_record(r) for r in rows[:limit]]
        more = len(rows) > limit
        last = items[-1] if items else None
        next_token = tokens.encode(scope, [last.created_at_ms, last.id]) if more and last else ""
        return Page(items, next_token)

    def get(self, actor: Principal, webhook_id: str) -> WebhookRecord:
        with self.db.read() as conn:
            return _record(self._row(conn, actor, webhook_id))

    def update(
        self,
        actor: Principal,
        webhook_id: str,
        *,
        enabled: bool | None = None,
        event_types: Sequence[str] = (),
    ) -> WebhookRecord:
        names = event_names(event_types) if event_types else None

        def op(conn: Connection, now: int) -> WebhookRecord:
            row = self._row(conn, actor, webhook_id)
            if row.source == "backend" and names is not None:
                raise FailedPrecondition(
                    "event_types: a backend's callbacks are fixed (triggered runs, its runs)"
                )
            changes: dict[str, Any] = {"updated_at_ms": now}
            if enabled is not None:
                changes["enabled"] = enabled
            if names is not None:
                changes["event_types"] = names
            conn.execute(update(subs).where(subs.c.id == row.id).values(changes))
            shown = {k: v for k, v in changes.items() if k != "updated_at_ms"}
            _audit(conn, actor, now, "webhook.update", row.id, **shown)
            return _record(conn.execute(select(subs).where(subs.c.id == row.id)).one())

        return _write(self.db, op)

    def delete(self, actor: Principal, webhook_id: str) -> None:
        def op(conn: Connection, now: int) -> None:
            row = self._row(conn, actor, webhook_id)
            if row.source == "backend":
                raise FailedPrecondition(
                    "a backend's callbacks end with the backend; disable them instead"
                )
            conn.execute(delete(deliveries).where(deliveries.c.subscription_id == row.id))
            conn.execute(delete(subs).where(subs.c.id == row.id))
            _audit(conn, actor, now, "webhook.delete", row.id, url=row.url)

        _write(self.db, op)

    def deliveries(
        self,
        actor: Principal,
        webhook_id: str,
        *,
        status: str = "",
        size: int = 0,
        token: str = "",
    ) -> Page[DeliveryRecord]:
        if status and status not in DELIVERY_STATUSES:
            raise InvalidArgument(f"status: one of {', '.join(DELIVERY_STATUSES)}")
        limit = page_size(size, default=100, maximum=_LIST_MAX)
        scope = f"webhook-deliveries:{actor.org_id}:{webhook_id}:{status}"
        with self.db.read() as conn:
            self._row(conn, actor, webhook_id)
            tokens = PageTokens(page_token_key(conn, self.db.now_ms(conn)))
            query = select(deliveries).where(deliveries.c.subscription_id == webhook_id)
            if status:
                query = query.where(deliveries.c.status == status)
            if token:
                (after,) = tokens.decode(scope, token)
                query = query.where(deliveries.c.id < after)
            rows = conn.execute(query.order_by(deliveries.c.id.desc()).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        next_token = tokens.encode(scope, [int(rows[-1].id)]) if more and rows else ""
        return Page([_delivery(r) for r in rows], next_token)

    def backend_secret(self, actor: Principal, backend_id: str) -> str:
        """The secret of a backend, for the machine user that registered it."""
        # A write: the first use creates the installation key.
        with self.db.write() as conn:
            row = conn.execute(
                select(backends).where(
                    backends.c.id == backend_id, backends.c.org_id == actor.org_id
                )
            ).first()
            own = row is not None and actor.subject == f"machine:{row.machine_user_id}"
            if row is None or not (own or actor.allows("webhooks:write")):
                raise NotFound(f"backend {backend_id[:64]!r} not found")
            return backend_secret(conn, self.db.now_ms(conn), backend_id)

    def load_config(self, org_id: str, path: Path) -> int:
        """Makes the configuration file's ``[webhooks]`` endpoints the org's
        "config" subscriptions: added, changed, or removed to match, in one
        transaction. Loading the same file again changes nothing. Returns how
        many endpoints it names. ValueError names what is wrong."""
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"WEBHOOKS_CONFIG={path}: {exc}") from None
        section = doc.get("webhooks", {})
        if not isinstance(section, dict):
            raise ValueError(f"WEBHOOKS_CONFIG={path}: [webhooks] must be a table")
        enabled = section.get("enabled", True)
        endpoints = section.get("endpoints", [])
        if not isinstance(enabled, bool) or not isinstance(endpoints, list):
            raise ValueError(f"WEBHOOKS_CONFIG={path}: enabled is a boolean, endpoints a list")
        wanted: dict[str, dict[str, Any]] = {}
        for i, entry in enumerate(endpoints):
            where = f"WEBHOOKS_CONFIG={path}: endpoints[{i}]"
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: must be a table {{url, events, secret}}")
            url, secret, events = entry.get("url"), entry.get("secret"), entry.get("events", [])
            if not isinstance(url, str) or not isinstance(secret, str) or not secret:
                raise ValueError(f"{where}: url and secret are required strings")
            if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
                raise ValueError(f"{where}: events is a list of event names")
            try:
                check_callback_url(url, "url")
                names = event_names(events, "events")
            except InvalidArgument as exc:
                raise ValueError(f"{where}: {exc}") from None
            ident = "whc_" + hashlib.sha256(f"{org_id}\0{url}".encode()).hexdigest()[:24]
            wanted[ident] = {"url": url, "secret": secret, "events": names}
        head = self.reader.head_cursor(org_id)

        def op(conn: Connection, now: int) -> None:
            key = seal_key(conn, now)
            present = {
                r.id: r
                for r in conn.execute(
                    select(subs).where(subs.c.org_id == org_id, subs.c.source == "config")
                ).all()
            }
            for gone in set(present) - set(wanted):
                conn.execute(delete(deliveries).where(deliveries.c.subscription_id == gone))
                conn.execute(delete(subs).where(subs.c.id == gone))
            for ident, want in wanted.items():
                old = present.get(ident)
                fields = {
                    "url": want["url"],
                    "event_types": want["events"],
                    "enabled": enabled,
                    "secret_hint": secret_hint(want["secret"]),
                }
                if old is None:
                    # Replicas starting at once load the same file: the first
                    # insert wins and the others' change nothing.
                    dialect = postgresql if self.db.is_postgres else sqlite
                    conn.execute(
                        dialect.insert(subs)
                        .on_conflict_do_nothing(index_elements=[subs.c.id])
                        .values(
                            id=ident,
                            org_id=org_id,
                            source="config",
                            backend_id=None,
                            description="from WEBHOOKS_CONFIG",
                            secret_sealed=seal(conn, now, want["secret"]),
                            cursor=head,
                            attempts=0,
                            created_at_ms=now,
                            updated_at_ms=now,
                            **fields,
                        )
                    )
                    continue
                same = (
                    all(getattr(old, k) == v for k, v in fields.items())
                    and unseal(key, old.secret_sealed) == want["secret"]
                )
                if not same:
                    sealed = seal(conn, now, want["secret"])
                    conn.execute(
                        update(subs)
                        .where(subs.c.id == ident)
                        .values(secret_sealed=sealed, updated_at_ms=now, **fields)
                    )

        _write(self.db, op)
        return len(wanted)

    def _row(self, conn: Connection, actor: Principal, webhook_id: str) -> Any:
        row = conn.execute(
            select(subs).where(subs.c.id == webhook_id, subs.c.org_id == actor.org_id)
        ).first()
        if row is None:
            raise NotFound(f"webhook {webhook_id[:64]!r} not found")
        return row


# ------------------------------------------------------------------ delivery


@dataclass(frozen=True)
class DeliverySettings:
    """How deliveries are paced; see the README's configuration table."""

    retry_base_ms: int = 1000
    retry_cap_ms: int = 300_000
    max_age_secs: float = 86_400.0
    lease_secs: float = 30.0
    # The longest wait between passes when nothing wakes the deliverer.
    poll_secs: float = 2.0
    # Events read per subscription per pass; subscriptions delivered at once.
    batch: int = 100
    parallel: int = 4


_HELD_BACK_RETRY_SECS: Final = 0.02


class _Waiter(Protocol):
    def wait(self, timeout: float) -> bool: ...


class Wakeups(Protocol):
    """Wake-ups after events commit (the engine's notifier)."""

    def subscribe(self, *topics: str) -> contextlib.AbstractContextManager[_Waiter]: ...


class _LocalWaiter:
    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def wait(self, timeout: float) -> bool:
        fired = self._event.wait(timeout)
        self._event.clear()
        return fired


class _AnyWaiter:
    """The notifier's subscription; ``stop`` and ``wake`` end the wait within
    a short slice instead of at the poll interval."""

    _SLICE: Final = 0.25

    def __init__(self, sub: _Waiter, event: threading.Event) -> None:
        self._sub = sub
        self._event = event

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._sub.wait(min(left, self._SLICE)):
                return True
            if self._event.is_set():
                self._event.clear()
                return True


# At most this many attempts, or this long, between two records.
_RECORD_GROUP: Final = 50
_RECORD_SECS: Final = 1.0
# A drain hands its thread back after this long, so that one slow receiver
# holds one thread of the pool for a bounded time; the next pass goes on.
_DRAIN_SECS: Final = 5.0


@dataclass(frozen=True, slots=True)
class _Outcome:
    event: LoggedEvent
    delivery_id: str
    attempt: int
    status_code: int
    answer: str
    error: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


@dataclass
class _State:
    """Where a subscription's delivery stands, as this deliverer last wrote it."""

    cursor: str
    attempts: int
    first_attempt_ms: int | None


class _LeaseLost(Exception):
    """Another replica holds the subscription now."""


_BACKEND_TYPES: Final = (events_pb2.EVENT_TYPE_RUN_CREATED, events_pb2.EVENT_TYPE_RUN_FINISHED)


def _wanted_by_backend(event: LoggedEvent, machine_subject: str) -> bool:
    data = event.data or {}
    if event.type == events_pb2.EVENT_TYPE_RUN_CREATED:
        return str(data.get("trigger", "call")) != "call"
    if event.type == events_pb2.EVENT_TYPE_RUN_FINISHED:
        return str(data.get("created_by", "")) == machine_subject
    return False


def delivery_id(subscription_id: str, cursor: str) -> str:
    """The ``webhook-id`` of an event for a subscription: the same on every attempt."""
    return "msg_" + hashlib.sha256(f"{subscription_id}\0{cursor}".encode()).hexdigest()[:32]


def payload(event: LoggedEvent) -> dict[str, Any]:
    """The body of a delivery, before its signature (seed 002's shape)."""
    at = datetime.fromtimestamp(event.time_ms / 1000, UTC)
    return {
        "event": event_name(event.type),
        "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
        "data": {
            "cursor": event.cursor,
            "workflow_id": event.workflow_id,
            "workflow_version": event.workflow_version,
            "run_id": event.run_id,
            "job_id": event.job_id,
            "attempt": event.attempt,
            "message": event.message,
            "details": dict(event.data or {}),
        },
    }


class Deliverer:
    """The background deliverer of one replica: ``start``, ``wake`` after
    events commit, ``stop``."""

    def __init__(
        self,
        db: Database,
        reader: EventReader,
        client: GuardedClient,
        settings: DeliverySettings | None = None,
        *,
        wakeups: Wakeups | None = None,
        topic: Callable[[str], str] = lambda org: f"events:{org}",
        replica: str = "",
    ) -> None:
        self.db = db
        self.reader = reader
        self.client = client
        self.settings = settings or DeliverySettings()
        self.replica = replica or "replica-" + secrets.token_hex(8)
        self._wakeups = wakeups
        self._topic = topic
        # The organizations with enabled subscriptions, whose events wake the loop.
        self._orgs: frozenset[str] = frozenset()
        self._synced_at = float("-inf")
        self._advanced_at: dict[str, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.settings.parallel, thread_name_prefix="trellis-webhook"
        )
        self._random = random.Random()
        # Drains under way, by subscription: a pass skips their subscriptions.
        self._running: dict[str, concurrent.futures.Future[bool]] = {}
        self._running_lock = threading.Lock()

    def start(self) -> None:
        # The installation keys are made here, in a write, so that the
        # drains' reads never have to insert them.
        _write(self.db, create_keys)
        self._thread = threading.Thread(target=self._loop, name="trellis-webhooks", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops within about ``timeout`` seconds: drains end at their next
        event, and an attempt in flight within its own deadline; leases of
        drains still running past ``timeout`` are handed back all the same
        (their next record finds the lease gone)."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._running_lock:
            running = list(self._running.values())
        concurrent.futures.wait(running, timeout=max(0.0, deadline - time.monotonic()))
        self._release_all()
        self.client.close()

    def _loop(self) -> None:
        retry = _HELD_BACK_RETRY_SECS
        fired = False
        while not self._stop.is_set():
            orgs = self._orgs
            with self._subscribe(orgs) as sub:
                self._wake.clear()
                try:
                    wait, worked = self.run_once()
                except Exception:
                    log.exception("webhook delivery pass failed; trying again")
                    wait, worked = self.settings.poll_secs, True
                if self._orgs != orgs:
                    continue  # subscribe to the new set before waiting
                if fired and not worked and self.db.is_postgres:
                    # Woken, yet nothing readable: an older transaction is
                    # still open (see the event log's horizon). Look again soon.
                    wait, retry = min(wait, retry), retry * 2
                else:
                    retry = _HELD_BACK_RETRY_SECS
                fired = sub.wait(min(wait, self.settings.poll_secs))

    @contextlib.contextmanager
    def _subscribe(self, orgs: Collection[str]) -> Iterator[_Waiter]:
        if self._wakeups is None or not orgs:
            yield _LocalWaiter(self._wake)
            return
        with self._wakeups.subscribe(*(self._topic(o) for o in sorted(orgs))) as sub:
            yield _AnyWaiter(sub, self._wake)

    def run_once(self) -> tuple[float, bool]:
        """One pass over the due subscriptions: seconds until the next retry
        is due, and whether any subscription had events to deliver."""
        # Backends change rarely; a pass that a burst of events woke need not look.
        if time.monotonic() - self._synced_at >= self.settings.poll_secs:
            self._sync_backends()
            self._synced_at = time.monotonic()
        with self.db.read() as conn:
            now = self.db.now_ms(conn)
            rows = conn.execute(
                select(subs).where(
                    subs.c.enabled.is_(True),
                    or_(
                        subs.c.owner.is_(None),
                        subs.c.owner_until_ms < now,
                        subs.c.owner == self.replica,
                    ),
                )
            ).all()
        self._orgs = frozenset(r.org_id for r in rows)
        due = [r for r in rows if r.next_attempt_ms is None or r.next_attempt_ms <= now]
        later = [r.next_attempt_ms for r in rows if r.next_attempt_ms and r.next_attempt_ms > now]
        with self._running_lock:
            busy = set(self._running)
        # A pass does not wait for drains: one still running (a slow receiver)
        # keeps its subscription, and the others go on; its end wakes the loop.
        work = [row for row in due if row.id not in busy and self._has_work(row)]
        for row in work:
            if self._stop.is_set():
                break
            future = self._pool.submit(self._drain, row)
            with self._running_lock:
                self._running[row.id] = future
            future.add_done_callback(functools.partial(self._drained, row.id))
        if later:
            return max(0.0, float(min(later) - now) / 1000), bool(work)
        return self.settings.poll_secs, bool(work)

    def _drained(self, sub_id: str, future: concurrent.futures.Future[bool]) -> None:
        with self._running_lock:
            self._running.pop(sub_id, None)
        with contextlib.suppress(concurrent.futures.CancelledError):
            if future.exception() is not None:
                log.error("webhook delivery failed; trying again", exc_info=future.exception())
        # Events that woke a pass while this drain ran were skipped by it
        # (the subscription was busy): another pass looks.
        self._wake.set()

    def _types(self, row: Any) -> list[int]:
        if row.source == "backend":
            return list(_BACKEND_TYPES)
        return [_BY_NAME[n] for n in row.event_types or () if n in _BY_NAME]

    def _has_work(self, row: Any) -> bool:
        """Whether the subscription has events to send; or, at most once per
        poll interval, only other events to move its cursor past (a write)."""
        events, next_cursor = self.reader.read_after(row.org_id, row.cursor, self._types(row), 1)
        if events:
            return True
        if next_cursor == row.cursor:
            return False
        last = self._advanced_at.get(row.id, float("-inf"))
        if time.monotonic() - last < self.settings.poll_secs:
            return False
        self._advanced_at[row.id] = time.monotonic()
        return True

    def _drain(self, row: Any) -> bool:
        """Delivers the subscription's events after its cursor while it holds
        the lease, for at most ``_DRAIN_SECS``; whether it stopped with more
        to deliver. The lease is claimed (or renewed) first: time may have
        passed since the pass judged it, and another replica may hold it now."""
        if not self._claim(row.id):
            return False
        ends = time.monotonic() + _DRAIN_SECS
        try:
            with self.db.read() as conn:
                now = self.db.now_ms(conn)
                row = conn.execute(select(subs).where(subs.c.id == row.id)).one()
                secret = self._secret(conn, now, row)
                machine = ""
                if row.source == "backend":
                    owner = conn.execute(
                        select(backends.c.machine_user_id).where(backends.c.id == row.backend_id)
                    ).scalar()
                    machine = f"machine:{owner}"
            if not row.enabled or (row.next_attempt_ms and row.next_attempt_ms > now):
                return False
            state = _State(row.cursor, row.attempts, row.first_attempt_ms)
            while not self._stop.is_set():
                if time.monotonic() >= ends:
                    return True
                events, next_cursor = self.reader.read_after(
                    row.org_id, state.cursor, self._types(row), self.settings.batch
                )
                if not events:
                    if next_cursor and next_cursor != state.cursor:
                        self._advance(row.id, state, next_cursor)
                    return False
                # Attempts are recorded (and the cursor moved) a group at a
                # time: the group's events go out again after a crash, with
                # the same webhook-ids, as at-least-once allows.
                pending: list[_Outcome] = []
                since = time.monotonic()
                for event in events:
                    if self._stop.is_set() or time.monotonic() >= ends:
                        break
                    # A backend hears of what happened after it registered.
                    if machine and (
                        event.time_ms < row.created_at_ms or not _wanted_by_backend(event, machine)
                    ):
                        continue
                    attempt = 1 if pending else state.attempts + 1
                    pending.append(self._send(row, attempt, event, secret))
                    full = len(pending) >= _RECORD_GROUP
                    if not pending[-1].ok or full or time.monotonic() - since > _RECORD_SECS:
                        moved_on = self._record(row, state, pending)
                        pending, since = [], time.monotonic()
                        if not moved_on:
                            return False  # head of line: retried when due
                if pending:
                    self._record(row, state, pending)
                if self._stop.is_set():
                    return False
                if time.monotonic() >= ends:
                    return True
                # Past the examined events that were not for this subscription.
                if next_cursor and next_cursor != state.cursor:
                    self._advance(row.id, state, next_cursor)
        except _LeaseLost:
            log.info("webhook %s: lease taken over by another replica", row.id)
        return False

    def _secret(self, conn: Connection, now: int, row: Any) -> str:
        if row.source == "backend":
            return backend_secret(conn, now, row.backend_id)
        return unseal(seal_key(conn, now), row.secret_sealed)

    def _claim(self, sub_id: str) -> bool:
        def op(conn: Connection, now: int) -> bool:
            until = now + int(self.settings.lease_secs * 1000)
            claimed = conn.execute(
                update(subs)
                .where(
                    subs.c.id == sub_id,
                    or_(
                        subs.c.owner.is_(None),
                        subs.c.owner_until_ms < now,
                        subs.c.owner == self.replica,
                    ),
                )
                .values(owner=self.replica, owner_until_ms=until)
            )
            return claimed.rowcount == 1

        return _write(self.db, op)

    def _release_all(self) -> None:
        """Hands this replica's subscriptions back at a clean stop."""

        def op(conn: Connection, now: int) -> None:
            conn.execute(
                update(subs)
                .where(subs.c.owner == self.replica)
                .values(owner=None, owner_until_ms=None)
            )

        try:
            _write(self.db, op)
        except Exception:
            log.warning("webhook leases not released (they expire)", exc_info=True)

    def _owned(self, now: int) -> Any:
        return and_(subs.c.owner == self.replica, subs.c.owner_until_ms >= now)

    def _advance(self, sub_id: str, state: _State, cursor: str) -> None:
        def op(conn: Connection, now: int) -> None:
            moved = conn.execute(
                update(subs)
                .where(subs.c.id == sub_id, subs.c.cursor == state.cursor, self._owned(now))
                .values(cursor=cursor, owner_until_ms=now + int(self.settings.lease_secs * 1000))
            )
            if moved.rowcount != 1:
                raise _LeaseLost

        _write(self.db, op)
        state.cursor = cursor

    def _send(self, row: Any, attempt: int, event: LoggedEvent, secret: str) -> _Outcome:
        """One attempt to deliver ``event``, not yet recorded."""
        ident = delivery_id(row.id, event.cursor)
        body, headers = signed_request(secret, ident, payload(event), datetime.now(UTC))
        code, answer, error = 0, "", ""
        try:
            answered = self.client.post(row.url, body, headers)
            code, answer = answered.status_code, answered.body[:_ANSWER_CHARS]
            if not 200 <= code < 300:
                error = f"answered {code}"
        except EgressRefused as exc:
            error = str(exc)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return _Outcome(event, ident, attempt, code, answer, error[:_ERROR_CHARS])

    def _record(self, row: Any, state: _State, outcomes: Sequence[_Outcome]) -> bool:
        """Records ``outcomes`` (delivered ones, the last maybe not) and moves
        the cursor past the last that is done, in one transaction; whether the
        subscription moved past the last one (delivered, or finally failed)."""
        settings = self.settings
        last = outcomes[-1]

        def op(conn: Connection, now: int) -> dict[str, Any]:
            statuses = ["delivered"] * len(outcomes)
            next_at: int | None = None
            # The first attempt at the last event: an earlier pass's, if it is
            # the event the subscription was retrying.
            first = now
            if last.attempt > 1 and state.first_attempt_ms is not None:
                first = state.first_attempt_ms
            changes: dict[str, Any] = {
                "cursor": last.event.cursor,
                "attempts": 0,
                "first_attempt_ms": None,
                "next_attempt_ms": None,
            }
            if not last.ok and now - first < settings.max_age_secs * 1000:
                ceiling = min(
                    settings.retry_cap_ms, settings.retry_base_ms * 2 ** (last.attempt - 1)
                )
                next_at = now + int(self._random.uniform(0, ceiling))
                statuses[-1] = "retrying"
                changes = {
                    # Up to the event before, delivered; this one is retried.
                    "cursor": outcomes[-2].event.cursor if len(outcomes) > 1 else state.cursor,
                    "attempts": last.attempt,
                    "first_attempt_ms": first,
                    "next_attempt_ms": next_at,
                }
            elif not last.ok:
                statuses[-1] = "failed"
            moved = conn.execute(
                update(subs)
                .where(subs.c.id == row.id, subs.c.cursor == state.cursor, self._owned(now))
                .values(
                    owner_until_ms=now + int(settings.lease_secs * 1000),
                    updated_at_ms=now,
                    **changes,
                )
            )
            if moved.rowcount != 1:
                raise _LeaseLost
            conn.execute(
                insert(deliveries),
                [
                    {
                        "org_id": row.org_id,
                        "subscription_id": row.id,
                        "delivery_id": o.delivery_id,
                        "event_cursor": o.event.cursor,
                        "event_type": event_name(o.event.type),
                        "attempt": o.attempt,
                        "status": status,
                        "status_code": o.status_code,
                        "answer": o.answer,
                        "error": o.error,
                        "attempted_at_ms": now,
                        "next_attempt_ms": next_at if status == "retrying" else None,
                    }
                    for o, status in zip(outcomes, statuses, strict=True)
                ],
            )
            return changes

        changes = _write(self.db, op)
        state.cursor = changes["cursor"]
        state.attempts = changes["attempts"]
        state.first_attempt_ms = changes["first_attempt_ms"]
        return not changes["attempts"]

    def _sync_backends(self) -> None:
        """One subscription per registered backend, its URL kept in step; the
        subscriptions of backends that are gone are removed."""
        with self.db.read() as conn:
            registered = {
                r.id: r
                for r in conn.execute(
                    select(
                        backends.c.id,
                        backends.c.org_id,
                        backends.c.callback_url,
                        backends.c.created_at_ms,
                    )
                ).all()
            }
            present = {
                r.backend_id: r
                for r in conn.execute(
                    select(subs.c.id, subs.c.backend_id, subs.c.url).where(
                        subs.c.source == "backend"
                    )
                ).all()
            }
        missing = [b for k, b in registered.items() if k not in present]
        moved = [
            (p.id, registered[k].callback_url)
            for k, p in present.items()
            if k in registered and registered[k].callback_url != p.url
        ]
        gone = [p.id for k, p in present.items() if k not in registered]
        if not (missing or moved or gone):
            return

        def op(conn: Connection, now: int) -> None:
            for backend in missing:
                conn.execute(
                    insert(subs).values(
                        id="whb_" + backend.id[:28],
                        org_id=backend.org_id,
                        source="backend",
                        backend_id=backend.id,
                        url=backend.callback_url,
                        description="backend callbacks",
                        event_types=[event_name(t) for t in _BACKEND_TYPES],
                        enabled=True,
                        secret_sealed="",
                        secret_hint="",
                        # From the oldest retained event (RUN_CREATED and
                        # RUN_FINISHED only), skipping those before created_at_ms.
                        cursor="",
                        attempts=0,
                        # Callbacks are of runs since the registration.
                        created_at_ms=backend.created_at_ms,
                        updated_at_ms=now,
                    )
                )
            for sub_id, url in moved:
                conn.execute(update(subs).where(subs.c.id == sub_id).values(url=url))
            for sub_id in gone:
                conn.execute(delete(deliveries).where(deliveries.c.subscription_id == sub_id))
                conn.execute(delete(subs).where(subs.c.id == sub_id))

        # Another replica may have made them first.
        with contextlib.suppress(IntegrityError):
            _write(self.db, op)
