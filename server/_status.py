"""Ending a gRPC call with a status that carries a machine-readable reason.

Besides the code and message, the status travels as a ``google.rpc.Status``
in the ``grpc-status-details-bin`` trailer, holding a ``google.rpc.ErrorInfo``
whose ``reason`` (e.g. ``insufficient_scope``) REST surfaces render and
whose ``metadata["http_status"]`` may ask for an HTTP status the code does
not map to (seed 003's 422 ``missing_organization``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"
DOMAIN = "trellis"


def details(
    code: grpc.StatusCode, message: str, reason: str, http_status: int | None = None
) -> bytes:
    """The serialized ``google.rpc.Status`` for the trailer."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)
    if http_status is not None:
        info.metadata["http_status"] = str(http_status)
    packed = any_pb2.Any()
    packed.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[packed])
    return bytes(status.SerializeToString())


def add_trailers(context: grpc.ServicerContext, pairs: Iterable[tuple[str, str | bytes]]) -> None:
    """Adds ``pairs`` to the call's trailing metadata (setting it replaces)."""
    existing = tuple(context.trailing_metadata() or ())
    context.set_trailing_metadata((*existing, *pairs))


def abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str | None = None,
    http_status: int | None = None,
    metadata: Iterable[tuple[str, str]] = (),
) -> NoReturn:
    """Ends the call with ``code``; ``reason`` and ``metadata`` go in the trailers."""
    trailers: list[tuple[str, str | bytes]] = list(metadata)
    if reason:
        trailers.append((DETAILS_KEY, details(code, message, reason, http_status)))
    if trailers:
        add_trailers(context, trailers)
    context.abort(code, message)
    raise AssertionError("unreachable")  # abort raises
