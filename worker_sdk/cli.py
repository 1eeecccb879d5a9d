"""Client subcommands of the ``trellis`` command line: worker, run, status, logs,
workflows, and the credentials ones: login, machine-user, token."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

from ._client import Client
from ._errors import TrellisError
from ._pb import jobs_pb2, logs_pb2, runs_pb2
from ._worker import Worker

__all__ = ["add_client_commands", "main"]

DEFAULT_TARGET = "localhost:50051"

Command = Callable[[argparse.Namespace], int]


def add_client_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``worker``, ``run``, ``status``, ``logs`` and ``workflows`` to a parser.

    Each subcommand sets ``args.func``, which returns the process exit code.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--target",
        metavar="HOST:PORT",
        help=f"Trellis gRPC server (env TRELLIS_TARGET, default {DEFAULT_TARGET})",
    )
    common.add_argument("--token", help="bearer token (env TRELLIS_TOKEN)")
    common.add_argument(
        "--organization-id", metavar="ID", help="organization (env TRELLIS_ORGANIZATION_ID)"
    )

    p = subparsers.add_parser(
        "worker",
        parents=[common],
        help="run shell-command jobs until SIGTERM/SIGINT",
        description="Takes jobs from the server and runs their commands with /bin/sh -c. "
        "SIGTERM or SIGINT stops taking jobs and lets running ones finish; a second "
        "signal stops at once.",
    )
    p.add_argument("--labels", default="", help="comma-separated worker labels")
    p.add_argument("--slots", type=int, default=1, help="jobs run at once (default 1)")
    p.add_argument("--worker-id", metavar="ID", help="default: <hostname>-<pid>-<random>")
    p.add_argument(
        "--lease-ttl", type=int, default=30, metavar="SECS", help="lease TTL (default 30)"
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECS",
        help="how long running jobs may finish after a signal (default 30)",
    )
    p.add_argument(
        "--pass-env",
        action="append",
        metavar="NAME",
        help="a worker variable jobs get too (repeatable; NAME or PREFIX*; "
        "env TRELLIS_WORKER_PASS_ENV, comma-separated)",
    )
    p.add_argument(
        "--secret-env",
        action="append",
        metavar="NAME",
        help="a variable jobs never get, masked in their logs (repeatable; NAME or PREFIX*; "
        "env TRELLIS_WORKER_SECRET_ENV, comma-separated)",
    )
    p.set_defaults(func=_guard(_cmd_worker))

    p = subparsers.add_parser("run", parents=[common], help="start a run of a workflow")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument(
        "--wait", action="store_true", help="wait for the run; exit 0 only if it succeeded"
    )
    p.add_argument(
        "--follow", action="store_true", help="print the jobs' logs as they run (implies --wait)"
    )
    p.add_argument("--timeout", type=float, metavar="SECS", help="give up waiting after SECS")
    p.set_defaults(func=_guard(_cmd_run))

    p = subparsers.add_parser("status", parents=[common], help="show jobs and their states")
    p.add_argument("workflow_id", nargs="?", metavar="WORKFLOW_ID")
    p.add_argument("--run", dest="run_id", metavar="RUN_ID", help="a run instead of a workflow")
    p.set_defaults(func=_guard(_cmd_status))

    p = subparsers.add_parser("logs", parents=[common], help="print a job's logs")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--run", dest="run_id", metavar="RUN_ID", help="default: the latest run")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    p.set_defaults(func=_guard(_cmd_logs))

    p = subparsers.add_parser("workflows", parents=[common], help="list workflows")
    p.set_defaults(func=_guard(_cmd_workflows))

    p = subparsers.add_parser(
        "login",
        parents=[common],
        help="sign in and print an access token",
        description="Prints a 15-minute access token for TRELLIS_TOKEN. The password comes "
        "from TRELLIS_PASSWORD, or is asked for.",
    )
    p.add_argument("--username", default="admin", help="default: admin")
    p.add_argument("--mfa-code", default="", metavar="CODE", help="the current TOTP code")
    p.set_defaults(func=_guard(_cmd_login))

    p = subparsers.add_parser(
        "machine-user",
        parents=[common],
        help="create a machine user (for workers) and print its token",
    )
    p.add_argument("username", metavar="USERNAME")
    p.add_argument("--name", default="", help="a display name")
    p.set_defaults(func=_guard(_cmd_machine_user))

    p = subparsers.add_parser(
        "token",
        parents=[common],
        help="create a personal access token and print it",
        description="Send it with --organization-id (or TRELLIS_ORGANIZATION_ID).",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--scope", action="append", default=[], help="a scope (repeatable); default: all yours"
    )
    p.add_argument("--days", type=int, default=30, help="lifetime in days (default 30)")
    p.set_defaults(func=_guard(_cmd_token))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the client subcommands alone (``python -m trellis.worker_sdk.cli``)."""
    parser = argparse.ArgumentParser(prog="trellis")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_client_commands(subparsers)
    args = parser.parse_args(argv)
    func: Command = args.func
    return func(args)


