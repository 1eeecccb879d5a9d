"""Error answers: gRPC status -> HTTP status, and the JSON error bodies of each style.

Each body is built from four things: the HTTP status, the gRPC status, the message,
and a snake_case ``reason`` (the server's ErrorInfo reason, else one derived from the
gRPC code, see ``_status_details``; the bridge's own errors derive it from the HTTP
status). The ``trellis.v1.ErrorStyle`` of the route's service picks the shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import flask
import grpc

from trellis.v1 import options_pb2

from ._json_values import Json
from ._response_headers import apply_headers, call_headers
from ._status_details import reason_for_code, rpc_failure
from ._surface import answer_headers

#: HTTP status of each gRPC status, per google/rpc/code.proto.
HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

# The bridge's own errors (routing, body limits) carry a gRPC status name too, so that
# clients see one vocabulary. 405 and 413 follow grpc-gateway and gRPC itself.
_STATUS_OF_HTTP: Mapping[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

DEFAULT_STYLE = options_pb2.ERROR_STYLE_GOOGLE

# Reasons of the bridge's own errors, which have an HTTP status but no gRPC call;
# 405 and 413 get their own rather than the gRPC code's (UNIMPLEMENTED is not
# "not implemented" here, and RESOURCE_EXHAUSTED is not a rate limit).
_REASON_OF_HTTP: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
    504: "timeout",
}

# RFC 6749 names some generic failures itself (sections 4.1.2.1 and 5.2); OAuth2
# clients switch on those names, so the generic reasons take them in that style.
_OAUTH2_REASONS: Mapping[str, str] = {
    "bad_request": "invalid_request",
    "unsupported_media_type": "invalid_request",
    "internal_error": "server_error",
    "unavailable": "temporarily_unavailable",
}


def status_for_http(http_status: int) -> grpc.StatusCode:
    """The gRPC status that best names an HTTP error status."""
    code = _STATUS_OF_HTTP.get(http_status)
    if code is not None:
        return code
    return grpc.StatusCode.INTERNAL if http_status >= 500 else grpc.StatusCode.FAILED_PRECONDITION


def reason_for_http(http_status: int) -> str:
    """The reason of one of the bridge's own errors (no RPC behind it)."""
    reason = _REASON_OF_HTTP.get(http_status)
    if reason is not None:
        return reason
    return "internal_error" if http_status >= 500 else "bad_request"


def json_response(body: Json, status: int = 200) -> flask.Response:
    """A compact JSON answer, built directly (no ``jsonify`` round trips)."""
    return flask.Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status=status,
        mimetype="application/json",
    )


def error_body(
    style: int, http_status: int, code: grpc.StatusCode, message: str, reason: str = ""
) -> Json:
    """The JSON body of an error in the given ``trellis.v1.ErrorStyle``.

    ``reason`` defaults to the one derived from ``code``. Unknown styles (a newer
    proto than this bridge) fall back to ERROR_STYLE_GOOGLE.
    """
    reason = reason or reason_for_code(code)
    if style == options_pb2.ERROR_STYLE_SUCCESS_FLAG:
        return {"success": False, "error": message}
    if style == options_pb2.ERROR_STYLE_CODE_STATUS:
        return {"error": message, "code": reason.upper(), "status": http_status}
    if style == options_pb2.ERROR_STYLE_REASON_MESSAGE:
        return {"error": reason, "message": message}
    if style == options_pb2.ERROR_STYLE_OAUTH2:
        return {"error": _OAUTH2_REASONS.get(reason, reason), "error_description": message}
    return {"error": {"code": http_status, "status": code.name, "message": message}}


def error_response(
    http_status: int,
    message: str,
    *,
    code: grpc.StatusCode | None = None,
    reason: str | None = None,
    style: int = DEFAULT_STYLE,
    headers: Iterable[tuple[str, str]] = (),
) -> flask.Response:
    """A JSON error answer in ``style``, with the headers that style's answers carry.

    ``code`` defaults to the one matching ``http_status``, and ``reason`` to the one
    of ``http_status`` (a bridge error) or of ``code`` when that is given.
    """
    if reason is None:
        reason = reason_for_code(code) if code is not None else reason_for_http(http_status)
    code = code if code is not None else status_for_http(http_status)
    response = json_response(error_body(style, http_status, code, message, reason), http_status)
    apply_headers(response, answer_headers(style))
    return apply_headers(response, headers)


def rpc_error_response(error: grpc.RpcError, *, style: int = DEFAULT_STYLE) -> flask.Response:
    """The JSON answer for a failed RPC.

    The HTTP status is the one the server's ErrorInfo asks for, else the one mapped
    from the code; allow-listed metadata (rate limits, ``WWW-Authenticate``...)
    becomes headers.
    """
    failure = rpc_failure(error)
    http_status = failure.http_status or HTTP_STATUS.get(failure.code, 500)
    return error_response(
        http_status,
        failure.message,
        code=failure.code,
        reason=failure.reason,
        style=style,
        headers=call_headers(error),
    )
