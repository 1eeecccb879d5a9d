"""Declared run inputs: each declaration rule from every source (workflow file, GitHub's
``workflow_dispatch`` spelling, the API mapping, the ``Workflow`` message), a run's values
checked by ``resolve_inputs``, the storage form, and CreateWorkflow / GetWorkflow over gRPC
and REST on a real server."""

from __future__ import annotations

import json
import pickle
import random
import re
import textwrap
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from conftest import Running
from engine_helpers import RPC_TIMEOUT, assert_status, rpc_error, uid
from google.protobuf import struct_pb2
from rest_helpers import assert_error, rest

from trellis.server.engine.definitions import (
    DefinitionError,
    InputDef,
    InputError,
    WorkflowDef,
    input_env_name,
    parse_api_mapping,
    parse_message,
    parse_text,
)
from trellis.v1 import jobs_pb2, workflows_pb2

REPO = Path(__file__).resolve().parents[2]
JOBS = {"a": {"run": "echo a"}}
TYPES = {
    "string": workflows_pb2.INPUT_TYPE_STRING,
    "number": workflows_pb2.INPUT_TYPE_NUMBER,
    "boolean": workflows_pb2.INPUT_TYPE_BOOLEAN,
    "json": workflows_pb2.INPUT_TYPE_JSON,
}


# --------------------------------------------------------------------------- the sources


def from_file(inputs: Any, *, on: Any = "push") -> WorkflowDef:
    """A workflow file declaring ``inputs`` at the top level."""
    text = yaml.safe_dump(
        {"name": "Demo", "on": on, "inputs": inputs, "jobs": JOBS}, sort_keys=False
    )
    return parse_text(text, source="wf.yml", workflow_id="wf")


def from_dispatch(inputs: Any) -> WorkflowDef:
    """A workflow file declaring ``inputs`` as GitHub does, under ``on.workflow_dispatch``."""
    text = yaml.safe_dump(
        {"name": "Demo", "on": {"workflow_dispatch": {"inputs": inputs}}, "jobs": JOBS},
        sort_keys=False,
    )
    return parse_text(text, source="wf.yml", workflow_id="wf")


def from_mapping(inputs: Any) -> WorkflowDef:
    data = {"name": "Demo", "jobs": [{"id": "a", "command": "echo a"}], "inputs": inputs}
    return parse_api_mapping(data, workflow_id="wf")


def as_message(inputs: dict[str, Any]) -> workflows_pb2.Workflow:
    """The mapping form as a ``Workflow`` message (for what a message can carry)."""
    workflow = workflows_pb2.Workflow(name="Demo", jobs=[jobs_pb2.Job(id="a", command="echo a")])
    for name, body in inputs.items():
        spec = workflow.inputs[name]
        body = body or {}
        kind = body.get("type", "string")
        spec.type = TYPES[kind] if isinstance(kind, str) else kind
        spec.required = body.get("required", False)
        spec.description = body.get("description", "")
        if "default" in body:
            spec.default.CopyFrom(value(body["default"]))
    return workflow


def value(plain: Any) -> struct_pb2.Value:
    """A Value built field by field, as json_format would refuse infinite and NaN numbers."""
    found = struct_pb2.Value()
    if plain is None:
        found.null_value = struct_pb2.NULL_VALUE
    elif isinstance(plain, bool):
        found.bool_value = plain
    elif isinstance(plain, int | float):
        found.number_value = plain
    elif isinstance(plain, str):
        found.string_value = plain
    elif isinstance(plain, dict):
        for key, item in plain.items():
            found.struct_value.fields[key].CopyFrom(value(item))
    else:
        found.list_value.values.extend(value(item) for item in plain)
    return found


def from_message(inputs: dict[str, Any]) -> WorkflowDef:
    return parse_message(as_message(inputs), workflow_id="wf")


SOURCES: dict[str, Callable[[Any], WorkflowDef]] = {
    "file": from_file,
    "dispatch": from_dispatch,
    "mapping": from_mapping,
    "message": from_message,
}
SOURCE_NAMES = {"file": "wf.yml", "dispatch": "wf.yml", "mapping": "api", "message": "api"}
FILES_AND_MAPPINGS = ("file", "dispatch", "mapping")


def refusal(source: str, inputs: Any) -> str:
    with pytest.raises(DefinitionError) as caught:
        SOURCES[source](inputs)
    assert caught.value.source == SOURCE_NAMES[source]
    assert caught.value.job_id is None
    return caught.value.problem


# --------------------------------------------------------------------------- declarations


