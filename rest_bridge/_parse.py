"""JSON and URL text -> request messages, strictly, with errors that name the field.

Parsers are compiled once per message type. A field is accepted under its proto name
and its json_name; ``null`` leaves it unset; output-only fields are skipped, because
clients echo back what they read (a workflow with its jobs' ``status``). A Timestamp
is accepted in every spelling a surface renders (``_times``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from trellis.v1 import options_pb2

from ._descriptors import (
    WELL_KNOWN_TYPES,
    WRAPPER_TYPES,
    input_keys,
    is_empty_message,
    is_map,
    is_output_only,
    json_shape,
    map_shape_field,
    message_type,
    option,
    tagged_oneof,
)
from ._json_values import (
    CodecError,
    Json,
    ServerRefusal,
    child_path,
    describe,
    entry_path,
    index_path,
)
from ._per_type import PerType
from ._scalars import scalar_parser, text_parser
from ._times import is_time, ms_keys, time_setter, time_text_setter

MessageParser = Callable[[Json, Message, str], None]
"""Parses a JSON value into a message (in place); the string is the value's path."""

FieldSetter = Callable[[Message, Json, str], None]
"""Sets one field of a message from a non-null JSON value."""

TextSetter = Callable[[Message, Sequence[str]], None]
"""Sets one (possibly nested) field from URL text: a path variable or query values."""


def message_parser(descriptor: Descriptor) -> MessageParser:
    """The (cached) parser of a message type."""
    return _PARSERS(descriptor)


@dataclass(frozen=True, slots=True)
class _FieldPlan:
    name: str
    output_only: bool
    oneof: str | None
    assign: FieldSetter
    clear_to_null_value: bool


def _build(descriptor: Descriptor) -> MessageParser:
    if descriptor.full_name in WELL_KNOWN_TYPES:
        return _well_known_parser(descriptor)
    shape = json_shape(descriptor)
    if shape == options_pb2.JSON_SHAPE_EXTERNALLY_TAGGED:
        return _tagged_parser(descriptor)
    if shape == options_pb2.JSON_SHAPE_MAP:
        set_map = field_setter(map_shape_field(descriptor))
        return lambda value, message, path: set_map(message, value, path)

    plans: dict[str, _FieldPlan] = {}
    for field in descriptor.fields:
        oneof = field.containing_oneof
        plan = _FieldPlan(
            name=field.name,
            output_only=is_output_only(field),
            # Synthetic oneofs of `optional` fields have one member: no conflicts.
            oneof=oneof.name if oneof is not None and len(oneof.fields) > 1 else None,
            assign=_refusals(field, field_setter(field)),
            clear_to_null_value=(
                field.type == FieldDescriptor.TYPE_MESSAGE
                and not field.is_repeated
                and message_type(field).full_name == "google.protobuf.Value"
            ),
        )
        for key in input_keys(field):
            plans[key] = plan
        if is_time(field) and not field.is_repeated:
            in_ms = dataclasses.replace(plan, assign=_refusals(field, time_setter(field, ms=True)))
            for key in ms_keys(field):
                plans.setdefault(key, in_ms)

    def parse(value: Json, message: Message, path: str) -> None:
        if not isinstance(value, dict):
            raise CodecError(path, f"expected an object, got {describe(value)}")
        chosen: dict[str, str] | None = None
        for key, item in value.items():
            plan = plans.get(key)
            if plan is None:
                raise CodecError(child_path(path, key), "unknown field")
            if plan.output_only:
                continue
            if item is None:
                if plan.clear_to_null_value:
                    getattr(message, plan.name).null_value = 0
                else:
                    message.ClearField(plan.name)
                continue
            if plan.oneof is not None:
                chosen = chosen if chosen is not None else {}
                other = chosen.setdefault(plan.oneof, plan.name)
                if other != plan.name:
                    raise CodecError(
                        child_path(path, key), f'cannot be set together with "{other}"'
                    )
            plan.assign(message, item, child_path(path, key))

    return parse


