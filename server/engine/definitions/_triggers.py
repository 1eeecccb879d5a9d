"""`on:`: the triggers of a workflow, topic names and patterns, and cron schedules.

A topic is a ``/``-separated name whose first level is a version prefix
(``mHv1.0/factory/line-1/temperature``), or a named event of one level (``push``). A
pattern is a topic whose levels may be ``+`` (exactly one level) or, as the last level,
``#`` (that level's parent and everything below it), as in MQTT. A schedule is a cron
expression of 5 fields (minute hour day month weekday), or 6 with seconds first, read in an
IANA time zone (UTC by default).
"""

from __future__ import annotations

import fnmatch
import re
import zoneinfo
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from cronsim import CronSim, CronSimError

from trellis.server.engine.definitions._checks import mapping, reject_unknown, text
from trellis.server.engine.definitions._errors import Where, quote, show
from trellis.server.engine.definitions._model import KEYWORDS, TriggerDef, named_events

MAX_TOPIC_LENGTH = 512
MAX_TOPIC_LEVELS = 32
MAX_TRIGGERS = 100
TRIGGER_INPUTS = ("value", "topic", "source")
"""The values a publish gives the runs it starts."""

_VERSION_RE = re.compile(r"[A-Za-z0-9_.-]*v[0-9]+(\.[0-9]+)*")
_EVENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_MANUAL = "workflow_dispatch"
_NOT_AN_EVENT = "an event name has letters, digits, _ . - (a topic goes under `topic`)"
_SCHEDULE_KEYS = ("cron", "timezone")


class TopicError(ValueError):
    """A topic name or pattern was refused; ``str()`` names it and says why."""


def topic_name(value: Any, what: str = "topic") -> str:
    """``value`` checked as the name of one topic to publish to (no wildcards)."""
    return _topic(value, what, wildcards=False)


def topic_pattern(value: Any, what: str = "topic pattern") -> str:
    """``value`` checked as a pattern of topics (``+`` and a final ``#`` allowed)."""
    return _topic(value, what, wildcards=True)


def _topic(value: Any, what: str, *, wildcards: bool) -> str:
    if not isinstance(value, str) or not value:
        raise TopicError(f"{what} is required" if not value else f"{what} must be a string")
    shown = quote(value)
    if len(value) > MAX_TOPIC_LENGTH:
        raise TopicError(f"{what} {shown} is longer than {MAX_TOPIC_LENGTH} characters")
    if not value.isprintable() or any(c.isspace() and c != " " for c in value):
        raise TopicError(f"{what} {shown} contains control characters")
    levels = value.split("/")
    if len(levels) > MAX_TOPIC_LEVELS:
        raise TopicError(f"{what} {shown} has more than {MAX_TOPIC_LEVELS} levels")
    if "" in levels:
        raise TopicError(f"{what} {shown} has an empty level")
    for i, level in enumerate(levels):
        if ("+" in level or "#" in level) and not wildcards:
            raise TopicError(f"{what} {shown} contains a wildcard (+ or #); publish to one topic")
        if level not in ("+", "#") and ("+" in level or "#" in level):
            raise TopicError(f"{what} {shown}: + and # must be whole levels")
        if level == "#" and i != len(levels) - 1:
            raise TopicError(f"{what} {shown}: # must be the last level")
    first = levels[0]
    if len(levels) == 1:
        if not _EVENT_RE.fullmatch(first) or _VERSION_RE.fullmatch(first):
            raise TopicError(
                f"{what} {shown} needs a version prefix and a level, e.g. 'mHv1.0/{first}' "
                "(a name of one level is an event name: letters, digits, _ . -)"
            )
    elif not _VERSION_RE.fullmatch(first):
        raise TopicError(
            f"{what} {shown} lacks a version prefix: its first level must be one, e.g. "
            f"'mHv1.0/{value}'"
        )
    return value


def literal_prefix(pattern: str) -> str:
    """The levels of ``pattern`` before its first wildcard: what the index is keyed by."""
    levels: list[str] = []
    for level in pattern.split("/"):
        if level in ("+", "#"):
            break
        levels.append(level)
    return "/".join(levels)