def test_each_source_reads_the_same_declaration() -> None:
    inputs = {
        "target": {"description": "where to", "required": True},
        "count": {"type": "number", "default": 3.0},
        "ratio": {"type": "number", "default": 0.5},
        "dry-run": {"type": "boolean", "default": False},
        "config": {"type": "json", "default": {"a": [1, 2.0, None, "x"]}},
        "notes": None,
    }
    expected = {
        "target": InputDef("target", "string", True, False, None, "where to"),
        "count": InputDef("count", "number", False, True, 3, ""),
        "ratio": InputDef("ratio", "number", False, True, 0.5, ""),
        "dry-run": InputDef("dry-run", "boolean", False, True, False, ""),
        "config": InputDef("config", "json", False, True, {"a": [1, 2, None, "x"]}, ""),
        "notes": InputDef("notes", "string", False, False, None, ""),
    }
    for source, parse in SOURCES.items():
        wf = parse(inputs)
        assert {spec.name: spec for spec in wf.inputs} == expected, source
        count = next(spec for spec in wf.inputs if spec.name == "count")
        assert type(count.default) is int, source
        if source != "message":
            # Files and mappings keep the order they were written in.
            assert [spec.name for spec in wf.inputs] == list(inputs), source


def test_a_message_gives_its_inputs_in_order_of_name() -> None:
    # A proto map has no order of its own.
    wf = from_message({"b": None, "c": None, "a": None})
    assert [spec.name for spec in wf.inputs] == ["a", "b", "c"]


def test_no_inputs_in_any_source() -> None:
    assert from_file(None).inputs == ()
    assert from_mapping(None).inputs == ()
    assert from_message({}).inputs == ()
    assert from_file({}).inputs == ()
    bare = "name: Demo\non: workflow_dispatch\njobs:\n  a: {run: echo}\n"
    assert parse_text(bare, source="x", workflow_id="x").inputs == ()


@pytest.mark.parametrize(
    ("on", "trigger"),
    [
        ("on: workflow_dispatch", "workflow_dispatch"),
        ("on: {workflow_dispatch: }", "workflow_dispatch"),
        ("on: {workflow_dispatch: {inputs: {a: }}}", "workflow_dispatch"),
        (
            "on:\n  push: {branches: [main]}\n  workflow_dispatch:\n    inputs:\n      a:",
            "push, workflow_dispatch",
        ),
        ("on: [push, workflow_dispatch]", "push, workflow_dispatch"),
    ],
)
def test_workflow_dispatch_keeps_its_trigger_text(on: str, trigger: str) -> None:
    wf = parse_text(f"name: D\n{on}\njobs:\n  a: {{run: x}}\n", source="x", workflow_id="x")
    assert wf.trigger == trigger
    assert [spec.name for spec in wf.inputs] == (["a"] if "inputs" in on else [])


def test_a_null_default_is_no_default() -> None:
    # REST answers render an unset default as null; read back, it must still be none.
    for source, parse in SOURCES.items():
        (spec,) = parse({"x": {"type": "json", "required": True, "default": None}}).inputs
        assert (spec.has_default, spec.default, spec.required) == (False, None, True), source


def test_one_hundred_inputs_are_allowed() -> None:
    inputs = {f"i{n}": None for n in range(100)}
    for source, parse in SOURCES.items():
        assert len(parse(inputs).inputs) == 100, source