def _refusals(field: FieldDescriptor, setter: FieldSetter) -> FieldSetter:
    """``setter``, its refusals left to the server for ``(refused_by_server)`` fields."""
    if not option(field.GetOptions(), options_pb2.refused_by_server):
        return setter

    def set_or_refuse(message: Message, value: Json, path: str) -> None:
        try:
            setter(message, value, path)
        except CodecError as error:
            raise ServerRefusal(error.path, error.problem) from None

    return set_or_refuse


def _text_refusals(field: FieldDescriptor, setter: TextSetter) -> TextSetter:
    """The URL-text counterpart of ``_refusals``."""
    if not option(field.GetOptions(), options_pb2.refused_by_server):
        return setter

    def set_or_refuse(message: Message, texts: Sequence[str]) -> None:
        try:
            setter(message, texts)
        except CodecError as error:
            raise ServerRefusal(error.path, error.problem) from None

    return set_or_refuse


def field_setter(field: FieldDescriptor) -> FieldSetter:
    """Sets ``field`` from a non-null JSON value, replacing what it held."""
    name = field.name
    if is_map(field):
        return _map_setter(field)
    if is_time(field) and not field.is_repeated:
        return time_setter(field, ms=False)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        parse_message = message_parser(message_type(field))
        if field.is_repeated:

            def set_messages(message: Message, value: Json, path: str) -> None:
                if not isinstance(value, list):
                    raise CodecError(path, f"expected a list, got {describe(value)}")
                items = getattr(message, name)
                del items[:]
                for index, item in enumerate(value):
                    item_path = index_path(path, index)
                    if item is None:
                        raise CodecError(item_path, "expected an object, got null")
                    parse_message(item, items.add(), item_path)

            return set_messages

        def set_message(message: Message, value: Json, path: str) -> None:
            target = getattr(message, name)
            # Presence is the point of a message field: `{}` sets it.
            target.SetInParent()
            parse_message(value, target, path)

        return set_message

    parse_scalar = scalar_parser(field)
    if field.is_repeated:

        def set_scalars(message: Message, value: Json, path: str) -> None:
            if not isinstance(value, list):
                raise CodecError(path, f"expected a list, got {describe(value)}")
            items = getattr(message, name)
            del items[:]
            items.extend([parse_scalar(item, index_path(path, i)) for i, item in enumerate(value)])

        return set_scalars

    def set_scalar(message: Message, value: Json, path: str) -> None:
        setattr(message, name, parse_scalar(value, path))

    return set_scalar


def _map_setter(field: FieldDescriptor) -> FieldSetter:
    name = field.name
    entry = message_type(field)
    parse_key = text_parser(entry.fields_by_name["key"])
    value_field = entry.fields_by_name["value"]
    parse_message = (
        message_parser(message_type(value_field))
        if value_field.type == FieldDescriptor.TYPE_MESSAGE
        else None
    )
    parse_scalar = scalar_parser(value_field) if parse_message is None else None

    def set_map(message: Message, value: Json, path: str) -> None:
        if not isinstance(value, dict):
            raise CodecError(path, f"expected an object, got {describe(value)}")
        entries = getattr(message, name)
        entries.clear()
        for raw_key, item in value.items():
            item_path = entry_path(path, raw_key)
            key = parse_key(raw_key, item_path)
            if item is None:
                raise CodecError(item_path, "expected a value, got null")
            if parse_message is not None:
                parse_message(item, entries[key], item_path)
            elif parse_scalar is not None:
                entries[key] = parse_scalar(item, item_path)

    return set_map


def _tagged_parser(descriptor: Descriptor) -> MessageParser:
    members: dict[str, tuple[FieldDescriptor, bool]] = {}
    tags: list[str] = []
    for field in tagged_oneof(descriptor).fields:
        empty = field.type == FieldDescriptor.TYPE_MESSAGE and is_empty_message(message_type(field))
        tags.append(f'"{field.json_name}"' if empty else f'{{"{field.json_name}": ...}}')
        for key in input_keys(field):
            members[key] = (field, empty)
    expected = "one of " + ", ".join(tags)
    setters = {field.name: field_setter(field) for field, _ in members.values()}

    def member(tag: str, path: str) -> tuple[FieldDescriptor, bool]:
        try:
            return members[tag]
        except KeyError:
            raise CodecError(
                path, f"unknown variant {describe(tag)}, expected {expected}"
            ) from None

    def parse(value: Json, message: Message, path: str) -> None:
        if isinstance(value, str):
            field, empty = member(value, path)
            if not empty:
                raise CodecError(path, f'"{value}" needs a value: {{"{value}": ...}}')
            getattr(message, field.name).SetInParent()
            return
        if isinstance(value, dict) and len(value) == 1:
            ((tag, inner),) = value.items()
            field, empty = member(tag, path)
            if inner is None and empty:
                getattr(message, field.name).SetInParent()
                return
            setters[field.name](message, inner, child_path(path, tag))
            return
        raise CodecError(path, f"expected {expected}, got {describe(value)}")

    return parse