def topic_prefixes(topic: str) -> list[str]:
    """Every literal prefix a pattern matching ``topic`` can have (the topic itself too)."""
    levels = topic.split("/")
    return ["/".join(levels[:n]) for n in range(1, len(levels) + 1)]


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` is one of the topics ``pattern`` stands for."""
    want, got = pattern.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(got) or (level != "+" and level != got[i]):
            return False
    return len(want) == len(got)


def filters_match(filters: tuple[tuple[str, tuple[str, ...]], ...], value: Any) -> bool:
    """Whether a published ``value`` passes a named event's filters: each filtered field is
    a string (or a list with one string) that matches one of its glob patterns."""
    if not filters:
        return True
    if not isinstance(value, Mapping):
        return False
    for name, globs in filters:
        field = value.get(name)
        seen = field if isinstance(field, list) else [field]
        if not any(
            isinstance(item, str) and any(fnmatch.fnmatchcase(item, g) for g in globs)
            for item in seen
        ):
            return False
    return True


# ---------------------------------------------------------------- schedules


def zone(name: str) -> tzinfo:
    return UTC if name in ("", "UTC") else zoneinfo.ZoneInfo(name)


def _fires(trigger: TriggerDef, after_ms: int) -> Iterator[datetime]:
    # cronsim steps from the given time in its zone, so daylight-saving gaps and repeats
    # follow the zone's own rules.
    start = datetime.fromtimestamp(after_ms / 1000, tz=zone(trigger.timezone))
    return iter(CronSim(trigger.cron, start))


def next_fire_ms(trigger: TriggerDef, after_ms: int) -> int:
    """The first fire of a schedule strictly after ``after_ms`` (epoch milliseconds)."""
    for fire in _fires(trigger, after_ms):
        ms = int(fire.timestamp() * 1000)
        if ms > after_ms:
            return ms
    raise ValueError(f"the schedule {trigger.cron!r} never fires")  # pragma: no cover


def latest_fire_ms(trigger: TriggerDef, due_ms: int, now_ms: int) -> tuple[int, int]:
    """From a fire due at ``due_ms`` (at most ``now_ms``): the latest fire at or before
    ``now_ms`` and the first one after it."""
    # Backwards from just after now (cronsim's reverse steps are strictly before their
    # start): one step however many fires were missed.
    start = datetime.fromtimestamp((now_ms + 1) / 1000, tz=zone(trigger.timezone))
    before = next(iter(CronSim(trigger.cron, start, reverse=True)))
    latest = max(due_ms, int(before.timestamp() * 1000))
    return latest, next_fire_ms(trigger, max(latest, now_ms))


def _schedule(body: Any, where: Where) -> TriggerDef:
    entry = mapping(body, "a schedule entry ({cron, timezone})", where)
    reject_unknown(entry, _SCHEDULE_KEYS, where)
    cron = text(entry.get("cron"), "`cron`", where)
    fields = cron.split()
    if len(fields) not in (5, 6):
        where.fail(
            f"`cron` {quote(cron)} must have 5 fields (minute hour day month weekday), "
            "or 6 with seconds first"
        )
    cron = " ".join(fields)
    tz_name = entry.get("timezone")
    tz_name = "UTC" if tz_name is None else text(tz_name, "`timezone`", where)
    try:
        zone(tz_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        where.fail(f"`timezone` {quote(tz_name)} is not a known IANA time zone")
    try:
        CronSim(cron, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        where.fail(f"`cron` {quote(cron)} is not a valid cron expression: {exc}")
    return TriggerDef(kind="schedule", cron=cron, timezone=tz_name)


def _pattern(value: Any, where: Where) -> str:
    try:
        return topic_pattern(value)
    except TopicError as exc:
        where.fail(str(exc))


def _filters(body: Any, where: Where) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if body is None:
        return ()
    given = mapping(body, "an event's filters (field -> glob patterns)", where)
    found: list[tuple[str, tuple[str, ...]]] = []
    for name, globs in given.items():
        at = where.within(f"filter {show(name)}")
        if not isinstance(name, str) or not name:
            at.fail("a filter's field must be a non-empty string")
        items = [globs] if isinstance(globs, str) else globs
        if not isinstance(items, list | tuple) or not items:
            at.fail(f"expected a glob pattern or a non-empty list of them, got {show(globs)}")
        found.append((name, tuple(text(g, "a glob pattern", at) for g in items)))
    return tuple(found)


def file_triggers(value: Any, where: Where) -> tuple[TriggerDef, ...]:
    """The triggers of a workflow file's `on:` (already checked for shape by its reader).

    Event names (a string, a list, or the keys of a mapping) are topics of one level, with
    a mapping's value as their filters. ``topic`` lists patterns, ``schedule`` lists
    ``{cron, timezone}`` entries; either with no entries (``on: [schedule]``) declares
    nothing. ``workflow_dispatch`` starts nothing by itself (its ``inputs`` are the
    workflow's).
    """
    at = where.within("`on`")
    if isinstance(value, str):
        entries: list[tuple[Any, Any]] = [(value, None)]
    elif isinstance(value, list | tuple):
        entries = [(name, None) for name in value]
    elif isinstance(value, Mapping):
        entries = list(value.items())
    else:
        return ()
    topics: list[TriggerDef] = []
    schedules: list[TriggerDef] = []
    for name, body in entries:
        if name == "topic":
            patterns = [] if body is None else [body] if isinstance(body, str) else body
            if not isinstance(patterns, list | tuple):
                at.fail(f"`topic` must be a pattern or a list of them, got {show(body)}")
            topics.extend(
                TriggerDef(kind="topic", pattern=_pattern(p, at.within(f"topic[{i}]")))
                for i, p in enumerate(patterns)
            )
        elif name == "schedule":
            listed = [] if body is None else body
            if not isinstance(listed, list | tuple):
                at.fail(f"`schedule` must be a list of {{cron, timezone}}, got {show(body)}")
            schedules.extend(
                _schedule(entry, at.within(f"schedule[{i}]")) for i, entry in enumerate(listed)
            )
        elif name == _MANUAL:
            continue
        elif isinstance(name, str):
            event_at = at.within(f"event {quote(name)}")
            if not _is_event(name):
                event_at.fail(_NOT_AN_EVENT)
            topics.append(TriggerDef(kind="topic", pattern=name, filters=_filters(body, event_at)))
    found = tuple(topics + schedules)
    if len(found) > MAX_TRIGGERS:
        at.fail(f"too many triggers ({len(found)}); at most {MAX_TRIGGERS} are allowed")
    return found


def _is_event(name: str) -> bool:
    return bool(_EVENT_RE.fullmatch(name)) and not _VERSION_RE.fullmatch(name)


def text_triggers(value: Any, where: Where) -> tuple[TriggerDef, ...]:
    """The triggers of the API's ``trigger`` text (``"push, pull_request"``): its event
    names, as a file's `on:` list would give them."""
    if not isinstance(value, str):
        return ()  # refused as the `trigger` text itself
    for name in value.split(","):
        name = name.strip()
        if name and name not in KEYWORDS and not _is_event(name):
            where.within(f"`trigger` event {quote(name)}").fail(_NOT_AN_EVENT)
    return named_events(value)


def stored_triggers(value: Any, where: Where) -> tuple[TriggerDef, ...]:
    """The storage form (:meth:`TriggerDef.to_json`) read back and checked again; with
    none stored, those that the stored ``trigger`` text names."""
    value, trigger = value
    if value is None:
        return named_events(trigger) if isinstance(trigger, str) else ()
    if not isinstance(value, list | tuple):
        where.fail(f"`triggers` must be a list, got {show(value)}")
    found: list[TriggerDef] = []
    for i, body in enumerate(value):
        at = where.within(f"triggers[{i}]")
        entry = mapping(body, "a trigger", at)
        if "cron" in entry:
            found.append(_schedule(entry, at))
        else:
            found.append(
                TriggerDef(
                    kind="topic",
                    pattern=_pattern(entry.get("topic"), at),
                    filters=_filters(entry.get("filters"), at),
                )
            )
    return tuple(found)
