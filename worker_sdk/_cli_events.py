"""``trellis events``: the organization's event log, listed or followed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator

from ._cli_base import EXIT_OK, _client, _guard, format_time
from ._client_events import event_type, event_type_name, events_pb2
from ._inputs import compact_json, from_struct

__all__ = ["add_events_command", "event_line"]


def add_events_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """Adds ``events``; ``common`` is the parent parser of the server and
    credential options."""
    p = subparsers.add_parser(
        "events",
        parents=[common],
        help="print the event log (state changes of workflows, runs and jobs)",
        description="Prints one line per event, oldest first: cursor, time, type, "
        "workflow@version, run, job#attempt, message and data. Resume with --after and "
        "the cursor of the last line.",
    )
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument(
        "--after", metavar="CURSOR", default="", help="start after this cursor ('now': new only)"
    )
    p.add_argument("--run", dest="run_id", metavar="RUN_ID", help="only this run's events")
    p.add_argument("--workflow", dest="workflow_id", metavar="ID", help="only this workflow's")
    p.add_argument("--job", dest="job_id", metavar="JOB_ID", help="only this job's")
    p.add_argument(
        "--type",
        dest="types",
        action="append",
        type=_type_option,
        default=[],
        metavar="TYPE",
        help="only events of this type, e.g. job_failed (repeatable)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=1000,
        metavar="N",
        help="without --follow: print at most N events (default 1000)",
    )
    p.set_defaults(func=_guard(_cmd_events))


def _type_option(text: str) -> int:
    try:
        return event_type(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def event_line(event: events_pb2.Event) -> str:
    """One event as a line of ``trellis events``."""
    workflow = f"{event.workflow_id}@{event.workflow_version}" if event.workflow_id else "-"
    job = f"{event.job_id}#{event.attempt}" if event.job_id else "-"
    cells = [
        event.cursor,
        format_time(event.occurred_at.ToMilliseconds()),
        event_type_name(event.type),
        workflow,
        event.run_id or "-",
        job,
    ]
    if event.message:
        cells.append(compact_json(event.message))
    if event.HasField("data"):
        cells.append(compact_json(from_struct(event.data)))
    return "  ".join(cells)


def _listed(args: argparse.Namespace) -> Iterator[events_pb2.Event]:
    with _client(args) as client:
        after, left = str(args.after), int(args.limit)
        while left > 0:
            page = client.list_events(
                after,
                run_id=args.run_id,
                workflow_id=args.workflow_id,
                job_id=args.job_id,
                types=args.types,
                page_size=min(left, 1000),
            )
            yield from page.events[:left]
            left -= len(page.events)
            if not page.events or page.next_cursor == after:
                return
            after = page.next_cursor


def _followed(args: argparse.Namespace) -> Iterator[events_pb2.Event]:
    with _client(args) as client:
        yield from client.follow_events(
            args.after,
            run_id=args.run_id,
            workflow_id=args.workflow_id,
            job_id=args.job_id,
            types=args.types,
        )


def _print(events: Iterable[events_pb2.Event]) -> None:
    for event in events:
        print(event_line(event), flush=True)


def _cmd_events(args: argparse.Namespace) -> int:
    """List (or follow) the event log."""
    if args.after == "now" and not args.follow:
        print("trellis: error: --after now needs --follow", file=sys.stderr)
        return 2
    _print(_followed(args) if args.follow else _listed(args))
    return EXIT_OK
