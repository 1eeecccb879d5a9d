"""Run inputs between their protobuf form (``google.protobuf.Struct``) and
plain Python values, as JSON parsing gives them."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2

# A Struct carries every number as a double, which holds whole numbers exactly
# only up to this magnitude (JSON's interoperable range too).
MAX_EXACT_INT = 2**53


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    """``struct`` as a dict of plain values, keys sorted (a Struct's map has
    no order of its own): whole numbers within ±2**53 as ``int``, other
    numbers as ``float``, lists as lists, null as None."""
    fields = struct.fields
    if not fields:
        return {}
    return {key: from_value(fields[key]) for key in sorted(fields)}


def from_value(value: struct_pb2.Value) -> Any:
    """One ``google.protobuf.Value`` as a plain value (see :func:`from_struct`)."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and -MAX_EXACT_INT <= number <= MAX_EXACT_INT:
            return int(number)
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "list_value":
        return [from_value(item) for item in value.list_value.values]
    return None  # null_value, or a Value with nothing set


def to_struct(values: Mapping[str, Any], where: str = "inputs") -> struct_pb2.Struct:
    """``values`` (JSON-like: str, int, float, bool, None, mappings with string
    keys, lists and tuples) as a Struct.

    Raises ValueError naming the value's place (``inputs.tags[2]``, with
    ``where`` as the root) for what JSON cannot carry, or a Struct cannot
    carry exactly: other types, NaN and infinities, whole numbers beyond
    ±2**53 (which a double would silently round).
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping of names to values, got {_kind(values)}")
    struct = struct_pb2.Struct()
    _fill_struct(struct, values, where)
    return struct


def compact_json(value: Any) -> str:
    """``value`` as compact JSON (``{"a":1}``, ``true``), non-ASCII text kept as it is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _fill_struct(struct: struct_pb2.Struct, values: Mapping[Any, Any], where: str) -> None:
    fields = struct.fields
    for key, item in values.items():
        if not isinstance(key, str):
            raise ValueError(f"{where}: the name {key!r} is not a string")
        _set_value(fields[key], item, f"{where}.{key}")


def _set_value(target: struct_pb2.Value, value: Any, where: str) -> None:
    # bool before int: True is an int to Python but a boolean to JSON.
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, int):
        if not -MAX_EXACT_INT <= value <= MAX_EXACT_INT:
            raise ValueError(
                f"{where}: {value} is beyond ±2**53, where numbers stop being exact; "
                "send it as a string"
            )
        target.number_value = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a JSON number")
        target.number_value = value
    elif isinstance(value, Mapping):
        target.struct_value.SetInParent()  # so that an empty {} is still a struct
        _fill_struct(target.struct_value, value, where)
    elif isinstance(value, list | tuple):
        items = target.list_value
        items.SetInParent()  # so that an empty [] is still a list
        for i, item in enumerate(value):
            _set_value(items.values.add(), item, f"{where}[{i}]")
    else:
        hint = (
            " (quote it to send it as a string)"
            if isinstance(value, datetime.date | datetime.time)
            else ""
        )
        raise ValueError(f"{where}: {_kind(value)} is not JSON{hint}")


def _kind(value: object) -> str:
    return f"a value of type {type(value).__name__!r}"
