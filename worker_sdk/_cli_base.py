"""What the ``trellis`` client commands share: options, credentials from the
environment, exit codes, error lines and tables."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from ._client import DEFAULT_TARGET, Client
from ._errors import TrellisError
from ._pb import jobs_pb2, runs_pb2, workers_pb2

Command = Callable[[argparse.Namespace], int]

# Exit codes. 2 is also what argparse exits with on a usage error; 124 is
# what timeout(1) exits with when the command it ran timed out.
EXIT_OK = 0
EXIT_FAILED = 1  # the run failed or was cancelled, or the command failed
EXIT_USAGE = 2
EXIT_TIMED_OUT = 124


def common_options() -> argparse.ArgumentParser:
    """The server and credential options every client command takes (a parent parser)."""
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
    return common


def _guard(command: Command) -> Command:
    """Expected failures become one line on stderr and a non-zero exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except TrellisError as err:
            _error(str(err))
            return EXIT_FAILED
        except ValueError as err:  # bad option values caught by the SDK
            _error(str(err))
            return EXIT_USAGE
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            # `trellis logs ... | head`: the reader left; that is not an error.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_OK

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


def _short_name(enum: EnumTypeWrapper, value: int, prefix: str) -> str:
    try:
        name = str(enum.Name(value))
    except ValueError:
        return str(value)
    return name.removeprefix(prefix).lower()


def job_state_name(value: int) -> str:
    """``JOB_STATE_SUCCEEDED`` -> ``succeeded``."""
    return _short_name(jobs_pb2.JobState, value, "JOB_STATE_")


def run_state_name(value: int) -> str:
    """``RUN_STATE_FAILED`` -> ``failed``."""
    return _short_name(runs_pb2.RunState, value, "RUN_STATE_")


def worker_status_name(value: int) -> str:
    """``WORKER_STATUS_IDLE`` -> ``idle``."""
    return _short_name(workers_pb2.WorkerStatus, value, "WORKER_STATUS_")


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; no trailing blanks."""
    rows = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def format_time(ms: int) -> str:
    """Milliseconds since the epoch as UTC ISO 8601 (``2025-01-31T12:00:00Z``);
    ``""`` for 0 (not yet)."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
