"""The WorkerService servicer (the worker protocol): messages in, the
engine's answers out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from trellis.server.api._edge import abort, principal_of, streaming, unary
from trellis.server.core.errors import InvalidArgument, LeaseConflict, TrellisError
from trellis.server.engine import Capabilities, Result, Service
from trellis.v1 import workers_pb2, workers_pb2_grpc


def _ttl(request: Any) -> int | None:
    return int(request.lease_ttl_secs) if request.HasField("lease_ttl_secs") else None


def _capabilities(request: Any) -> Capabilities | None:
    """What a worker's request says it runs; None when it says nothing."""
    if not request.HasField("capabilities"):
        return None
    return Capabilities(tuple(request.capabilities.handlers), request.capabilities.shell)


class Workers(workers_pb2_grpc.WorkerServiceServicer):
    def __init__(self, service: Service) -> None:
        self.s = service

    @unary
    def RegisterWorker(
        self, request: workers_pb2.RegisterWorkerRequest, context: grpc.ServicerContext
    ) -> workers_pb2.Worker:
        return self.s.register_worker(
            principal_of(context), request.worker_id, list(request.labels), _capabilities(request)
        )

    @unary
    def ListWorkers(
        self, request: workers_pb2.ListWorkersRequest, context: grpc.ServicerContext
    ) -> workers_pb2.ListWorkersResponse:
        return self.s.list_workers(
            principal_of(context), page_size=request.page_size, page_token=request.page_token
        )

    @unary
    def ClaimJob(
        self, request: workers_pb2.ClaimJobRequest, context: grpc.ServicerContext
    ) -> workers_pb2.ClaimJobResponse:
        got = self.s.claim(
            principal_of(context),
            request.worker_id,
            list(request.labels),
            ttl_secs=_ttl(request),
            wait_secs=request.wait_secs,
            is_active=context.is_active,
            capabilities=_capabilities(request),
        )
        return workers_pb2.ClaimJobResponse(assignment=got[0] if got else None)

    @unary
    def ClaimJobs(
        self, request: workers_pb2.ClaimJobsRequest, context: grpc.ServicerContext
    ) -> workers_pb2.ClaimJobsResponse:
        got = self.s.claim(
            principal_of(context),
            request.worker_id,
            list(request.labels),
            ttl_secs=_ttl(request),
            max_jobs=request.max_jobs or 1,
            wait_secs=request.wait_secs,
            is_active=context.is_active,
            capabilities=_capabilities(request),
        )
        return workers_pb2.ClaimJobsResponse(assignments=got)

    @streaming
    def StreamAssignments(
        self, request: workers_pb2.StreamAssignmentsRequest, context: grpc.ServicerContext
    ) -> Iterator[workers_pb2.StreamAssignmentsResponse]:
        yield from self.s.assignments(
            principal_of(context),
            request.worker_id,
            list(request.labels),
            slots=request.slots,
            ttl_secs=_ttl(request),
            is_active=context.is_active,
            capabilities=_capabilities(request),
        )

    @unary
    def Heartbeat(
        self, request: workers_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> workers_pb2.HeartbeatResponse:
        return self.s.heartbeat(principal_of(context), request.lease_id, _ttl(request))

    def StreamHeartbeats(
        self,
        request_iterator: Iterator[workers_pb2.HeartbeatRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[workers_pb2.HeartbeatResponse]:
        principal = principal_of(context)
        for request in request_iterator:
            try:
                yield self.s.heartbeat(principal, request.lease_id, _ttl(request))
            except LeaseConflict:
                yield workers_pb2.HeartbeatResponse(lease_id=request.lease_id, lease_lost=True)
            except TrellisError as exc:
                # Malformed input (a TTL out of range, no lease id) ends the
                # stream with INVALID_ARGUMENT, as the unary call answers: a
                # `lease_lost` answer would make the worker drop a valid lease.
                abort(context, exc)

    @unary
    def CompleteJob(
        self, request: workers_pb2.CompleteJobRequest, context: grpc.ServicerContext
    ) -> workers_pb2.CompleteJobResponse:
        result = Result(request.lease_id, ok=True, outputs=dict(request.outputs))
        (verdict,) = self.s.report(principal_of(context), [result])
        if verdict.error:
            raise LeaseConflict(verdict.error)
        return workers_pb2.CompleteJobResponse()

    @unary
    def FailJob(
        self, request: workers_pb2.FailJobRequest, context: grpc.ServicerContext
    ) -> workers_pb2.FailJobResponse:
        result = Result(
            request.lease_id, ok=False, error=request.error, retryable=request.retryable
        )
        (verdict,) = self.s.report(principal_of(context), [result])
        if verdict.error:
            raise LeaseConflict(verdict.error)
        response = workers_pb2.FailJobResponse(will_retry=verdict.will_retry)
        if verdict.delayed_until_ms:
            response.delayed_until.FromMilliseconds(verdict.delayed_until_ms)
        return response

    @unary
    def ReportResults(
        self, request: workers_pb2.ReportResultsRequest, context: grpc.ServicerContext
    ) -> workers_pb2.ReportResultsResponse:
        results = []
        for i, item in enumerate(request.results):
            kind = item.WhichOneof("result")
            if kind == "complete":
                results.append(
                    Result(item.complete.lease_id, ok=True, outputs=dict(item.complete.outputs))
                )
            elif kind == "fail":
                results.append(
                    Result(
                        item.fail.lease_id,
                        ok=False,
                        error=item.fail.error,
                        retryable=item.fail.retryable,
                    )
                )
            else:
                raise InvalidArgument(f"results[{i}]: set complete or fail")
        verdicts = self.s.report(principal_of(context), results)
        return workers_pb2.ReportResultsResponse(
            statuses=[
                workers_pb2.JobResultStatus(
                    lease_id=v.lease_id,
                    code=grpc.StatusCode.ABORTED.value[0] if v.error else 0,
                    message=v.error or "",
                )
                for v in verdicts
            ]
        )

    @unary
    def GetJobCancelled(
        self, request: workers_pb2.GetJobCancelledRequest, context: grpc.ServicerContext
    ) -> workers_pb2.GetJobCancelledResponse:
        cancelled = self.s.is_job_cancelled(
            principal_of(context), request.workflow_id, request.job_id, request.run_id
        )
        return workers_pb2.GetJobCancelledResponse(cancelled=cancelled)


def add_to(server: grpc.Server, service: Service) -> None:
    # The generated registration helpers are untyped.
    workers_pb2_grpc.add_WorkerServiceServicer_to_server(Workers(service), server)  # type: ignore[no-untyped-call]


__all__ = ["Workers", "add_to"]
