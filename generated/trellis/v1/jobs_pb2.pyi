import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from trellis.v1 import options_pb2 as _options_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_SKIPPED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class AttemptOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_OUTCOME_UNSPECIFIED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_RUNNING: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_SUCCEEDED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_FAILED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_LEASE_LOST: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_TIMED_OUT: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_CANCELLED: _ClassVar[AttemptOutcome]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_SKIPPED: JobState
JOB_STATE_CANCELLED: JobState
ATTEMPT_OUTCOME_UNSPECIFIED: AttemptOutcome
ATTEMPT_OUTCOME_RUNNING: AttemptOutcome
ATTEMPT_OUTCOME_SUCCEEDED: AttemptOutcome
ATTEMPT_OUTCOME_FAILED: AttemptOutcome
ATTEMPT_OUTCOME_LEASE_LOST: AttemptOutcome
ATTEMPT_OUTCOME_TIMED_OUT: AttemptOutcome
ATTEMPT_OUTCOME_CANCELLED: AttemptOutcome

class Backoff(_message.Message):
    __slots__ = ("none", "fixed", "exponential")
    class NoDelay(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Fixed(_message.Message):
        __slots__ = ("delay_secs",)
        DELAY_SECS_FIELD_NUMBER: _ClassVar[int]
        delay_secs: int
        def __init__(self, delay_secs: _Optional[int] = ...) -> None: ...
    class Exponential(_message.Message):
        __slots__ = ("base_secs", "max_secs")
        BASE_SECS_FIELD_NUMBER: _ClassVar[int]
        MAX_SECS_FIELD_NUMBER: _ClassVar[int]
        base_secs: int
        max_secs: int
        def __init__(self, base_secs: _Optional[int] = ..., max_secs: _Optional[int] = ...) -> None: ...
    NONE_FIELD_NUMBER: _ClassVar[int]
    FIXED_FIELD_NUMBER: _ClassVar[int]
    EXPONENTIAL_FIELD_NUMBER: _ClassVar[int]
    none: Backoff.NoDelay
    fixed: Backoff.Fixed
    exponential: Backoff.Exponential
    def __init__(self, none: _Optional[_Union[Backoff.NoDelay, _Mapping]] = ..., fixed: _Optional[_Union[Backoff.Fixed, _Mapping]] = ..., exponential: _Optional[_Union[Backoff.Exponential, _Mapping]] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_retries", "backoff")
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FIELD_NUMBER: _ClassVar[int]
    max_retries: int
    backoff: Backoff
    def __init__(self, max_retries: _Optional[int] = ..., backoff: _Optional[_Union[Backoff, _Mapping]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "name", "status", "command", "duration_secs", "started_at", "depends_on", "output", "required_labels", "max_retries", "attempt", "retry_policy", "timeout_secs", "outputs", "delayed_until", "env", "waiting_reason", "attempts", "compensation")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    DELAYED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    WAITING_REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    status: JobState
    command: str
    duration_secs: int
    started_at: _timestamp_pb2.Timestamp
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    output: str
    required_labels: _containers.RepeatedScalarFieldContainer[str]
    max_retries: int
    attempt: int
    retry_policy: RetryPolicy
    timeout_secs: int
    outputs: _containers.ScalarMap[str, str]
    delayed_until: _timestamp_pb2.Timestamp
    env: _containers.ScalarMap[str, str]
    waiting_reason: str
    attempts: _containers.RepeatedCompositeFieldContainer[JobAttempt]
    compensation: Compensation
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[_Union[JobState, str]] = ..., command: _Optional[str] = ..., duration_secs: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., depends_on: _Optional[_Iterable[str]] = ..., output: _Optional[str] = ..., required_labels: _Optional[_Iterable[str]] = ..., max_retries: _Optional[int] = ..., attempt: _Optional[int] = ..., retry_policy: _Optional[_Union[RetryPolicy, _Mapping]] = ..., timeout_secs: _Optional[int] = ..., outputs: _Optional[_Mapping[str, str]] = ..., delayed_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., env: _Optional[_Mapping[str, str]] = ..., waiting_reason: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[JobAttempt, _Mapping]]] = ..., compensation: _Optional[_Union[Compensation, _Mapping]] = ...) -> None: ...

class Compensation(_message.Message):
    __slots__ = ("command", "max_retries")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    command: str
    max_retries: int
    def __init__(self, command: _Optional[str] = ..., max_retries: _Optional[int] = ...) -> None: ...

class JobAttempt(_message.Message):
    __slots__ = ("attempt", "lease_id", "worker_id", "started_at", "ended_at", "outcome", "error")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    lease_id: str
    worker_id: str
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    outcome: AttemptOutcome
    error: str
    def __init__(self, attempt: _Optional[int] = ..., lease_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outcome: _Optional[_Union[AttemptOutcome, str]] = ..., error: _Optional[str] = ...) -> None: ...
