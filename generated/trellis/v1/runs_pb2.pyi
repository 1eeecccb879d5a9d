import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from trellis.v1 import jobs_pb2 as _jobs_pb2
from trellis.v1 import options_pb2 as _options_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
    RUN_STATE_CANCELLED: _ClassVar[RunState]
    RUN_STATE_ROLLING_BACK: _ClassVar[RunState]
    RUN_STATE_ROLLED_BACK: _ClassVar[RunState]
    RUN_STATE_PARTLY_ROLLED_BACK: _ClassVar[RunState]
    RUN_STATE_ROLLBACK_FAILED: _ClassVar[RunState]

class RunEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_EVENT_TYPE_UNSPECIFIED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_RUN_STARTED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_JOB_QUEUED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_JOB_STARTED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_JOB_SUCCEEDED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_JOB_FAILED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_JOB_RETRYING: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_JOB_SKIPPED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_JOB_CANCELLED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_RUN_FINISHED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_RUN_RETRIED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_RUN_ROLLBACK_STARTED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_RUN_ROLLBACK_FINISHED: _ClassVar[RunEventType]
    RUN_EVENT_TYPE_JOB_COMPENSATED: _ClassVar[RunEventType]
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_FAILED: RunState
RUN_STATE_CANCELLED: RunState
RUN_STATE_ROLLING_BACK: RunState
RUN_STATE_ROLLED_BACK: RunState
RUN_STATE_PARTLY_ROLLED_BACK: RunState
RUN_STATE_ROLLBACK_FAILED: RunState
RUN_EVENT_TYPE_UNSPECIFIED: RunEventType
RUN_EVENT_TYPE_RUN_STARTED: RunEventType
RUN_EVENT_TYPE_JOB_QUEUED: RunEventType
RUN_EVENT_TYPE_JOB_STARTED: RunEventType
RUN_EVENT_TYPE_JOB_SUCCEEDED: RunEventType
RUN_EVENT_TYPE_JOB_FAILED: RunEventType
RUN_EVENT_TYPE_JOB_RETRYING: RunEventType
RUN_EVENT_TYPE_JOB_SKIPPED: RunEventType
RUN_EVENT_TYPE_JOB_CANCELLED: RunEventType
RUN_EVENT_TYPE_RUN_FINISHED: RunEventType
RUN_EVENT_TYPE_RUN_RETRIED: RunEventType
RUN_EVENT_TYPE_RUN_ROLLBACK_STARTED: RunEventType
RUN_EVENT_TYPE_RUN_ROLLBACK_FINISHED: RunEventType
RUN_EVENT_TYPE_JOB_COMPENSATED: RunEventType

class Run(_message.Message):
    __slots__ = ("run_id", "workflow_id", "workflow_version", "state", "created_at", "finished_at", "inputs", "request_id", "attempt", "parallel_limit")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_LIMIT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    workflow_id: str
    workflow_version: int
    state: RunState
    created_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    inputs: _struct_pb2.Struct
    request_id: str
    attempt: int
    parallel_limit: int
    def __init__(self, run_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., workflow_version: _Optional[int] = ..., state: _Optional[_Union[RunState, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ..., attempt: _Optional[int] = ..., parallel_limit: _Optional[int] = ...) -> None: ...

class RunDetail(_message.Message):
    __slots__ = ("run", "jobs")
    RUN_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    run: Run
    jobs: _containers.RepeatedCompositeFieldContainer[_jobs_pb2.Job]
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ..., jobs: _Optional[_Iterable[_Union[_jobs_pb2.Job, _Mapping]]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("workflow_id", "page_size", "page_token")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    page_size: int
    page_token: str
    def __init__(self, workflow_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class RetryRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class RollbackRunRequest(_message.Message):
    __slots__ = ("run_id", "job_ids")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_id: _Optional[str] = ..., job_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetRunProgressRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class RunProgress(_message.Message):
    __slots__ = ("run_id", "state", "attempt", "jobs_total", "jobs_done", "jobs_succeeded", "jobs_failed", "running_jobs", "queued_jobs", "estimated_secs_left", "estimate_sample_runs")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    JOBS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    JOBS_DONE_FIELD_NUMBER: _ClassVar[int]
    JOBS_SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    JOBS_FAILED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_SECS_LEFT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_SAMPLE_RUNS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: RunState
    attempt: int
    jobs_total: int
    jobs_done: int
    jobs_succeeded: int
    jobs_failed: int
    running_jobs: _containers.RepeatedScalarFieldContainer[str]
    queued_jobs: _containers.RepeatedScalarFieldContainer[str]
    estimated_secs_left: int
    estimate_sample_runs: int
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., attempt: _Optional[int] = ..., jobs_total: _Optional[int] = ..., jobs_done: _Optional[int] = ..., jobs_succeeded: _Optional[int] = ..., jobs_failed: _Optional[int] = ..., running_jobs: _Optional[_Iterable[str]] = ..., queued_jobs: _Optional[_Iterable[str]] = ..., estimated_secs_left: _Optional[int] = ..., estimate_sample_runs: _Optional[int] = ...) -> None: ...

class StreamRunEventsRequest(_message.Message):
    __slots__ = ("run_id", "after_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    after_id: int
    def __init__(self, run_id: _Optional[str] = ..., after_id: _Optional[int] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("id", "run_id", "type", "job_id", "attempt", "occurred_at", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    run_id: str
    type: RunEventType
    job_id: str
    attempt: int
    occurred_at: _timestamp_pb2.Timestamp
    message: str
    def __init__(self, id: _Optional[int] = ..., run_id: _Optional[str] = ..., type: _Optional[_Union[RunEventType, str]] = ..., job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...
