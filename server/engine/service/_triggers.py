"""Triggers: publishes to topics, and schedules' fires, each starting the
runs of the workflows whose `on:` asks for them in the transaction that
records the publish or claims the fire.

The index of topic patterns (``topic_triggers``) and the schedules with their
next fire (``schedules``) are rebuilt from a definition in the transaction
that stores its new version (:func:`index_triggers`), so a publish looks up
the literal prefixes of its topic instead of reading every workflow.

A schedule's fire is claimed by moving ``next_fire_ms`` on with a
compare-and-set, and its run carries the request id
``schedule:<workflow>:<entry>:<fire ms>``: two replicas that see one fire
start one run, even if both got past the claim.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf import json_format, struct_pb2
from sqlalchemy import Connection, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from trellis.server.core._group_commit import Member
from trellis.server.core.errors import InvalidArgument, NotFound, Unavailable
from trellis.server.core.models import ScheduleRow, TopicRecordRow, TopicRow, TopicTriggerRow, table
from trellis.server.core.pagination import after_key
from trellis.server.core.principal import Principal, PrincipalKind
from trellis.server.core.times import timestamp
from trellis.server.engine import _render as render
from trellis.server.engine._machine import Effects
from trellis.server.engine.definitions import (
    TopicError,
    TriggerDef,
    WorkflowDef,
    filters_match,
    latest_fire_ms,
    literal_prefix,
    next_fire_ms,
    topic_matches,
    topic_name,
    topic_prefixes,
)
from trellis.server.engine.service._base import workflows
from trellis.server.engine.service._starts import RunRequest, Start, StartOps, _stored
from trellis.server.engine.service._starts import _StaleVersions as StaleVersions
from trellis.v1 import topics_pb2

log = logging.getLogger(__name__)

topics = table(TopicRow)
records = table(TopicRecordRow)
topic_triggers = table(TopicTriggerRow)
schedules = table(ScheduleRow)

TOPICS_PAGE_SIZE = 100
MAX_TOPICS_PAGE = 1000
MAX_SOURCE_LENGTH = 200
MAX_VALUE_BYTES = 64 * 1024
# Due schedules one pass claims at most; the rest wait for the next pass.
MAX_FIRES_PER_PASS = 100
_MAX_STALE_RETRIES = 10

CatchUp = Literal["latest", "skip"]
CATCH_UP_POLICIES: tuple[CatchUp, ...] = ("latest", "skip")


def _scheduler(org: str) -> Principal:
    """Who starts scheduled runs, as the audit log records it."""
    return Principal(
        org_id=org,
        subject="trellis:scheduler",
        kind=PrincipalKind.MACHINE,
        scopes=frozenset({"workflows:run"}),
        name="scheduler",
    )


def index_triggers(conn: Connection, org: str, wdef: WorkflowDef, now: int) -> None:
    """Rebuilds the workflow's rows of both trigger indexes from ``wdef``, its
    new current version. A schedule entry that did not change keeps its next
    fire; a new or changed one fires next after ``now``."""
    kept = {
        (row.entry, row.cron, row.timezone): row.next_fire_ms
        for row in conn.execute(
            select(schedules).where(schedules.c.org_id == org, schedules.c.workflow_id == wdef.id)
        )
    }
    drop_triggers(conn, org, wdef.id)
    rows = [
        {
            "org_id": org,
            "workflow_id": wdef.id,
            "position": position,
            "pattern": trigger.pattern,
            "prefix": literal_prefix(trigger.pattern),
            "exact": literal_prefix(trigger.pattern) == trigger.pattern,
        }
        for position, trigger in enumerate(wdef.triggers)
        if trigger.kind == "topic"
    ]
    if rows:
        conn.execute(insert(topic_triggers), rows)
    entries = [t for t in wdef.triggers if t.kind == "schedule"]
    if entries:
        conn.execute(
            insert(schedules),
            [
                {
                    "org_id": org,
                    "workflow_id": wdef.id,
                    "entry": entry,
                    "cron": trigger.cron,
                    "timezone": trigger.timezone,
                    "next_fire_ms": kept.get((entry, trigger.cron, trigger.timezone))
                    or next_fire_ms(trigger, now),
                }
                for entry, trigger in enumerate(entries)
            ],
        )


def drop_triggers(conn: Connection, org: str, workflow_id: str) -> None:
    """Removes a deleted workflow's rows from both trigger indexes."""
    conn.execute(
        delete(topic_triggers).where(
            topic_triggers.c.org_id == org, topic_triggers.c.workflow_id == workflow_id
        )
    )
    conn.execute(
        delete(schedules).where(schedules.c.org_id == org, schedules.c.workflow_id == workflow_id)
    )


