"""The bridge's JSON codec over protobuf descriptors.

Rendering follows the surface conventions declared in proto: proto field names (or an
explicit ``json_name``), every field present including defaults, 64-bit integers as
numbers, unset optional and message fields as ``null``, enums by their
``(trellis.v1.json_value)`` or lower-cased short name, and the ``(trellis.v1.json_shape)``
of tagged unions and bare maps. Parsing accepts what rendering produces (and the
canonical proto3 spellings) and rejects anything else with the field's path.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from ._descriptors import descriptor_of
from ._enums import EnumCodec, enum_codec
from ._json_values import CodecError, Json
from ._parse import TextSetter, field_setter, message_parser, query_setters, text_setter
from ._render import MessageRenderer, field_renderer, message_renderer

__all__ = [
    "BodyBinder",
    "CodecError",
    "EnumCodec",
    "InvalidJsonError",
    "Json",
    "MessageRenderer",
    "TextSetter",
    "body_binder",
    "enum_codec",
    "load_json",
    "parse_message",
    "query_setters",
    "render_message",
    "response_renderer",
    "text_setter",
]

BodyBinder = Callable[[Message, Json], None]
"""Binds a parsed JSON body onto a request message."""


class InvalidJsonError(ValueError):
    """The request body is not JSON at all."""


def _reject_constant(name: str) -> Json:
    raise ValueError(f"{name} is not valid JSON")


def load_json(data: bytes) -> Json:
    """Parses a request body; an empty (or blank) body reads as ``{}``.

    Raises InvalidJsonError with a short explanation of what is wrong.
    """
    if not data.strip():
        return {}
    try:
        value: Json = json.loads(data, parse_constant=_reject_constant)
    except UnicodeDecodeError as error:
        raise InvalidJsonError(f"invalid JSON body: not UTF-8 text ({error.reason})") from None
    except ValueError as error:
        raise InvalidJsonError(f"invalid JSON body: {error}") from None
    return value


def render_message(message: Message) -> Json:
    """Renders any message as JSON by its type's conventions."""
    return message_renderer(descriptor_of(message))(message)


def parse_message(value: Json, message: Message, path: str = "") -> None:
    """Parses a JSON value into ``message`` in place; raises CodecError naming the field."""
    message_parser(descriptor_of(message))(value, message, path)


def response_renderer(descriptor: Descriptor, response_body: str = "") -> MessageRenderer:
    """Renders a response, or only its ``response_body`` field when one is named."""
    if not response_body:
        return message_renderer(descriptor)
    field = descriptor.fields_by_name.get(response_body)
    if field is None:
        raise ValueError(f"{descriptor.full_name} has no field {response_body!r} (response_body)")
    return field_renderer(field)


def body_binder(descriptor: Descriptor, body: str) -> BodyBinder:
    """Binds a JSON body per an HttpRule ``body``: ``*`` for the whole request, or a field."""
    if body == "*":
        parse_whole = message_parser(descriptor)

        def bind_whole(message: Message, value: Json) -> None:
            # `null` as a whole body is an empty request, like an empty body.
            if value is not None:
                parse_whole(value, message, "")

        return bind_whole
    field = descriptor.fields_by_name.get(body)
    if field is None:
        raise ValueError(f"{descriptor.full_name} has no field {body!r} (body)")
    set_field = field_setter(field)
    name = field.name

    def bind_field(message: Message, value: Json) -> None:
        if value is None:
            message.ClearField(name)
        else:
            # Errors name paths inside the body, which is what the client sent.
            set_field(message, value, "")

    return bind_field