TYPE_LIST = "string, number, boolean, json"
# rule: (inputs, problem, sources it can be stated in)
RULES: dict[str, tuple[Any, str, tuple[str, ...]]] = {
    "inputs not a mapping": (
        ["a"],
        "`inputs` (input name -> input) must be a mapping, got a list",
        FILES_AND_MAPPINGS,
    ),
    "name with a dot": (
        {"a.b": None},
        "input 'a.b': the name may only contain letters, digits, '_' and '-', "
        "and must not start with a digit or '-'",
        tuple(SOURCES),
    ),
    "name starting with a digit": (
        {"1a": None},
        "input '1a': the name may only contain letters, digits, '_' and '-', "
        "and must not start with a digit or '-'",
        tuple(SOURCES),
    ),
    "name starting with a dash": (
        {"-a": None},
        "input '-a': the name may only contain letters, digits, '_' and '-', "
        "and must not start with a digit or '-'",
        tuple(SOURCES),
    ),
    "empty name": ({"": None}, "input name must not be empty", tuple(SOURCES)),
    "long name": (
        {"n" * 101: None},
        f"input '{'n' * 57}...': the name is longer than 100 characters",
        tuple(SOURCES),
    ),
    "name not a string": (
        {1: None},
        "input name must be a string, got 1 (quote it)",
        FILES_AND_MAPPINGS,
    ),
    "too many": (
        {f"i{n}": None for n in range(101)},
        "too many inputs (101); at most 100 are allowed",
        tuple(SOURCES),
    ),
    "same variable by dash": (
        {"a-b": None, "a_b": None},
        "inputs 'a-b' and 'a_b' would both be the environment variable TRELLIS_INPUT_A_B",
        tuple(SOURCES),
    ),
    "same variable by case": (
        {"Mode": None, "MODE": None},
        "inputs 'MODE' and 'Mode' would both be the environment variable TRELLIS_INPUT_MODE",
        ("message",),
    ),
    "type choice": (
        {"x": {"type": "choice"}},
        f"input 'x': `type` 'choice' is not supported; use one of {TYPE_LIST}",
        FILES_AND_MAPPINGS,
    ),
    "type environment": (
        {"x": {"type": "environment"}},
        f"input 'x': `type` 'environment' is not supported; use one of {TYPE_LIST}",
        FILES_AND_MAPPINGS,
    ),
    "unknown type": (
        {"x": {"type": "int"}},
        f"input 'x': `type` must be one of {TYPE_LIST}, got 'int'",
        FILES_AND_MAPPINGS,
    ),
    "unknown type number": (
        {"x": {"type": 9}},
        f"input 'x': `type` must be one of {TYPE_LIST}, got 9",
        ("message",),
    ),
    "required with a default": (
        {"x": {"required": True, "default": "d"}},
        "input 'x': `required: true` and a `default` exclude each other: a run that gives "
        "no value gets the default",
        tuple(SOURCES),
    ),
    "string default not a string": (
        {"x": {"default": 5}},
        "input 'x': `default`: expected a string, got 5",
        tuple(SOURCES),
    ),
    "number default not a number": (
        {"x": {"type": "number", "default": "abc"}},
        "input 'x': `default`: expected a number, got 'abc'",
        tuple(SOURCES),
    ),
    "number default a boolean": (
        {"x": {"type": "number", "default": True}},
        "input 'x': `default`: expected a number, got true",
        tuple(SOURCES),
    ),
    "number default beyond 2**53": (
        {"x": {"type": "number", "default": 2**54}},
        "input 'x': `default`: 18014398509481984 is not within ±2**53, "
        "the whole numbers JSON carries exactly",
        tuple(SOURCES),
    ),
    "number default infinite": (
        {"x": {"type": "number", "default": float("inf")}},
        "input 'x': `default`: expected a finite number, got inf",
        tuple(SOURCES),
    ),
    "boolean default a string": (
        {"x": {"type": "boolean", "default": "true"}},
        "input 'x': `default`: expected true or false, got 'true'",
        tuple(SOURCES),
    ),
    "json default with NaN inside": (
        {"x": {"type": "json", "default": {"a": [1, float("nan")]}}},
        "input 'x': `default`: at a[1]: expected a finite number, got nan",
        tuple(SOURCES),
    ),
    "string default with NUL": (
        {"x": {"default": "a\x00b"}},
        "input 'x': `default`: contains a NUL character",
        ("mapping", "message"),
    ),
    "unknown key": (
        {"x": {"type": "string", "options": ["a"]}},
        "input 'x': unknown key 'options' (expected one of: type, required, default, description)",
        FILES_AND_MAPPINGS,
    ),
    "body not a mapping": (
        {"x": "string"},
        "input 'x': the input must be a mapping, got 'string'",
        FILES_AND_MAPPINGS,
    ),
    "required not a boolean": (
        {"x": {"required": "sometimes"}},
        "input 'x': `required` must be true or false, got 'sometimes'",
        FILES_AND_MAPPINGS,
    ),
    "description not a string": (
        {"x": {"description": 5}},
        "input 'x': `description` must be a string, got 5",
        FILES_AND_MAPPINGS,
    ),
}
CASES = [
    pytest.param(inputs, problem, source, id=f"{rule}-{source}")
    for rule, (inputs, problem, sources) in RULES.items()
    for source in sources
]


@pytest.mark.parametrize(("inputs", "problem", "source"), CASES)
def test_declaration_rules(inputs: Any, problem: str, source: str) -> None:
    assert refusal(source, inputs) == problem


def test_inputs_in_both_places_of_a_file_are_refused() -> None:
    with pytest.raises(DefinitionError) as caught:
        from_file({"a": None}, on={"workflow_dispatch": {"inputs": {"b": None}}})
    assert str(caught.value) == (
        "wf.yml: inputs are given both as `inputs` and as `on.workflow_dispatch.inputs`; "
        "give them in one place"
    )


def test_json_file_inputs() -> None:
    text = json.dumps(
        {"name": "J", "on": "push", "inputs": {"n": {"type": "number"}}, "jobs": JOBS}
    )
    wf = parse_text(text, source="wf.json", workflow_id="wf", fmt="json")
    assert wf.inputs == (InputDef("n", "number", False, False, None, ""),)


