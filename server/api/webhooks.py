"""WebhookService (webhooks.proto), translated to and from ``events.Webhooks``."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from trellis.server.api._auth import current_principal
from trellis.server.api._edge import unary
from trellis.server.core.times import timestamp
from trellis.server.events import DeliveryRecord, WebhookRecord, Webhooks
from trellis.v1 import webhooks_pb2, webhooks_pb2_grpc

_STATUS = {
    "delivered": webhooks_pb2.WEBHOOK_DELIVERY_STATUS_DELIVERED,
    "retrying": webhooks_pb2.WEBHOOK_DELIVERY_STATUS_RETRYING,
    "failed": webhooks_pb2.WEBHOOK_DELIVERY_STATUS_FAILED,
}
_STATUS_NAME = {v: k for k, v in _STATUS.items()}


def _webhook(w: WebhookRecord) -> webhooks_pb2.Webhook:
    return webhooks_pb2.Webhook(
        id=w.id,
        url=w.url,
        description=w.description,
        event_types=list(w.event_types),
        enabled=w.enabled,
        source=w.source,
        backend_id=w.backend_id,
        secret_hint=w.secret_hint,
        cursor=w.cursor,
        created_at=timestamp(w.created_at_ms),
        updated_at=timestamp(w.updated_at_ms),
    )


def _delivery(d: DeliveryRecord) -> webhooks_pb2.WebhookDelivery:
    return webhooks_pb2.WebhookDelivery(
        delivery_id=d.delivery_id,
        webhook_id=d.webhook_id,
        event_cursor=d.event_cursor,
        event_type=d.event_type,
        attempt=d.attempt,
        status=_STATUS[d.status],
        status_code=d.status_code,
        answer=d.answer,
        error=d.error,
        attempted_at=timestamp(d.attempted_at_ms),
        next_attempt_at=timestamp(d.next_attempt_ms),
    )


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    def __init__(self, webhooks: Webhooks) -> None:
        self.w = webhooks

    @unary
    def CreateWebhook(
        self, request: webhooks_pb2.CreateWebhookRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.CreatedWebhook:
        created = self.w.create(
            current_principal(),
            request.url,
            event_types=request.event_types,
            description=request.description,
            enabled=not request.disabled,
        )
        return webhooks_pb2.CreatedWebhook(webhook=_webhook(created.webhook), secret=created.secret)

    @unary
    def ListWebhooks(
        self, request: webhooks_pb2.ListWebhooksRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.ListWebhooksResponse:
        page = self.w.list(current_principal(), size=request.page_size, token=request.page_token)
        return webhooks_pb2.ListWebhooksResponse(
            webhooks=[_webhook(w) for w in page.items], next_page_token=page.next_page_token
        )

    @unary
    def GetWebhook(
        self, request: webhooks_pb2.GetWebhookRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.Webhook:
        return _webhook(self.w.get(current_principal(), request.webhook_id))

    @unary
    def UpdateWebhook(
        self, request: webhooks_pb2.UpdateWebhookRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.Webhook:
        changed = self.w.update(
            current_principal(),
            request.webhook_id,
            enabled=request.enabled if request.HasField("enabled") else None,
            event_types=list(request.event_types),
        )
        return _webhook(changed)

    @unary
    def DeleteWebhook(
        self, request: webhooks_pb2.DeleteWebhookRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self.w.delete(current_principal(), request.webhook_id)
        return empty_pb2.Empty()

    @unary
    def ListWebhookDeliveries(
        self, request: webhooks_pb2.ListWebhookDeliveriesRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.ListWebhookDeliveriesResponse:
        page = self.w.deliveries(
            current_principal(),
            request.webhook_id,
            status=_STATUS_NAME.get(request.status, ""),
            size=request.page_size,
            token=request.page_token,
        )
        return webhooks_pb2.ListWebhookDeliveriesResponse(
            deliveries=[_delivery(d) for d in page.items], next_page_token=page.next_page_token
        )

    @unary
    def GetBackendCallbackSecret(
        self, request: webhooks_pb2.GetBackendCallbackSecretRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.BackendCallbackSecret:
        secret = self.w.backend_secret(current_principal(), request.backend_id)
        return webhooks_pb2.BackendCallbackSecret(backend_id=request.backend_id, secret=secret)


def add_to(server: grpc.Server, webhooks: Webhooks) -> None:
    # The generated registration helper is untyped.
    webhooks_pb2_grpc.add_WebhookServiceServicer_to_server(  # type: ignore[no-untyped-call]
        WebhookServicer(webhooks), server
    )
