"""The event log's readers and what is delivered from it: webhooks, backend
callbacks and the egress guard every outgoing request passes."""

from __future__ import annotations

from trellis.server.events._egress import EgressPolicy, EgressRefused, GuardedClient
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
    "Deliverer",
    "DeliveryRecord",
    "DeliverySettings",
    "EgressPolicy",
    "EgressRefused",
    "EventReader",
    "GuardedClient",
    "LogSource",
    "WebhookRecord",
    "Webhooks",
]