def test_the_readme_example() -> None:
    readme = (REPO / "README.md").read_text()
    found = re.search(r"```yaml\n# deploy\.yml\n(.*?)```", readme, re.DOTALL)
    assert found is not None
    wf = parse_text(found.group(1), source="deploy.yml", workflow_id="deploy")
    assert [spec.name for spec in wf.inputs] == ["target", "replicas", "dry-run", "notes"]
    assert wf.resolve_inputs({"target": "staging"}) == {
        "target": "staging",
        "replicas": 2,
        "dry-run": False,
    }
    for spec in wf.inputs:
        if spec.name != "notes":
            assert input_env_name(spec.name) in wf.jobs[0].command


# --------------------------------------------------------------------------- run values

DECLARED = from_mapping(
    {
        "target": {"required": True},
        "count": {"type": "number", "default": 2},
        "flag": {"type": "boolean"},
        "blob": {"type": "json", "default": {"k": [1]}},
        "note": None,
    }
)


def resolved(values: Any, wf: WorkflowDef = DECLARED) -> dict[str, Any]:
    return wf.resolve_inputs(values)


def input_error(values: Any, wf: WorkflowDef = DECLARED) -> str:
    with pytest.raises(InputError) as caught:
        wf.resolve_inputs(values)
    return str(caught.value)


def test_defaults_are_filled_in_and_the_rest_is_absent() -> None:
    assert resolved({"target": "prod"}) == {"target": "prod", "count": 2, "blob": {"k": [1]}}
    given = {"target": "t", "count": 1.5, "flag": True, "blob": None, "note": ""}
    assert resolved(given) == given


def test_values_come_back_in_declaration_order() -> None:
    values = {"note": "n", "flag": False, "target": "t"}
    assert list(resolved(values)) == ["target", "count", "flag", "blob", "note"]


@pytest.mark.parametrize(
    ("kind", "given", "kept"),
    [
        ("string", "", ""),
        ("string", "multi\nline 'quoted' $(not run)", "multi\nline 'quoted' $(not run)"),
        ("number", 0, 0),
        ("number", -7, -7),
        ("number", 2.5, 2.5),
        ("number", 3.0, 3),
        ("number", 2**53, 2**53),
        ("number", -(2**53), -(2**53)),
        ("number", float(2**53), 2**53),
        ("boolean", True, True),
        ("boolean", False, False),
        ("json", None, None),
        ("json", "text", "text"),
        ("json", 4.0, 4),
        ("json", [1, 2.0, {"a": None, "b": [True]}], [1, 2, {"a": None, "b": [True]}]),
        ("json", (1, "x"), [1, "x"]),
        ("json", {"n": {"m": 1.25}}, {"n": {"m": 1.25}}),
    ],
)
def test_accepted_values(kind: str, given: Any, kept: Any) -> None:
    wf = from_mapping({"x": {"type": kind}})
    got = wf.resolve_inputs({"x": given})
    assert got == {"x": kept}
    assert json.dumps(got) == json.dumps({"x": kept})  # 3.0 is 3, not 3.0


@pytest.mark.parametrize(
    ("kind", "given", "problem"),
    [
        ("string", None, "expected a string, got null"),
        ("string", 5, "expected a string, got 5"),
        ("string", ["a"], "expected a string, got a list"),
        ("string", "a\x00b", "contains a NUL character"),
        ("string", "\ud800", "is not valid Unicode text"),
        ("number", "abc", "expected a number, got 'abc'"),
        ("number", "5", "expected a number, got '5'"),
        ("number", None, "expected a number, got null"),
        ("number", True, "expected a number, got true"),
        ("number", float("nan"), "expected a finite number, got nan"),
        ("number", float("-inf"), "expected a finite number, got -inf"),
        (
            "number",
            2**53 + 1,
            "9007199254740993 is not within ±2**53, the whole numbers JSON carries exactly",
        ),
        (
            "number",
            -(2**53) - 1,
            "-9007199254740993 is not within ±2**53, the whole numbers JSON carries exactly",
        ),
        ("number", 1e300, "1e+300 is not within ±2**53, the whole numbers JSON carries exactly"),
        ("boolean", "true", "expected true or false, got 'true'"),
        ("boolean", 1, "expected true or false, got 1"),
        ("boolean", None, "expected true or false, got null"),
        ("json", {1: "a"}, "object keys must be strings, got 1"),
        ("json", {"a": {"b": [0, 2**60]}}, "at a.b[1]: 1152921504606846976 is not within"),
        ("json", {"a": float("inf")}, "at a: expected a finite number, got inf"),
        ("json", {"a"}, "expected a JSON value, got a value of type set"),
        ("json", ["x\x00"], "at [0]: contains a NUL character"),
    ],
)
def test_refused_values(kind: str, given: Any, problem: str) -> None:
    wf = from_mapping({"x": {"type": kind}})
    message = input_error({"x": given}, wf)
    assert message.startswith(f"inputs.x: {problem}"), message


