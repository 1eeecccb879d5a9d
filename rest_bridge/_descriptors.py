"""Small questions about protobuf descriptors that the codec and the router share."""

from __future__ import annotations

from typing import Any, cast

from google.api import field_behavior_pb2  # type: ignore[import-untyped]
from google.protobuf import message_factory
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    OneofDescriptor,
)
from google.protobuf.message import Message

from trellis.v1 import options_pb2

#: Wrapper types, whose canonical JSON is their bare value.
WRAPPER_TYPES = frozenset(
    {
        "google.protobuf.BoolValue",
        "google.protobuf.BytesValue",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int32Value",
        "google.protobuf.Int64Value",
        "google.protobuf.StringValue",
        "google.protobuf.UInt32Value",
        "google.protobuf.UInt64Value",
    }
)

#: Well-known types whose canonical JSON is not a plain object of their fields.
WELL_KNOWN_TYPES = WRAPPER_TYPES | {
    "google.protobuf.Any",
    "google.protobuf.Duration",
    "google.protobuf.Empty",
    "google.protobuf.FieldMask",
    "google.protobuf.ListValue",
    "google.protobuf.Struct",
    "google.protobuf.Timestamp",
    "google.protobuf.Value",
}

INTEGER_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
    }
)


def option(options: Message, extension: FieldDescriptor) -> Any:
    """The value of a custom option (an extension of a ``*Options`` message).

    The generated stubs type extensions as plain field descriptors, which the
    protobuf stubs do not accept as extension keys; hence the untyped access.
    """
    return cast(Any, options).Extensions[extension]


def message_type(field: FieldDescriptor) -> Descriptor:
    """The message type of a message (or map) field."""
    descriptor = field.message_type
    if descriptor is None:
        raise TypeError(f"{field.full_name} is not a message field")
    return descriptor


def enum_type(field: FieldDescriptor) -> EnumDescriptor:
    """The enum type of an enum field."""
    descriptor = field.enum_type
    if descriptor is None:
        raise TypeError(f"{field.full_name} is not an enum field")
    return descriptor


def descriptor_of(message: Message) -> Descriptor:
    """The descriptor of a message instance."""
    return cast(Descriptor, message.DESCRIPTOR)


def default_json_name(name: str) -> str:
    """The json_name protoc derives from a field name (``max_retries`` -> ``maxRetries``)."""
    parts: list[str] = []
    upper_next = False
    for char in name:
        if char == "_":
            upper_next = True
        elif upper_next:
            parts.append(char.upper())
            upper_next = False
        else:
            parts.append(char)
    return "".join(parts)


def output_key(field: FieldDescriptor) -> str:
    """The JSON key a field renders under.

    The proto name, unless the field declares a ``json_name`` of its own: descriptors
    always carry a json_name, so an explicit one is recognised by differing from the
    derived camelCase spelling.
    """
    if field.json_name != default_json_name(field.name):
        return field.json_name
    return field.name


def input_keys(field: FieldDescriptor) -> tuple[str, ...]:
    """Every JSON key accepted for a field on input: proto name and json_name."""
    if field.json_name == field.name:
        return (field.name,)
    return (field.name, field.json_name)


def is_map(field: FieldDescriptor) -> bool:
    """Whether the field is a ``map<K, V>`` (a repeated synthetic entry message)."""
    return (
        field.is_repeated
        and field.type == FieldDescriptor.TYPE_MESSAGE
        and message_type(field).GetOptions().map_entry
    )


def is_output_only(field: FieldDescriptor) -> bool:
    """Whether the field is annotated ``(google.api.field_behavior) = OUTPUT_ONLY``."""
    behaviors = option(field.GetOptions(), field_behavior_pb2.field_behavior)
    return field_behavior_pb2.OUTPUT_ONLY in behaviors


def is_omitted_unset(field: FieldDescriptor) -> bool:
    """Whether answers leave the field out while unset (``(trellis.v1.omit_unset)``)."""
    return bool(option(field.GetOptions(), options_pb2.omit_unset))


def is_additional(field: FieldDescriptor) -> bool:
    """Whether the field is marked ``(trellis.v1.additional)``: beyond the documented shapes."""
    return bool(option(field.GetOptions(), options_pb2.additional))


def json_shape(descriptor: Descriptor) -> int:
    """The message's ``(trellis.v1.json_shape)``, ``JSON_SHAPE_UNSPECIFIED`` when absent."""
    return int(option(descriptor.GetOptions(), options_pb2.json_shape))


def is_synthetic_oneof(oneof: OneofDescriptor) -> bool:
    """Whether the oneof only exists to give a proto3 ``optional`` field presence."""
    fields = oneof.fields
    return len(fields) == 1 and oneof.name == "_" + fields[0].name and fields[0].has_presence


def real_oneofs(descriptor: Descriptor) -> list[OneofDescriptor]:
    """The message's declared oneofs, without the synthetic ones of ``optional`` fields."""
    return [oneof for oneof in descriptor.oneofs if not is_synthetic_oneof(oneof)]


def message_class(descriptor: Descriptor) -> type[Message]:
    """The generated Python class of a message type."""
    return message_factory.GetMessageClass(descriptor)


def is_empty_message(descriptor: Descriptor) -> bool:
    """Whether a message type declares no fields (rendered as a bare tag when tagged)."""
    return len(descriptor.fields) == 0


def tagged_oneof(descriptor: Descriptor) -> OneofDescriptor:
    """The one oneof of a JSON_SHAPE_EXTERNALLY_TAGGED message; fails on other layouts."""
    oneofs = real_oneofs(descriptor)
    if len(oneofs) != 1 or len(oneofs[0].fields) != len(descriptor.fields):
        raise ValueError(
            f"{descriptor.full_name}: JSON_SHAPE_EXTERNALLY_TAGGED needs exactly one oneof "
            "and no other fields"
        )
    return oneofs[0]


def map_shape_field(descriptor: Descriptor) -> FieldDescriptor:
    """The one map field of a JSON_SHAPE_MAP message; fails on other layouts."""
    fields = descriptor.fields
    if len(fields) != 1 or not is_map(fields[0]):
        raise ValueError(f"{descriptor.full_name}: JSON_SHAPE_MAP needs exactly one map field")
    return fields[0]