def _fireable(conn: Connection, org: str, workflow_id: str) -> bool:
    """Whether a trigger may start a run of the workflow now: a disabled
    workflow keeps its triggers indexed (enabling it again needs no rebuild)
    but fires none."""
    enabled = conn.execute(
        select(workflows.c.enabled).where(workflows.c.org_id == org, workflows.c.id == workflow_id)
    ).scalar()
    return bool(enabled)


def trigger_inputs(wdef: WorkflowDef, values: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs a trigger's ``values`` give a run of ``wdef``: all of them
    when it declares no inputs, else those it declares (its declaration then
    checks them as any start's inputs)."""
    if not wdef.inputs:
        return dict(values)
    declared = {spec.name for spec in wdef.inputs}
    return {name: value for name, value in values.items() if name in declared}


def trigger_messages(triggers: Sequence[TriggerDef]) -> list[topics_pb2.Trigger]:
    """A definition's triggers as the ``Workflow`` message carries them."""
    out: list[topics_pb2.Trigger] = []
    for trigger in triggers:
        if trigger.kind == "schedule":
            schedule = topics_pb2.Schedule(cron=trigger.cron, timezone=trigger.timezone)
            out.append(topics_pb2.Trigger(schedule=schedule))
            continue
        msg = topics_pb2.Trigger(topic=trigger.pattern)
        for name, globs in trigger.filters:
            msg.filters[name].patterns.extend(globs)
        out.append(msg)
    return out


def _plain(value: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(value)


def _value(value: Any) -> struct_pb2.Value:
    return json_format.ParseDict(value, struct_pb2.Value())


def _record(row: Any) -> topics_pb2.TopicRecord:
    return topics_pb2.TopicRecord(
        topic=row.topic,
        value=_value(row.value),
        source=row.source,
        published_at=timestamp(row.published_at_ms),
    )


@dataclass(frozen=True, slots=True)
class _Published:
    record: topics_pb2.TopicRecord
    members: list[Member[Start, list[Mapping[str, Any]]]]
    skipped: list[topics_pb2.SkippedTrigger]


RunPolicy = Callable[[Principal, str], str]
"""Judges whether ``principal`` may run the workflow: the refusal, or ""."""


class TriggerOps(StartOps):
    # The organization's policies, judged for each workflow a publish would
    # start (the call itself names a topic, not them); set by the server.
    run_policy: RunPolicy | None = None

    # ------------------------------------------------------------ topics

    def publish(
        self,
        principal: Principal,
        topic: str,
        value: struct_pb2.Value | None,
        source: str = "",
        *,
        ip: str = "",
    ) -> topics_pb2.PublishResponse:
        """Records ``value`` under ``topic`` (creating it and its parents) and
        starts a run of each workflow of the organization that the topic
        triggers, all in one transaction."""
        try:
            name = topic_name(topic)
        except TopicError as exc:
            raise InvalidArgument(str(exc)) from None
        if value is None:
            raise InvalidArgument("value is required")
        if len(source) > MAX_SOURCE_LENGTH:
            raise InvalidArgument(f"source: at most {MAX_SOURCE_LENGTH} characters")
        try:
            plain = _plain(value)
        except ValueError:
            raise InvalidArgument("value: NaN and infinite numbers are not JSON") from None
        if len(json.dumps(plain)) > MAX_VALUE_BYTES:
            raise InvalidArgument(f"value: larger than {MAX_VALUE_BYTES} bytes as JSON")
        org = principal.org_id
        values = {"value": plain, "topic": name, "source": source}
        trigger = f"topic:{name}"

        def tx(conn: Connection, now: int) -> tuple[_Published, Effects]:
            levels = topic_prefixes(name)
            new = [
                {
                    "org_id": org,
                    "name": level,
                    "parent": levels[i - 1] if i else "",
                    "created_at_ms": now,
                    "last_published_at_ms": 0,
                }
                for i, level in enumerate(levels)
            ]
            # The topic and its parents in one statement; those already there stay.
            dialect = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            conn.execute(dialect(topics).values(new).on_conflict_do_nothing())
            conn.execute(
                update(topics)
                .where(topics.c.org_id == org, topics.c.name == name)
                .values(last_published_at_ms=now)
            )
            conn.execute(
                insert(records).values(
                    org_id=org, topic=name, value=plain, source=source, published_at_ms=now
                )
            )
            record = topics_pb2.TopicRecord(
                topic=name, value=value, source=source, published_at=timestamp(now)
            )
            members: list[Member[Start, list[Mapping[str, Any]]]] = []
            skipped: list[topics_pb2.SkippedTrigger] = []
            for wdef in self._subscribed(conn, org, name, plain):
                refusal = "" if self.run_policy is None else self.run_policy(principal, wdef.id)
                if refusal:
                    skipped.append(topics_pb2.SkippedTrigger(workflow_id=wdef.id, reason=refusal))
                    continue
                inputs = trigger_inputs(wdef, values)
                request = RunRequest(wdef.id, inputs, trigger=trigger)
                members.append(Member(Start(principal, [request], ip, batch=False)))
            effects = Effects()
            if members:
                refused: list[tuple[Member[Start, list[Mapping[str, Any]]], Exception]] = []
                effects = self._start_in_org(conn, now, org, members, refused)
                for member, error in refused:
                    skipped.append(
                        topics_pb2.SkippedTrigger(
                            workflow_id=member.work.requests[0].workflow_id, reason=str(error)
                        )
                    )
                members = [m for m in members if all(m is not r for r, _ in refused)]
            return _Published(record, members, skipped), effects

        done = self._retrying_stale(tx)
        runs = [render.run_from_row(member.outcome()[0]) for member in done.members]
        return topics_pb2.PublishResponse(record=done.record, runs=runs, skipped=done.skipped)

    def _retrying_stale(self, tx: Any) -> Any:
        """Runs ``tx`` in a write transaction, again when a workflow it
        started changed version meanwhile (it then reads them afresh)."""
        for _ in range(_MAX_STALE_RETRIES):
            try:
                return self._write(tx)
            except StaleVersions as exc:
                for workflow_id in exc.workflow_ids:
                    self._see_version(exc.org, workflow_id, None)
        raise Unavailable("a workflow changed during every try to start it; try again")

    def _subscribed(self, conn: Connection, org: str, name: str, value: Any) -> list[WorkflowDef]:
        """The current definitions of the workflows that a publish of
        ``value`` to topic ``name`` fires, by id."""
        found = conn.execute(
            select(
                topic_triggers.c.workflow_id,
                topic_triggers.c.position,
                topic_triggers.c.pattern,
                topic_triggers.c.exact,
            ).where(
                topic_triggers.c.org_id == org,
                topic_triggers.c.prefix.in_(topic_prefixes(name)),
            )
        ).all()
        matching: dict[str, list[int]] = {}
        for row in found:
            if (row.pattern == name) if row.exact else topic_matches(row.pattern, name):
                matching.setdefault(row.workflow_id, []).append(row.position)
        if not matching:
            return []
        current = self._current_versions(conn, org, set(matching))
        out: list[WorkflowDef] = []
        for workflow_id in sorted(matching):
            version = current.get(workflow_id)
            if version is None or not _fireable(conn, org, workflow_id):
                continue
            wdef = self._definition(
                org,
                workflow_id,
                version,
                functools.partial(_stored, conn, org, workflow_id, version),
            )
            if any(_fires_for(wdef, p, name, value) for p in matching[workflow_id]):
                out.append(wdef)
        return out

    def list_topics(
        self, principal: Principal, *, prefix: str = "", page_size: int = 0, page_token: str = ""
    ) -> topics_pb2.ListTopicsResponse:
        """The organization's topics by name: all, or ``prefix`` and below it."""
        org = principal.org_id
        if prefix:
            _check_prefix(prefix)
        size = self._page_size(page_size, TOPICS_PAGE_SIZE, MAX_TOPICS_PAGE)
        scope = f"topics\x00{org}\x00{prefix}"
        after = self._after(scope, page_token)

        def tx(conn: Connection, now: int) -> topics_pb2.ListTopicsResponse:
            q = select(topics).where(topics.c.org_id == org)
            if prefix:
                # Compared as text, not as a range: under a linguistic
                # collation (PostgreSQL's en_US and the like) '/' sorts with
                # no weight of its own, so the names below a prefix are no
                # single range; LIKE would need escaping and is case-blind
                # on SQLite.
                below = prefix + "/"
                q = q.where(
                    or_(
                        topics.c.name == prefix,
                        func.substr(topics.c.name, 1, len(below)) == below,
                    )
                )
            if after is not None:
                q = q.where(after_key([topics.c.name], after, descending=[False]))
            rows = conn.execute(q.order_by(topics.c.name).limit(size + 1)).all()
            resp = topics_pb2.ListTopicsResponse(
                topics=[
                    topics_pb2.Topic(
                        name=row.name,
                        parent=row.parent,
                        created_at=timestamp(row.created_at_ms),
                        last_published_at=timestamp(row.last_published_at_ms),
                    )
                    for row in rows[:size]
                ]
            )
            if len(rows) > size:
                resp.next_page_token = self._tokens().encode(scope, (str(rows[size - 1].name),))
            return resp

        return self._read(tx)

    def list_topic_records(
        self,
        principal: Principal,
        topic: str,
        *,
        since_ms: int = 0,
        until_ms: int = 0,
        page_size: int = 0,
        page_token: str = "",
    ) -> topics_pb2.ListTopicRecordsResponse:
        """A topic's records published in ``[since_ms, until_ms)`` (0: open),
        newest first."""
        org = principal.org_id
        try:
            name = topic_name(topic)
        except TopicError as exc:
            raise InvalidArgument(str(exc)) from None
        if since_ms and until_ms and since_ms >= until_ms:
            raise InvalidArgument("since: must be before until")
        size = self._page_size(page_size, TOPICS_PAGE_SIZE, MAX_TOPICS_PAGE)
        scope = f"topic-records\x00{org}\x00{name}\x00{since_ms}\x00{until_ms}"
        after = self._after(scope, page_token)

        def tx(conn: Connection, now: int) -> topics_pb2.ListTopicRecordsResponse:
            known = conn.execute(
                select(topics.c.name).where(topics.c.org_id == org, topics.c.name == name)
            ).first()
            if known is None:
                raise NotFound(f"topic {name!r} not found")
            q = select(records).where(records.c.org_id == org, records.c.topic == name)
            if since_ms:
                q = q.where(records.c.published_at_ms >= since_ms)
            if until_ms:
                q = q.where(records.c.published_at_ms < until_ms)
            if after is not None:
                q = q.where(
                    after_key(
                        [records.c.published_at_ms, records.c.id], after, descending=[True, True]
                    )
                )
            q = q.order_by(records.c.published_at_ms.desc(), records.c.id.desc())
            rows = conn.execute(q.limit(size + 1)).all()
            resp = topics_pb2.ListTopicRecordsResponse(records=[_record(r) for r in rows[:size]])
            if len(rows) > size:
                last = rows[size - 1]
                resp.next_page_token = self._tokens().encode(
                    scope, (int(last.published_at_ms), int(last.id))
                )
            return resp

        return self._read(tx)

    # ------------------------------------------------------------ schedules

    def fire_schedules(self, *, catch_up: CatchUp = "latest", grace_ms: int = 2000) -> int:
        """Claims the schedules' due fires (of every organization) and starts
        their runs; returns how many runs it started.

        Fires missed meanwhile (every replica was down): under ``latest`` the
        latest of them runs once and the schedule goes on from now; under
        ``skip`` a fire later than ``grace_ms`` does not run at all.
        """

        def due(conn: Connection, now: int) -> tuple[int, list[Any]]:
            rows = conn.execute(
                select(schedules)
                .where(schedules.c.next_fire_ms <= now)
                .order_by(schedules.c.next_fire_ms)
                .limit(MAX_FIRES_PER_PASS)
            ).all()
            return now, list(rows)

        _, rows = self._read(due)
        started = 0
        for row in rows:
            try:
                started += self._fire_schedule(row, catch_up, grace_ms)
            except Exception:
                log.exception("schedule %s[%d]: fire failed", row.workflow_id, row.entry)
        return started

    def _fire_schedule(self, row: Any, catch_up: CatchUp, grace_ms: int) -> int:
        org, workflow_id, entry = row.org_id, row.workflow_id, row.entry
        trigger = TriggerDef(kind="schedule", cron=row.cron, timezone=row.timezone)

        def tx(conn: Connection, now: int) -> tuple[int, Effects]:
            latest, following = latest_fire_ms(trigger, row.next_fire_ms, now)
            claimed = conn.execute(
                update(schedules)
                .where(
                    schedules.c.org_id == org,
                    schedules.c.workflow_id == workflow_id,
                    schedules.c.entry == entry,
                    schedules.c.next_fire_ms == row.next_fire_ms,
                )
                .values(next_fire_ms=following)
            ).rowcount
            if claimed != 1:
                return 0, Effects()  # another replica claimed it first
            if catch_up == "skip" and now - latest > grace_ms:
                log.info("schedule %s[%d]: fire at %d missed, skipped", workflow_id, entry, latest)
                return 0, Effects()
            if not _fireable(conn, org, workflow_id):
                return 0, Effects()
            request = RunRequest(
                workflow_id,
                {},
                request_id=f"schedule:{workflow_id}:{entry}:{latest}",
                trigger=trigger.label(),
            )
            member: Member[Start, list[Mapping[str, Any]]] = Member(
                Start(_scheduler(org), [request], "", batch=False)
            )
            refused: list[tuple[Member[Start, list[Mapping[str, Any]]], Exception]] = []
            effects = self._start_in_org(conn, now, org, [member], refused)
            for _, error in refused:
                log.warning("schedule %s[%d]: run refused: %s", workflow_id, entry, error)
                return 0, effects
            return 1, effects

        started: int = self._retrying_stale(tx)
        return started


def _fires_for(wdef: WorkflowDef, position: int, name: str, value: Any) -> bool:
    if position >= len(wdef.triggers):
        return False
    trigger = wdef.triggers[position]
    return (
        trigger.kind == "topic"
        and topic_matches(trigger.pattern, name)
        and filters_match(trigger.filters, value)
    )


def _check_prefix(prefix: str) -> None:
    """A listing's prefix: a topic, or a version prefix alone (``mHv1.0``)."""
    try:
        topic_name(prefix, "prefix")
    except TopicError as exc:
        try:
            topic_name(prefix + "/x", "prefix")
        except TopicError:
            raise InvalidArgument(str(exc)) from None


__all__ = [
    "CATCH_UP_POLICIES",
    "CatchUp",
    "TriggerOps",
    "index_triggers",
    "trigger_inputs",
]