def test_json_values_nest_at_most_100_deep() -> None:
    wf = from_mapping({"x": {"type": "json"}})
    deep: Any = "leaf"
    for _ in range(100):
        deep = [deep]
    assert wf.resolve_inputs({"x": deep}) == {"x": deep}
    message = input_error({"x": [deep]}, wf)
    assert message.startswith("inputs.x: at [0]") and "nested deeper than 100 levels" in message


def test_missing_unknown_and_the_order_of_problems() -> None:
    assert input_error({}) == "inputs: missing required input 'target'"
    assert input_error({"colour": "red", "target": 5}) == (
        "inputs: unknown input 'colour'; the workflow takes 'blob', 'count', 'flag', 'note', "
        "'target'"
    )
    # Unknown before missing, missing before wrong, and by name within each.
    assert input_error({"zeta": 1, "alpha": 1, "count": "x"}).startswith(
        "inputs: unknown input 'alpha'"
    )
    assert input_error({"count": "x"}) == "inputs: missing required input 'target'"
    assert input_error({"target": "t", "flag": "x", "count": "x"}) == (
        "inputs.count: expected a number, got 'x'"
    )
    assert input_error({"target": "t", 5: 1}).startswith("inputs: unknown input 5;")


def test_a_workflow_without_inputs() -> None:
    wf = from_mapping(None)
    assert wf.resolve_inputs({}) == {}
    assert input_error({"x": 1}, wf) == "inputs: unknown input 'x'; the workflow takes no inputs"


def test_a_long_list_of_inputs_is_shortened() -> None:
    wf = from_mapping({f"i{n:02}": None for n in range(12)})
    shown = ", ".join(f"'i{n:02}'" for n in range(10))
    assert input_error({"x": 1}, wf) == (
        f"inputs: unknown input 'x'; the workflow takes {shown} and 2 more"
    )


def test_values_must_be_a_mapping() -> None:
    assert input_error(["target"]) == (
        "inputs: expected a mapping of input names to values, got a list"
    )


def test_at_most_64_kib_as_json() -> None:
    wf = from_mapping({"s": None, "t": None})
    # {"s":"…"} is 8 bytes besides the text; é is two bytes in UTF-8.
    fits = {"s": "é" * 20_000 + "x" * (65_536 - 8 - 40_000)}
    assert wf.resolve_inputs(fits) == fits
    assert input_error({"s": fits["s"] + "x"}, wf) == "inputs: larger than 65536 bytes as JSON"
    assert input_error({"s": "x" * 40_000, "t": "y" * 40_000}, wf) == (
        "inputs: larger than 65536 bytes as JSON"
    )


def test_defaults_count_towards_the_limit() -> None:
    wf = from_mapping({"big": {"default": "x" * 65_000}, "more": None})
    assert len(wf.resolve_inputs({})["big"]) == 65_000
    assert input_error({"more": "y" * 600}, wf) == "inputs: larger than 65536 bytes as JSON"


def test_json_values_with_more_items_than_the_limit_has_bytes() -> None:
    wf = from_mapping({"x": {"type": "json"}, "y": {"type": "json"}})
    assert input_error({"x": [0] * 65_537}, wf) == "inputs.x: larger than 65536 bytes as JSON"
    # The count is shared by the values of one run.
    assert input_error({"x": [0] * 40_000, "y": [[0] * 30_000]}, wf) == (
        "inputs.y: at [0]: larger than 65536 bytes as JSON"
    )


def test_a_default_built_of_yaml_aliases_is_refused_without_expanding_it() -> None:
    # Nine levels of nine aliases stand for 9**9 items; they must not all be visited.
    lines = ["name: Bomb", "on: push", "x0: &x0 [a, a, a, a, a, a, a, a, a]"]
    for level in range(1, 10):
        lines.append(f"x{level}: &x{level} [" + ", ".join([f"*x{level - 1}"] * 9) + "]")
    text = "\n".join(lines[:2]) + "\ninputs:\n  big:\n    type: json\n    default:\n"
    text += "".join(f"      - {line.split(': ', 1)[1]}\n" for line in lines[2:])
    text += "jobs:\n  a: {run: echo}\n"
    with pytest.raises(DefinitionError) as caught:
        parse_text(text, source="bomb.yml", workflow_id="bomb")
    message = str(caught.value)
    assert message.startswith("bomb.yml: input 'big': `default`: at [")
    assert message.endswith("]: larger than 65536 bytes as JSON")


