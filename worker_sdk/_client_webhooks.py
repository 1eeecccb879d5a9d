"""Webhook subscriptions, for :class:`~trellis.worker_sdk.Client`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2

from ._channel import Connection, _unary
from ._pb import webhooks_pb2

_T = TypeVar("_T")

DELIVERY_STATUSES = {
    "": webhooks_pb2.WEBHOOK_DELIVERY_STATUS_UNSPECIFIED,
    "delivered": webhooks_pb2.WEBHOOK_DELIVERY_STATUS_DELIVERED,
    "retrying": webhooks_pb2.WEBHOOK_DELIVERY_STATUS_RETRYING,
    "failed": webhooks_pb2.WEBHOOK_DELIVERY_STATUS_FAILED,
}


class WebhookRpc:
    """The ``trellis.v1.WebhookService`` calls."""

    def __init__(self, ch: grpc.Channel) -> None:
        s = "WebhookService"
        m = webhooks_pb2
        self.CreateWebhook = _unary(
            ch, s, "CreateWebhook", m.CreateWebhookRequest, m.CreatedWebhook
        )
        self.ListWebhooks = _unary(
            ch, s, "ListWebhooks", m.ListWebhooksRequest, m.ListWebhooksResponse
        )
        self.GetWebhook = _unary(ch, s, "GetWebhook", m.GetWebhookRequest, m.Webhook)
        self.UpdateWebhook = _unary(ch, s, "UpdateWebhook", m.UpdateWebhookRequest, m.Webhook)
        self.DeleteWebhook = _unary(ch, s, "DeleteWebhook", m.DeleteWebhookRequest, empty_pb2.Empty)
        self.ListWebhookDeliveries = _unary(
            ch,
            s,
            "ListWebhookDeliveries",
            m.ListWebhookDeliveriesRequest,
            m.ListWebhookDeliveriesResponse,
        )
        self.GetBackendCallbackSecret = _unary(
            ch,
            s,
            "GetBackendCallbackSecret",
            m.GetBackendCallbackSecretRequest,
            m.BackendCallbackSecret,
        )


class WebhookClientMixin:
    """Subscriptions to the organization's events (``webhooks:read`` and
    ``webhooks:write``, held by administrators) and backend callback secrets."""

    _conn: Connection
    _webhook_rpc: WebhookRpc | None = None

    def _unary(self, method: Callable[..., _T], request: Any) -> _T:
        raise NotImplementedError  # Client's

    @property
    def _webhooks(self) -> WebhookRpc:
        if self._webhook_rpc is None:
            self._webhook_rpc = WebhookRpc(self._conn.channel)
        return self._webhook_rpc

    def create_webhook(
        self, url: str, event_types: Sequence[str] = (), *, description: str = ""
    ) -> webhooks_pb2.CreatedWebhook:
        """Subscribes ``url`` to events from now on (``event_types`` such as
        ``"job.succeeded"``; none: every event). The answer's ``secret``, which
        signs the deliveries, is shown this once."""
        request = webhooks_pb2.CreateWebhookRequest(
            url=url, event_types=list(event_types), description=description
        )
        created: webhooks_pb2.CreatedWebhook = self._unary(self._webhooks.CreateWebhook, request)
        return created

    def list_webhooks(self) -> list[webhooks_pb2.Webhook]:
        """Every subscription of the organization, oldest first."""
        found: list[webhooks_pb2.Webhook] = []
        token = ""
        while True:
            page = self._unary(
                self._webhooks.ListWebhooks, webhooks_pb2.ListWebhooksRequest(page_token=token)
            )
            found.extend(page.webhooks)
            token = page.next_page_token
            if not token:
                return found

    def set_webhook_enabled(self, webhook_id: str, enabled: bool) -> webhooks_pb2.Webhook:
        """Enables or disables a subscription; a disabled one keeps its position."""
        request = webhooks_pb2.UpdateWebhookRequest(webhook_id=webhook_id, enabled=enabled)
        changed: webhooks_pb2.Webhook = self._unary(self._webhooks.UpdateWebhook, request)
        return changed

    def delete_webhook(self, webhook_id: str) -> None:
        """Deletes a subscription and its delivery record."""
        self._unary(
            self._webhooks.DeleteWebhook, webhooks_pb2.DeleteWebhookRequest(webhook_id=webhook_id)
        )

    def list_webhook_deliveries(
        self, webhook_id: str, *, status: str = "", limit: int = 100
    ) -> list[webhooks_pb2.WebhookDelivery]:
        """The newest ``limit`` delivery attempts of a subscription (``status``:
        "delivered", "retrying" or "failed" for only those)."""
        if status not in DELIVERY_STATUSES:
            raise ValueError(f"status: one of {', '.join(s for s in DELIVERY_STATUSES if s)}")
        request = webhooks_pb2.ListWebhookDeliveriesRequest(
            webhook_id=webhook_id, status=DELIVERY_STATUSES[status], page_size=limit
        )
        page = self._unary(self._webhooks.ListWebhookDeliveries, request)
        return list(page.deliveries)

    def backend_callback_secret(self, backend_id: str) -> str:
        """The secret that signs the callbacks of a backend this machine user registered."""
        request = webhooks_pb2.GetBackendCallbackSecretRequest(backend_id=backend_id)
        answer = self._unary(self._webhooks.GetBackendCallbackSecret, request)
        return str(answer.secret)
