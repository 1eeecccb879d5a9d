"""The bridge's JSON codec over protobuf descriptors.

Rendering follows the surface conventions declared in proto: proto field names (or an
explicit ``json_name``; proto JSON names on ``FIELD_NAMES_JSON`` surfaces), every field
present including defaults (those marked ``(additional)`` only on surfaces with
``additional_fields``), 64-bit integers as numbers, unset optional and message
fields as ``null``, enums by their ``(trellis.v1.json_value)`` or lower-cased short
name, Timestamps in the surface's ``times`` format, and the
``(trellis.v1.json_shape)`` of tagged unions and bare maps. Parsing
accepts what rendering produces (and the canonical proto3 spellings) and rejects
anything else with the field's path; both spellings of a field name are accepted
whatever the surface. Form-encoded bodies bind like query parameters.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from ._descriptors import descriptor_of
from ._enums import EnumCodec, enum_codec
from ._json_values import CodecError, Json, ServerRefusal, child_path, describe, index_path
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
    "ServerRefusal",
    "TextSetter",
    "UnsupportedBodyError",
    "body_binder",
    "enum_codec",
    "form_binder",
    "is_json_type",
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
JSON_CONTENT_TYPE = "application/json"

#: Deepest nesting of objects and arrays a JSON body may have: far beyond any
#: request of the contract, and short of Python's recursion limit.
MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_UNICODE = "text holds a lone surrogate, which is no Unicode character"
# How RFC 6749 (section 8.2) spells parameter names.
_PARAM_NAME = re.compile(r"[A-Za-z0-9._-]+")

# Far above any real form (an OAuth2 token request has a handful of fields); only
# keeps a hostile body from becoming a huge dict before the first lookup.
_MAX_FORM_FIELDS = 1000


class InvalidJsonError(ValueError):
    """The request body is not JSON at all."""


class InvalidFormError(ValueError):
    """The request body is not a readable ``application/x-www-form-urlencoded`` form."""


class UnsupportedBodyError(ValueError):
    """A body that is not JSON, sent as another type than JSON (415)."""


def is_json_type(mimetype: str) -> bool:
    """``application/json`` and its ``+json`` kin."""
    return mimetype == JSON_CONTENT_TYPE or mimetype.endswith("+json")


def _reject_constant(name: str) -> Json:
    raise ValueError(f"{name} is not valid JSON")


def load_json(data: bytes) -> Json:
    """Parses a request body; an empty (or blank) body reads as ``{}``.

    Raises InvalidJsonError when the body is not JSON at all, and CodecError for
    JSON no request can hold: nested deeper than MAX_DEPTH, or text with a lone
    surrogate (``"\\ud800"``, which is no Unicode character).
    """
    if not data.strip():
        return {}
    try:
        value: Json = json.loads(data, parse_constant=_reject_constant)
    except UnicodeDecodeError as error:
        raise InvalidJsonError(f"invalid JSON body: not UTF-8 text ({error.reason})") from None
    except RecursionError:
        raise CodecError("", f"nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as error:
        raise InvalidJsonError(f"invalid JSON body: {error}") from None
    # The walk is only needed when the bytes allow what it looks for: a lone
    # surrogate arrives as a \u escape or as raw 0xED bytes (which json.loads
    # lets through), depth needs brackets.
    deep = data.count(b"[") + data.count(b"{") > MAX_DEPTH
    odd = b"\\u" in data or b"\xed" in data
    if (deep or odd) and not _fits(value, 0, odd):
        _check_tree(value)  # raises, naming where
    return value


def _fits(value: Json, depth: int, odd: bool) -> bool:
    """Whether ``value`` is within MAX_DEPTH with no lone surrogate (looked for
    only when ``odd``): the quick walk, which builds no paths."""
    if isinstance(value, str):
        return not (odd and _SURROGATE.search(value))
    if isinstance(value, dict):
        return depth < MAX_DEPTH and all(
            not (odd and _SURROGATE.search(key)) and _fits(child, depth + 1, odd)
            for key, child in value.items()
        )
    if isinstance(value, list):
        return depth < MAX_DEPTH and all(_fits(child, depth + 1, odd) for child in value)
    return True


def _check_tree(value: Json) -> None:
    pending: list[tuple[Json, str, int]] = [(value, "", 0)]
    while pending:
        item, path, depth = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise CodecError(path, _NOT_UNICODE)
        elif isinstance(item, dict | list):
            if depth == MAX_DEPTH:
                raise CodecError(path, f"nested more than {MAX_DEPTH} levels deep")
            if isinstance(item, list):
                pending.extend((v, index_path(path, i), depth + 1) for i, v in enumerate(item))
                continue
            for key, child in item.items():
                if _SURROGATE.search(key):
                    raise CodecError(child_path(path, json.dumps(key)), _NOT_UNICODE)
                pending.append((child, child_path(path, key), depth + 1))


def render_message(
    message: Message, *, json_names: bool = False, additional: bool = False, times: int = 0
) -> Json:
    """Renders any message as JSON by its type's conventions (and JSON field names,
    the fields marked ``(additional)``, and Timestamps in a ``trellis.v1.TimeFormat``)."""
    renderer = message_renderer(
        descriptor_of(message), json_names=json_names, additional=additional, times=times
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
    times: int = 0,
) -> MessageRenderer:
    """Renders a response, or only its ``response_body`` field when one is named.

    ``json_names`` spells field names as proto JSON names (``FIELD_NAMES_JSON``),
    ``additional`` renders the fields marked ``(additional)`` (``additional_fields``),
    ``times`` is the ``trellis.v1.TimeFormat`` of Timestamps; ``response_body`` is
    always a proto field name, as in the HttpRule.
    """
    if not response_body:
        return message_renderer(
            descriptor, json_names=json_names, additional=additional, times=times
        )
    field = descriptor.fields_by_name.get(response_body)
    if field is None:
        raise ValueError(f"{descriptor.full_name} has no field {response_body!r} (response_body)")
    return field_renderer(field, json_names=json_names, additional=additional, times=times)


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
    endpoints, the users of form bodies. Raises InvalidFormError, also for a key that
    is no parameter name (RFC 6749 section 8.2): such a form is a body of another
    kind (JSON sent as a form), and reading what parses of it would bind half of it.
    """
    try:
        pairs = urllib.parse.parse_qsl(
            data.decode("utf-8"),
            keep_blank_values=True,
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
        if not _PARAM_NAME.fullmatch(key):
            raise InvalidFormError(f"invalid form body: {describe(key)} is no parameter name")
        if value:
            fields.setdefault(key, []).append(value)
    return fields


def form_binder(
    descriptor: Descriptor, skip: Callable[[Sequence[FieldDescriptor]], bool]
) -> FormBinder:
    """Binds form fields onto a request as query parameters are bound.

    Keys are proto or JSON names (dotted for nested fields), values are coerced like
    URL text, a repeated field takes every value of its key. Unknown parameters are
    ignored, as RFC 6749 (sections 3.1 and 3.2) requires of its endpoints. ``skip``
    removes fields bound elsewhere (the path).
    """
    setters = query_setters(descriptor, skip)

    def bind(message: Message, fields: Mapping[str, Sequence[str]]) -> None:
        for key, values in fields.items():
            setter = setters.get(key)
            if setter is not None:
                setter(message, values)

    return bind
