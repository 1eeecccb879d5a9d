"""The topic commands of ``trellis``: ``publish``, ``topics`` and ``records``."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from ._cli_base import EXIT_OK, _client, _guard, format_table, format_time
from ._inputs import compact_json, from_value
from ._pb import topics_pb2


def add_topic_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """Adds ``publish``, ``topics`` and ``records``; ``common`` is the parent
    parser of the server and credential options."""
    p = subparsers.add_parser(
        "publish",
        parents=[common],
        help="publish a value to a topic, starting the workflows it triggers",
        description='VALUE is read as JSON when it is JSON (72.5, true, {"a": 1}), '
        "else taken as text.",
    )
    p.add_argument("topic", metavar="TOPIC", help="e.g. mHv1.0/factory/line-1/temperature")
    p.add_argument("value", metavar="VALUE")
    p.add_argument("--source", default="", help="who sends the value, e.g. plc-01")
    p.set_defaults(func=_guard(_cmd_publish))

    p = subparsers.add_parser("topics", parents=[common], help="list topics by name")
    p.add_argument("prefix", nargs="?", default="", metavar="PREFIX", help="it and below it")
    p.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    p.set_defaults(func=_guard(_cmd_topics))

    p = subparsers.add_parser("records", parents=[common], help="a topic's records, newest first")
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("--since", type=_time, help="published at or after (ISO 8601 or epoch ms)")
    p.add_argument("--until", type=_time, help="published before (ISO 8601 or epoch ms)")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (default 100)")
    p.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    p.set_defaults(func=_guard(_cmd_records))


def _time(text: str) -> int:
    """Epoch milliseconds of ``2025-01-31T12:00:00Z`` (UTC unless it names an
    offset) or of a number of milliseconds."""
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time (2025-01-31T12:00:00Z or epoch milliseconds)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _cmd_publish(args: argparse.Namespace) -> int:
    with _client(args) as client:
        answer = client.publish(args.topic, _value(args.value), source=args.source)
    at = format_time(answer.record.published_at.ToMilliseconds())
    print(f"published to {answer.record.topic} at {at}: {len(answer.runs)} run(s) started")
    for run in answer.runs:
        print(f"run {run.run_id} of {run.workflow_id}")
    for skipped in answer.skipped:
        print(f"not started: {skipped.workflow_id}: {skipped.reason}")
    return EXIT_OK


def _cmd_topics(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.list_topics(args.prefix)
    if args.json:
        print(json.dumps([_topic_json(t) for t in found], indent=2))
        return EXIT_OK
    rows = [[t.name, format_time(t.last_published_at.ToMilliseconds())] for t in found]
    print(format_table(("TOPIC", "LAST PUBLISHED"), rows))
    return EXIT_OK


def _topic_json(topic: topics_pb2.Topic) -> dict[str, Any]:
    return {
        "name": topic.name,
        "parent": topic.parent,
        "created_at_ms": topic.created_at.ToMilliseconds() or None,
        "last_published_at_ms": topic.last_published_at.ToMilliseconds() or None,
    }


def _cmd_records(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.topic_records(
            args.topic, since=args.since, until=args.until, limit=max(1, args.limit)
        )
    if args.json:
        print(json.dumps([_record_json(r) for r in found], indent=2))
        return EXIT_OK
    rows = [
        [format_time(r.published_at.ToMilliseconds()), r.source, compact_json(from_value(r.value))]
        for r in found
    ]
    print(format_table(("PUBLISHED", "SOURCE", "VALUE"), rows))
    return EXIT_OK


def _record_json(record: topics_pb2.TopicRecord) -> dict[str, Any]:
    return {
        "topic": record.topic,
        "value": from_value(record.value),
        "source": record.source,
        "published_at_ms": record.published_at.ToMilliseconds(),
    }


__all__ = ["add_topic_commands"]
