"""gRPC servicers: thin edges that map messages and errors onto the service."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from trellis.server.api import _status
from trellis.server.api._auth import client_address, current_principal
from trellis.server.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    LeaseConflict,
    NotFound,
    TrellisError,
    Unavailable,
)
from trellis.server.engine import _scheduler as sched
from trellis.server.engine._capabilities import Capabilities
from trellis.server.engine.service import Actor, Service
from trellis.server.identity.principal import (
    MissingOrganization,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from trellis.server.identity.store import Conflict
from trellis.v1 import (
    auth_pb2,
    identity_pb2,
    logs_pb2,
    logs_pb2_grpc,
    machine_pb2,
    oauth_pb2,
    runs_pb2,
    runs_pb2_grpc,
    users_pb2,
    workers_pb2,
    workers_pb2_grpc,
    workflows_pb2,
    workflows_pb2_grpc,
)

F = TypeVar("F", bound=Callable[..., Any])

_CODES: dict[type[TrellisError], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    LeaseConflict: grpc.StatusCode.ABORTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Conflict: grpc.StatusCode.ALREADY_EXISTS,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    MissingOrganization: grpc.StatusCode.INVALID_ARGUMENT,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _code_of(exc: TrellisError) -> grpc.StatusCode:
    for kind in type(exc).__mro__:
        code = _CODES.get(kind)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def _abort(context: grpc.ServicerContext, exc: TrellisError) -> NoReturn:
    _status.abort(
        context,
        _code_of(exc),
        str(exc),
        reason=exc.reason or None,
        http_status=422 if isinstance(exc, MissingOrganization) else None,
        metadata=exc.headers.items() if isinstance(exc, RateLimited) else (),
    )


def unary(fn: F) -> F:
    """Maps domain errors of a unary handler to gRPC statuses (the call
    interceptor, ``_wire``, answers anything else)."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except TrellisError as exc:
            _abort(context, exc)

    return wrapper  # type: ignore[return-value]


def streaming(fn: F) -> F:
    """Maps domain errors of a server-streaming handler to gRPC statuses."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(self, request, context)
        except TrellisError as exc:
            _abort(context, exc)

    return wrapper  # type: ignore[return-value]


def org_of(context: grpc.ServicerContext) -> str:
    """The caller's organization, as the auth interceptor resolved it."""
    return current_principal().org_id


def actor_of(context: grpc.ServicerContext) -> Actor:
    """The caller, as the audit log records it."""
    principal = current_principal()
    return Actor(principal.subject, principal.kind.value, client_address(context))


def owner_of(context: grpc.ServicerContext) -> str:
    """The principal leases are bound to: the caller's subject."""
    return current_principal().subject


def _ttl(request: Any) -> int | None:
    return int(request.lease_ttl_secs) if request.HasField("lease_ttl_secs") else None


def _capabilities(request: Any) -> Capabilities | None:
    """What a worker's request says it runs; None when it says nothing."""
    if not request.HasField("capabilities"):
        return None
    return Capabilities(tuple(request.capabilities.handlers), request.capabilities.shell)


