"""``GET /healthz``: whether the gRPC server behind the bridge is serving."""

from __future__ import annotations

from typing import Any

import flask
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._errors import error_response, json_response

_CHECK_TIMEOUT_SECS = 5.0


class HealthCheck:
    """Answers 200 ``{"status": "ok"}`` when the server reports SERVING, else 503."""

    def __init__(self, channel: grpc.Channel, *, timeout_secs: float = _CHECK_TIMEOUT_SECS):
        self._stub: Any = health_pb2_grpc.HealthStub(channel)
        self._timeout = timeout_secs

    def view(self) -> flask.Response:
        """The route's view."""
        try:
            answer = self._stub.Check(health_pb2.HealthCheckRequest(), timeout=self._timeout)
        except grpc.RpcError as error:
            details = error.details() if isinstance(error, grpc.Call) else None
            return error_response(503, f"gRPC server unavailable: {details or error.code().name}")
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            return error_response(503, f"gRPC server is {status}")
        return json_response({"status": "ok"})
