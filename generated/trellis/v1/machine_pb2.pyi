import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from trellis.v1 import options_pb2 as _options_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ValidateMachineUserRequest(_message.Message):
    __slots__ = ("username", "token")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    username: str
    token: str
    def __init__(self, username: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class ValidateMachineUserResponse(_message.Message):
    __slots__ = ("valid", "tenant_id", "machine_user_id", "error")
    VALID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    MACHINE_USER_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    tenant_id: str
    machine_user_id: str
    error: str
    def __init__(self, valid: _Optional[bool] = ..., tenant_id: _Optional[str] = ..., machine_user_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class CheckMachineUserRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckMachineUserResponse(_message.Message):
    __slots__ = ("authenticated", "machine_user_id", "tenant_id")
    AUTHENTICATED_FIELD_NUMBER: _ClassVar[int]
    MACHINE_USER_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    authenticated: bool
    machine_user_id: str
    tenant_id: str
    def __init__(self, authenticated: _Optional[bool] = ..., machine_user_id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class RegisterBackendRequest(_message.Message):
    __slots__ = ("name", "callback_url", "description", "replace")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_URL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    name: str
    callback_url: str
    description: str
    replace: bool
    def __init__(self, name: _Optional[str] = ..., callback_url: _Optional[str] = ..., description: _Optional[str] = ..., replace: _Optional[bool] = ...) -> None: ...

class Backend(_message.Message):
    __slots__ = ("id", "name", "callback_url", "machine_user_id", "description", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_URL_FIELD_NUMBER: _ClassVar[int]
    MACHINE_USER_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    callback_url: str
    machine_user_id: str
    description: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., callback_url: _Optional[str] = ..., machine_user_id: _Optional[str] = ..., description: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MachineUser(_message.Message):
    __slots__ = ("id", "username", "name", "enabled", "hint", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    username: str
    name: str
    enabled: bool
    hint: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., username: _Optional[str] = ..., name: _Optional[str] = ..., enabled: _Optional[bool] = ..., hint: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateMachineUserRequest(_message.Message):
    __slots__ = ("username", "name")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    name: str
    def __init__(self, username: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CreatedMachineUser(_message.Message):
    __slots__ = ("machine_user", "generated_token")
    MACHINE_USER_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKEN_FIELD_NUMBER: _ClassVar[int]
    machine_user: MachineUser
    generated_token: str
    def __init__(self, machine_user: _Optional[_Union[MachineUser, _Mapping]] = ..., generated_token: _Optional[str] = ...) -> None: ...

class ListMachineUsersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMachineUsersResponse(_message.Message):
    __slots__ = ("machine_users", "next_page_token")
    MACHINE_USERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    machine_users: _containers.RepeatedCompositeFieldContainer[MachineUser]
    next_page_token: str
    def __init__(self, machine_users: _Optional[_Iterable[_Union[MachineUser, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SetMachineUserEnabledRequest(_message.Message):
    __slots__ = ("machine_user_id", "enabled")
    MACHINE_USER_ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    machine_user_id: str
    enabled: bool
    def __init__(self, machine_user_id: _Optional[str] = ..., enabled: _Optional[bool] = ...) -> None: ...
