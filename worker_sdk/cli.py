"""Client subcommands of the ``trellis`` command line: worker, run, status, logs,
workflows, the operations ones (apply, cancel, runs, workers), ``workflow ...`` (a
workflow's lifecycle) and the credentials ones: login, machine-user, token."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TextIO

from ._cli_base import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMED_OUT,
    Command,
    _client,
    _error,
    _guard,
    _organization,
    _target,
    _token,
    common_options,
    format_table,
    job_state_name,
    run_state_name,
)
from ._cli_events import add_events_command
from ._cli_inputs import input_option, read_inputs_file, run_inputs
from ._cli_lifecycle import add_lifecycle_commands
from ._cli_manage import add_manage_commands, inputs_line
from ._cli_runs import add_runs_commands, non_negative
from ._cli_topics import add_topic_commands
from ._cli_webhooks import add_webhook_commands
from ._client import Client
from ._errors import DeadlineExceeded, TrellisError
from ._pb import jobs_pb2, logs_pb2, runs_pb2
from ._worker import Worker

__all__ = ["add_client_commands", "format_table", "main"]


def add_client_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the client subcommands (``worker``, ``run``, ``status``, ``logs``,
    ``workflows``, ``apply``, ``cancel``, ``runs``, ``workers``, ``publish``, ``topics``,
    ``records`` and the credentials ones) to a parser.

    Each subcommand sets ``args.func``, which returns the process exit code.
    """
    common = common_options()

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
    p.add_argument(
        "--input",
        dest="inputs",
        action="append",
        type=input_option,
        default=[],
        metavar="NAME=VALUE",
        help="an input's value, read as the type the workflow declares for it: a number, "
        "true/false, JSON, else the text as it is (repeatable)",
    )
    p.add_argument(
        "--inputs-file",
        metavar="FILE",
        help="a JSON or YAML mapping of input names to values (- for stdin); "
        "--input overrides its names",
    )
    p.add_argument(
        "--request-id",
        metavar="ID",
        help="makes the start safe to retry: a start with the id of an earlier one "
        "answers that run and starts none",
    )
    p.add_argument(
        "--parallel-limit",
        type=non_negative,
        default=0,
        metavar="N",
        help="at most N of the run's jobs at once (default: the workflow's limit, if any)",
    )
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

    add_manage_commands(subparsers, common)
    add_lifecycle_commands(subparsers, common)
    add_topic_commands(subparsers, common)
    add_events_command(subparsers, common)
    add_runs_commands(subparsers, common)
    add_webhook_commands(subparsers, common)

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


