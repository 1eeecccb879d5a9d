"""The in-process channel the REST bridge uses inside ``trellis serve``:
every call answers exactly as the same call over the network does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

# The in-process channel is internal to `trellis serve`; only its own API can put it
# side by side with a network channel to the same handlers.
from trellis.server.api import _status
from trellis.server.api._auth import client_address
from trellis.server.api._local_channel import HandlerRegistry, LocalChannel

SERVICE = "trellis.test.Probe"
REGISTERED = "trellis.test.Registered"


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    meta = dict(context.invocation_metadata())
    context.send_initial_metadata([("x-initial", "i")])
    context.set_trailing_metadata([("x-trailer", "t"), ("x-bin", b"\x00\x01")])
    return request + b"|" + str(meta.get("x-echo", "")).encode()


def _abort(request: bytes, context: grpc.ServicerContext) -> bytes:
    _status.abort(
        context,
        grpc.StatusCode.NOT_FOUND,
        "no such thing",
        reason="thing_not_found",
        metadata=[("x-why", "gone")],
    )


def _crash(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise ValueError("kaboom")


def _set_code(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.PERMISSION_DENIED)
    context.set_details("nope")
    return b""


def _address(request: bytes, context: grpc.ServicerContext) -> bytes:
    return client_address(context).encode()


def _deadline(request: bytes, context: grpc.ServicerContext) -> bytes:
    remaining = context.time_remaining()
    return b"bounded" if remaining is not None and 0 < remaining <= 30 else b"unbounded"


def _count(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for i in range(3):
        yield str(i).encode()


class DenyInterceptor(grpc.ServerInterceptor):
    """Refuses calls that carry ``x-deny``, as the auth interceptor would."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        if ("x-deny", "1") in tuple(handler_call_details.invocation_metadata or ()):
            return grpc.unary_unary_rpc_method_handler(
                lambda request, context: context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")
            )
        return continuation(handler_call_details)


@pytest.fixture(scope="module")
def channels() -> Iterator[tuple[grpc.Channel, grpc.Channel]]:
    network_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), interceptors=[DenyInterceptor()]
    )
    registry = HandlerRegistry(network_server)
    uu = grpc.unary_unary_rpc_method_handler
    registry.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Echo": uu(_echo),
                    "Abort": uu(_abort),
                    "Crash": uu(_crash),
                    "SetCode": uu(_set_code),
                    "Address": uu(_address),
                    "Deadline": uu(_deadline),
                    "Count": grpc.unary_stream_rpc_method_handler(_count),
                },
            )
        ]
    )
    registry.add_registered_method_handlers(REGISTERED, {"Echo": uu(_echo)})
    port = registry.add_insecure_port("127.0.0.1:0")
    registry.start()
    network = grpc.insecure_channel(f"127.0.0.1:{port}")
    local = LocalChannel(registry, [DenyInterceptor()], grpc.insecure_channel(f"127.0.0.1:{port}"))
    try:
        yield network, local
    finally:
        network.close()
        local.close()
        registry.stop(None)


def outcome(channel: grpc.Channel, method: str, metadata: tuple[tuple[str, str], ...]) -> Any:
    call = channel.unary_unary(method)
    try:
        response, done = call.with_call(b"ping", timeout=10, metadata=metadata)
        return "ok", response, _ours(done.initial_metadata()), _ours(done.trailing_metadata())
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        return (
            error.code(),
            error.details(),
            _ours(error.initial_metadata()),
            _ours(error.trailing_metadata()),
        )


def _ours(metadata: Any) -> list[tuple[str, Any]]:
    """The metadata the handlers set (the network adds its own keys)."""
    return sorted((k, v) for k, v in metadata or () if k.startswith(("x-", _status.DETAILS_KEY)))


CASES = [
    (f"/{SERVICE}/Echo", (("x-echo", "hello"),)),
    (f"/{REGISTERED}/Echo", (("x-echo", "registered"),)),
    (f"/{SERVICE}/Abort", ()),
    (f"/{SERVICE}/Crash", ()),
    (f"/{SERVICE}/SetCode", ()),
    (f"/{SERVICE}/Address", (("x-forwarded-for", "203.0.113.7"),)),
    (f"/{SERVICE}/Deadline", ()),
    (f"/{SERVICE}/Echo", (("x-deny", "1"),)),
    (f"/{SERVICE}/Missing", ()),
]


@pytest.mark.parametrize(("method", "metadata"), CASES, ids=[f"{m} {md}" for m, md in CASES])
def test_a_local_call_answers_as_the_network_does(
    channels: tuple[grpc.Channel, grpc.Channel],
    method: str,
    metadata: tuple[tuple[str, str], ...],
) -> None:
    network, local = channels
    expected = outcome(network, method, metadata)
    assert outcome(local, method, metadata) == expected


def test_the_cases_cover_success_statuses_and_the_interceptor(
    channels: tuple[grpc.Channel, grpc.Channel],
) -> None:
    _, local = channels
    got = {m + str(md): outcome(local, m, md)[0] for m, md in CASES}
    assert got[f"/{SERVICE}/Echo" + str(CASES[0][1])] == "ok"
    assert outcome(local, f"/{SERVICE}/Echo", ())[2] == [("x-initial", "i")]
    assert got[f"/{SERVICE}/Abort()"] == grpc.StatusCode.NOT_FOUND
    assert got[f"/{SERVICE}/Crash()"] == grpc.StatusCode.UNKNOWN
    assert got[f"/{SERVICE}/Echo" + str(CASES[7][1])] == grpc.StatusCode.PERMISSION_DENIED
    assert got[f"/{SERVICE}/Missing()"] == grpc.StatusCode.UNIMPLEMENTED
    assert outcome(local, f"/{SERVICE}/Address", CASES[5][1])[1] == b"203.0.113.7"


def test_streams_go_over_the_network(channels: tuple[grpc.Channel, grpc.Channel]) -> None:
    _, local = channels
    assert list(local.unary_stream(f"/{SERVICE}/Count")(b"", timeout=10)) == [b"0", b"1", b"2"]
