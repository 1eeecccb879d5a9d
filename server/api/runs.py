"""The RunService servicer: messages in, the engine's answers out."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from trellis.server.api._edge import caller_of, principal_of, streaming, unary
from trellis.server.engine import Service
from trellis.v1 import runs_pb2, runs_pb2_grpc


class Runs(runs_pb2_grpc.RunServiceServicer):
    def __init__(self, service: Service) -> None:
        self.s = service

    @unary
    def GetRun(
        self, request: runs_pb2.GetRunRequest, context: grpc.ServicerContext
    ) -> runs_pb2.RunDetail:
        return self.s.get_run(principal_of(context), request.run_id)

    @unary
    def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: grpc.ServicerContext
    ) -> runs_pb2.ListRunsResponse:
        return self.s.list_runs(
            principal_of(context),
            workflow_id=request.workflow_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )

    @unary
    def CancelRun(
        self, request: runs_pb2.CancelRunRequest, context: grpc.ServicerContext
    ) -> runs_pb2.Run:
        principal, ip = caller_of(context)
        return self.s.cancel_run(principal, request.run_id, ip=ip)

    @unary
    def RetryRun(
        self, request: runs_pb2.RetryRunRequest, context: grpc.ServicerContext
    ) -> runs_pb2.Run:
        principal, ip = caller_of(context)
        return self.s.retry_run(principal, request.run_id, ip=ip)

    @unary
    def RollbackRun(
        self, request: runs_pb2.RollbackRunRequest, context: grpc.ServicerContext
    ) -> runs_pb2.Run:
        principal, ip = caller_of(context)
        return self.s.rollback_run(principal, request.run_id, list(request.job_ids), ip=ip)

    @unary
    def GetRunProgress(
        self, request: runs_pb2.GetRunProgressRequest, context: grpc.ServicerContext
    ) -> runs_pb2.RunProgress:
        return self.s.run_progress(principal_of(context), request.run_id)

    @streaming
    def StreamRunEvents(
        self, request: runs_pb2.StreamRunEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[runs_pb2.RunEvent]:
        yield from self.s.run_events(
            principal_of(context),
            request.run_id,
            after_id=request.after_id,
            is_active=context.is_active,
        )


def add_to(server: grpc.Server, service: Service) -> None:
    # The generated registration helpers are untyped.
    runs_pb2_grpc.add_RunServiceServicer_to_server(Runs(service), server)  # type: ignore[no-untyped-call]


__all__ = ["Runs", "add_to"]