# -- plumbing ------------------------------------------------------------------


def _guard(command: Command) -> Command:
    """Expected failures become one line on stderr and a non-zero exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except TrellisError as err:
            _error(str(err))
            return 1
        except ValueError as err:  # bad option values caught by the SDK
            _error(str(err))
            return 2
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            # `trellis logs ... | head`: the reader left; that is not an error.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0

    run.__doc__ = command.__doc__
    return run


def _error(message: str) -> None:
    print(f"trellis: error: {message}", file=sys.stderr)


def _target(args: argparse.Namespace) -> str:
    return str(args.target or os.environ.get("TRELLIS_TARGET") or DEFAULT_TARGET)


def _token(args: argparse.Namespace) -> str | None:
    token = args.token or os.environ.get("TRELLIS_TOKEN")
    return str(token) if token else None


def _organization(args: argparse.Namespace) -> str | None:
    org = args.organization_id or os.environ.get("TRELLIS_ORGANIZATION_ID")
    return str(org) if org else None


def _client(args: argparse.Namespace) -> Client:
    return Client(_target(args), token=_token(args), organization_id=_organization(args))


def job_state_name(value: int) -> str:
    """``JOB_STATE_SUCCEEDED`` -> ``succeeded``."""
    try:
        name = str(jobs_pb2.JobState.Name(value))
    except ValueError:
        return str(value)
    return name.removeprefix("JOB_STATE_").lower()


def run_state_name(value: int) -> str:
    """``RUN_STATE_FAILED`` -> ``failed``."""
    try:
        name = str(runs_pb2.RunState.Name(value))
    except ValueError:
        return str(value)
    return name.removeprefix("RUN_STATE_").lower()


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; no trailing blanks."""
    rows = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _one_line(text: str, limit: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _job_rows(jobs: Iterable[jobs_pb2.Job], prefix: Sequence[str] = ()) -> list[list[str]]:
    rows = []
    for job in jobs:
        duration = f"{job.duration_secs}s" if job.HasField("duration_secs") else ""
        note = job.output if job.HasField("output") else ""
        rows.append(
            [
                *prefix,
                job.id,
                job_state_name(job.status),
                str(job.attempt),
                duration,
                _one_line(note),
            ]
        )
    return rows


_JOB_HEADER = ("JOB", "STATE", "ATTEMPT", "DURATION", "OUTPUT")
_FOLLOW_EVENTS = frozenset(
    {
        runs_pb2.RUN_EVENT_TYPE_JOB_QUEUED,
        runs_pb2.RUN_EVENT_TYPE_JOB_STARTED,
        runs_pb2.RUN_EVENT_TYPE_JOB_SUCCEEDED,
        runs_pb2.RUN_EVENT_TYPE_JOB_FAILED,
        runs_pb2.RUN_EVENT_TYPE_JOB_RETRYING,
    }
)


# -- commands ------------------------------------------------------------------


def _cmd_login(args: argparse.Namespace) -> int:
    """Prints an access token."""
    password = os.environ.get("TRELLIS_PASSWORD") or getpass.getpass(
        f"{args.username}'s password: "
    )
    with _client(args) as client:
        print(client.login(args.username, password, args.mfa_code))
    return 0


def _cmd_machine_user(args: argparse.Namespace) -> int:
    """Creates a machine user; prints its token."""
    with _client(args) as client:
        print(client.create_machine_user(args.username, args.name))
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    """Creates a personal access token; prints it."""
    with _client(args) as client:
        print(client.create_personal_access_token(args.name, args.scope, args.days))
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    worker = Worker(
        _target(args),
        worker_id=args.worker_id,
        labels=labels,
        slots=args.slots,
        lease_ttl_secs=args.lease_ttl,
        token=_token(args),
        organization_id=_organization(args),
        shell=True,
        pass_env=args.pass_env,
        secret_env=args.secret_env,
    )
    logging.getLogger("trellis.worker_sdk").info(
        "worker %s: %d slot(s), labels [%s], server %s",
        worker.worker_id,
        worker.slots,
        ",".join(labels),
        worker.target,
    )
    worker.run(drain_timeout=args.drain_timeout)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    with _client(args) as client:
        run = client.run_workflow(args.workflow_id)
        print(run.run_id, flush=True)
        if not (args.wait or args.follow):
            return 0
        printer = _LogPrinter(client, run.workflow_id or args.workflow_id, run.run_id)

        def on_event(event: runs_pb2.RunEvent) -> None:
            # Following from the moment a job is queued (not only started)
            # misses nothing: FollowLogs replays history before live lines.
            if args.follow and event.job_id and event.type in _FOLLOW_EVENTS:
                printer.follow(event.job_id)

        try:
            detail = client.wait_for_run(run.run_id, args.timeout, on_event=on_event)
        finally:
            printer.join(timeout=5.0)
        print(format_table(_JOB_HEADER, _job_rows(detail.jobs)))
        state = run_state_name(detail.run.state)
        print(f"run {detail.run.run_id}: {state}")
        return 0 if detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED else 1


class _LogPrinter:
    """Follows the logs of each started job in a thread, prefixing lines with the job id."""

    def __init__(self, client: Client, workflow_id: str, run_id: str) -> None:
        self._client = client
        self._workflow_id = workflow_id
        self._run_id = run_id
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}

    def follow(self, job_id: str) -> None:
        if job_id in self._threads:
            return
        t = threading.Thread(target=self._print, args=(job_id,), daemon=True)
        self._threads[job_id] = t
        t.start()

    def _print(self, job_id: str) -> None:
        try:
            for chunk in self._client.follow_logs(self._workflow_id, job_id, self._run_id):
                out = sys.stderr if chunk.stream == logs_pb2.LOG_STREAM_STDERR else sys.stdout
                with self._lock:
                    for line in chunk.data.splitlines():
                        print(f"[{job_id}] {line}", file=out)
                    out.flush()
        except TrellisError as err:
            with self._lock:
                _error(f"logs of {job_id}: {err}")

    def join(self, timeout: float) -> None:
        for t in list(self._threads.values()):
            t.join(timeout)