def test_defaults_together_must_fit_in_one_run() -> None:
    inputs = {"a": {"default": "x" * 40_000}, "b": {"default": "y" * 40_000}}
    for source in SOURCES:
        assert refusal(source, inputs) == (
            "the inputs' defaults together are larger than 65536 bytes as JSON"
        ), source


def test_a_run_cannot_change_the_definition_through_a_default() -> None:
    first = resolved({"target": "t"})
    first["blob"]["k"].append(2)
    assert resolved({"target": "t"})["blob"] == {"k": [1]}


def test_input_error_shape() -> None:
    with pytest.raises(ValueError) as caught:
        DECLARED.resolve_inputs({"target": 1})
    error = caught.value
    assert isinstance(error, InputError)
    assert (error.name, error.problem) == ("target", "expected a string, got 1")
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), str(again), again.name) == (InputError, str(error), "target")
    missing = InputError("missing required input 'x'")
    assert (missing.name, str(missing)) == (None, "inputs: missing required input 'x'")


def junk(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return rng.choice([None, True, False])
    if pick == 1:
        return rng.choice([0, -1, 3, 2**53, 2**53 + 1, 10**400, 2.5, 3.0, float("nan"), 1e300])
    if pick in (2, 3):
        return rng.choice(["", "t", "target", "count", "x\x00", "\ud800", "é", "flag", "blob"])
    if pick == 4:
        return rng.choice([b"bytes", object(), (1, "a"), {1, 2}])
    if pick == 5:
        return rng.choice(["target", "count", "flag", "blob", "note", "other"])
    if pick == 6:
        return [junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [junk(rng, 3) for _ in range(rng.randrange(5))]
    return {key: junk(rng, depth + 1) for key in keys if isinstance(key, Hashable)}


def test_any_values_give_a_checked_set_or_an_input_error() -> None:
    rng = random.Random(1105)
    accepted = 0
    for _ in range(5000):
        values = junk(rng)
        if rng.random() < 0.7:
            given = {"target": "t"} if rng.random() < 0.5 else {}
            values = {**given, **(values if isinstance(values, dict) else {"blob": values})}
        try:
            got = DECLARED.resolve_inputs(values)
        except InputError as exc:
            assert str(exc).startswith("inputs")
            continue
        accepted += 1
        # What is accepted is plain JSON, and checking it again changes nothing.
        assert json.loads(json.dumps(got, allow_nan=False)) == got
        assert DECLARED.resolve_inputs(got) == got
    assert accepted > 100


@pytest.mark.parametrize(
    ("name", "variable"),
    [
        ("target", "TRELLIS_INPUT_TARGET"),
        ("dry-run", "TRELLIS_INPUT_DRY_RUN"),
        ("Mixed_Case-2", "TRELLIS_INPUT_MIXED_CASE_2"),
        ("_x", "TRELLIS_INPUT__X"),
    ],
)
def test_input_env_name(name: str, variable: str) -> None:
    assert input_env_name(name) == variable


# --------------------------------------------------------------------------- storage

FINGERPRINTED = textwrap.dedent(
    """\
    name: Fingerprint
    on: [push, workflow_dispatch]
    env: {A: '1', N: 2}
    jobs:
      build:
        run: make
        labels: [linux]
        retries: 2
        backoff: {exponential: {base_secs: 1, max_secs: 8}}
        timeout: 5m
      test:
        needs: build
        steps:
          - run: echo one
            env: {X: y}
    """
)


def test_definitions_without_inputs_keep_their_storage_form_and_fingerprint() -> None:
    # Computed before inputs existed: stored versions and reloaded files must not change.
    wf = parse_text(FINGERPRINTED, source="x", workflow_id="fp")
    assert "inputs" not in wf.to_json()
    assert wf.fingerprint() == "deb85eb3c0087cf821e18fe18646f1e6fb1a335f9dcbd18f6572bd7cd6fc0ac2"
    api = parse_api_mapping(
        {
            "name": "Api",
            "trigger": "push",
            "jobs": [{"id": "a", "command": "echo a", "env": {"E": "é"}}],
        },
        workflow_id="wf",
    )
    assert api.fingerprint() == "372cdc05c32a802d839960d296aadb80896d5e1a98d2082d5f8780236e59f347"


def with_inputs(inputs: str) -> WorkflowDef:
    return parse_text(FINGERPRINTED + inputs, source="x", workflow_id="fp")


STORED_INPUTS = """\
inputs:
  target: {description: where, required: true}
  count: {type: number, default: 3}
  config: {type: json, default: {a: [1, null]}}
  note:
"""


def test_inputs_round_trip_through_storage() -> None:
    wf = with_inputs(STORED_INPUTS)
    stored = json.loads(json.dumps(wf.to_json()))
    assert stored["inputs"] == [
        {"name": "target", "type": "string", "required": True, "description": "where"},
        {"name": "count", "type": "number", "required": False, "default": 3, "description": ""},
        {
            "name": "config",
            "type": "json",
            "required": False,
            "default": {"a": [1, None]},
            "description": "",
        },
        {"name": "note", "type": "string", "required": False, "description": ""},
    ]
    again = WorkflowDef.from_json(stored)
    assert again == wf
    assert again.to_json() == wf.to_json()
    assert again.fingerprint() == wf.fingerprint()
    assert hash(again) == hash(wf)


def test_inputs_are_part_of_the_fingerprint() -> None:
    base = with_inputs(STORED_INPUTS).fingerprint()
    assert base != parse_text(FINGERPRINTED, source="x", workflow_id="fp").fingerprint()
    assert with_inputs(STORED_INPUTS).fingerprint() == base
    for old, new in [
        ("default: 3}", "default: 4}"),
        ("where", "there"),
        ("required: true", "required: false"),
        ("type: number", "type: json"),
        ("  note:\n", "  note2:\n"),
    ]:
        assert old in STORED_INPUTS
        assert with_inputs(STORED_INPUTS.replace(old, new)).fingerprint() != base, old


def test_stored_inputs_are_checked_again() -> None:
    good = with_inputs(STORED_INPUTS).to_json()
    where = "stored definition of 'fp'"
    cases: list[tuple[Any, str]] = [
        ({"name": "x", "type": "choice"}, "input 'x': `type` 'choice' is not supported"),
        ({"name": "x", "type": "number", "default": "a"}, "input 'x': `default`: expected a"),
        ({"type": "string"}, "inputs[0]: `name` must be a string, got null"),
        ("x", "inputs[0]: the input must be a mapping, got 'x'"),
    ]
    for item, fragment in cases:
        with pytest.raises(DefinitionError) as caught:
            WorkflowDef.from_json({**good, "inputs": [item]})
        assert str(caught.value).startswith(f"{where}: {fragment}"), caught.value
    twice = [{"name": "x"}, {"name": "x"}]
    with pytest.raises(DefinitionError, match=r"inputs\[1\]: input 'x' is stored twice"):
        WorkflowDef.from_json({**good, "inputs": twice})
    with pytest.raises(DefinitionError, match="`inputs` must be a list, got a mapping"):
        WorkflowDef.from_json({**good, "inputs": {}})
    # Keys written by a newer server are tolerated, as elsewhere in stored rows.
    newer = [{**item, "options": ["a"]} for item in good["inputs"]]
    assert WorkflowDef.from_json({**good, "inputs": newer}) == with_inputs(STORED_INPUTS)


# --------------------------------------------------------------------------- the API


@pytest.fixture
def grpc_server(start_server: Callable[..., Running]) -> Running:
    return start_server(rest_enabled=False)


MESSAGE_INPUTS = {
    "target": {"description": "where", "required": True},
    "count": {"type": "number", "default": 3},
    "flag": {"type": "boolean", "default": False},
    "config": {"type": "json", "default": {"a": [1, None]}},
    "note": None,
}
RENDERED = {
    "target": workflows_pb2.WorkflowInput(
        type=workflows_pb2.INPUT_TYPE_STRING, required=True, description="where"
    ),
    "count": workflows_pb2.WorkflowInput(
        type=workflows_pb2.INPUT_TYPE_NUMBER, default=struct_pb2.Value(number_value=3)
    ),
    "flag": workflows_pb2.WorkflowInput(
        type=workflows_pb2.INPUT_TYPE_BOOLEAN, default=struct_pb2.Value(bool_value=False)
    ),
    "config": workflows_pb2.WorkflowInput(
        type=workflows_pb2.INPUT_TYPE_JSON, default=value({"a": [1, None]})
    ),
    "note": workflows_pb2.WorkflowInput(type=workflows_pb2.INPUT_TYPE_STRING),
}


def test_create_and_get_a_workflow_with_inputs_over_grpc(grpc_server: Running) -> None:
    wf_id = uid()
    request = workflows_pb2.CreateWorkflowRequest(
        workflow=as_message(MESSAGE_INPUTS), workflow_id=wf_id
    )
    created = grpc_server.workflows.CreateWorkflow(request, timeout=RPC_TIMEOUT)
    assert dict(created.inputs) == RENDERED
    read = grpc_server.workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id=wf_id), timeout=RPC_TIMEOUT
    )
    assert dict(read.inputs) == RENDERED
    assert read.version == 1
    # What GetWorkflow shows reads back as the same definition: no new version.
    again = grpc_server.workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(workflow=read), timeout=RPC_TIMEOUT
    )
    assert (again.version, dict(again.inputs)) == (1, RENDERED)