def _one_line(text: str, limit: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _job_rows(jobs: Iterable[jobs_pb2.Job], prefix: Sequence[str] = ()) -> list[list[str]]:
    rows = []
    for job in jobs:
        duration = f"{job.duration_secs}s" if job.HasField("duration_secs") else ""
        note = job.output if job.HasField("output") else job.waiting_reason
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
    from_file = read_inputs_file(args.inputs_file) if args.inputs_file else {}
    with _client(args) as client:
        inputs = run_inputs(client, args.workflow_id, from_file, args.inputs)
        run = client.run_workflow(
            args.workflow_id,
            inputs=inputs,
            request_id=args.request_id,
            parallel_limit=args.parallel_limit,
        )
        print(run.run_id, flush=True)
        if not (args.wait or args.follow):
            return EXIT_OK
        # The log streams end at the same deadline as the wait, so that the
        # whole follow is over when the timeout is.
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        printer = _LogPrinter(client, run.workflow_id or args.workflow_id, run.run_id, deadline)
        said: set[str] = set()

        def on_event(event: runs_pb2.RunEvent) -> None:
            # Following from the moment a job is queued (not only started)
            # misses nothing: FollowLogs replays history before live lines.
            if args.follow and event.job_id and event.type in _FOLLOW_EVENTS:
                printer.follow(event.job_id)
            if args.follow and event.type in _QUEUED_EVENTS and event.job_id not in said:
                _say_why_waiting(client, run.run_id, said)

        try:
            detail = client.wait_for_run(run.run_id, args.timeout, on_event=on_event)
        except DeadlineExceeded as err:
            printer.stop(_STREAM_GRACE_SECS)
            _error(str(err))
            return EXIT_TIMED_OUT
        finally:
            printer.stop(_LOG_DRAIN_SECS)
        print(format_table(_JOB_HEADER, _job_rows(detail.jobs)))
        state = run_state_name(detail.run.state)
        print(f"run {detail.run.run_id}: {state}")
        return EXIT_OK if detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED else EXIT_FAILED


# How long the log streams of a finished run may take to deliver their last
# lines, and how long streams that reached the timeout may take to end.
_LOG_DRAIN_SECS = 5.0
_STREAM_GRACE_SECS = 0.5


_QUEUED_EVENTS = frozenset(
    {runs_pb2.RUN_EVENT_TYPE_JOB_QUEUED, runs_pb2.RUN_EVENT_TYPE_JOB_RETRYING}
)


def _say_why_waiting(client: Client, run_id: str, said: set[str]) -> None:
    """Prints once, on stderr, why each job of the run that no connected
    worker can run is waiting."""
    try:
        jobs = client.get_run(run_id).jobs
    except TrellisError:
        return  # only a note: following the run goes on
    for job in jobs:
        if job.status == jobs_pb2.JOB_STATE_QUEUED and job.waiting_reason and job.id not in said:
            said.add(job.id)
            print(f"trellis: job {job.id} is waiting: {job.waiting_reason}", file=sys.stderr)


class _LogPrinter:
    """Follows the logs of each started job in a thread, prefixing lines with
    the job id, until the job ends or ``deadline`` (monotonic) passes."""

    def __init__(
        self, client: Client, workflow_id: str, run_id: str, deadline: float | None = None
    ) -> None:
        self._client = client
        self._workflow_id = workflow_id
        self._run_id = run_id
        self._deadline = deadline
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        # Set by stop(): a stream cut short after it is not an error to report.
        self._stopped = threading.Event()

    def follow(self, job_id: str) -> None:
        if job_id in self._threads:
            return
        t = threading.Thread(target=self._print, args=(job_id,), daemon=True)
        self._threads[job_id] = t
        t.start()

    def _print(self, job_id: str) -> None:
        timeout = None if self._deadline is None else self._deadline - time.monotonic()
        try:
            for chunk in self._client.follow_logs(
                self._workflow_id, job_id, self._run_id, timeout=timeout
            ):
                out = sys.stderr if chunk.stream == logs_pb2.LOG_STREAM_STDERR else sys.stdout
                with self._lock:
                    for line in chunk.data.splitlines():
                        print(f"[{job_id}] {line}", file=out)
                    out.flush()
        except DeadlineExceeded:
            pass  # the run's wait reports the timeout, once
        except TrellisError as err:
            with self._lock:
                if not self._stopped.is_set():
                    _error(f"logs of {job_id}: {err}")

    def stop(self, timeout: float) -> None:
        """Waits up to ``timeout`` seconds in all for the streams to end; any
        still open are then abandoned quietly (closing the client ends them).
        Only the first call waits."""
        if self._stopped.is_set():
            return
        until = time.monotonic() + timeout
        for t in list(self._threads.values()):
            t.join(max(0.0, until - time.monotonic()))
        with self._lock:
            self._stopped.set()


def _cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.run_id:
            detail = client.get_run(args.run_id)
            run = detail.run
            print(f"run {run.run_id} of {run.workflow_id}: {run_state_name(run.state)}")
            _print_inputs(run)
            print(format_table(_JOB_HEADER, _job_rows(detail.jobs)))
        elif args.workflow_id:
            wf = client.get_workflow(args.workflow_id)
            if wf.run_id:
                print(f"workflow {wf.id}, run {wf.run_id}: {run_state_name(wf.run_state)}")
                _print_inputs(client.get_run(wf.run_id).run)
            else:
                print(f"workflow {wf.id}: never run")
            print(format_table(_JOB_HEADER, _job_rows(wf.jobs)))
        else:
            rows = []
            for wf in client.list_workflows():
                rows.extend(_job_rows(wf.jobs, prefix=(wf.id,)))
            print(format_table(("WORKFLOW", *_JOB_HEADER), rows))
    return 0


def _print_inputs(run: runs_pb2.Run) -> None:
    line = inputs_line(run)
    if line:
        print(f"inputs: {line}")


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
