"""Credentials on a channel, for callers that use the generated stubs directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from ._channel import call_metadata


class _Credentials(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the bearer token and organization to calls that carry neither."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _with(self, details: Any) -> Any:
        sent = list(details.metadata or ())
        keys = {key for key, _ in sent}
        sent.extend((k, v) for k, v in self._metadata if k not in keys)
        return details._replace(metadata=sent)

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._with(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._with(details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return continuation(self._with(details), requests)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return continuation(self._with(details), requests)


def authorized_channel(
    channel: grpc.Channel, token: str, organization_id: str | None = None
) -> grpc.Channel:
    """``channel`` sending ``authorization: Bearer <token>`` (and
    ``x-organization-id``) on every call, for use with the generated stubs::

        channel = authorized_channel(grpc.insecure_channel("localhost:50051"), token)
        WorkflowServiceStub(channel).ListWorkflows(ListWorkflowsRequest())

    Closing the original channel closes this one.
    """
    return grpc.intercept_channel(channel, _Credentials(call_metadata(token, organization_id)))
