"""Message -> JSON, driven by descriptors and the surface options declared in proto.

Renderers are compiled once per message type into closures, so that rendering a
response is a walk over precomputed (key, function) pairs with no descriptor lookups.
``json_format`` is not used for messages: it quotes 64-bit integers and drops
defaults, which the documented JSON shapes do not.

Field names are the proto names (or an explicit ``json_name``) by default, or the
proto JSON names for surfaces with ``FIELD_NAMES_JSON``. Fields marked
``(additional)`` are rendered only for surfaces with ``additional_fields``. Timestamps
render in the surface's ``times`` format (``_times``). Each combination has its own
cache of renderers, and a renderer's nested messages use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from trellis.v1 import options_pb2

from ._descriptors import (
    WELL_KNOWN_TYPES,
    WRAPPER_TYPES,
    is_additional,
    is_empty_message,
    is_map,
    is_omitted_unset,
    json_shape,
    map_shape_field,
    message_type,
    output_key,
    tagged_oneof,
)
from ._json_values import Json
from ._per_type import PerType
from ._scalars import render_double, scalar_renderer
from ._times import field_times, is_time, time_key, time_renderer, unset_time

MessageRenderer = Callable[[Message], Json]
ValueRenderer = Callable[[Any], Json]


def message_renderer(
    descriptor: Descriptor, *, json_names: bool = False, additional: bool = False, times: int = 0
) -> MessageRenderer:
    """The (cached) renderer of a message type; ``json_names`` keys fields by JSON name,
    ``additional`` renders the fields marked ``(additional)`` too, ``times`` is the
    ``trellis.v1.TimeFormat`` of Timestamps."""
    key = (json_names, additional, times)
    renderers = _RENDERERS.get(key)
    if renderers is None:
        renderers = _RENDERERS.setdefault(key, _renderers(json_names, additional, times))
    return renderers(descriptor)


def field_renderer(
    field: FieldDescriptor, *, json_names: bool = False, additional: bool = False, times: int = 0
) -> MessageRenderer:
    """Renders one field of a message (all its values, or null when unset)."""
    name = field.name
    if is_map(field):
        return _map_renderer(field, json_names, additional, times)
    value = _value_renderer(field, json_names, additional, times)
    if is_time(field) and not field.is_repeated:
        assert value is not None
        render_time, unset = value, unset_time(field_times(field, times))
        return lambda message: (
            render_time(getattr(message, name)) if message.HasField(name) else unset
        )
    if field.is_repeated:
        if value is None:
            return lambda message: list(getattr(message, name))
        render_each = value
        return lambda message: [render_each(item) for item in getattr(message, name)]
    if field.has_presence:
        if value is None:
            return lambda message: getattr(message, name) if message.HasField(name) else None
        render_set = value
        return lambda message: (
            render_set(getattr(message, name)) if message.HasField(name) else None
        )
    if value is None:
        return lambda message: getattr(message, name)
    render_plain = value
    return lambda message: render_plain(getattr(message, name))


def _value_renderer(
    field: FieldDescriptor, json_names: bool, additional: bool, times: int
) -> ValueRenderer | None:
    """Renders one value of a field; None when the Python value is already its JSON."""
    if is_time(field):
        return time_renderer(field_times(field, times))
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_renderer(
            message_type(field), json_names=json_names, additional=additional, times=times
        )
    return scalar_renderer(field)


def _map_renderer(
    field: FieldDescriptor, json_names: bool, additional: bool, times: int
) -> MessageRenderer:
    name = field.name
    entry = message_type(field)
    # Map keys are data, not field names: they keep their spelling in both styles.
    render_value = _value_renderer(entry.fields_by_name["value"], json_names, additional, times)
    bool_keys = entry.fields_by_name["key"].type == FieldDescriptor.TYPE_BOOL

    def key_text(key: object) -> str:
        if bool_keys:
            return "true" if key else "false"
        return str(key)

    # A map iterates in its hash table's order, which differs from one process to
    # the next: sorted keys make every replica and every restart answer the same bytes.
    if render_value is None and not bool_keys:
        return lambda message: {str(k): v for k, v in sorted(getattr(message, name).items())}
    render_entry: ValueRenderer = render_value or (lambda value: value)
    return lambda message: {
        key_text(key): render_entry(value) for key, value in sorted(getattr(message, name).items())
    }


def _key(field: FieldDescriptor, json_names: bool, times: int) -> str:
    key = field.json_name if json_names else output_key(field)
    if is_time(field):
        return time_key(key, field_times(field, times), json_names=json_names)
    return key


def _build(
    descriptor: Descriptor, json_names: bool, additional: bool, times: int
) -> MessageRenderer:
    if descriptor.full_name in WELL_KNOWN_TYPES:
        return _well_known_renderer(descriptor, json_names)
    shape = json_shape(descriptor)
    if shape == options_pb2.JSON_SHAPE_EXTERNALLY_TAGGED:
        return _tagged_renderer(descriptor, json_names, additional, times)
    if shape == options_pb2.JSON_SHAPE_MAP:
        return _map_renderer(map_shape_field(descriptor), json_names, additional, times)
    omit_unset_optional = shape == options_pb2.JSON_SHAPE_OMIT_UNSET
    fields = [
        (
            _key(field, json_names, times),
            field_renderer(field, json_names=json_names, additional=additional, times=times),
            _unset_test(field, omit_unset_optional),
        )
        for field in descriptor.fields
        if additional or not is_additional(field)
    ]
    if all(is_unset is None for _, _, is_unset in fields):
        always = [(key, render_field) for key, render_field, _ in fields]

        def render(message: Message) -> Json:
            return {key: render_field(message) for key, render_field in always}

        return render

    def render_present(message: Message) -> Json:
        return {
            key: render_field(message)
            for key, render_field, is_unset in fields
            if is_unset is None or not is_unset(message)
        }

    return render_present


def _unset_test(
    field: FieldDescriptor, omit_unset_optional: bool
) -> Callable[[Message], bool] | None:
    """Whether an answer leaves ``field`` out of ``message``, when it may:
    a field marked ``(omit_unset)`` while unset (a map or list while empty),
    and in a ``JSON_SHAPE_OMIT_UNSET`` message an optional scalar without a
    value; None for a field always rendered."""
    name = field.name
    if is_omitted_unset(field):
        if field.is_repeated:  # maps too: a map is a repeated field of entries
            return lambda message: not len(getattr(message, name))
        return lambda message: not message.HasField(name)
    if omit_unset_optional and field.has_presence and field.message_type is None:
        return lambda message: not message.HasField(name)
    return None


def _tagged_renderer(
    descriptor: Descriptor, json_names: bool, additional: bool, times: int
) -> MessageRenderer:
    oneof = tagged_oneof(descriptor)
    oneof_name = oneof.name
    members: dict[str, tuple[str, ValueRenderer | None, bool]] = {}
    for field in oneof.fields:
        bare = field.type == FieldDescriptor.TYPE_MESSAGE and is_empty_message(message_type(field))
        members[field.name] = (
            field.json_name,
            _value_renderer(field, json_names, additional, times),
            bare,
        )

    def render(message: Message) -> Json:
        chosen = message.WhichOneof(oneof_name)
        if chosen is None:
            return None
        tag, render_value, bare = members[chosen]
        if bare:
            return tag
        value = getattr(message, chosen)
        return {tag: render_value(value) if render_value is not None else value}

    return render


def _well_known_renderer(descriptor: Descriptor, json_names: bool) -> MessageRenderer:
    if descriptor.full_name == "google.protobuf.Empty":
        return lambda message: {}
    if descriptor.full_name in WRAPPER_TYPES:
        # Wrappers render as their bare value; 64-bit ones as numbers like any int64.
        return field_renderer(descriptor.fields_by_name["value"], json_names=json_names)

    if descriptor.full_name in _JSON_VALUE_TYPES:
        # A Struct's numbers are doubles: 3 would come out as 3.0.
        return lambda message: _whole_numbers(json_format.MessageToDict(message))

    def render(message: Message) -> Json:
        # Timestamp, Duration, FieldMask, Any: their canonical JSON is what
        # json_format produces.
        rendered: Json = json_format.MessageToDict(
            message, preserving_proto_field_name=not json_names
        )
        return rendered

    return render


_JSON_VALUE_TYPES = frozenset(
    {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
)


def _whole_numbers(value: Json) -> Json:
    """``value`` with its numbers rendered as double fields are (whole ones as
    integers, as JSON that went into a Struct came in), and its objects' keys
    sorted like every other map's (a Struct's own order differs between
    processes)."""
    if isinstance(value, float):
        return render_double(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def _renderers(json_names: bool, additional: bool, times: int) -> PerType[MessageRenderer]:
    return PerType(
        lambda descriptor: _build(descriptor, json_names, additional, times),
        lambda resolve: lambda message: resolve()(message),
    )


# By (json_names, additional, times), made on first use: few surfaces, few combinations.
_RENDERERS: dict[tuple[bool, bool, int], PerType[MessageRenderer]] = {}
