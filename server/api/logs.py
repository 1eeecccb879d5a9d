"""The LogService servicer: messages in, the engine's answers out."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from trellis.server.api._edge import abort, principal_of, streaming, unary
from trellis.server.api.events import event_log_of
from trellis.server.core.errors import TrellisError
from trellis.server.engine import Service
from trellis.server.events import EventLog
from trellis.v1 import logs_pb2, logs_pb2_grpc


class Logs(logs_pb2_grpc.LogServiceServicer):
    def __init__(self, service: Service, log: EventLog) -> None:
        self.s = service
        self.log = log

    @unary
    def PushLogs(
        self, request: logs_pb2.PushLogsRequest, context: grpc.ServicerContext
    ) -> logs_pb2.PushLogsResponse:
        n = self.s.push_logs(principal_of(context), request.lease_id, list(request.chunks))
        return logs_pb2.PushLogsResponse(accepted=n)

    def UploadLogs(
        self, request_iterator: Iterator[logs_pb2.PushLogsRequest], context: grpc.ServicerContext
    ) -> logs_pb2.PushLogsResponse:
        principal = principal_of(context)
        total = 0
        try:
            for request in request_iterator:
                total += self.s.push_logs(principal, request.lease_id, list(request.chunks))
        except TrellisError as exc:
            abort(context, exc)
        return logs_pb2.PushLogsResponse(accepted=total)

    @unary
    def ListLogs(
        self, request: logs_pb2.ListLogsRequest, context: grpc.ServicerContext
    ) -> logs_pb2.ListLogsResponse:
        return self.s.list_logs(
            principal_of(context),
            request.workflow_id,
            request.job_id,
            run_id=request.run_id,
            after_id=request.after_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )

    @streaming
    def FollowLogs(
        self, request: logs_pb2.FollowLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[logs_pb2.FollowLogsResponse]:
        yield from self.s.follow_logs(
            principal_of(context),
            request.workflow_id,
            request.job_id,
            run_id=request.run_id,
            events=self.log,
            after_id=request.after_id,
            is_active=context.is_active,
        )


def add_to(server: grpc.Server, service: Service) -> None:
    # The generated registration helpers are untyped.
    logs_pb2_grpc.add_LogServiceServicer_to_server(  # type: ignore[no-untyped-call]
        Logs(service, event_log_of(service)), server
    )


__all__ = ["Logs", "add_to"]
