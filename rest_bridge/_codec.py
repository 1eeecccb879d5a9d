"""The bridge's JSON codec over protobuf descriptors.

Rendering follows the surface conventions declared in proto: proto field names (or an
explicit ``json_name``; proto JSON names on ``FIELD_NAMES_JSON`` surfaces), every field
present including defaults (those marked ``(additional)`` only on surfaces with
``additional_fields``), 64-bit integers as numbers, unset optional and message
fields as ``null``, enums by their ``(trellis.v1.json_value)`` or lower-cased short
name, and the ``(trellis.v1.json_shape)`` of tagged unions and bare maps. Parsing
accepts what rendering produces (and the canonical proto3 spellings) and rejects
anything else with the field's path; both spellings of a field name are accepted
whatever the surface. Form-encoded bodies bind like query parameters.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Mapping, Sequence

from google.protobuf.descriptor import Descriptor, FieldDescriptor
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
    "FormBinder",
    "InvalidFormError",
    "InvalidJsonError",
    "Json",
    "MessageRenderer",
    "TextSetter",
    "body_binder",
    "enum_codec",
    "form_binder",
    "load_form",
    "load_json",
    "parse_message",
    "query_setters",
    "render_message",
    "response_renderer",
    "text_setter",
]

BodyBinder = Callable[[Message, Json], None]
"""Binds a parsed JSON body onto a request message."""


FormBinder = Callable[[Message, Mapping[str, Sequence[str]]], None]
"""Binds the fields of a form-encoded body onto a request message."""

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

# Far above any real form (an OAuth2 token request has a handful of fields); only
# keeps a hostile body from becoming a huge dict before the first lookup.
_MAX_FORM_FIELDS = 1000


class InvalidJsonError(ValueError):
    """The request body is not JSON at all."""


class InvalidFormError(ValueError):
    """The request body is not a readable ``application/x-www-form-urlencoded`` form."""


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


def render_message(message: Message, *, json_names: bool = False, additional: bool = False) -> Json:
    """Renders any message as JSON by its type's conventions (and JSON field names,
    and the fields marked ``(additional)``)."""
    renderer = message_renderer(
        descriptor_of(message), json_names=json_names, additional=additional
    )
    return renderer(message)


def parse_message(value: Json, message: Message, path: str = "") -> None:
    """Parses a JSON value into ``message`` in place; raises CodecError naming the field."""
    message_parser(descriptor_of(message))(value, message, path)


def response_renderer(
    descriptor: Descriptor,
    response_body: str = "",
    *,
    json_names: bool = False,
    additional: bool = False,
) -> MessageRenderer:
    """Renders a response, or only its ``response_body`` field when one is named.

    ``json_names`` spells field names as proto JSON names (``FIELD_NAMES_JSON``),
    ``additional`` renders the fields marked ``(additional)`` (``additional_fields``);
    ``response_body`` is always a proto field name, as in the HttpRule.
    """
    if not response_body:
        return message_renderer(descriptor, json_names=json_names, additional=additional)
    field = descriptor.fields_by_name.get(response_body)
    if field is None:
        raise ValueError(f"{descriptor.full_name} has no field {response_body!r} (response_body)")
    return field_renderer(field, json_names=json_names, additional=additional)


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


def load_form(data: bytes) -> dict[str, list[str]]:
    """Parses a form-encoded body into its fields, each with its values in order.

    Fields without a value are left out, as RFC 6749 (section 3.1) asks of OAuth2
    endpoints, the users of form bodies. Raises InvalidFormError.
    """
    try:
        pairs = urllib.parse.parse_qsl(
            data.decode("utf-8"),
            keep_blank_values=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError as error:
        raise InvalidFormError(f"invalid form body: not UTF-8 text ({error.reason})") from None
    except ValueError as error:
        raise InvalidFormError(f"invalid form body: {error}") from None
    fields: dict[str, list[str]] = {}
    for key, value in pairs:
        fields.setdefault(key, []).append(value)
    return fields


def form_binder(
    descriptor: Descriptor, skip: Callable[[Sequence[FieldDescriptor]], bool]
) -> FormBinder:
    """Binds form fields onto a request as query parameters are bound.

    Keys are proto or JSON names (dotted for nested fields), values are coerced like
    URL text, a repeated field takes every value of its key. Unknown keys are ignored,
    as RFC 6749 (section 3.2) requires of token endpoints. ``skip`` removes fields
    bound elsewhere (the path).
    """
    setters = query_setters(descriptor, skip)

    def bind(message: Message, fields: Mapping[str, Sequence[str]]) -> None:
        for key, values in fields.items():
            setter = setters.get(key)
            if setter is not None:
                setter(message, values)

    return bind
