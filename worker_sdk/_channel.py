"""One gRPC channel, the call metadata and typed callables for each RPC used.

The generated ``*_pb2_grpc`` stubs carry no type information, so the
callables are built here from the message classes instead: the same method
paths and (de)serializers, with request and response types mypy can check.
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from ._pb import (
    auth_pb2,
    identity_pb2,
    jobs_pb2,
    logs_pb2,
    machine_pb2,
    runs_pb2,
    workers_pb2,
    workflows_pb2,
)

# Codes after which the same request may succeed later: the server was
# unreachable, overloaded, restarting, or the call was cut off.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)

Metadata = tuple[tuple[str, str], ...]

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    # gRPC's own reconnect backoff grows to 120 s by default, and while it
    # waits every call fails at once: keep it within the SDK's ~10 s cap so a
    # restarted server gets its workers back promptly.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 10_000),
    # Channels share subchannels process-wide by default; a fresh client
    # would then inherit a worker's reconnect backoff and fail fast.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
)

_Req = TypeVar("_Req", bound=Message)
_Resp = TypeVar("_Resp", bound=Message)


def call_metadata(token: str | None, organization_id: str | None) -> Metadata:
    """The metadata sent with every call: bearer token and organization."""
    md: list[tuple[str, str]] = []
    if token:
        md.append(("authorization", f"Bearer {token}"))
    if organization_id:
        md.append(("x-organization-id", organization_id))
    return tuple(md)


def _make(
    channel: grpc.Channel, kind: str, path: str, req: type[Message], resp: type[Message]
) -> Any:
    factory = getattr(channel, kind)
    kwargs: dict[str, Any] = {
        "request_serializer": req.SerializeToString,
        "response_deserializer": resp.FromString,
    }
    try:
        # Registered methods skip a per-call method lookup in grpcio's core,
        # as the generated stubs do; channels that predate them refuse the flag.
        return factory(path, _registered_method=True, **kwargs)
    except TypeError:
        return factory(path, **kwargs)


def _unary(
    channel: grpc.Channel, service: str, method: str, req: type[_Req], resp: type[_Resp]
) -> grpc.UnaryUnaryMultiCallable[_Req, _Resp]:
    call: grpc.UnaryUnaryMultiCallable[_Req, _Resp] = _make(
        channel, "unary_unary", f"/trellis.v1.{service}/{method}", req, resp
    )
    return call


def _server_stream(
    channel: grpc.Channel, service: str, method: str, req: type[_Req], resp: type[_Resp]
) -> grpc.UnaryStreamMultiCallable[_Req, _Resp]:
    call: grpc.UnaryStreamMultiCallable[_Req, _Resp] = _make(
        channel, "unary_stream", f"/trellis.v1.{service}/{method}", req, resp
    )
    return call


def _bidi_stream(
    channel: grpc.Channel, service: str, method: str, req: type[_Req], resp: type[_Resp]
) -> grpc.StreamStreamMultiCallable[_Req, _Resp]:
    call: grpc.StreamStreamMultiCallable[_Req, _Resp] = _make(
        channel, "stream_stream", f"/trellis.v1.{service}/{method}", req, resp
    )
    return call


class WorkerRpc:
    """The ``trellis.v1.WorkerService`` calls: those a worker makes, and the listing."""

    def __init__(self, ch: grpc.Channel) -> None:
        s = "WorkerService"
        w = workers_pb2
        self.RegisterWorker = _unary(ch, s, "RegisterWorker", w.RegisterWorkerRequest, w.Worker)
        self.ListWorkers = _unary(ch, s, "ListWorkers", w.ListWorkersRequest, w.ListWorkersResponse)
        self.StreamAssignments = _server_stream(
            ch, s, "StreamAssignments", w.StreamAssignmentsRequest, w.StreamAssignmentsResponse
        )
        self.Heartbeat = _unary(ch, s, "Heartbeat", w.HeartbeatRequest, w.HeartbeatResponse)
        self.StreamHeartbeats = _bidi_stream(
            ch, s, "StreamHeartbeats", w.HeartbeatRequest, w.HeartbeatResponse
        )
        self.CompleteJob = _unary(ch, s, "CompleteJob", w.CompleteJobRequest, w.CompleteJobResponse)
        self.FailJob = _unary(ch, s, "FailJob", w.FailJobRequest, w.FailJobResponse)
        self.ReportResults = _unary(
            ch, s, "ReportResults", w.ReportResultsRequest, w.ReportResultsResponse
        )


class LogRpc:
    """The ``trellis.v1.LogService`` calls."""

    def __init__(self, ch: grpc.Channel) -> None:
        s = "LogService"
        m = logs_pb2
        self.PushLogs = _unary(ch, s, "PushLogs", m.PushLogsRequest, m.PushLogsResponse)
        self.ListLogs = _unary(ch, s, "ListLogs", m.ListLogsRequest, m.ListLogsResponse)
        self.FollowLogs = _server_stream(
            ch, s, "FollowLogs", m.FollowLogsRequest, m.FollowLogsResponse
        )


class WorkflowRpc:
    """The ``trellis.v1.WorkflowService`` calls."""

    def __init__(self, ch: grpc.Channel) -> None:
        s = "WorkflowService"
        m = workflows_pb2
        self.ListWorkflows = _unary(
            ch, s, "ListWorkflows", m.ListWorkflowsRequest, m.ListWorkflowsResponse
        )
        self.GetWorkflow = _unary(ch, s, "GetWorkflow", m.GetWorkflowRequest, m.Workflow)
        self.CreateWorkflow = _unary(ch, s, "CreateWorkflow", m.CreateWorkflowRequest, m.Workflow)
        self.RunWorkflow = _unary(ch, s, "RunWorkflow", m.RunWorkflowRequest, runs_pb2.Run)
        self.BatchRunWorkflows = _unary(
            ch, s, "BatchRunWorkflows", m.BatchRunWorkflowsRequest, m.BatchRunWorkflowsResponse
        )
        self.CancelWorkflow = _unary(ch, s, "CancelWorkflow", m.CancelWorkflowRequest, runs_pb2.Run)
        # The lifecycle calls (see _client_lifecycle).
        self.ListWorkflowVersions = _unary(
            ch,
            s,
            "ListWorkflowVersions",
            m.ListWorkflowVersionsRequest,
            m.ListWorkflowVersionsResponse,
        )
        self.GetWorkflowVersion = _unary(
            ch, s, "GetWorkflowVersion", m.GetWorkflowVersionRequest, m.WorkflowVersion
        )
        self.RevertWorkflow = _unary(
            ch, s, "RevertWorkflow", m.RevertWorkflowRequest, m.WorkflowVersion
        )
        self.CloneWorkflow = _unary(ch, s, "CloneWorkflow", m.CloneWorkflowRequest, m.Workflow)
        self.EnableWorkflow = _unary(ch, s, "EnableWorkflow", m.EnableWorkflowRequest, m.Workflow)
        self.DisableWorkflow = _unary(
            ch, s, "DisableWorkflow", m.DisableWorkflowRequest, m.Workflow
        )
        self.DeleteWorkflow = _unary(
            ch, s, "DeleteWorkflow", m.DeleteWorkflowRequest, m.DeleteWorkflowResponse
        )
        self.ListWorkflowJobs = _unary(
            ch, s, "ListWorkflowJobs", m.ListWorkflowJobsRequest, m.ListWorkflowJobsResponse
        )
        self.GetWorkflowJob = _unary(ch, s, "GetWorkflowJob", m.GetWorkflowJobRequest, jobs_pb2.Job)
        self.AddWorkflowJob = _unary(
            ch, s, "AddWorkflowJob", m.AddWorkflowJobRequest, m.WorkflowVersion
        )
        self.UpdateWorkflowJob = _unary(
            ch, s, "UpdateWorkflowJob", m.UpdateWorkflowJobRequest, m.WorkflowVersion
        )
        self.RenameWorkflowJob = _unary(
            ch, s, "RenameWorkflowJob", m.RenameWorkflowJobRequest, m.WorkflowVersion
        )
        self.RemoveWorkflowJob = _unary(
            ch, s, "RemoveWorkflowJob", m.RemoveWorkflowJobRequest, m.WorkflowVersion
        )
        self.AddWorkflowEdge = _unary(
            ch, s, "AddWorkflowEdge", m.AddWorkflowEdgeRequest, m.WorkflowVersion
        )
        self.RemoveWorkflowEdge = _unary(
            ch, s, "RemoveWorkflowEdge", m.RemoveWorkflowEdgeRequest, m.WorkflowVersion
        )
        self.ExportWorkflows = _unary(
            ch, s, "ExportWorkflows", m.ExportWorkflowsRequest, m.ExportWorkflowsResponse
        )
        self.ImportWorkflows = _unary(
            ch, s, "ImportWorkflows", m.ImportWorkflowsRequest, m.ImportWorkflowsResponse
        )
        self.CreateRun = _unary(ch, s, "CreateRun", m.CreateRunRequest, runs_pb2.Run)


class RunRpc:
    """The ``trellis.v1.RunService`` calls."""

    def __init__(self, ch: grpc.Channel) -> None:
        s = "RunService"
        m = runs_pb2
        self.GetRun = _unary(ch, s, "GetRun", m.GetRunRequest, m.RunDetail)
        self.ListRuns = _unary(ch, s, "ListRuns", m.ListRunsRequest, m.ListRunsResponse)
        self.CancelRun = _unary(ch, s, "CancelRun", m.CancelRunRequest, m.Run)
        self.RetryRun = _unary(ch, s, "RetryRun", m.RetryRunRequest, m.Run)
        self.RollbackRun = _unary(ch, s, "RollbackRun", m.RollbackRunRequest, m.Run)
        self.GetRunProgress = _unary(
            ch, s, "GetRunProgress", m.GetRunProgressRequest, m.RunProgress
        )
        self.StreamRunEvents = _server_stream(
            ch, s, "StreamRunEvents", m.StreamRunEventsRequest, m.RunEvent
        )


class IdentityRpc:
    """Sign-in and credentials (``AuthService``, ``IdentityService``,
    ``MachineUserService``)."""

    def __init__(self, ch: grpc.Channel) -> None:
        a, i, m = auth_pb2, identity_pb2, machine_pb2
        self.Login = _unary(ch, "AuthService", "Login", a.LoginRequest, a.LoginResponse)
        self.CreatePersonalAccessToken = _unary(
            ch,
            "IdentityService",
            "CreatePersonalAccessToken",
            i.CreatePersonalAccessTokenRequest,
            i.CreatedPersonalAccessToken,
        )
        self.CreateMachineUser = _unary(
            ch,
            "MachineUserService",
            "CreateMachineUser",
            m.CreateMachineUserRequest,
            m.CreatedMachineUser,
        )


class Connection:
    """A channel (owned or borrowed) with the calls of every service."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        organization_id: str | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.target = target
        self._owned = channel is None
        self.channel: grpc.Channel = (
            channel
            if channel is not None
            else grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self.metadata = call_metadata(token, organization_id)
        self.workers = WorkerRpc(self.channel)
        self.logs = LogRpc(self.channel)
        self.workflows = WorkflowRpc(self.channel)
        self.runs = RunRpc(self.channel)
        self.identity = IdentityRpc(self.channel)

    def close(self) -> None:
        """Closes the channel, unless it was handed in by the caller."""
        if self._owned:
            self.channel.close()
