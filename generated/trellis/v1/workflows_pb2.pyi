import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from trellis.v1 import jobs_pb2 as _jobs_pb2
from trellis.v1 import options_pb2 as _options_pb2
from trellis.v1 import runs_pb2 as _runs_pb2
from trellis.v1 import topics_pb2 as _topics_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InputType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INPUT_TYPE_UNSPECIFIED: _ClassVar[InputType]
    INPUT_TYPE_STRING: _ClassVar[InputType]
    INPUT_TYPE_NUMBER: _ClassVar[InputType]
    INPUT_TYPE_BOOLEAN: _ClassVar[InputType]
    INPUT_TYPE_JSON: _ClassVar[InputType]

class ImportAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMPORT_ACTION_UNSPECIFIED: _ClassVar[ImportAction]
    IMPORT_ACTION_CREATED: _ClassVar[ImportAction]
    IMPORT_ACTION_UPDATED: _ClassVar[ImportAction]
    IMPORT_ACTION_UNCHANGED: _ClassVar[ImportAction]
INPUT_TYPE_UNSPECIFIED: InputType
INPUT_TYPE_STRING: InputType
INPUT_TYPE_NUMBER: InputType
INPUT_TYPE_BOOLEAN: InputType
INPUT_TYPE_JSON: InputType
IMPORT_ACTION_UNSPECIFIED: ImportAction
IMPORT_ACTION_CREATED: ImportAction
IMPORT_ACTION_UPDATED: ImportAction
IMPORT_ACTION_UNCHANGED: ImportAction

class Workflow(_message.Message):
    __slots__ = ("id", "name", "trigger", "jobs", "version", "run_id", "run_state", "env", "inputs", "enabled", "triggers", "rollback", "parallel_limit")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: WorkflowInput
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[WorkflowInput, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_STATE_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_LIMIT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    trigger: str
    jobs: _containers.RepeatedCompositeFieldContainer[_jobs_pb2.Job]
    version: int
    run_id: str
    run_state: _runs_pb2.RunState
    env: _containers.ScalarMap[str, str]
    inputs: _containers.MessageMap[str, WorkflowInput]
    enabled: bool
    triggers: _containers.RepeatedCompositeFieldContainer[_topics_pb2.Trigger]
    rollback: str
    parallel_limit: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., trigger: _Optional[str] = ..., jobs: _Optional[_Iterable[_Union[_jobs_pb2.Job, _Mapping]]] = ..., version: _Optional[int] = ..., run_id: _Optional[str] = ..., run_state: _Optional[_Union[_runs_pb2.RunState, str]] = ..., env: _Optional[_Mapping[str, str]] = ..., inputs: _Optional[_Mapping[str, WorkflowInput]] = ..., enabled: _Optional[bool] = ..., triggers: _Optional[_Iterable[_Union[_topics_pb2.Trigger, _Mapping]]] = ..., rollback: _Optional[str] = ..., parallel_limit: _Optional[int] = ...) -> None: ...

class WorkflowInput(_message.Message):
    __slots__ = ("type", "required", "default", "description")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    type: InputType
    required: bool
    default: _struct_pb2.Value
    description: str
    def __init__(self, type: _Optional[_Union[InputType, str]] = ..., required: _Optional[bool] = ..., default: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., description: _Optional[str] = ...) -> None: ...

class ListWorkflowsRequest(_message.Message):
    __slots__ = ("limit", "offset", "status", "page_size", "page_token")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    limit: int
    offset: int
    status: str
    page_size: int
    page_token: str
    def __init__(self, limit: _Optional[int] = ..., offset: _Optional[int] = ..., status: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWorkflowsResponse(_message.Message):
    __slots__ = ("workflows", "next_page_token")
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[Workflow]
    next_page_token: str
    def __init__(self, workflows: _Optional[_Iterable[_Union[Workflow, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class CreateWorkflowRequest(_message.Message):
    __slots__ = ("workflow", "source", "workflow_id")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow: Workflow
    source: str
    workflow_id: str
    def __init__(self, workflow: _Optional[_Union[Workflow, _Mapping]] = ..., source: _Optional[str] = ..., workflow_id: _Optional[str] = ...) -> None: ...

class RunWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "inputs", "request_id", "parallel_limit")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_LIMIT_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    inputs: _struct_pb2.Struct
    request_id: str
    parallel_limit: int
    def __init__(self, workflow_id: _Optional[str] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ..., parallel_limit: _Optional[int] = ...) -> None: ...

class CreateRunRequest(_message.Message):
    __slots__ = ("workflow", "source", "inputs", "parallel_limit")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_LIMIT_FIELD_NUMBER: _ClassVar[int]
    workflow: Workflow
    source: str
    inputs: _struct_pb2.Struct
    parallel_limit: int
    def __init__(self, workflow: _Optional[_Union[Workflow, _Mapping]] = ..., source: _Optional[str] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., parallel_limit: _Optional[int] = ...) -> None: ...

class BatchRunWorkflowsRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RunWorkflowRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RunWorkflowRequest, _Mapping]]] = ...) -> None: ...

class BatchRunWorkflowsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[_runs_pb2.Run]
    def __init__(self, runs: _Optional[_Iterable[_Union[_runs_pb2.Run, _Mapping]]] = ...) -> None: ...

class CancelWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class WorkflowVersion(_message.Message):
    __slots__ = ("workflow_id", "version", "workflow", "created_at")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    version: int
    workflow: Workflow
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, workflow_id: _Optional[str] = ..., version: _Optional[int] = ..., workflow: _Optional[_Union[Workflow, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListWorkflowVersionsRequest(_message.Message):
    __slots__ = ("workflow_id", "page_size", "page_token")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    page_size: int
    page_token: str
    def __init__(self, workflow_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWorkflowVersionsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[WorkflowVersion]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[WorkflowVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetWorkflowVersionRequest(_message.Message):
    __slots__ = ("workflow_id", "version")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    version: int
    def __init__(self, workflow_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class RevertWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "to_version", "expected_version")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    to_version: int
    expected_version: int
    def __init__(self, workflow_id: _Optional[str] = ..., to_version: _Optional[int] = ..., expected_version: _Optional[int] = ...) -> None: ...

class CloneWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "new_workflow_id", "name")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    new_workflow_id: str
    name: str
    def __init__(self, workflow_id: _Optional[str] = ..., new_workflow_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class EnableWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class DisableWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class DeleteWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "purge_runs")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    PURGE_RUNS_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    purge_runs: bool
    def __init__(self, workflow_id: _Optional[str] = ..., purge_runs: _Optional[bool] = ...) -> None: ...

class DeleteWorkflowResponse(_message.Message):
    __slots__ = ("workflow_id", "purged_runs")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    PURGED_RUNS_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    purged_runs: int
    def __init__(self, workflow_id: _Optional[str] = ..., purged_runs: _Optional[int] = ...) -> None: ...

class ListWorkflowJobsRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class ListWorkflowJobsResponse(_message.Message):
    __slots__ = ("jobs", "version")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_jobs_pb2.Job]
    version: int
    def __init__(self, jobs: _Optional[_Iterable[_Union[_jobs_pb2.Job, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class GetWorkflowJobRequest(_message.Message):
    __slots__ = ("workflow_id", "job_id")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    job_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class AddWorkflowJobRequest(_message.Message):
    __slots__ = ("workflow_id", "job", "expected_version")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    job: _jobs_pb2.Job
    expected_version: int
    def __init__(self, workflow_id: _Optional[str] = ..., job: _Optional[_Union[_jobs_pb2.Job, _Mapping]] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateWorkflowJobRequest(_message.Message):
    __slots__ = ("workflow_id", "job_id", "job", "update_mask", "expected_version")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    job_id: str
    job: _jobs_pb2.Job
    update_mask: _field_mask_pb2.FieldMask
    expected_version: int
    def __init__(self, workflow_id: _Optional[str] = ..., job_id: _Optional[str] = ..., job: _Optional[_Union[_jobs_pb2.Job, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., expected_version: _Optional[int] = ...) -> None: ...

class RenameWorkflowJobRequest(_message.Message):
    __slots__ = ("workflow_id", "job_id", "new_job_id", "expected_version")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    job_id: str
    new_job_id: str
    expected_version: int
    def __init__(self, workflow_id: _Optional[str] = ..., job_id: _Optional[str] = ..., new_job_id: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class RemoveWorkflowJobRequest(_message.Message):
    __slots__ = ("workflow_id", "job_id", "cascade", "expected_version")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CASCADE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    job_id: str
    cascade: bool
    expected_version: int
    def __init__(self, workflow_id: _Optional[str] = ..., job_id: _Optional[str] = ..., cascade: _Optional[bool] = ..., expected_version: _Optional[int] = ...) -> None: ...

class AddWorkflowEdgeRequest(_message.Message):
    __slots__ = ("workflow_id", "from_job", "to_job", "expected_version")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_JOB_FIELD_NUMBER: _ClassVar[int]
    TO_JOB_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    from_job: str
    to_job: str
    expected_version: int
    def __init__(self, workflow_id: _Optional[str] = ..., from_job: _Optional[str] = ..., to_job: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class RemoveWorkflowEdgeRequest(_message.Message):
    __slots__ = ("workflow_id", "from_job", "to_job", "expected_version")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_JOB_FIELD_NUMBER: _ClassVar[int]
    TO_JOB_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    from_job: str
    to_job: str
    expected_version: int
    def __init__(self, workflow_id: _Optional[str] = ..., from_job: _Optional[str] = ..., to_job: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class ExportWorkflowsRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    def __init__(self, workflow_id: _Optional[str] = ...) -> None: ...

class ExportWorkflowsResponse(_message.Message):
    __slots__ = ("text", "count")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    text: str
    count: int
    def __init__(self, text: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ImportWorkflowsRequest(_message.Message):
    __slots__ = ("text", "dry_run")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    text: str
    dry_run: bool
    def __init__(self, text: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ImportedWorkflow(_message.Message):
    __slots__ = ("workflow_id", "action", "version")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    action: ImportAction
    version: int
    def __init__(self, workflow_id: _Optional[str] = ..., action: _Optional[_Union[ImportAction, str]] = ..., version: _Optional[int] = ...) -> None: ...

class ImportWorkflowsResponse(_message.Message):
    __slots__ = ("workflows", "dry_run")
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[ImportedWorkflow]
    dry_run: bool
    def __init__(self, workflows: _Optional[_Iterable[_Union[ImportedWorkflow, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...
