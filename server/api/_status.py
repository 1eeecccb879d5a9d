"""Ending a gRPC call with a status that carries a machine-readable reason.

Besides the code and message, every status the server sends travels as a
``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer, holding a
``google.rpc.ErrorInfo`` (domain ``trellis``) whose ``reason`` is stable and
snake_case: a specific one (``insufficient_scope``, ``lease_lost``...) or,
when the caller gives none, the code's own name (``not_found``,
``invalid_argument``). REST surfaces render it; ``metadata["http_status"]``
may ask for an HTTP status the code does not map to (seed 003's 422
``missing_organization``). :func:`abort` is how handlers end a call;
:func:`ensure_details` lets the call interceptor (``_wire``) add the details
to a status that was set some other way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"
DOMAIN = "trellis"
# A message travels twice (grpc-message, percent-encoded, and inside the details),
# and clients refuse trailers over 8 KiB by default: a message that echoes a huge
# input would arrive as RESOURCE_EXHAUSTED with nothing of it.
MAX_MESSAGE_BYTES = 1024


def _bounded(message: str) -> str:
    data = message.encode("utf-8", "replace")
    if len(data) <= MAX_MESSAGE_BYTES:
        return message
    return data[: MAX_MESSAGE_BYTES - 3].decode("utf-8", "ignore") + "..."


def default_reason(code: grpc.StatusCode) -> str:
    """The reason of a status that names nothing more specific: the code's name."""
    return str(code.name).lower()


def details(
    code: grpc.StatusCode, message: str, reason: str | None = None, http_status: int | None = None
) -> bytes:
    """The serialized ``google.rpc.Status`` for the trailer."""
    info = error_details_pb2.ErrorInfo(reason=reason or default_reason(code), domain=DOMAIN)
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
    """Ends the call with ``code``; its details and ``metadata`` go in the trailers.
    A message over MAX_MESSAGE_BYTES is cut."""
    message = _bounded(message)
    add_trailers(context, [*metadata, (DETAILS_KEY, details(code, message, reason, http_status))])
    context.abort(code, message)
    raise AssertionError("unreachable")  # abort raises


def error_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The error status the call was given (aborted or set), None while it has none."""
    # code() and details() are servicer context methods the type stubs lack.
    code = cast(Any, context).code()
    if not isinstance(code, grpc.StatusCode) or code is grpc.StatusCode.OK:
        return None
    return code


def ensure_details(context: grpc.ServicerContext) -> None:
    """Adds the default details to a call ended with an error status that has none."""
    code = error_code(context)
    if code is None:
        return
    trailers = tuple(context.trailing_metadata() or ())
    if any(key == DETAILS_KEY for key, _ in trailers):
        return
    text = cast(Any, context).details()
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text or "")
    if _bounded(message) != message:
        message = _bounded(message)
        context.set_details(message)
    context.set_trailing_metadata((*trailers, (DETAILS_KEY, details(code, message))))
