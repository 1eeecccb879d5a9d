from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from trellis.v1 import jobs_pb2 as _jobs_pb2
from trellis.v1 import options_pb2 as _options_pb2
from trellis.v1 import runs_pb2 as _runs_pb2
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
INPUT_TYPE_UNSPECIFIED: InputType
INPUT_TYPE_STRING: InputType
INPUT_TYPE_NUMBER: InputType
INPUT_TYPE_BOOLEAN: InputType
INPUT_TYPE_JSON: InputType

class Workflow(_message.Message):
    __slots__ = ("id", "name", "trigger", "jobs", "version", "run_id", "run_state", "env", "inputs", "rollback", "parallel_limit")
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
    rollback: str
    parallel_limit: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., trigger: _Optional[str] = ..., jobs: _Optional[_Iterable[_Union[_jobs_pb2.Job, _Mapping]]] = ..., version: _Optional[int] = ..., run_id: _Optional[str] = ..., run_state: _Optional[_Union[_runs_pb2.RunState, str]] = ..., env: _Optional[_Mapping[str, str]] = ..., inputs: _Optional[_Mapping[str, WorkflowInput]] = ..., rollback: _Optional[str] = ..., parallel_limit: _Optional[int] = ...) -> None: ...

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