def test_a_workflow_file_with_inputs_over_grpc(grpc_server: Running) -> None:
    wf_id = uid()
    source = "name: From text\non: {workflow_dispatch: {inputs: {n: {type: number}}}}\n"
    created = grpc_server.workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(
            source=source + "jobs:\n  a: {run: echo}\n", workflow_id=wf_id
        ),
        timeout=RPC_TIMEOUT,
    )
    assert created.trigger == "workflow_dispatch"
    assert dict(created.inputs) == {
        "n": workflows_pb2.WorkflowInput(type=workflows_pb2.INPUT_TYPE_NUMBER)
    }


def test_a_workflow_without_inputs_shows_none(grpc_server: Running) -> None:
    read = grpc_server.workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id="ci"), timeout=RPC_TIMEOUT
    )
    assert len(read.inputs) == 0


def test_bad_inputs_are_refused_over_grpc_and_nothing_is_stored(grpc_server: Running) -> None:
    wf_id = uid()
    bad = as_message({"count": {"type": "number", "default": "three"}})
    error = rpc_error(
        grpc_server.workflows.CreateWorkflow,
        workflows_pb2.CreateWorkflowRequest(workflow=bad, workflow_id=wf_id),
    )
    assert_status(
        error,
        grpc.StatusCode.INVALID_ARGUMENT,
        "api: input 'count': `default`: expected a number, got 'three'",
    )
    missing = rpc_error(
        grpc_server.workflows.GetWorkflow, workflows_pb2.GetWorkflowRequest(workflow_id=wf_id)
    )
    assert_status(missing, grpc.StatusCode.NOT_FOUND)