def _well_known_parser(descriptor: Descriptor) -> MessageParser:
    full_name = descriptor.full_name
    if full_name == "google.protobuf.Empty":

        def parse_empty(value: Json, message: Message, path: str) -> None:
            if value != {}:
                raise CodecError(path, f"expected {{}}, got {describe(value)}")

        return parse_empty
    if full_name in WRAPPER_TYPES:
        set_value = field_setter(descriptor.fields_by_name["value"])
        return lambda value, message, path: set_value(message, value, path)

    def parse(value: Json, message: Message, path: str) -> None:
        try:
            # ParseDict takes any JSON value for these types despite its signature.
            json_format.ParseDict(cast(Any, value), message)
        except (json_format.ParseError, ValueError, TypeError) as error:
            raise CodecError(path, str(error)) from None

    return parse


# --- URL text: path variables and query parameters ------------------------------------


def text_setter(chain: Sequence[FieldDescriptor], path: str) -> TextSetter:
    """Sets the field reached through ``chain`` (outer to inner) from URL text.

    A repeated leaf takes every value; a singular one the last.
    """
    parents = [field.name for field in chain[:-1]]
    leaf = chain[-1]
    name = leaf.name
    parse = text_parser(leaf)

    def set_text(message: Message, texts: Sequence[str]) -> None:
        target: Any = message
        for parent in parents:
            target = getattr(target, parent)
        if leaf.is_repeated:
            getattr(target, name).extend([parse(text, path) for text in texts])
        else:
            setattr(target, name, parse(texts[-1], path))

    return set_text


_MAX_QUERY_DEPTH = 3


def query_setters(
    descriptor: Descriptor, skip: Callable[[Sequence[FieldDescriptor]], bool]
) -> dict[str, TextSetter]:
    """Setters for every scalar field reachable through singular message fields.

    Keys are dotted paths of proto names and of json_names (``run_id``, ``runId``,
    ``retry_policy.max_retries``). ``skip`` removes fields bound elsewhere (path, body).
    """
    setters: dict[str, TextSetter] = {}

    def walk(message: Descriptor, chain: tuple[FieldDescriptor, ...], seen: set[str]) -> None:
        for field in message.fields:
            here = (*chain, field)
            if skip(here) or is_output_only(field) or is_map(field):
                continue
            if is_time(field) and not field.is_repeated:
                dotted = ".".join(f.name for f in here)
                as_text = _text_refusals(field, time_text_setter(here, dotted, ms=False))
                for key in {dotted, ".".join(f.json_name for f in here)}:
                    setters[key] = as_text
                prefix = ".".join(f.name for f in chain)
                as_ms = _text_refusals(field, time_text_setter(here, dotted + "_ms", ms=True))
                for key in ms_keys(field):
                    setters.setdefault(f"{prefix}.{key}" if prefix else key, as_ms)
                continue
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                sub = message_type(field)
                if (
                    field.is_repeated
                    or sub.full_name in WELL_KNOWN_TYPES
                    or json_shape(sub)
                    or sub.full_name in seen
                    or len(here) >= _MAX_QUERY_DEPTH
                ):
                    continue
                walk(sub, here, seen | {sub.full_name})
                continue
            dotted = ".".join(f.name for f in here)
            setter = _text_refusals(field, text_setter(here, dotted))
            for key in {dotted, ".".join(f.json_name for f in here)}:
                setters[key] = setter

    walk(descriptor, (), {descriptor.full_name})
    return setters


_PARSERS: PerType[MessageParser] = PerType(
    _build,
    lambda resolve: lambda value, message, path: resolve()(value, message, path),
)
