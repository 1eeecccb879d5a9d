from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TimeFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIME_FORMAT_UNSPECIFIED: _ClassVar[TimeFormat]
    TIME_FORMAT_ISO_SECONDS: _ClassVar[TimeFormat]
    TIME_FORMAT_EPOCH_MS: _ClassVar[TimeFormat]
    TIME_FORMAT_EPOCH_MS_OR_ZERO: _ClassVar[TimeFormat]
    TIME_FORMAT_EPOCH_MS_UNSUFFIXED: _ClassVar[TimeFormat]

class ErrorStyle(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_STYLE_UNSPECIFIED: _ClassVar[ErrorStyle]
    ERROR_STYLE_GOOGLE: _ClassVar[ErrorStyle]
    ERROR_STYLE_SUCCESS_FLAG: _ClassVar[ErrorStyle]
    ERROR_STYLE_CODE_STATUS: _ClassVar[ErrorStyle]
    ERROR_STYLE_REASON_MESSAGE: _ClassVar[ErrorStyle]
    ERROR_STYLE_OAUTH2: _ClassVar[ErrorStyle]

class Envelope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENVELOPE_UNSPECIFIED: _ClassVar[Envelope]
    ENVELOPE_SUCCESS_DATA: _ClassVar[Envelope]

class FieldNames(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FIELD_NAMES_UNSPECIFIED: _ClassVar[FieldNames]
    FIELD_NAMES_JSON: _ClassVar[FieldNames]

class JsonShape(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JSON_SHAPE_UNSPECIFIED: _ClassVar[JsonShape]
    JSON_SHAPE_EXTERNALLY_TAGGED: _ClassVar[JsonShape]
    JSON_SHAPE_MAP: _ClassVar[JsonShape]
    JSON_SHAPE_OMIT_UNSET: _ClassVar[JsonShape]

class RateLimitBucket(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RATE_LIMIT_BUCKET_UNSPECIFIED: _ClassVar[RateLimitBucket]
    RATE_LIMIT_BUCKET_AUTH: _ClassVar[RateLimitBucket]
    RATE_LIMIT_BUCKET_PUBLIC: _ClassVar[RateLimitBucket]
    RATE_LIMIT_BUCKET_GENERAL: _ClassVar[RateLimitBucket]
    RATE_LIMIT_BUCKET_BATCH: _ClassVar[RateLimitBucket]
    RATE_LIMIT_BUCKET_WORKER: _ClassVar[RateLimitBucket]
TIME_FORMAT_UNSPECIFIED: TimeFormat
TIME_FORMAT_ISO_SECONDS: TimeFormat
TIME_FORMAT_EPOCH_MS: TimeFormat
TIME_FORMAT_EPOCH_MS_OR_ZERO: TimeFormat
TIME_FORMAT_EPOCH_MS_UNSUFFIXED: TimeFormat
ERROR_STYLE_UNSPECIFIED: ErrorStyle
ERROR_STYLE_GOOGLE: ErrorStyle
ERROR_STYLE_SUCCESS_FLAG: ErrorStyle
ERROR_STYLE_CODE_STATUS: ErrorStyle
ERROR_STYLE_REASON_MESSAGE: ErrorStyle
ERROR_STYLE_OAUTH2: ErrorStyle
ENVELOPE_UNSPECIFIED: Envelope
ENVELOPE_SUCCESS_DATA: Envelope
FIELD_NAMES_UNSPECIFIED: FieldNames
FIELD_NAMES_JSON: FieldNames
JSON_SHAPE_UNSPECIFIED: JsonShape
JSON_SHAPE_EXTERNALLY_TAGGED: JsonShape
JSON_SHAPE_MAP: JsonShape
JSON_SHAPE_OMIT_UNSET: JsonShape
RATE_LIMIT_BUCKET_UNSPECIFIED: RateLimitBucket
RATE_LIMIT_BUCKET_AUTH: RateLimitBucket
RATE_LIMIT_BUCKET_PUBLIC: RateLimitBucket
RATE_LIMIT_BUCKET_GENERAL: RateLimitBucket
RATE_LIMIT_BUCKET_BATCH: RateLimitBucket
RATE_LIMIT_BUCKET_WORKER: RateLimitBucket
SURFACE_FIELD_NUMBER: _ClassVar[int]
surface: _descriptor.FieldDescriptor
REST_FIELD_NUMBER: _ClassVar[int]
rest: _descriptor.FieldDescriptor
REQUIRED_SCOPE_FIELD_NUMBER: _ClassVar[int]
required_scope: _descriptor.FieldDescriptor
PUBLIC_FIELD_NUMBER: _ClassVar[int]
public: _descriptor.FieldDescriptor
RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
rate_limit: _descriptor.FieldDescriptor
POLICY_FIELD_NUMBER: _ClassVar[int]
policy: _descriptor.FieldDescriptor
JSON_SHAPE_FIELD_NUMBER: _ClassVar[int]
json_shape: _descriptor.FieldDescriptor
ADDITIONAL_FIELD_NUMBER: _ClassVar[int]
additional: _descriptor.FieldDescriptor
TIMES_FIELD_NUMBER: _ClassVar[int]
times: _descriptor.FieldDescriptor
JSON_VALUE_FIELD_NUMBER: _ClassVar[int]
json_value: _descriptor.FieldDescriptor
UNKNOWN_VALUE_ERROR_FIELD_NUMBER: _ClassVar[int]
unknown_value_error: _descriptor.FieldDescriptor
REFUSED_BY_SERVER_FIELD_NUMBER: _ClassVar[int]
refused_by_server: _descriptor.FieldDescriptor
OMIT_UNSET_FIELD_NUMBER: _ClassVar[int]
omit_unset: _descriptor.FieldDescriptor

class SurfaceConventions(_message.Message):
    __slots__ = ("name", "error_style", "envelope", "field_names", "additional_fields", "times")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ERROR_STYLE_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    FIELD_NAMES_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_FIELDS_FIELD_NUMBER: _ClassVar[int]
    TIMES_FIELD_NUMBER: _ClassVar[int]
    name: str
    error_style: ErrorStyle
    envelope: Envelope
    field_names: FieldNames
    additional_fields: bool
    times: TimeFormat
    def __init__(self, name: _Optional[str] = ..., error_style: _Optional[_Union[ErrorStyle, str]] = ..., envelope: _Optional[_Union[Envelope, str]] = ..., field_names: _Optional[_Union[FieldNames, str]] = ..., additional_fields: _Optional[bool] = ..., times: _Optional[_Union[TimeFormat, str]] = ...) -> None: ...

class RestOptions(_message.Message):
    __slots__ = ("success_code", "form_body", "bindings")
    SUCCESS_CODE_FIELD_NUMBER: _ClassVar[int]
    FORM_BODY_FIELD_NUMBER: _ClassVar[int]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    success_code: int
    form_body: bool
    bindings: _containers.RepeatedCompositeFieldContainer[RestBinding]
    def __init__(self, success_code: _Optional[int] = ..., form_body: _Optional[bool] = ..., bindings: _Optional[_Iterable[_Union[RestBinding, _Mapping]]] = ...) -> None: ...

class RestBinding(_message.Message):
    __slots__ = ("path", "surface", "success_code", "confirmation", "times", "ignored_parameters")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_CODE_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATION_FIELD_NUMBER: _ClassVar[int]
    TIMES_FIELD_NUMBER: _ClassVar[int]
    IGNORED_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    path: str
    surface: str
    success_code: int
    confirmation: str
    times: TimeFormat
    ignored_parameters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, path: _Optional[str] = ..., surface: _Optional[str] = ..., success_code: _Optional[int] = ..., confirmation: _Optional[str] = ..., times: _Optional[_Union[TimeFormat, str]] = ..., ignored_parameters: _Optional[_Iterable[str]] = ...) -> None: ...

class PolicyTarget(_message.Message):
    __slots__ = ("kind", "name_fields")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELDS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[str] = ..., name_fields: _Optional[_Iterable[str]] = ...) -> None: ...
