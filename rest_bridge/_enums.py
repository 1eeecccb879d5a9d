"""JSON spellings of enum values.

A value renders as its ``(trellis.v1.json_value)`` when set, else as its name without
the enum's prefix, lower-cased (``JOB_STATE_RUNNING`` -> ``"running"``). The zero
``*_UNSPECIFIED`` value means "not set" and renders as ``null``.
"""

from __future__ import annotations

import re
import threading

from google.protobuf.descriptor import EnumDescriptor

from trellis.v1 import options_pb2

from ._descriptors import option
from ._json_values import CodecError, Json, describe

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _upper_snake(name: str) -> str:
    return _CAMEL_BOUNDARY.sub("_", name).upper()


class EnumCodec:
    """Renders and parses the values of one enum type."""

    def __init__(self, descriptor: EnumDescriptor) -> None:
        self.full_name = descriptor.full_name
        prefix = _upper_snake(descriptor.name) + "_"
        self._rendered: dict[int, str | None] = {}
        by_text: dict[str, int] = {}
        aliases: dict[str, int] = {}
        for value in descriptor.values:
            short = value.name.removeprefix(prefix).lower()
            explicit: str = option(value.GetOptions(), options_pb2.json_value)
            if explicit:
                self._rendered[value.number] = explicit
                # json_value may repeat another value's natural spelling
                # (JOB_STATE_PENDING renders as "queued"); the natural owner wins.
                aliases.setdefault(explicit.lower(), value.number)
            elif value.number == 0 and value.name.endswith("_UNSPECIFIED"):
                self._rendered[value.number] = None
            else:
                self._rendered[value.number] = short
            by_text.setdefault(value.name.lower(), value.number)
            by_text.setdefault(short, value.number)
        for text, number in aliases.items():
            by_text.setdefault(text, number)
        self._by_text = by_text
        self._choices = sorted({s for s in self._rendered.values() if s is not None})
        self._unknown_wording: str = option(
            descriptor.GetOptions(), options_pb2.unknown_value_error
        )

    def render(self, number: int) -> Json:
        """The JSON spelling of a value; unknown numbers render as themselves."""
        try:
            return self._rendered[number]
        except KeyError:
            return number

    def parse(self, value: Json, path: str) -> int:
        """A value from JSON: its spelling, its full name, or its number."""
        if isinstance(value, str):
            return self.parse_text(value, path)
        if isinstance(value, int) and not isinstance(value, bool):
            if value in self._rendered:
                return value
            raise CodecError(path, f"unknown {self.full_name} number {value}")
        raise CodecError(path, f"expected one of {self._choice_text()}, got {describe(value)}")

    def parse_text(self, text: str, path: str) -> int:
        """A value from a path or query string, matched case-insensitively."""
        number = self._by_text.get(text.lower())
        if number is not None:
            return number
        if text.lstrip("-").isdigit():
            return self.parse(int(text), path)
        if self._unknown_wording:
            parent, _, name = path.rpartition(".")
            raise CodecError(parent, f"{name} {self._unknown_wording}, got {text.lower()!r}")
        raise CodecError(path, f"expected one of {self._choice_text()}, got {describe(text)}")

    def _choice_text(self) -> str:
        return ", ".join(f'"{choice}"' for choice in self._choices)


_CODECS: dict[str, EnumCodec] = {}
_LOCK = threading.Lock()


def enum_codec(descriptor: EnumDescriptor) -> EnumCodec:
    """The (cached) codec of an enum type."""
    codec = _CODECS.get(descriptor.full_name)
    if codec is None:
        with _LOCK:
            codec = _CODECS.setdefault(descriptor.full_name, EnumCodec(descriptor))
    return codec
