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

class WorkerStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATUS_UNSPECIFIED: _ClassVar[WorkerStatus]
    WORKER_STATUS_IDLE: _ClassVar[WorkerStatus]
    WORKER_STATUS_BUSY: _ClassVar[WorkerStatus]
    WORKER_STATUS_OFFLINE: _ClassVar[WorkerStatus]
WORKER_STATUS_UNSPECIFIED: WorkerStatus
WORKER_STATUS_IDLE: WorkerStatus
WORKER_STATUS_BUSY: WorkerStatus
WORKER_STATUS_OFFLINE: WorkerStatus

class WorkerCapabilities(_message.Message):
    __slots__ = ("handlers", "shell")
    HANDLERS_FIELD_NUMBER: _ClassVar[int]
    SHELL_FIELD_NUMBER: _ClassVar[int]
    handlers: _containers.RepeatedScalarFieldContainer[str]
    shell: bool
    def __init__(self, handlers: _Optional[_Iterable[str]] = ..., shell: _Optional[bool] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("worker_id", "labels", "registered_at", "last_heartbeat", "current_job", "status", "capabilities")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_JOB_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    registered_at: _timestamp_pb2.Timestamp
    last_heartbeat: _timestamp_pb2.Timestamp
    current_job: str
    status: WorkerStatus
    capabilities: WorkerCapabilities
    def __init__(self, worker_id: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., current_job: _Optional[str] = ..., status: _Optional[_Union[WorkerStatus, str]] = ..., capabilities: _Optional[_Union[WorkerCapabilities, _Mapping]] = ...) -> None: ...

class RegisterWorkerRequest(_message.Message):
    __slots__ = ("worker_id", "labels", "capabilities")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    capabilities: WorkerCapabilities
    def __init__(self, worker_id: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Union[WorkerCapabilities, _Mapping]] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers", "next_page_token")
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    next_page_token: str
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class QueuedJob(_message.Message):
    __slots__ = ("job_id", "workflow_id", "command", "required_labels", "retry_policy", "attempt", "upstream_outputs", "enqueued_at", "delayed_until", "run_id", "name", "env", "timeout_secs", "inputs")
    class UpstreamOutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Outputs
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Outputs, _Mapping]] = ...) -> None: ...
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_LABELS_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_AT_FIELD_NUMBER: _ClassVar[int]
    DELAYED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    workflow_id: str
    command: str
    required_labels: _containers.RepeatedScalarFieldContainer[str]
    retry_policy: _jobs_pb2.RetryPolicy
    attempt: int
    upstream_outputs: _containers.MessageMap[str, Outputs]
    enqueued_at: _timestamp_pb2.Timestamp
    delayed_until: _timestamp_pb2.Timestamp
    run_id: str
    name: str
    env: _containers.ScalarMap[str, str]
    timeout_secs: int
    inputs: _struct_pb2.Struct
    def __init__(self, job_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., command: _Optional[str] = ..., required_labels: _Optional[_Iterable[str]] = ..., retry_policy: _Optional[_Union[_jobs_pb2.RetryPolicy, _Mapping]] = ..., attempt: _Optional[int] = ..., upstream_outputs: _Optional[_Mapping[str, Outputs]] = ..., enqueued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delayed_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_id: _Optional[str] = ..., name: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., timeout_secs: _Optional[int] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Outputs(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, str]
    def __init__(self, values: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "job_id", "workflow_id", "worker_id", "ttl_secs", "granted_at", "expires_at", "run_id")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    job_id: str
    workflow_id: str
    worker_id: str
    ttl_secs: int
    granted_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    run_id: str
    def __init__(self, lease_id: _Optional[str] = ..., job_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., ttl_secs: _Optional[int] = ..., granted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_id: _Optional[str] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("job", "lease")
    JOB_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    job: QueuedJob
    lease: Lease
    def __init__(self, job: _Optional[_Union[QueuedJob, _Mapping]] = ..., lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class ClaimJobRequest(_message.Message):
    __slots__ = ("worker_id", "labels", "lease_ttl_secs", "wait_secs", "capabilities")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_SECS_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    lease_ttl_secs: int
    wait_secs: int
    capabilities: WorkerCapabilities
    def __init__(self, worker_id: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., lease_ttl_secs: _Optional[int] = ..., wait_secs: _Optional[int] = ..., capabilities: _Optional[_Union[WorkerCapabilities, _Mapping]] = ...) -> None: ...

class ClaimJobResponse(_message.Message):
    __slots__ = ("assignment",)
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    assignment: Assignment
    def __init__(self, assignment: _Optional[_Union[Assignment, _Mapping]] = ...) -> None: ...

class ClaimJobsRequest(_message.Message):
    __slots__ = ("worker_id", "labels", "lease_ttl_secs", "wait_secs", "max_jobs", "capabilities")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_SECS_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECS_FIELD_NUMBER: _ClassVar[int]
    MAX_JOBS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    lease_ttl_secs: int
    wait_secs: int
    max_jobs: int
    capabilities: WorkerCapabilities
    def __init__(self, worker_id: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., lease_ttl_secs: _Optional[int] = ..., wait_secs: _Optional[int] = ..., max_jobs: _Optional[int] = ..., capabilities: _Optional[_Union[WorkerCapabilities, _Mapping]] = ...) -> None: ...

class ClaimJobsResponse(_message.Message):
    __slots__ = ("assignments",)
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    def __init__(self, assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ...) -> None: ...

class StreamAssignmentsRequest(_message.Message):
    __slots__ = ("worker_id", "labels", "lease_ttl_secs", "slots", "capabilities")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_SECS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    lease_ttl_secs: int
    slots: int
    capabilities: WorkerCapabilities
    def __init__(self, worker_id: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., lease_ttl_secs: _Optional[int] = ..., slots: _Optional[int] = ..., capabilities: _Optional[_Union[WorkerCapabilities, _Mapping]] = ...) -> None: ...

class StreamAssignmentsResponse(_message.Message):
    __slots__ = ("assignments", "cancelled_lease_ids")
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    cancelled_lease_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ..., cancelled_lease_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("lease_id", "lease_ttl_secs")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_SECS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    lease_ttl_secs: int
    def __init__(self, lease_id: _Optional[str] = ..., lease_ttl_secs: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("lease_id", "expires_at", "cancelled", "lease_lost")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    LEASE_LOST_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    expires_at: _timestamp_pb2.Timestamp
    cancelled: bool
    lease_lost: bool
    def __init__(self, lease_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancelled: _Optional[bool] = ..., lease_lost: _Optional[bool] = ...) -> None: ...

class CompleteJobRequest(_message.Message):
    __slots__ = ("lease_id", "outputs")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    outputs: _containers.ScalarMap[str, str]
    def __init__(self, lease_id: _Optional[str] = ..., outputs: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CompleteJobResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FailJobRequest(_message.Message):
    __slots__ = ("lease_id", "error", "retryable")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    error: str
    retryable: bool
    def __init__(self, lease_id: _Optional[str] = ..., error: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class FailJobResponse(_message.Message):
    __slots__ = ("will_retry", "delayed_until")
    WILL_RETRY_FIELD_NUMBER: _ClassVar[int]
    DELAYED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    will_retry: bool
    delayed_until: _timestamp_pb2.Timestamp
    def __init__(self, will_retry: _Optional[bool] = ..., delayed_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("complete", "fail")
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    FAIL_FIELD_NUMBER: _ClassVar[int]
    complete: CompleteJobRequest
    fail: FailJobRequest
    def __init__(self, complete: _Optional[_Union[CompleteJobRequest, _Mapping]] = ..., fail: _Optional[_Union[FailJobRequest, _Mapping]] = ...) -> None: ...

class ReportResultsRequest(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[JobResult]
    def __init__(self, results: _Optional[_Iterable[_Union[JobResult, _Mapping]]] = ...) -> None: ...

class JobResultStatus(_message.Message):
    __slots__ = ("lease_id", "code", "message")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    code: int
    message: str
    def __init__(self, lease_id: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ReportResultsResponse(_message.Message):
    __slots__ = ("statuses",)
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedCompositeFieldContainer[JobResultStatus]
    def __init__(self, statuses: _Optional[_Iterable[_Union[JobResultStatus, _Mapping]]] = ...) -> None: ...

class GetJobCancelledRequest(_message.Message):
    __slots__ = ("workflow_id", "job_id", "run_id")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    job_id: str
    run_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., job_id: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class GetJobCancelledResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    def __init__(self, cancelled: _Optional[bool] = ...) -> None: ...
