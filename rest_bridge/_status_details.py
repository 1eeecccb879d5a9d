"""What a failed RPC says beyond its code: the ``google.rpc.ErrorInfo`` in its trailers.

The server attaches a ``google.rpc.Status`` under ``grpc-status-details-bin`` whose
details hold an ErrorInfo: a snake_case ``reason`` (``insufficient_scope``) that REST
surfaces render, and optionally ``metadata["http_status"]``, an HTTP status the gRPC
code does not map to (a 422). Without one, or when its reason is only the code's
name, the reason is derived from the code (:data:`REASON_OF_CODE`). The trailer comes
from the network: anything malformed in it is ignored, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

_log = logging.getLogger(__name__)

DETAILS_KEY = "grpc-status-details-bin"

#: Reason of a failure whose server attached no ErrorInfo. Names follow HTTP
#: vocabulary rather than gRPC's, since REST clients read them.
REASON_OF_CODE: Mapping[grpc.StatusCode, str] = {
    grpc.StatusCode.CANCELLED: "cancelled",
    grpc.StatusCode.UNKNOWN: "internal_error",
    grpc.StatusCode.INVALID_ARGUMENT: "bad_request",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.ALREADY_EXISTS: "already_exists",
    grpc.StatusCode.PERMISSION_DENIED: "forbidden",
    grpc.StatusCode.UNAUTHENTICATED: "unauthorized",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate_limited",
    grpc.StatusCode.FAILED_PRECONDITION: "failed_precondition",
    grpc.StatusCode.ABORTED: "conflict",
    grpc.StatusCode.OUT_OF_RANGE: "out_of_range",
    grpc.StatusCode.UNIMPLEMENTED: "not_implemented",
    grpc.StatusCode.INTERNAL: "internal_error",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DATA_LOSS: "internal_error",
}

# An override outside the error classes would turn a failure into a success or a
# redirect for the client; such values are ignored.
_OVERRIDE_RANGE = range(400, 600)


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """The ErrorInfo of a failed call, as far as it could be read."""

    reason: str
    domain: str = ""
    http_status: int | None = None
    """``metadata["http_status"]`` when it is a valid 4xx/5xx status."""
    metadata: Mapping[str, str] = field(default_factory=dict)


def reason_for_code(code: grpc.StatusCode) -> str:
    """The reason of a failure with no ErrorInfo (see :data:`REASON_OF_CODE`)."""
    return REASON_OF_CODE.get(code, "internal_error")


def decode_status_details(data: bytes) -> ErrorDetails | None:
    """The first ErrorInfo in a serialized ``google.rpc.Status``; None when absent or
    unreadable (malformed bytes, a details entry of another type, an empty reason)."""
    try:
        status = status_pb2.Status.FromString(data)
    except (DecodeError, ValueError, TypeError):
        _log.warning("ignoring a malformed %s trailer (%d bytes)", DETAILS_KEY, len(data))
        return None
    for packed in status.details:
        if not packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            continue
        info = error_details_pb2.ErrorInfo()
        try:
            if not packed.Unpack(info):
                continue
        except (DecodeError, ValueError, TypeError):
            _log.warning("ignoring a malformed ErrorInfo in %s", DETAILS_KEY)
            continue
        if not info.reason:
            continue
        metadata = dict(info.metadata)
        return ErrorDetails(
            reason=info.reason,
            domain=info.domain,
            http_status=_http_status(metadata.get("http_status")),
            metadata=metadata,
        )
    return None


def details_from_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> ErrorDetails | None:
    """The ErrorInfo carried in trailing metadata, if any could be read."""
    for key, value in metadata or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            details = decode_status_details(value)
            if details is not None:
                return details
    return None


@dataclass(frozen=True, slots=True)
class RpcFailure:
    """Everything an error answer needs from a failed RPC."""

    code: grpc.StatusCode
    message: str
    reason: str
    http_status: int | None
    """The HTTP status the server asked for; None to map it from ``code``."""


def rpc_failure(error: grpc.RpcError) -> RpcFailure:
    """Reads code, message and ErrorInfo from a failed call.

    A bare RpcError (not a ``grpc.Call``) reads as UNKNOWN with no details.
    """
    if not isinstance(error, grpc.Call):
        code = grpc.StatusCode.UNKNOWN
        return RpcFailure(code, _default_message(code), reason_for_code(code), None)
    code = error.code()
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    message = error.details() or _default_message(code)
    details = details_from_metadata(error.trailing_metadata())
    if details is None:
        return RpcFailure(code, message, reason_for_code(code), None)
    reason = details.reason
    if reason == code.name.lower():
        # A reason that only names the code (``invalid_argument``) says no more than
        # the code, and REST clients know the code's reason in HTTP words.
        reason = reason_for_code(code)
    return RpcFailure(code, message, reason, details.http_status)


def _default_message(code: grpc.StatusCode) -> str:
    return code.name.replace("_", " ").lower()


def _http_status(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        status = int(text.strip())
    except ValueError:
        return None
    return status if status in _OVERRIDE_RANGE else None
