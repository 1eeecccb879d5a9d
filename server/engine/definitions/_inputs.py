"""The inputs a workflow declares, checked once whichever source spelled them.

Every source hands over the same mapping form, input name -> ``{type, required, default,
description}`` (no body: an optional string). A null ``default`` is no default: the REST
answers render an unset ``default`` as null, and what they show must read back the same.
"""

from __future__ import annotations

import re
from typing import Any

from trellis.server.engine.definitions._checks import mapping, reject_unknown, text
from trellis.server.engine.definitions._errors import Where, quote, show
from trellis.server.engine.definitions._model import MAX_ID_LENGTH, MAX_INPUTS, InputDef, InputType
from trellis.server.engine.definitions._values import (
    MAX_INPUTS_BYTES,
    Refused,
    check_value,
    input_env_name,
    json_size,
)

INPUT_KEYS = ("type", "required", "default", "description")
INPUT_TYPES: tuple[InputType, ...] = ("string", "number", "boolean", "json")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def declared_inputs(value: Any, where: Where) -> tuple[InputDef, ...]:
    """The inputs of the mapping form, in the order given; none when ``value`` is None."""
    if value is None:
        return ()
    given = mapping(value, "`inputs` (input name -> input)", where)
    if len(given) > MAX_INPUTS:
        where.fail(f"too many inputs ({len(given)}); at most {MAX_INPUTS} are allowed")
    found: list[InputDef] = []
    by_env_name: dict[str, str] = {}
    for name, body in given.items():
        spec = _input(name, body, where)
        # Shell jobs see each input as a variable, so two names must not meet in one.
        env_name = input_env_name(spec.name)
        other = by_env_name.setdefault(env_name, spec.name)
        if other != spec.name:
            where.fail(
                f"inputs {quote(other)} and {quote(spec.name)} would both be the "
                f"environment variable {env_name}"
            )
        found.append(spec)
    # Runs that leave out every input with a default get them all, so together they must
    # fit in what one run may be given.
    defaults = {spec.name: spec.default for spec in found if spec.has_default}
    if defaults and json_size(defaults) > MAX_INPUTS_BYTES:
        where.fail(
            f"the inputs' defaults together are larger than {MAX_INPUTS_BYTES} bytes as JSON"
        )
    return tuple(found)


def _input(name: Any, body: Any, where: Where) -> InputDef:
    if not isinstance(name, str):
        # YAML reads unquoted keys such as 1 or `yes` as numbers and booleans.
        where.fail(f"input name must be a string, got {show(name)} (quote it)")
    if not name:
        where.fail("input name must not be empty")
    at = where.within(f"input {quote(name)}")
    if len(name) > MAX_ID_LENGTH:
        at.fail(f"the name is longer than {MAX_ID_LENGTH} characters")
    if not _NAME_RE.fullmatch(name):
        at.fail(
            "the name may only contain letters, digits, '_' and '-', "
            "and must not start with a digit or '-'"
        )
    if body is None:
        return InputDef(
            name=name,
            type="string",
            required=False,
            has_default=False,
            default=None,
            description="",
        )
    spec = mapping(body, "the input", at)
    reject_unknown(spec, INPUT_KEYS, at)
    kind = _type(spec.get("type"), at)
    required = spec.get("required", False)
    if not isinstance(required, bool):
        at.fail(f"`required` must be true or false, got {show(required)}")
    raw_description = spec.get("description")
    description = (
        "" if raw_description is None else text(raw_description, "`description`", at, empty=True)
    )
    default = spec.get("default")
    has_default = default is not None
    if has_default:
        if required:
            at.fail(
                "`required: true` and a `default` exclude each other: a run that gives no "
                "value gets the default"
            )
        try:
            default = check_value(kind, default)
        except Refused as refused:
            at.fail(f"`default`: {refused.problem}")
    return InputDef(
        name=name,
        type=kind,
        required=required,
        has_default=has_default,
        default=default,
        description=description,
    )


def _type(value: Any, where: Where) -> InputType:
    if value is None:
        return "string"
    for kind in INPUT_TYPES:
        if value == kind and isinstance(value, str):
            return kind
    supported = ", ".join(INPUT_TYPES)
    if value in ("choice", "environment"):
        where.fail(f"`type` {quote(value)} is not supported; use one of {supported}")
    where.fail(f"`type` must be one of {supported}, got {show(value)}")
