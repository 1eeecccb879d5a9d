"""Scalar field values: JSON and URL text in, JSON out, with range checks."""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from ._descriptors import enum_type
from ._enums import enum_codec
from ._json_values import CodecError, Json, describe

_F = FieldDescriptor

_INT_RANGES: dict[int, tuple[int, int, str]] = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1, "int32"),
    _F.TYPE_SINT32: (-(2**31), 2**31 - 1, "int32"),
    _F.TYPE_SFIXED32: (-(2**31), 2**31 - 1, "int32"),
    _F.TYPE_UINT32: (0, 2**32 - 1, "uint32"),
    _F.TYPE_FIXED32: (0, 2**32 - 1, "uint32"),
    _F.TYPE_INT64: (-(2**63), 2**63 - 1, "int64"),
    _F.TYPE_SINT64: (-(2**63), 2**63 - 1, "int64"),
    _F.TYPE_SFIXED64: (-(2**63), 2**63 - 1, "int64"),
    _F.TYPE_UINT64: (0, 2**64 - 1, "uint64"),
    _F.TYPE_FIXED64: (0, 2**64 - 1, "uint64"),
}
_WIDE_INTS = frozenset(t for t, (_, _, name) in _INT_RANGES.items() if name.endswith("64"))
_INT_TEXT = re.compile(r"[-+]?[0-9]+")
_FLOAT32_MAX = 3.4028234663852886e38
# Beyond 2**53 a double no longer holds every integer; such values keep their
# float spelling so that the JSON does not pretend to an exactness it lacks.
_EXACT_DOUBLE_INT = 2**53
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

ScalarParser = Callable[[Json, str], object]
TextParser = Callable[[str, str], object]


# --- rendering ------------------------------------------------------------------


def render_double(value: float) -> Json:
    """A double as JSON: integral values as integers, non-finite ones as proto3 strings."""
    if math.isfinite(value):
        if value.is_integer() and abs(value) < _EXACT_DOUBLE_INT:
            return int(value)
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def render_float(value: float) -> Json:
    """A float32 as JSON, in the shortest decimal that reads back as the same float32."""
    if not math.isfinite(value):
        return render_double(value)
    for digits in range(6, 10):
        shorter = float(f"{value:.{digits}g}")
        if struct.unpack("f", struct.pack("f", shorter))[0] == value:
            return render_double(shorter)
    return render_double(value)


def render_bytes(value: bytes) -> Json:
    """Bytes as standard base64 text, as proto3 JSON spells them."""
    return base64.b64encode(value).decode("ascii")


def scalar_renderer(field: FieldDescriptor) -> Callable[[Any], Json] | None:
    """The renderer of one value of a scalar field; None when the value is its own JSON."""
    if field.type == _F.TYPE_ENUM:
        return enum_codec(enum_type(field)).render
    if field.type == _F.TYPE_DOUBLE:
        return render_double
    if field.type == _F.TYPE_FLOAT:
        return render_float
    if field.type == _F.TYPE_BYTES:
        return render_bytes
    return None


# --- parsing from JSON -------------------------------------------------------------


def _check_range(field_type: int, value: int, path: str) -> int:
    low, high, type_name = _INT_RANGES[field_type]
    if value < low:
        if low == 0:
            raise CodecError(path, f"expected a non-negative integer, got {value}")
        raise CodecError(path, f"integer out of range for {type_name}, got {value}")
    if value > high:
        raise CodecError(path, f"integer out of range for {type_name}, got {value}")
    return value


def _integer_parser(field_type: int) -> ScalarParser:
    wide = field_type in _WIDE_INTS

    def parse(value: Json, path: str) -> object:
        if isinstance(value, bool):
            raise CodecError(path, f"expected an integer, got {describe(value)}")
        if isinstance(value, int):
            return _check_range(field_type, value, path)
        if isinstance(value, float):
            if value.is_integer():
                return _check_range(field_type, int(value), path)
            raise CodecError(path, f"expected an integer, got {describe(value)}")
        # Canonical proto3 JSON quotes 64-bit integers; clients generated from the
        # proto send them that way, so quoted digits are accepted for those types.
        if wide and isinstance(value, str) and _INT_TEXT.fullmatch(value):
            return _check_range(field_type, int(value), path)
        raise CodecError(path, f"expected an integer, got {describe(value)}")

    return parse


