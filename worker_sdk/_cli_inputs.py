"""The inputs of ``trellis run``: ``--input NAME=VALUE`` read by the type the
workflow declares, and ``--inputs-file`` (a JSON or YAML mapping)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ._cli_manage import STDIN, _read
from ._client import Client
from ._errors import PermissionDenied
from ._inputs import to_struct
from ._pb import workflows_pb2

__all__ = ["input_option", "read_inputs_file", "run_inputs"]


def input_option(text: str) -> tuple[str, str]:
    """``--input``'s argparse type: ``"NAME=VALUE"`` -> ``(NAME, VALUE)``; the
    value is everything after the first ``=`` and may be empty."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def read_inputs_file(name: str) -> dict[str, Any]:
    """The mapping of input names to values in the file ``name`` (``-``:
    stdin), JSON or YAML; its values keep the types the file gives them.

    Raises ValueError, naming the file, for what cannot be read or is not
    such a mapping of JSON values.
    """
    shown = f"--inputs-file {'<stdin>' if name == STDIN else name}"
    try:
        text = sys.stdin.read() if name == STDIN else _read(Path(name))
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            # Not JSON: YAML (JSON text is YAML too, but JSON's parser keeps
            # its numbers exact and reads nothing as a date).
            data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{shown}: neither JSON nor YAML ({first})") from None
    except ValueError as err:
        raise ValueError(f"{shown}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{shown}: expected a mapping of input names to values, "
            f"got {'nothing' if data is None else 'a ' + type(data).__name__}"
        )
    try:
        to_struct(data)  # checked now, so that the error names the file
    except ValueError as err:
        raise ValueError(f"{shown}: {err}") from None
    return data


def run_inputs(
    client: Client,
    workflow_id: str,
    from_file: Mapping[str, Any],
    pairs: Sequence[tuple[str, str]],
) -> dict[str, Any] | None:
    """The inputs ``trellis run`` sends: those of the file, then each
    ``--input`` pair (the later wins) read by the type the workflow declares
    for it (asked of the server only when there are pairs). None when there
    are neither."""
    if not from_file and not pairs:
        return None
    inputs = dict(from_file)
    if pairs:
        try:
            declared = client.get_workflow(workflow_id).inputs
        except PermissionDenied as err:
            # A token may start runs without reading workflows (workflows:run
            # without workflows:read): say what needed the read.
            err.message += (
                " (--input reads the workflow's declared input types; "
                "--inputs-file gives typed values without that)"
            )
            raise
        for name, text in pairs:
            inputs[name] = _typed(name, text, declared.get(name))
    return inputs


def _typed(name: str, text: str, declared: workflows_pb2.WorkflowInput | None) -> Any:
    # An undeclared name goes as a string: the server refuses it, saying
    # which inputs the workflow does take.
    kind = workflows_pb2.INPUT_TYPE_STRING if declared is None else declared.type
    if kind == workflows_pb2.INPUT_TYPE_NUMBER:
        number = _json(text)
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise ValueError(f"--input {name}: expected a number, got {text!r}")
        return number
    if kind == workflows_pb2.INPUT_TYPE_BOOLEAN:
        word = text.strip().lower()
        if word not in ("true", "false"):
            raise ValueError(f"--input {name}: expected true or false, got {text!r}")
        return word == "true"
    if kind == workflows_pb2.INPUT_TYPE_JSON:
        value = _json(text, _NOT_JSON)
        if value is _NOT_JSON:
            raise ValueError(f"--input {name}: not JSON: {text!r}")
        return value
    return text


_NOT_JSON = object()


def _json(text: str, otherwise: Any = None) -> Any:
    """``text`` parsed as strict JSON (no NaN or Infinity), else ``otherwise``."""

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError:  # JSONDecodeError is one
        return otherwise
