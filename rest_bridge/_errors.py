"""Error answers: gRPC status -> HTTP status, and the JSON error bodies of each style."""

from __future__ import annotations

import json
from collections.abc import Mapping

import flask
import grpc

from trellis.v1 import options_pb2

from ._json_values import Json

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
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

DEFAULT_STYLE = options_pb2.ERROR_STYLE_GOOGLE


def status_for_http(http_status: int) -> grpc.StatusCode:
    """The gRPC status that best names an HTTP error status."""
    code = _STATUS_OF_HTTP.get(http_status)
    if code is not None:
        return code
    return grpc.StatusCode.INTERNAL if http_status >= 500 else grpc.StatusCode.FAILED_PRECONDITION


def json_response(body: Json, status: int = 200) -> flask.Response:
    """A compact JSON answer, built directly (no ``jsonify`` round trips)."""
    return flask.Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status=status,
        mimetype="application/json",
    )


def error_body(style: int, http_status: int, code: grpc.StatusCode, message: str) -> Json:
    """The JSON body of an error in the given ``trellis.v1.ErrorStyle``."""
    # ERROR_STYLE_GOOGLE is the only style so far, and the fallback for services that
    # declare none; a new style gets its branch here.
    return {"error": {"code": http_status, "status": code.name, "message": message}}


def error_response(
    http_status: int,
    message: str,
    *,
    code: grpc.StatusCode | None = None,
    style: int = DEFAULT_STYLE,
) -> flask.Response:
    """A JSON error answer; ``code`` defaults to the one matching ``http_status``."""
    code = code if code is not None else status_for_http(http_status)
    return json_response(error_body(style, http_status, code, message), http_status)


def rpc_error_response(error: grpc.RpcError, *, style: int = DEFAULT_STYLE) -> flask.Response:
    """The JSON answer for a failed RPC, with the HTTP status mapped from its code."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else None
    message = details or code.name.replace("_", " ").lower()
    return error_response(HTTP_STATUS.get(code, 500), message, code=code, style=style)
