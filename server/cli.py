"""The ``trellis`` command: ``serve`` here, client commands from the SDK."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from trellis.server.config import Config, days, whole_number


def config_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Config:
    """The environment's configuration (``env``, default ``os.environ``), with
    the flags of ``trellis serve`` over it."""
    config = Config.from_env(env)
    overrides: dict[str, object] = {}
    if args.database_url is not None:
        overrides["database_url"] = args.database_url
    if args.port is not None:
        overrides["port"] = args.port
    if args.grpc_port is not None:
        overrides["grpc_port"] = args.grpc_port
    if args.host is not None:
        overrides["host"] = args.host
    if args.workflows_dir is not None:
        # Empty means none, as for WORKFLOWS_DIR (Path("") is the current directory).
        overrides["workflows_dir"] = Path(args.workflows_dir) if args.workflows_dir else None
    if args.api_only:
        overrides["api_only"] = True
    if args.cors_origins is not None:
        overrides["cors_origins"] = tuple(o for o in args.cors_origins.split(",") if o)
    if args.reap_interval_secs is not None:
        overrides["reap_interval_secs"] = args.reap_interval_secs
    if args.max_lost_leases is not None:
        overrides["max_lost_leases"] = args.max_lost_leases
    if args.schedule_interval_secs is not None:
        overrides["schedule_interval_secs"] = args.schedule_interval_secs
    if args.schedule_catch_up is not None:
        overrides["schedule_catch_up"] = args.schedule_catch_up
    if args.event_retention_days is not None:
        overrides["event_retention_days"] = args.event_retention_days
    if args.egress_allow is not None:
        overrides["egress_allow"] = args.egress_allow
    if args.webhooks_config is not None:
        overrides["webhooks_config"] = Path(args.webhooks_config) if args.webhooks_config else None
    return dataclasses.replace(config, **overrides)  # type: ignore[arg-type]


def _serve(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:
        # A bad environment variable: its name and the fix, not a traceback.
        print(f"trellis: error: {exc}", file=sys.stderr)
        return 2

    from trellis.server.app import TrellisServer

    server = TrellisServer(config)
    try:
        server.start()
    except ValueError as exc:
        # A configuration that cannot work (e.g. a bad WEBHOOKS_CONFIG file).
        print(f"trellis: error: {exc}", file=sys.stderr)
        server.stop(grace=0)
        return 2
    where = f"gRPC on {config.host}:{server.grpc_port}, REST on {config.host}:{server.rest_port}"
    print(f"trellis: {where}", flush=True)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: shutting down", signum)
        server._stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.wait()
    server.stop(grace=10.0)
    return 0


def _count(text: str) -> int:
    try:
        return whole_number(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _days(text: str) -> float:
    try:
        return days(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trellis", description="Workflow and job orchestration.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gRPC server and the REST bridge")
    serve.add_argument(
        "--database-url", help="env DATABASE_URL (default sqlite:///data/trellis.db)"
    )
    serve.add_argument("--host", help="env HOST (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="REST port, env PORT (default 3000)")
    serve.add_argument("--grpc-port", type=int, help="env GRPC_PORT (default 50051)")
    serve.add_argument("--workflows-dir", help="env WORKFLOWS_DIR (default workflows/)")
    serve.add_argument("--api-only", action="store_true", help="env API_ONLY: no reaper")
    serve.add_argument("--cors-origins", help="env CORS_ORIGINS, comma-separated")
    serve.add_argument(
        "--reap-interval-secs", type=float, help="env REAP_INTERVAL_SECS (default 5)"
    )
    serve.add_argument(
        "--schedule-interval-secs", type=float, help="env SCHEDULE_INTERVAL_SECS (default 1)"
    )
    serve.add_argument(
        "--schedule-catch-up",
        choices=["latest", "skip"],
        help="env SCHEDULE_CATCH_UP: fires missed while down run once (latest) or not (skip)",
    )
    serve.add_argument(
        "--max-lost-leases",
        type=_count,
        help="env TRELLIS_MAX_LOST_LEASES (default 3): lost leases a job is queued again after",
    )
    serve.add_argument(
        "--event-retention-days",
        type=_days,
        help="env EVENT_RETENTION_DAYS (default 30; 0: keep events forever)",
    )
    serve.add_argument(
        "--egress-allow",
        help="env EGRESS_ALLOW: hosts and CIDR ranges webhooks may reach although private",
    )
    serve.add_argument(
        "--webhooks-config", help="env WEBHOOKS_CONFIG: a TOML file with a [webhooks] section"
    )
    serve.set_defaults(func=_serve)
    try:
        from trellis.worker_sdk.cli import add_client_commands
    except ImportError:  # the SDK's commands are optional for a bare server
        pass
    else:
        add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
