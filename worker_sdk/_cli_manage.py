"""The operations commands of ``trellis``: apply (workflow files), cancel, runs, workers."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._cli_base import (
    EXIT_FAILED,
    EXIT_OK,
    _client,
    _error,
    _guard,
    format_table,
    format_time,
    run_state_name,
    worker_status_name,
)
from ._errors import InvalidArgument
from ._inputs import compact_json, from_struct
from ._pb import runs_pb2, workers_pb2

__all__ = ["add_manage_commands", "inputs_line"]

STDIN = "-"


def add_manage_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """Adds ``apply``, ``cancel``, ``runs`` and ``workers``; ``common`` is the
    parent parser of the server and credential options."""
    p = subparsers.add_parser(
        "apply",
        parents=[common],
        help="create workflows, or new versions of them, from workflow files",
        description="Sends each workflow file (YAML or JSON, as in WORKFLOWS_DIR) to the "
        "server, which validates it whole. The workflow id is the file's stem unless --id "
        "names it; an unchanged file keeps its version.",
    )
    p.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="a workflow file, or - for stdin (repeatable)",
    )
    p.add_argument(
        "--id",
        dest="workflow_id",
        metavar="WORKFLOW_ID",
        help="the workflow's id (with one -f; required with -f -)",
    )
    p.set_defaults(func=_guard(_cmd_apply))

    p = subparsers.add_parser(
        "cancel",
        parents=[common],
        help="cancel the latest run of a workflow, or one run",
        description="Queued jobs are cancelled at once; workers running the others are told "
        "to stop. A run that is already over is left as it is.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("workflow_id", nargs="?", metavar="WORKFLOW_ID", help="its latest run")
    which.add_argument("--run", dest="run_id", metavar="RUN_ID", help="a run instead of a workflow")
    p.set_defaults(func=_guard(_cmd_cancel))

    p = subparsers.add_parser("runs", parents=[common], help="list runs, newest first")
    p.add_argument("workflow_id", nargs="?", metavar="WORKFLOW_ID", help="only this workflow's")
    p.add_argument(
        "--limit", type=_positive, default=20, metavar="N", help="at most N runs (default 20)"
    )
    p.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    p.set_defaults(func=_guard(_cmd_runs))

    p = subparsers.add_parser("workers", parents=[common], help="list workers and their states")
    p.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    p.set_defaults(func=_guard(_cmd_workers))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _print_json(items: Sequence[dict[str, Any]]) -> None:
    print(json.dumps(list(items), indent=2))


# -- apply ---------------------------------------------------------------------


def _cmd_apply(args: argparse.Namespace) -> int:
    files: list[str] = args.files
    if args.workflow_id and len(files) > 1:
        raise ValueError("--id names one workflow: give it with a single -f")
    if STDIN in files and not args.workflow_id:
        raise ValueError("-f - needs --id: text from stdin has no file name to take it from")
    sources: list[tuple[str, str, str]] = []  # (shown name, workflow id, text)
    unreadable = False
    for name in files:
        try:
            text = sys.stdin.read() if name == STDIN else _read(Path(name))
        except ValueError as err:
            _error(f"{name}: {err}")
            unreadable = True
            continue
        shown = "<stdin>" if name == STDIN else name
        sources.append((shown, args.workflow_id or Path(name).stem, text))
    if unreadable:
        return EXIT_FAILED  # nothing applied: the files go together
    rejected = False
    with _client(args) as client:
        for shown, workflow_id, text in sources:
            try:
                workflow = client.create_workflow(text, workflow_id=workflow_id)
            except InvalidArgument as err:
                # The server's own message; the other files still go.
                _error(f"{shown}: {err}")
                rejected = True
                continue
            print(f"workflow {workflow.id}: version {workflow.version}", flush=True)
    return EXIT_FAILED if rejected else EXIT_OK


def _read(path: Path) -> str:
    try:
        # utf-8-sig, as the server reads WORKFLOWS_DIR: a BOM is not part of the text.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except OSError as err:
        raise ValueError(f"cannot read it: {err.strerror or err}") from None
    if not text.strip():
        raise ValueError("the file is empty")
    return text


# -- cancel --------------------------------------------------------------------


def _cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.run_id:
            run = client.cancel_run(args.run_id)
        else:
            run = client.cancel_workflow(args.workflow_id)
    print(f"run {run.run_id} of {run.workflow_id}: {run_state_name(run.state)}")
    return EXIT_OK


# -- runs ----------------------------------------------------------------------


def _cmd_runs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        runs = client.list_runs(args.workflow_id, limit=args.limit)
        if not runs and args.workflow_id:
            client.get_workflow(args.workflow_id)  # an unknown id is an error, not "none"
    if args.json:
        _print_json([_run_json(run) for run in runs])
        return EXIT_OK
    rows = [
        [
            run.run_id,
            run.workflow_id,
            str(run.workflow_version),
            run_state_name(run.state),
            format_time(run.created_at.ToMilliseconds()),
            format_time(run.finished_at.ToMilliseconds()),
            _shortened(inputs_line(run), _MAX_INPUTS_CELL),
        ]
        for run in runs
    ]
    header = ("RUN", "WORKFLOW", "VERSION", "STATE", "STARTED", "ENDED", "INPUTS")
    print(format_table(header, rows))
    return EXIT_OK


# The widest the INPUTS column of `trellis runs` gets; `--json` has them whole.
_MAX_INPUTS_CELL = 60


def inputs_line(run: runs_pb2.Run) -> str:
    """The run's inputs as one line of compact JSON (``{"count":3}``); ``""``
    when it has none."""
    inputs = from_struct(run.inputs)
    return compact_json(inputs) if inputs else ""


def _shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _run_json(run: runs_pb2.Run) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "workflow_id": run.workflow_id,
        "workflow_version": run.workflow_version,
        "state": run_state_name(run.state),
        "created_at_ms": run.created_at.ToMilliseconds(),
        "finished_at_ms": run.finished_at.ToMilliseconds() or None,
        "inputs": from_struct(run.inputs),
        "request_id": run.request_id if run.HasField("request_id") else None,
    }


# -- workers -------------------------------------------------------------------


def _cmd_workers(args: argparse.Namespace) -> int:
    with _client(args) as client:
        workers = client.list_workers()
    if args.json:
        _print_json([_worker_json(worker) for worker in workers])
        return EXIT_OK
    rows = [
        [
            worker.worker_id,
            ",".join(worker.labels),
            worker_status_name(worker.status),
            worker.current_job if worker.HasField("current_job") else "",
            format_time(worker.last_heartbeat.ToMilliseconds()),
        ]
        for worker in workers
    ]
    print(format_table(("WORKER", "LABELS", "STATE", "JOB", "LAST SEEN"), rows))
    return EXIT_OK


def _worker_json(worker: workers_pb2.Worker) -> dict[str, Any]:
    return {
        "worker_id": worker.worker_id,
        "labels": list(worker.labels),
        "status": worker_status_name(worker.status),
        "current_job": worker.current_job if worker.HasField("current_job") else None,
        "registered_at_ms": worker.registered_at.ToMilliseconds(),
        "last_heartbeat_ms": worker.last_heartbeat.ToMilliseconds(),
    }