def test_create_and_get_a_workflow_with_inputs_over_rest(server: Running) -> None:
    client = rest(server)
    wf_id = uid()
    body = {
        "id": wf_id,
        "name": "Inputs",
        "jobs": [{"id": "a", "command": "echo a"}],
        # JSON's null is no map value to the REST codec: an input with no settings is {}.
        "inputs": {**MESSAGE_INPUTS, "note": {}},
    }
    # An input without a default shows none (`default` is left out, not null).
    shown = {
        "target": {"type": "string", "required": True, "description": "where"},
        "count": {"type": "number", "required": False, "default": 3, "description": ""},
        "flag": {"type": "boolean", "required": False, "default": False, "description": ""},
        "config": {
            "type": "json",
            "required": False,
            "default": {"a": [1, None]},
            "description": "",
        },
        "note": {"type": "string", "required": False, "description": ""},
    }
    created = client.ok(client.post("/api/workflows", body), 201)
    assert created["inputs"] == shown
    read = client.ok(client.get(f"/api/workflows/{wf_id}/status"))
    assert (read["inputs"], read["version"]) == (shown, 1)
    # The answer posted back is the same definition.
    again = client.ok(client.post("/api/workflows", read), 201)
    assert (again["inputs"], again["version"]) == (shown, 1)
    # Workflows without inputs answer as before, without the key.
    assert "inputs" not in client.ok(client.get("/api/workflows/ci/status"))


@pytest.mark.parametrize(
    ("inputs", "fragments"),
    [
        ({"x": {"type": "choice"}}, ('inputs["x"].type', '"string"', '"choice"')),
        ({"x": {"required": True, "default": "d"}}, ("api: input 'x': `required: true`",)),
        ({"a-b": {}, "a_b": {}}, ("TRELLIS_INPUT_A_B",)),
        ({"x y": {}}, ("api: input 'x y': the name may only contain",)),
    ],
)
def test_bad_inputs_are_refused_over_rest_and_nothing_is_stored(
    server: Running, inputs: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    client = rest(server)
    wf_id = uid()
    body = {"id": wf_id, "name": "Bad", "jobs": [{"id": "a", "command": "echo"}], "inputs": inputs}
    assert_error(client.post("/api/workflows", body), 400, "INVALID_ARGUMENT", *fragments)
    assert client.get(f"/api/workflows/{wf_id}/status").status == 404


def test_a_file_with_inputs_reloads_without_a_new_version(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    (tmp_path / "workflows" / "deploy.yml").write_text(
        "name: Deploy\non: push\n" + STORED_INPUTS + "jobs:\n  a: {run: echo}\n"
    )
    first = start_server(rest_enabled=False)
    read = first.workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id="deploy"), timeout=RPC_TIMEOUT
    )
    assert (read.version, sorted(read.inputs)) == (1, ["config", "count", "note", "target"])
    first.stop()
    second = start_server(rest_enabled=False)
    again = second.workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id="deploy"), timeout=RPC_TIMEOUT
    )
    assert (again.version, dict(again.inputs)) == (1, dict(read.inputs))