class Workflows(workflows_pb2_grpc.WorkflowServiceServicer):
    def __init__(self, service: Service) -> None:
        self.s = service

    @unary
    def ListWorkflows(
        self, request: workflows_pb2.ListWorkflowsRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.ListWorkflowsResponse:
        limit = request.limit if request.HasField("limit") else 100
        found = self.s.list_workflows(
            org_of(context), limit=limit, offset=request.offset, status=request.status
        )
        return workflows_pb2.ListWorkflowsResponse(workflows=found)

    @unary
    def GetWorkflow(
        self, request: workflows_pb2.GetWorkflowRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.Workflow:
        return self.s.get_workflow(org_of(context), request.workflow_id)

    @unary
    def CreateWorkflow(
        self, request: workflows_pb2.CreateWorkflowRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.Workflow:
        return self.s.create_workflow(org_of(context), request, actor=actor_of(context))

    @unary
    def RunWorkflow(
        self, request: workflows_pb2.RunWorkflowRequest, context: grpc.ServicerContext
    ) -> runs_pb2.Run:
        return self.s.run_workflow(org_of(context), request.workflow_id, actor=actor_of(context))

    @unary
    def CancelWorkflow(
        self, request: workflows_pb2.CancelWorkflowRequest, context: grpc.ServicerContext
    ) -> runs_pb2.Run:
        return self.s.cancel_workflow(org_of(context), request.workflow_id, actor=actor_of(context))


class Runs(runs_pb2_grpc.RunServiceServicer):
    def __init__(self, service: Service) -> None:
        self.s = service

    @unary
    def GetRun(
        self, request: runs_pb2.GetRunRequest, context: grpc.ServicerContext
    ) -> runs_pb2.RunDetail:
        return self.s.get_run(org_of(context), request.run_id)

    @unary
    def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: grpc.ServicerContext
    ) -> runs_pb2.ListRunsResponse:
        return self.s.list_runs(
            org_of(context),
            workflow_id=request.workflow_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )

    @unary
    def CancelRun(
        self, request: runs_pb2.CancelRunRequest, context: grpc.ServicerContext
    ) -> runs_pb2.Run:
        return self.s.cancel_run(org_of(context), request.run_id, actor=actor_of(context))

    @streaming
    def StreamRunEvents(
        self, request: runs_pb2.StreamRunEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[runs_pb2.RunEvent]:
        yield from self.s.run_events(
            org_of(context), request.run_id, after_id=request.after_id, is_active=context.is_active
        )


class Workers(workers_pb2_grpc.WorkerServiceServicer):
    def __init__(self, service: Service) -> None:
        self.s = service

    @unary
    def RegisterWorker(
        self, request: workers_pb2.RegisterWorkerRequest, context: grpc.ServicerContext
    ) -> workers_pb2.Worker:
        return self.s.register_worker(
            org_of(context), request.worker_id, list(request.labels), _capabilities(request)
        )

    @unary
    def ListWorkers(
        self, request: workers_pb2.ListWorkersRequest, context: grpc.ServicerContext
    ) -> workers_pb2.ListWorkersResponse:
        return workers_pb2.ListWorkersResponse(workers=self.s.list_workers(org_of(context)))

    @unary
    def ClaimJob(
        self, request: workers_pb2.ClaimJobRequest, context: grpc.ServicerContext
    ) -> workers_pb2.ClaimJobResponse:
        got = self.s.claim(
            org_of(context),
            request.worker_id,
            list(request.labels),
            ttl_secs=_ttl(request),
            wait_secs=request.wait_secs,
            is_active=context.is_active,
            owner=owner_of(context),
            capabilities=_capabilities(request),
        )
        return workers_pb2.ClaimJobResponse(assignment=got[0] if got else None)

    @unary
    def ClaimJobs(
        self, request: workers_pb2.ClaimJobsRequest, context: grpc.ServicerContext
    ) -> workers_pb2.ClaimJobsResponse:
        got = self.s.claim(
            org_of(context),
            request.worker_id,
            list(request.labels),
            ttl_secs=_ttl(request),
            max_jobs=request.max_jobs or 1,
            wait_secs=request.wait_secs,
            is_active=context.is_active,
            owner=owner_of(context),
            capabilities=_capabilities(request),
        )
        return workers_pb2.ClaimJobsResponse(assignments=got)

    @streaming
    def StreamAssignments(
        self, request: workers_pb2.StreamAssignmentsRequest, context: grpc.ServicerContext
    ) -> Iterator[workers_pb2.StreamAssignmentsResponse]:
        yield from self.s.assignments(
            org_of(context),
            request.worker_id,
            list(request.labels),
            slots=request.slots,
            ttl_secs=_ttl(request),
            is_active=context.is_active,
            owner=owner_of(context),
            capabilities=_capabilities(request),
        )

    @unary
    def Heartbeat(
        self, request: workers_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> workers_pb2.HeartbeatResponse:
        return self.s.heartbeat(
            org_of(context), request.lease_id, _ttl(request), owner=owner_of(context)
        )

    def StreamHeartbeats(
        self,
        request_iterator: Iterator[workers_pb2.HeartbeatRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[workers_pb2.HeartbeatResponse]:
        org, owner = org_of(context), owner_of(context)
        for request in request_iterator:
            try:
                yield self.s.heartbeat(org, request.lease_id, _ttl(request), owner=owner)
            except LeaseConflict:
                yield workers_pb2.HeartbeatResponse(lease_id=request.lease_id, lease_lost=True)
            except TrellisError as exc:
                # Malformed input (a TTL out of range, no lease id) ends the
                # stream with INVALID_ARGUMENT, as the unary call answers: a
                # `lease_lost` answer would make the worker drop a valid lease.
                _abort(context, exc)

    @unary
    def CompleteJob(
        self, request: workers_pb2.CompleteJobRequest, context: grpc.ServicerContext
    ) -> workers_pb2.CompleteJobResponse:
        result = sched.Result(request.lease_id, ok=True, outputs=dict(request.outputs))
        (verdict,) = self.s.report(org_of(context), [result], owner=owner_of(context))
        if verdict.error:
            raise LeaseConflict(verdict.error)
        return workers_pb2.CompleteJobResponse()

    @unary
    def FailJob(
        self, request: workers_pb2.FailJobRequest, context: grpc.ServicerContext
    ) -> workers_pb2.FailJobResponse:
        result = sched.Result(
            request.lease_id, ok=False, error=request.error, retryable=request.retryable
        )
        (verdict,) = self.s.report(org_of(context), [result], owner=owner_of(context))
        if verdict.error:
            raise LeaseConflict(verdict.error)
        return workers_pb2.FailJobResponse(
            will_retry=verdict.will_retry, delayed_until_ms=verdict.delayed_until_ms
        )

    @unary
    def ReportResults(
        self, request: workers_pb2.ReportResultsRequest, context: grpc.ServicerContext
    ) -> workers_pb2.ReportResultsResponse:
        results = []
        for i, item in enumerate(request.results):
            kind = item.WhichOneof("result")
            if kind == "complete":
                results.append(
                    sched.Result(
                        item.complete.lease_id, ok=True, outputs=dict(item.complete.outputs)
                    )
                )
            elif kind == "fail":
                results.append(
                    sched.Result(
                        item.fail.lease_id,
                        ok=False,
                        error=item.fail.error,
                        retryable=item.fail.retryable,
                    )
                )
            else:
                raise InvalidArgument(f"results[{i}]: set complete or fail")
        verdicts = self.s.report(org_of(context), results, owner=owner_of(context))
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
            org_of(context), request.workflow_id, request.job_id, request.run_id
        )
        return workers_pb2.GetJobCancelledResponse(cancelled=cancelled)


class Logs(logs_pb2_grpc.LogServiceServicer):
    def __init__(self, service: Service) -> None:
        self.s = service

    @unary
    def PushLogs(
        self, request: logs_pb2.PushLogsRequest, context: grpc.ServicerContext
    ) -> logs_pb2.PushLogsResponse:
        n = self.s.push_logs(
            org_of(context), request.lease_id, list(request.chunks), owner=owner_of(context)
        )
        return logs_pb2.PushLogsResponse(accepted=n)

    def UploadLogs(
        self, request_iterator: Iterator[logs_pb2.PushLogsRequest], context: grpc.ServicerContext
    ) -> logs_pb2.PushLogsResponse:
        org, owner = org_of(context), owner_of(context)
        total = 0
        try:
            for request in request_iterator:
                total += self.s.push_logs(org, request.lease_id, list(request.chunks), owner=owner)
        except TrellisError as exc:
            _abort(context, exc)
        return logs_pb2.PushLogsResponse(accepted=total)

    @unary
    def ListLogs(
        self, request: logs_pb2.ListLogsRequest, context: grpc.ServicerContext
    ) -> logs_pb2.ListLogsResponse:
        return self.s.list_logs(
            org_of(context),
            request.workflow_id,
            request.job_id,
            run_id=request.run_id,
            after_id=request.after_id,
        )

    @streaming
    def FollowLogs(
        self, request: logs_pb2.FollowLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[logs_pb2.FollowLogsResponse]:
        yield from self.s.follow_logs(
            org_of(context),
            request.workflow_id,
            request.job_id,
            run_id=request.run_id,
            after_id=request.after_id,
            is_active=context.is_active,
        )


# Every file of the contract whose services this server implements; the auth
# interceptor reads the methods' access rules from them.
PROTO_FILES = (
    workflows_pb2.DESCRIPTOR,
    runs_pb2.DESCRIPTOR,
    workers_pb2.DESCRIPTOR,
    logs_pb2.DESCRIPTOR,
    auth_pb2.DESCRIPTOR,
    identity_pb2.DESCRIPTOR,
    oauth_pb2.DESCRIPTOR,
    machine_pb2.DESCRIPTOR,
    users_pb2.DESCRIPTOR,
)


def add_services(server: grpc.Server, service: Service) -> list[str]:
    """Registers the engine's servicers; returns the full service names of
    every file in PROTO_FILES (the identity servicers are added by
    ``_grpc_identity``)."""
    # The generated registration helpers are untyped.
    workflows_pb2_grpc.add_WorkflowServiceServicer_to_server(Workflows(service), server)
    runs_pb2_grpc.add_RunServiceServicer_to_server(Runs(service), server)
    workers_pb2_grpc.add_WorkerServiceServicer_to_server(Workers(service), server)
    logs_pb2_grpc.add_LogServiceServicer_to_server(Logs(service), server)
    return [svc.full_name for file in PROTO_FILES for svc in file.services_by_name.values()]
