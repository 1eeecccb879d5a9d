"""The WorkflowService servicer: messages in, the engine's answers out."""

from __future__ import annotations

import grpc
from google.protobuf import json_format

from trellis.server.api._edge import caller_of, principal_of, unary
from trellis.server.core.errors import InvalidArgument
from trellis.server.engine import RunRequest, Service
from trellis.v1 import jobs_pb2, runs_pb2, workflows_pb2, workflows_pb2_grpc


class Workflows(workflows_pb2_grpc.WorkflowServiceServicer):
    def __init__(self, service: Service) -> None:
        self.s = service

    @unary
    def ListWorkflows(
        self, request: workflows_pb2.ListWorkflowsRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.ListWorkflowsResponse:
        return self.s.list_workflows(
            principal_of(context),
            status=request.status,
            limit=request.limit if request.HasField("limit") else None,
            offset=request.offset,
            page_size=request.page_size,
            page_token=request.page_token,
        )

    @unary
    def GetWorkflow(
        self, request: workflows_pb2.GetWorkflowRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.Workflow:
        return self.s.get_workflow(principal_of(context), request.workflow_id)

    @unary
    def CreateWorkflow(
        self, request: workflows_pb2.CreateWorkflowRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.Workflow:
        principal, ip = caller_of(context)
        return self.s.create_workflow(principal, request, ip=ip)

    @unary
    def RunWorkflow(
        self, request: workflows_pb2.RunWorkflowRequest, context: grpc.ServicerContext
    ) -> runs_pb2.Run:
        principal, ip = caller_of(context)
        key = _idempotency_key(context)
        if key and request.request_id and key != request.request_id:
            raise InvalidArgument(
                "request_id: differs from the idempotency-key header; give one of them"
            )
        return self.s.run_workflow(principal, _run_request(request, key), ip=ip)

    @unary
    def BatchRunWorkflows(
        self, request: workflows_pb2.BatchRunWorkflowsRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.BatchRunWorkflowsResponse:
        principal, ip = caller_of(context)
        if _idempotency_key(context):
            raise InvalidArgument(
                "idempotency-key: one key cannot stand for many starts; "
                "give each request its request_id"
            )
        started = self.s.run_workflows(
            principal, [_run_request(item) for item in request.requests], ip=ip
        )
        return workflows_pb2.BatchRunWorkflowsResponse(runs=started)

    @unary
    def CreateRun(
        self, request: workflows_pb2.CreateRunRequest, context: grpc.ServicerContext
    ) -> runs_pb2.Run:
        principal, ip = caller_of(context)
        given = json_format.MessageToDict(request.inputs) if request.inputs.fields else {}
        chosen = request.WhichOneof("definition")
        return self.s.create_adhoc_run(
            principal,
            request.workflow if chosen == "workflow" else request.source or None,
            given,
            parallel_limit=request.parallel_limit,
            ip=ip,
        )

    @unary
    def CancelWorkflow(
        self, request: workflows_pb2.CancelWorkflowRequest, context: grpc.ServicerContext
    ) -> runs_pb2.Run:
        principal, ip = caller_of(context)
        return self.s.cancel_workflow(principal, request.workflow_id, ip=ip)

    @unary
    def ListWorkflowVersions(
        self, request: workflows_pb2.ListWorkflowVersionsRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.ListWorkflowVersionsResponse:
        return self.s.list_workflow_versions(
            principal_of(context),
            request.workflow_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )

    @unary
    def GetWorkflowVersion(
        self, request: workflows_pb2.GetWorkflowVersionRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.WorkflowVersion:
        return self.s.get_workflow_version(
            principal_of(context), request.workflow_id, request.version
        )

    @unary
    def RevertWorkflow(
        self, request: workflows_pb2.RevertWorkflowRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.WorkflowVersion:
        principal, ip = caller_of(context)
        return self.s.revert_workflow(
            principal,
            request.workflow_id,
            request.to_version,
            expected_version=request.expected_version,
            ip=ip,
        )

    @unary
    def CloneWorkflow(
        self, request: workflows_pb2.CloneWorkflowRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.Workflow:
        principal, ip = caller_of(context)
        return self.s.clone_workflow(
            principal, request.workflow_id, request.new_workflow_id, name=request.name, ip=ip
        )

    @unary
    def EnableWorkflow(
        self, request: workflows_pb2.EnableWorkflowRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.Workflow:
        principal, ip = caller_of(context)
        return self.s.set_workflow_enabled(principal, request.workflow_id, True, ip=ip)

    @unary
    def DisableWorkflow(
        self, request: workflows_pb2.DisableWorkflowRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.Workflow:
        principal, ip = caller_of(context)
        return self.s.set_workflow_enabled(principal, request.workflow_id, False, ip=ip)

    @unary
    def DeleteWorkflow(
        self, request: workflows_pb2.DeleteWorkflowRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.DeleteWorkflowResponse:
        principal, ip = caller_of(context)
        return self.s.delete_workflow(
            principal, request.workflow_id, purge_runs=request.purge_runs, ip=ip
        )

    @unary
    def ListWorkflowJobs(
        self, request: workflows_pb2.ListWorkflowJobsRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.ListWorkflowJobsResponse:
        return self.s.list_workflow_jobs(principal_of(context), request.workflow_id)

    @unary
    def GetWorkflowJob(
        self, request: workflows_pb2.GetWorkflowJobRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.Job:
        return self.s.get_workflow_job(principal_of(context), request.workflow_id, request.job_id)

    @unary
    def AddWorkflowJob(
        self, request: workflows_pb2.AddWorkflowJobRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.WorkflowVersion:
        principal, ip = caller_of(context)
        return self.s.add_workflow_job(
            principal,
            request.workflow_id,
            request.job,
            expected_version=request.expected_version,
            ip=ip,
        )

    @unary
    def UpdateWorkflowJob(
        self, request: workflows_pb2.UpdateWorkflowJobRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.WorkflowVersion:
        principal, ip = caller_of(context)
        return self.s.update_workflow_job(
            principal,
            request.workflow_id,
            request.job_id,
            request.job,
            request.update_mask,
            expected_version=request.expected_version,
            ip=ip,
        )

    @unary
    def RenameWorkflowJob(
        self, request: workflows_pb2.RenameWorkflowJobRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.WorkflowVersion:
        principal, ip = caller_of(context)
        return self.s.rename_workflow_job(
            principal,
            request.workflow_id,
            request.job_id,
            request.new_job_id,
            expected_version=request.expected_version,
            ip=ip,
        )

    @unary
    def RemoveWorkflowJob(
        self, request: workflows_pb2.RemoveWorkflowJobRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.WorkflowVersion:
        principal, ip = caller_of(context)
        return self.s.remove_workflow_job(
            principal,
            request.workflow_id,
            request.job_id,
            cascade=request.cascade,
            expected_version=request.expected_version,
            ip=ip,
        )

    @unary
    def AddWorkflowEdge(
        self, request: workflows_pb2.AddWorkflowEdgeRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.WorkflowVersion:
        principal, ip = caller_of(context)
        return self.s.add_workflow_edge(
            principal,
            request.workflow_id,
            request.from_job,
            request.to_job,
            expected_version=request.expected_version,
            ip=ip,
        )

    @unary
    def RemoveWorkflowEdge(
        self, request: workflows_pb2.RemoveWorkflowEdgeRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.WorkflowVersion:
        principal, ip = caller_of(context)
        return self.s.remove_workflow_edge(
            principal,
            request.workflow_id,
            request.from_job,
            request.to_job,
            expected_version=request.expected_version,
            ip=ip,
        )

    @unary
    def ExportWorkflows(
        self, request: workflows_pb2.ExportWorkflowsRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.ExportWorkflowsResponse:
        return self.s.export_workflows(principal_of(context), request.workflow_id)

    @unary
    def ImportWorkflows(
        self, request: workflows_pb2.ImportWorkflowsRequest, context: grpc.ServicerContext
    ) -> workflows_pb2.ImportWorkflowsResponse:
        principal, ip = caller_of(context)
        return self.s.import_workflows(principal, request.text, dry_run=request.dry_run, ip=ip)


def _run_request(request: workflows_pb2.RunWorkflowRequest, key: str = "") -> RunRequest:
    # Struct numbers are doubles; the definition's check turns whole ones back
    # into integers.
    given = json_format.MessageToDict(request.inputs) if request.inputs.fields else {}
    return RunRequest(
        request.workflow_id, given, request.request_id or key, parallel_limit=request.parallel_limit
    )


def _idempotency_key(context: grpc.ServicerContext) -> str:
    """The request id a REST caller gave as its ``Idempotency-Key`` header."""
    for key, value in context.invocation_metadata():
        if key == "idempotency-key" and isinstance(value, str):
            return value
    return ""


def add_to(server: grpc.Server, service: Service) -> None:
    # The generated registration helpers are untyped.
    workflows_pb2_grpc.add_WorkflowServiceServicer_to_server(Workflows(service), server)  # type: ignore[no-untyped-call]


__all__ = ["Workflows", "add_to"]
