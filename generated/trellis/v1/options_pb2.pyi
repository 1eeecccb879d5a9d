from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorStyle(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_STYLE_UNSPECIFIED: _ClassVar[ErrorStyle]
    ERROR_STYLE_GOOGLE: _ClassVar[ErrorStyle]

class JsonShape(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JSON_SHAPE_UNSPECIFIED: _ClassVar[JsonShape]
    JSON_SHAPE_EXTERNALLY_TAGGED: _ClassVar[JsonShape]
    JSON_SHAPE_MAP: _ClassVar[JsonShape]
ERROR_STYLE_UNSPECIFIED: ErrorStyle
ERROR_STYLE_GOOGLE: ErrorStyle
JSON_SHAPE_UNSPECIFIED: JsonShape
JSON_SHAPE_EXTERNALLY_TAGGED: JsonShape
JSON_SHAPE_MAP: JsonShape
SURFACE_FIELD_NUMBER: _ClassVar[int]
surface: _descriptor.FieldDescriptor
REST_FIELD_NUMBER: _ClassVar[int]
rest: _descriptor.FieldDescriptor
REQUIRED_SCOPE_FIELD_NUMBER: _ClassVar[int]
required_scope: _descriptor.FieldDescriptor
PUBLIC_FIELD_NUMBER: _ClassVar[int]
public: _descriptor.FieldDescriptor
JSON_SHAPE_FIELD_NUMBER: _ClassVar[int]
json_shape: _descriptor.FieldDescriptor
JSON_VALUE_FIELD_NUMBER: _ClassVar[int]
json_value: _descriptor.FieldDescriptor

class SurfaceConventions(_message.Message):
    __slots__ = ("name", "error_style")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ERROR_STYLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    error_style: ErrorStyle
    def __init__(self, name: _Optional[str] = ..., error_style: _Optional[_Union[ErrorStyle, str]] = ...) -> None: ...

class RestOptions(_message.Message):
    __slots__ = ("success_code",)
    SUCCESS_CODE_FIELD_NUMBER: _ClassVar[int]
    success_code: int
    def __init__(self, success_code: _Optional[int] = ...) -> None: ...
