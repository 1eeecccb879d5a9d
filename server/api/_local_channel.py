"""A gRPC channel to this process's own services, without the network.

``trellis serve`` runs the REST bridge next to the gRPC server. Over a
loopback connection every REST call crossed HTTP/2 twice and woke four
threads; that hop cost as much as the rest of the call. ``LocalChannel`` is
a :class:`grpc.Channel` whose unary calls run the very handlers the server
registered, through the same interceptors, in the calling thread: the bridge
cannot tell the difference (messages are still serialized across, statuses,
details and trailing metadata come back as from the network, and the peer is
the loopback address the bridge would have connected from). Streaming calls
(the SSE log follow) go over a real channel to the server.

``HandlerRegistry`` stands in for the server while services are added, and
records their handlers for the channel.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

import grpc

log = logging.getLogger(__name__)

# What the server sees as the caller: the loopback address the bridge would
# connect from (so that its forwarded x-forwarded-for is believed, as before).
LOCAL_PEER = "ipv4:127.0.0.1:0"

Metadata = Sequence[tuple[str, str | bytes]]

if TYPE_CHECKING:
    _UnaryUnary = grpc.UnaryUnaryMultiCallable[Any, Any]
else:  # generic only in the type stubs
    _UnaryUnary = grpc.UnaryUnaryMultiCallable


class HandlerRegistry(grpc.Server):
    """A ``grpc.Server`` that records the handlers added to it and passes
    everything on to the real server."""

    def __init__(self, server: grpc.Server) -> None:
        self._server = server
        self.methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self.generic: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]
    ) -> None:
        handlers = tuple(generic_rpc_handlers)
        self.generic.extend(handlers)
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        for name, handler in method_handlers.items():
            self.methods[f"/{service_name}/{name}"] = handler
        self._server.add_registered_method_handlers(service_name, method_handlers)

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float | None) -> threading.Event:
        return self._server.stop(grace)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout)

    def find(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The handler the server would pick for a call (before interceptors)."""
        handler = self.methods.get(details.method)
        if handler is not None:
            return handler
        for generic in self.generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None


class _CallDetails:
    __slots__ = ("invocation_metadata", "method")

    def __init__(self, method: str, invocation_metadata: tuple[Any, ...]) -> None:
        self.method = method
        self.invocation_metadata = invocation_metadata


class _Metadatum(NamedTuple):
    key: str
    value: str | bytes


class _Aborted(Exception):
    """Raised by ``abort``: the handler ended the call with a status."""


class _Finished(grpc.Call):
    """A local call that has ended: OK, with its metadata."""

    def __init__(self, trailers: Metadata, initial: Metadata = ()) -> None:
        self._trailers = tuple(_Metadatum(k, v) for k, v in trailers)
        self._initial = tuple(_Metadatum(k, v) for k, v in initial)

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.OK

    def details(self) -> str:
        return ""

    def initial_metadata(self) -> Any:
        return self._initial

    def trailing_metadata(self) -> Any:
        return self._trailers

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


class LocalRpcError(grpc.RpcError, _Finished):
    """A failed local call, read like a failed network call."""

    def __init__(
        self, code: grpc.StatusCode, details: str, trailers: Metadata, initial: Metadata = ()
    ) -> None:
        grpc.RpcError.__init__(self, f"{code.name}: {details}")
        _Finished.__init__(self, trailers, initial)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:  # as _Finished's (the two bases disagree on its type)
        return self._trailers


class _Context(grpc.ServicerContext):
    """The servicer's view of a local call."""

    def __init__(self, metadata: Metadata, deadline: float | None) -> None:
        self._metadata = tuple(_Metadatum(k, v) for k, v in metadata)
        self._deadline = deadline
        self._trailers: tuple[tuple[str, str | bytes], ...] = ()
        self.initial: tuple[tuple[str, str | bytes], ...] = ()
        self.status: grpc.StatusCode | None = None
        self.status_details = ""

    # -- RpcContext
    def is_active(self) -> bool:
        return self._deadline is None or time.monotonic() < self._deadline

    def time_remaining(self) -> Any:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    # -- ServicerContext
    def invocation_metadata(self) -> Any:
        return self._metadata

    def peer(self) -> str:
        return LOCAL_PEER

    def peer_identities(self) -> Iterable[bytes] | None:
        return None

    def peer_identity_key(self) -> str | None:
        return None

    def auth_context(self) -> Mapping[str, bytes]:
        return {}

    def send_initial_metadata(self, initial_metadata: Any) -> None:
        self.initial = tuple((k, v) for k, v in initial_metadata)

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._trailers = tuple((k, v) for k, v in trailing_metadata)

    def trailing_metadata(self) -> Any:
        return self._trailers

    def set_code(self, code: grpc.StatusCode) -> None:
        self.status = code

    def code(self) -> grpc.StatusCode | None:
        return self.status

    def details(self) -> str:
        return self.status_details

    def set_details(self, details: str) -> None:
        self.status_details = details

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        # As on the network, aborting with OK is an error of the application.
        self.status = grpc.StatusCode.UNKNOWN if code is grpc.StatusCode.OK else code
        self.status_details = details
        raise _Aborted(details)

    def abort_with_status(self, status: Any) -> NoReturn:
        self.set_trailing_metadata((*self._trailers, *status.trailing_metadata))
        self.abort(status.code, status.details)

    def error(self) -> LocalRpcError:
        return LocalRpcError(
            self.status or grpc.StatusCode.UNKNOWN,
            self.status_details,
            self._trailers,
            self.initial,
        )