def _float_parser(field_type: int) -> ScalarParser:
    single = field_type == _F.TYPE_FLOAT

    def parse(value: Json, path: str) -> object:
        if isinstance(value, bool):
            raise CodecError(path, f"expected a number, got {describe(value)}")
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str) and value in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[value]
        else:
            raise CodecError(path, f"expected a number, got {describe(value)}")
        if single and math.isfinite(number) and abs(number) > _FLOAT32_MAX:
            raise CodecError(path, f"number out of range for float, got {describe(value)}")
        return number

    return parse


def _parse_bool(value: Json, path: str) -> object:
    if isinstance(value, bool):
        return value
    raise CodecError(path, f"expected true or false, got {describe(value)}")


def _parse_string(value: Json, path: str) -> object:
    if isinstance(value, str):
        return value
    raise CodecError(path, f"expected a string, got {describe(value)}")


def decode_base64(text: str, path: str) -> bytes:
    """Standard or URL-safe base64, padded or not."""
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded.encode("ascii"))
        return base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise CodecError(path, f"expected base64 text, got {describe(text)}") from None


def _parse_bytes(value: Json, path: str) -> object:
    if isinstance(value, str):
        return decode_base64(value, path)
    raise CodecError(path, f"expected base64 text, got {describe(value)}")


def scalar_parser(field: FieldDescriptor) -> ScalarParser:
    """The parser of one JSON value of a scalar (or enum) field."""
    field_type = field.type
    if field_type in _INT_RANGES:
        return _integer_parser(field_type)
    if field_type in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        return _float_parser(field_type)
    if field_type == _F.TYPE_BOOL:
        return _parse_bool
    if field_type == _F.TYPE_STRING:
        return _parse_string
    if field_type == _F.TYPE_BYTES:
        return _parse_bytes
    if field_type == _F.TYPE_ENUM:
        return enum_codec(enum_type(field)).parse
    raise ValueError(f"{field.full_name}: not a scalar field")


# --- parsing from URL text ------------------------------------------------------------

_BOOL_TEXT = {"true": True, "1": True, "false": False, "0": False}


def text_parser(field: FieldDescriptor) -> TextParser:
    """The parser of a path variable or query value of a scalar (or enum) field."""
    field_type = field.type
    if field_type in _INT_RANGES:
        as_json = _integer_parser(field_type)

        def parse_int(text: str, path: str) -> object:
            if not _INT_TEXT.fullmatch(text):
                raise CodecError(path, f"expected an integer, got {describe(text)}")
            return as_json(int(text), path)

        return parse_int
    if field_type in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        as_json_float = _float_parser(field_type)

        def parse_float(text: str, path: str) -> object:
            if text in _SPECIAL_FLOATS:
                return _SPECIAL_FLOATS[text]
            try:
                number = float(text)
            except ValueError:
                raise CodecError(path, f"expected a number, got {describe(text)}") from None
            if not math.isfinite(number):
                raise CodecError(path, f"expected a number, got {describe(text)}")
            return as_json_float(number, path)

        return parse_float
    if field_type == _F.TYPE_BOOL:

        def parse_bool(text: str, path: str) -> object:
            try:
                return _BOOL_TEXT[text.lower()]
            except KeyError:
                raise CodecError(path, f"expected true or false, got {describe(text)}") from None

        return parse_bool
    if field_type == _F.TYPE_STRING:
        return lambda text, path: text
    if field_type == _F.TYPE_BYTES:
        return decode_base64
    if field_type == _F.TYPE_ENUM:
        return enum_codec(enum_type(field)).parse_text
    raise ValueError(f"{field.full_name}: not a scalar field")
