"""Run input values: the rules a value of each input type follows, and a run's whole set."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from trellis.server.engine.definitions._errors import InputError, quote, show

if TYPE_CHECKING:
    from trellis.server.engine.definitions._model import InputDef, InputType

# Run inputs travel as google.protobuf.Struct, whose numbers are doubles: whole numbers
# beyond 2**53 would silently change on the way to a worker.
MAX_EXACT_INT = 2**53
MAX_INPUTS_BYTES = 65_536
# google.protobuf.Struct refuses deeper values, and the JSON of one would have to reach the
# worker through it.
MAX_JSON_DEPTH = 100
_ENV_PREFIX = "TRELLIS_INPUT_"
_NAMES_SHOWN = 10


def input_env_name(name: str) -> str:
    """The environment variable a shell job sees an input as: ``TRELLIS_INPUT_`` and the
    name upper-cased with ``-`` as ``_`` (``target-env`` -> ``TRELLIS_INPUT_TARGET_ENV``).

    The worker SDK applies the same rule on its side; two inputs of one workflow never
    share a variable (the definition is refused).
    """
    return _ENV_PREFIX + name.upper().replace("-", "_")


class Refused(Exception):
    """A value broke its type's rules; ``problem`` says how, ``where`` where inside it."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.where = ""


def check_value(kind: InputType, value: Any, budget: list[int] | None = None) -> Any:
    """``value`` as an input of type ``kind`` holds it (whole floats as ints), or Refused.

    ``budget`` counts down the items of JSON values, shared by the values of one run: a
    value with more items than its JSON has bytes is too large, and YAML aliases can make
    a small document hold a huge one.
    """
    if kind == "string":
        if not isinstance(value, str):
            raise Refused(f"expected a string, got {_show(value)}")
        return _text(value)
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Refused(f"expected a number, got {_show(value)}")
        return _number(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise Refused(f"expected true or false, got {_show(value)}")
        return value
    try:
        return _json(value, 0, [MAX_INPUTS_BYTES] if budget is None else budget)
    except Refused as refused:
        if refused.where:
            refused.problem = f"at {refused.where.removeprefix('.')}: {refused.problem}"
        raise


def _show(value: Any) -> str:
    # A Struct carries every number as a double: 5 sent as JSON arrives as 5.0, and is
    # shown as it was sent, as JavaScript would show it.
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return show(value)


def _text(value: str) -> str:
    # Inputs reach shell jobs as environment variables, which cannot hold NUL, and are
    # stored as JSON text, which must be UTF-8.
    if "\x00" in value:
        raise Refused("contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Refused("is not valid Unicode text") from None
    return str(value)


def _number(value: int | float) -> int | float:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Refused(f"expected a finite number, got {_show(value)}")
        if not value.is_integer():
            return float(value)
    if not -MAX_EXACT_INT <= value <= MAX_EXACT_INT:
        raise Refused(
            f"{_show(value)} is not within ±2**53, the whole numbers JSON carries exactly"
        )
    return int(value)


def _json(value: Any, depth: int, budget: list[int]) -> Any:
    """A copy of ``value`` in plain JSON types, its numbers checked as inputs' are."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int | float):
        return _number(value)
    if not isinstance(value, Mapping | list | tuple):
        raise Refused(f"expected a JSON value, got {_show(value)}")
    if depth >= MAX_JSON_DEPTH:
        raise Refused(f"nested deeper than {MAX_JSON_DEPTH} levels")
    budget[0] -= len(value)
    if budget[0] < 0:
        raise Refused(f"larger than {MAX_INPUTS_BYTES} bytes as JSON")
    if isinstance(value, Mapping):
        found: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise Refused(f"object keys must be strings, got {_show(key)}")
            try:
                found[_text(key)] = _json(item, depth + 1, budget)
            except Refused as refused:
                refused.where = f".{key}{refused.where}"
                raise
        return found
    items: list[Any] = []
    for index, item in enumerate(value):
        try:
            items.append(_json(item, depth + 1, budget))
        except Refused as refused:
            refused.where = f"[{index}]{refused.where}"
            raise
    return items


def resolve(declared: Sequence[InputDef], values: Any) -> dict[str, Any]:
    """The values of a run checked against ``declared``, defaults filled in."""
    if not declared and not values:
        return {}
    if not isinstance(values, Mapping):
        raise InputError(f"expected a mapping of input names to values, got {show(values)}")
    by_name = {spec.name: spec for spec in declared}
    unknown = [key for key in values if key not in by_name]
    if unknown:
        first = min(unknown, key=lambda key: (not isinstance(key, str), str(key)))
        named = quote(first) if isinstance(first, str) else show(first)
        raise InputError(f"unknown input {named}; the workflow {_takes(sorted(by_name))}")
    missing = [spec.name for spec in declared if spec.required and spec.name not in values]
    if missing:
        raise InputError(f"missing required input {quote(min(missing))}")
    checked: dict[str, Any] = {}
    budget = [MAX_INPUTS_BYTES]
    for name in sorted(values):
        try:
            checked[name] = check_value(by_name[name].type, values[name], budget)
        except Refused as refused:
            raise InputError(refused.problem, name) from None
    resolved: dict[str, Any] = {}
    for spec in declared:
        if spec.name in checked:
            resolved[spec.name] = checked[spec.name]
        elif spec.has_default:
            # A copy, so that no caller can change the definition through a run's values.
            default = spec.default
            resolved[spec.name] = (
                copy.deepcopy(default) if isinstance(default, dict | list) else default
            )
    if json_size(resolved) > MAX_INPUTS_BYTES:
        raise InputError(f"larger than {MAX_INPUTS_BYTES} bytes as JSON")
    return resolved


def json_size(values: Mapping[str, Any]) -> int:
    """Bytes of ``values`` as compact UTF-8 JSON (checked values: nothing can fail)."""
    return len(json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _takes(names: list[str]) -> str:
    if not names:
        return "takes no inputs"
    shown = ", ".join(quote(name) for name in names[:_NAMES_SHOWN])
    more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
    return f"takes {shown}{more}"