def _cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.run_id:
            detail = client.get_run(args.run_id)
            run = detail.run
            print(f"run {run.run_id} of {run.workflow_id}: {run_state_name(run.state)}")
            print(format_table(_JOB_HEADER, _job_rows(detail.jobs)))
        elif args.workflow_id:
            wf = client.get_workflow(args.workflow_id)
            if wf.run_id:
                print(f"workflow {wf.id}, run {wf.run_id}: {run_state_name(wf.run_state)}")
            else:
                print(f"workflow {wf.id}: never run")
            print(format_table(_JOB_HEADER, _job_rows(wf.jobs)))
        else:
            rows = []
            for wf in client.list_workflows():
                rows.extend(_job_rows(wf.jobs, prefix=(wf.id,)))
            print(format_table(("WORKFLOW", *_JOB_HEADER), rows))
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        chunks: Iterable[logs_pb2.LogChunk]
        if args.follow:
            chunks = client.follow_logs(args.workflow_id, args.job_id, args.run_id)
        else:
            chunks = client.list_logs(args.workflow_id, args.job_id, args.run_id)
        for chunk in chunks:
            out: TextIO = sys.stderr if chunk.stream == logs_pb2.LOG_STREAM_STDERR else sys.stdout
            out.write(chunk.data)
            out.flush()
    return 0


def _cmd_workflows(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = [
            [
                wf.id,
                wf.name,
                str(wf.version),
                wf.run_id,
                run_state_name(wf.run_state) if wf.run_id else "",
                str(len(wf.jobs)),
            ]
            for wf in client.list_workflows()
        ]
    print(format_table(("ID", "NAME", "VERSION", "LATEST RUN", "STATE", "JOBS"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
