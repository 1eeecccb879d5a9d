import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from trellis.v1 import options_pb2 as _options_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_WORKFLOW_CREATED: _ClassVar[EventType]
    EVENT_TYPE_WORKFLOW_UPDATED: _ClassVar[EventType]
    EVENT_TYPE_WORKFLOW_ENABLED: _ClassVar[EventType]
    EVENT_TYPE_WORKFLOW_DISABLED: _ClassVar[EventType]
    EVENT_TYPE_WORKFLOW_DELETED: _ClassVar[EventType]
    EVENT_TYPE_RUN_CREATED: _ClassVar[EventType]
    EVENT_TYPE_RUN_FINISHED: _ClassVar[EventType]
    EVENT_TYPE_RUN_ROLLBACK_STARTED: _ClassVar[EventType]
    EVENT_TYPE_RUN_ROLLBACK_FINISHED: _ClassVar[EventType]
    EVENT_TYPE_RUN_RETRIED: _ClassVar[EventType]
    EVENT_TYPE_JOB_CREATED: _ClassVar[EventType]
    EVENT_TYPE_JOB_QUEUED: _ClassVar[EventType]
    EVENT_TYPE_JOB_LEASED: _ClassVar[EventType]
    EVENT_TYPE_JOB_STARTED: _ClassVar[EventType]
    EVENT_TYPE_JOB_RETRYING: _ClassVar[EventType]
    EVENT_TYPE_JOB_SUCCEEDED: _ClassVar[EventType]
    EVENT_TYPE_JOB_FAILED: _ClassVar[EventType]
    EVENT_TYPE_JOB_CANCELLED: _ClassVar[EventType]
    EVENT_TYPE_JOB_SKIPPED: _ClassVar[EventType]
    EVENT_TYPE_JOB_COMPENSATED: _ClassVar[EventType]
    EVENT_TYPE_JOB_LOGGED: _ClassVar[EventType]
    EVENT_TYPE_TOPIC_PUBLISHED: _ClassVar[EventType]
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_WORKFLOW_CREATED: EventType
EVENT_TYPE_WORKFLOW_UPDATED: EventType
EVENT_TYPE_WORKFLOW_ENABLED: EventType
EVENT_TYPE_WORKFLOW_DISABLED: EventType
EVENT_TYPE_WORKFLOW_DELETED: EventType
EVENT_TYPE_RUN_CREATED: EventType
EVENT_TYPE_RUN_FINISHED: EventType
EVENT_TYPE_RUN_ROLLBACK_STARTED: EventType
EVENT_TYPE_RUN_ROLLBACK_FINISHED: EventType
EVENT_TYPE_RUN_RETRIED: EventType
EVENT_TYPE_JOB_CREATED: EventType
EVENT_TYPE_JOB_QUEUED: EventType
EVENT_TYPE_JOB_LEASED: EventType
EVENT_TYPE_JOB_STARTED: EventType
EVENT_TYPE_JOB_RETRYING: EventType
EVENT_TYPE_JOB_SUCCEEDED: EventType
EVENT_TYPE_JOB_FAILED: EventType
EVENT_TYPE_JOB_CANCELLED: EventType
EVENT_TYPE_JOB_SKIPPED: EventType
EVENT_TYPE_JOB_COMPENSATED: EventType
EVENT_TYPE_JOB_LOGGED: EventType
EVENT_TYPE_TOPIC_PUBLISHED: EventType

class Event(_message.Message):
    __slots__ = ("cursor", "type", "occurred_at", "workflow_id", "workflow_version", "run_id", "job_id", "attempt", "message", "data")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    type: EventType
    occurred_at: _timestamp_pb2.Timestamp
    workflow_id: str
    workflow_version: int
    run_id: str
    job_id: str
    attempt: int
    message: str
    data: _struct_pb2.Struct
    def __init__(self, cursor: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., workflow_id: _Optional[str] = ..., workflow_version: _Optional[int] = ..., run_id: _Optional[str] = ..., job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., message: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class EventFilter(_message.Message):
    __slots__ = ("workflow_id", "run_id", "job_id", "types")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    run_id: str
    job_id: str
    types: _containers.RepeatedScalarFieldContainer[EventType]
    def __init__(self, workflow_id: _Optional[str] = ..., run_id: _Optional[str] = ..., job_id: _Optional[str] = ..., types: _Optional[_Iterable[_Union[EventType, str]]] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("after_cursor", "filter", "page_size")
    AFTER_CURSOR_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    after_cursor: str
    filter: EventFilter
    page_size: int
    def __init__(self, after_cursor: _Optional[str] = ..., filter: _Optional[_Union[EventFilter, _Mapping]] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events", "next_cursor")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    next_cursor: str
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("after_cursor", "filter")
    AFTER_CURSOR_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    after_cursor: str
    filter: EventFilter
    def __init__(self, after_cursor: _Optional[str] = ..., filter: _Optional[_Union[EventFilter, _Mapping]] = ...) -> None: ...
