"""``trellis webhook create|list|delete|deliveries``."""

from __future__ import annotations

import argparse

from ._cli_base import EXIT_OK, _client, _guard, format_table, format_time
from ._client_webhooks import DELIVERY_STATUSES
from ._pb import webhooks_pb2


def add_webhook_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """Adds ``webhook`` and its subcommands; ``common`` is the parent parser of
    the server and credential options."""
    top = subparsers.add_parser("webhook", help="webhook subscriptions and their deliveries")
    sub = top.add_subparsers(dest="webhook_command", required=True)

    p = sub.add_parser(
        "create",
        parents=[common],
        help="subscribe a URL to events",
        description="Prints the subscription's id and its signing secret (shown this once).",
    )
    p.add_argument("url", metavar="URL")
    p.add_argument(
        "--event",
        dest="events",
        action="append",
        default=[],
        metavar="TYPE",
        help="an event type such as job.succeeded (repeatable; default: every event)",
    )
    p.add_argument("--description", default="")
    p.set_defaults(func=_guard(_cmd_create))

    p = sub.add_parser("list", parents=[common], help="list subscriptions")
    p.set_defaults(func=_guard(_cmd_list))

    p = sub.add_parser("delete", parents=[common], help="delete a subscription")
    p.add_argument("webhook_id", metavar="WEBHOOK_ID")
    p.set_defaults(func=_guard(_cmd_delete))

    p = sub.add_parser(
        "deliveries", parents=[common], help="a subscription's delivery attempts, newest first"
    )
    p.add_argument("webhook_id", metavar="WEBHOOK_ID")
    p.add_argument("--status", choices=[s for s in DELIVERY_STATUSES if s], default="")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="at most N (default 20)")
    p.set_defaults(func=_guard(_cmd_deliveries))


def _cmd_create(args: argparse.Namespace) -> int:
    with _client(args) as client:
        created = client.create_webhook(args.url, args.events, description=args.description)
    print(f"{created.webhook.id}\t{created.secret}")
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        hooks = client.list_webhooks()
    rows = [
        [
            w.id,
            w.source,
            "yes" if w.enabled else "no",
            ",".join(w.event_types) or "*",
            w.url,
        ]
        for w in hooks
    ]
    print(format_table(("WEBHOOK", "SOURCE", "ENABLED", "EVENTS", "URL"), rows))
    return EXIT_OK


def _cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.delete_webhook(args.webhook_id)
    return EXIT_OK


def _status(value: int) -> str:
    name = webhooks_pb2.WebhookDeliveryStatus.Name(value)  # type: ignore[arg-type, unused-ignore]
    return str(name).removeprefix("WEBHOOK_DELIVERY_STATUS_").lower()


def _cmd_deliveries(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.list_webhook_deliveries(
            args.webhook_id, status=args.status, limit=args.limit
        )
    rows = [
        [
            d.delivery_id,
            d.event_type,
            str(d.attempt),
            _status(d.status),
            str(d.status_code or ""),
            format_time(d.attempted_at.ToMilliseconds()),
            (d.error or d.answer).replace("\n", " ")[:60],
        ]
        for d in found
    ]
    header = ("DELIVERY", "EVENT", "ATTEMPT", "STATUS", "CODE", "AT", "ANSWER")
    print(format_table(header, rows))
    return EXIT_OK
