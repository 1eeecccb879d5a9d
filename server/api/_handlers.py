"""Rebuilding a gRPC method handler around its behaviour, for the server's
interceptors (wire checks, authentication): one place that knows the four
kinds of method."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

# ``around(behaviour, request_or_requests, context)`` runs the method: it calls
# ``behaviour(request_or_requests, context)`` itself, with whatever it adds.
Around = Callable[[Callable[..., Any], Any, grpc.ServicerContext], Any]


def rewrap(
    handler: grpc.RpcMethodHandler[Any, Any],
    around: Around,
    *,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its behaviour run by ``around``, its serializers kept
    (or its requests decoded by ``request_deserializer``)."""
    codec: dict[str, Any] = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        uu = handler.unary_unary
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: around(uu, request, context), **codec
        )
    if handler.unary_stream is not None:
        us = handler.unary_stream
        return grpc.unary_stream_rpc_method_handler(
            lambda request, context: around(us, request, context), **codec
        )
    if handler.stream_unary is not None:
        su = handler.stream_unary
        return grpc.stream_unary_rpc_method_handler(
            lambda requests, context: around(su, requests, context), **codec
        )
    ss = handler.stream_stream
    assert ss is not None
    return grpc.stream_stream_rpc_method_handler(
        lambda requests, context: around(ss, requests, context), **codec
    )


class Wrapped:
    """The handlers an interceptor made, by method: gRPC asks an interceptor
    for every call, and building the handler anew each time costs as much as
    a small call's own work. A handler is made again only when the one
    beneath it changed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    def get(
        self,
        method: str,
        handler: grpc.RpcMethodHandler[Any, Any],
        make: Callable[[grpc.RpcMethodHandler[Any, Any]], grpc.RpcMethodHandler[Any, Any]],
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``make(handler)``, or what it made for ``method`` from this ``handler`` before."""
        made = self._made.get(method)
        if made is not None and made[0] is handler:
            return made[1]
        wrapped = make(handler)
        with self._lock:
            self._made[method] = (handler, wrapped)
        return wrapped
