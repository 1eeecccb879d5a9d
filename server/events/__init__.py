"""The events layer: the event log's readers (pages and followers), its
retention, and what is delivered from it: webhooks, backend callbacks and the
egress guard every outgoing request passes. Its writer is in core
(``trellis.server.core.eventlog``), so that every layer appends events in its
own transactions.
"""

from trellis.server.core.eventlog import EventType
from trellis.server.events._cursor import Cursor
from trellis.server.events._egress import EgressPolicy, EgressRefused, GuardedClient
from trellis.server.events._reader import EventLog, Filter, Wakeups, cursor_of, render
from trellis.server.events._retention import prune
from trellis.server.events._source import LogSource
from trellis.server.events._webhooks import (
    CreatedWebhook,
    Deliverer,
    DeliveryRecord,
    DeliverySettings,
    EventReader,
    WebhookRecord,
    Webhooks,
)

__all__ = [
    "CreatedWebhook",
    "Cursor",
    "Deliverer",
    "DeliveryRecord",
    "DeliverySettings",
    "EgressPolicy",
    "EgressRefused",
    "EventLog",
    "EventReader",
    "EventType",
    "Filter",
    "GuardedClient",
    "LogSource",
    "Wakeups",
    "WebhookRecord",
    "Webhooks",
    "cursor_of",
    "prune",
    "render",
]