class _LocalUnaryUnary(_UnaryUnary):
    def __init__(
        self,
        channel: LocalChannel,
        method: str,
        serialize: Callable[[Any], bytes],
        deserialize: Callable[[bytes], Any],
        fallback: _UnaryUnary,
    ) -> None:
        self._channel = channel
        self._method = method
        self._serialize = serialize
        self._deserialize = deserialize
        self._fallback = fallback

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self.with_call(request, timeout, metadata)[0]

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> tuple[Any, grpc.Call]:
        deadline = None if timeout is None else time.monotonic() + timeout
        context = _Context(tuple(metadata or ()), deadline)
        handler = self._channel.handler(_CallDetails(self._method, context.invocation_metadata()))
        if handler is None or handler.unary_unary is None:
            raise LocalRpcError(grpc.StatusCode.UNIMPLEMENTED, "Method not found!", ())
        wire = self._serialize(request)
        message = handler.request_deserializer(wire) if handler.request_deserializer else wire
        try:
            response = handler.unary_unary(message, context)
        except _Aborted:
            raise context.error() from None
        except Exception as exc:
            # What the network server answers for an exception it did not expect.
            log.exception("Exception calling application: %s", exc)
            raise LocalRpcError(
                grpc.StatusCode.UNKNOWN,
                f"Exception calling application: {exc}",
                context.trailing_metadata(),
                context.initial,
            ) from exc
        if context.status not in (None, grpc.StatusCode.OK):
            raise context.error()
        if deadline is not None and time.monotonic() > deadline:
            raise LocalRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", ())
        out = handler.response_serializer(response) if handler.response_serializer else response
        return self._deserialize(out), _Finished(context.trailing_metadata(), context.initial)

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._fallback.future(
            request, timeout, metadata, credentials, wait_for_ready, compression
        )


def _identity(value: Any) -> Any:
    return value


class LocalChannel(grpc.Channel):
    """Unary calls to the handlers of ``registry`` through ``interceptors``
    (in the server's order); everything else over ``network``, a channel to
    the same server."""

    def __init__(
        self,
        registry: HandlerRegistry,
        interceptors: Sequence[grpc.ServerInterceptor],
        network: grpc.Channel,
    ) -> None:
        self._registry = registry
        self._interceptors = tuple(interceptors)
        self._network = network

    def handler(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The handler for one call, as the server's interceptor pipeline makes it."""

        def at(index: int, call: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
            if index == len(self._interceptors):
                return self._registry.find(call)
            return self._interceptors[index].intercept_service(lambda c: at(index + 1, c), call)

        return at(0, details)

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool = False,
    ) -> grpc.UnaryUnaryMultiCallable[Any, Any]:
        return _LocalUnaryUnary(
            self,
            method,
            request_serializer or _identity,
            response_deserializer or _identity,
            self._network.unary_unary(method, request_serializer, response_deserializer),
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool = False,
    ) -> grpc.UnaryStreamMultiCallable[Any, Any]:
        return self._network.unary_stream(method, request_serializer, response_deserializer)

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool = False,
    ) -> grpc.StreamUnaryMultiCallable[Any, Any]:
        return self._network.stream_unary(method, request_serializer, response_deserializer)

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool = False,
    ) -> grpc.StreamStreamMultiCallable[Any, Any]:
        return self._network.stream_stream(method, request_serializer, response_deserializer)

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        self._network.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        self._network.unsubscribe(callback)

    def close(self) -> None:
        self._network.close()
