"""The commands of ``trellis`` on runs past their first try: retry, rollback,
progress, and run-adhoc (a run of a workflow file not stored as a workflow)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._cli_base import EXIT_OK, _client, _guard, run_state_name
from ._pb import runs_pb2

__all__ = ["add_runs_commands", "non_negative"]


def add_runs_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """Adds ``retry``, ``rollback``, ``progress`` and ``run-adhoc``; ``common``
    is the parent parser of the server and credential options."""
    p = subparsers.add_parser(
        "retry",
        parents=[common],
        help="run a finished run's failed, cancelled and skipped jobs again",
        description="Starts the run's next attempt: jobs that succeeded keep their outputs, "
        "the others and what depends on them run again.",
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.set_defaults(func=_guard(_cmd_retry))

    p = subparsers.add_parser(
        "rollback",
        parents=[common],
        help="run the compensations of a finished run's succeeded jobs",
        description="Each compensation runs as a job of its own, after those of the jobs "
        "that depend on its job.",
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument(
        "--job",
        dest="jobs",
        action="append",
        default=[],
        metavar="JOB_ID",
        help="only this job's compensation (repeatable): a partial rollback",
    )
    p.set_defaults(func=_guard(_cmd_rollback))

    p = subparsers.add_parser(
        "progress", parents=[common], help="show how far a run is, and the time left"
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.set_defaults(func=_guard(_cmd_progress))

    p = subparsers.add_parser(
        "run-adhoc",
        parents=[common],
        help="start a run of a workflow file without storing the workflow",
        description="The file (YAML or JSON, - for stdin) is validated as `apply` validates "
        "one; the run's workflow id is adhoc-<run id>.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--parallel-limit",
        type=non_negative,
        default=0,
        metavar="N",
        help="at most N of the run's jobs at once",
    )
    p.set_defaults(func=_guard(_cmd_run_adhoc))


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _say(run: runs_pb2.Run) -> None:
    attempt = f" (attempt {run.attempt})" if run.attempt > 1 else ""
    print(f"run {run.run_id} of {run.workflow_id}: {run_state_name(run.state)}{attempt}")


def _cmd_retry(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _say(client.retry_run(args.run_id))
    return EXIT_OK


def _cmd_rollback(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _say(client.rollback_run(args.run_id, args.jobs))
    return EXIT_OK


def _cmd_progress(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.run_progress(args.run_id)
    print(f"run {found.run_id}: {run_state_name(found.state)}")
    print(f"done: {found.jobs_done}/{found.jobs_total} ({found.jobs_failed} failed)")
    print(f"running: {', '.join(found.running_jobs) or '-'}")
    print(f"queued: {', '.join(found.queued_jobs) or '-'}")
    if found.HasField("estimated_secs_left"):
        print(f"time left: about {found.estimated_secs_left} s")
    return EXIT_OK


def _cmd_run_adhoc(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    with _client(args) as client:
        run = client.run_adhoc(text, parallel_limit=args.parallel_limit)
    print(run.run_id, flush=True)
    return EXIT_OK
