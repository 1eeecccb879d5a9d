"""The workflow of the REST and gRPC APIs, as a mapping, a ``Workflow`` or a whole request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from google.api import field_behavior_pb2  # type: ignore[import-untyped]
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from trellis.server.engine.definitions._checks import (
    backoff,
    identifier,
    mapping,
    optional_int,
    reject_unknown,
    required,
    text,
)
from trellis.server.engine.definitions._draft import Dialect, Draft, DraftJob
from trellis.server.engine.definitions._errors import DefinitionError, Where, quote, show
from trellis.server.engine.definitions._file import parse_text
from trellis.server.engine.definitions._model import MAX_TIMEOUT_SECS, WorkflowDef
from trellis.server.engine.definitions._triggers import text_triggers
from trellis.server.engine.definitions._validate import build
from trellis.server.engine.definitions._values import MAX_JSON_DEPTH
from trellis.v1 import jobs_pb2, workflows_pb2

_WORKFLOW_KEYS = ("id", "name", "trigger", "env", "jobs", "inputs", "rollback", "parallel_limit")
_JOB_KEYS = (
    "id",
    "name",
    "command",
    "depends_on",
    "required_labels",
    "max_retries",
    "retry_policy",
    "timeout_secs",
    "env",
    "compensation",
)


_TIMESTAMP = "google.protobuf.Timestamp"


def _output_only(message: Any) -> tuple[str, ...]:
    """The fields the contract marks OUTPUT_ONLY: a definition read back from the
    API may carry them, and they are ignored rather than refused. A Timestamp may
    come under its name or, as epoch-milliseconds surfaces render it, with ``_ms``."""
    names: list[str] = []
    for f in message.fields:
        if (
            field_behavior_pb2.OUTPUT_ONLY
            in f.GetOptions().Extensions[field_behavior_pb2.field_behavior]
        ):
            names.append(f.name)
            if f.message_type is not None and f.message_type.full_name == _TIMESTAMP:
                names.append(f.name + "_ms")
    return tuple(names)


_WORKFLOW_OUTPUT_ONLY = _output_only(workflows_pb2.Workflow.DESCRIPTOR)
_JOB_OUTPUT_ONLY = _output_only(jobs_pb2.Job.DESCRIPTOR)
BACKOFF_HINT = (
    '"None", {"Fixed": {"delay_secs": N}} or {"Exponential": {"base_secs": N, "max_secs": M}}'
)


def parse_request(
    request: workflows_pb2.CreateWorkflowRequest, *, new_id: Callable[[], str]
) -> WorkflowDef:
    """The definition a ``CreateWorkflowRequest`` carries, as a message or as file text.

    The workflow is named by ``workflow_id``, else by the message's ``id``, else by
    ``new_id()``; when both name it they must agree.
    """
    chosen = request.WhichOneof("definition")
    if chosen == "workflow":
        workflow_id = request.workflow_id or request.workflow.id or new_id()
        return parse_message(request.workflow, workflow_id=workflow_id)
    if chosen == "source" and request.source:
        workflow_id = request.workflow_id or new_id()
        return parse_text(request.source, source="api", workflow_id=workflow_id)
    # Rendered as `workflow: required (or source)`: the request field at fault, then why.
    raise DefinitionError("workflow", "required (or source)")


def parse_message(
    workflow: workflows_pb2.Workflow, *, source: str = "api", workflow_id: str
) -> WorkflowDef:
    """Validate a ``Workflow`` message; its output-only fields (``version``, a job's
    ``status``, ``attempt``, ...) are ignored, so that a fetched workflow can be sent back."""
    data = plain(workflow)
    # A message always has a (perhaps empty) list of jobs.
    data.setdefault("jobs", [])
    if workflow.inputs:
        # A map has no order; by name, the same message always gives the same definition.
        data["inputs"] = {name: _input(workflow.inputs[name]) for name in sorted(workflow.inputs)}
    return parse_api_mapping(data, source=source, workflow_id=workflow_id)


_INPUT_TYPES: dict[int, Any] = {
    workflows_pb2.INPUT_TYPE_UNSPECIFIED: "string",
    workflows_pb2.INPUT_TYPE_STRING: "string",
    workflows_pb2.INPUT_TYPE_NUMBER: "number",
    workflows_pb2.INPUT_TYPE_BOOLEAN: "boolean",
    workflows_pb2.INPUT_TYPE_JSON: "json",
}


def _input(spec: workflows_pb2.WorkflowInput) -> dict[str, Any]:
    """A ``WorkflowInput`` in the mapping form; an unset or null ``default`` is none."""
    # An enum number this contract does not know is passed on to be refused by number.
    found: dict[str, Any] = {
        "type": _INPUT_TYPES.get(spec.type, spec.type),
        "required": spec.required,
        "description": spec.description,
    }
    if spec.HasField("default"):
        found["default"] = _value(spec.default)
    return found


def _value(value: struct_pb2.Value, depth: int = 0) -> Any:
    """A Value as the plain value it holds; unlike json_format, this keeps an infinite or
    NaN number, so that it is refused by the rules of numbers rather than by the codec."""
    kind = value.WhichOneof("kind")
    # Past the deepest nesting a value may have, the rules refuse it whatever lies below.
    if depth > MAX_JSON_DEPTH:
        return None
    if kind == "struct_value":
        return {key: _value(item, depth + 1) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_value(item, depth + 1) for item in value.list_value.values]
    if kind is None or kind == "null_value":
        return None
    return getattr(value, kind)


def plain(message: Message) -> dict[str, Any]:
    """The fields a message has set, as the mapping JSON of it would give (proto names)."""
    found: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            found[field.name] = {
                key: plain(item) if isinstance(item, Message) else item
                for key, item in value.items()
            }
        elif field.is_repeated:
            found[field.name] = [
                plain(item) if isinstance(item, Message) else item for item in value
            ]
        else:
            found[field.name] = plain(value) if isinstance(value, Message) else value
    return found


def parse_api_mapping(data: Any, *, source: str = "api", workflow_id: str) -> WorkflowDef:
    """Validate the workflow object of the REST and gRPC APIs.

    Output-only fields (a job's ``status``, ``attempt``, ... and the workflow's ``version``,
    ``run_id``, ``run_state``) are ignored so that a fetched workflow can be posted back.
    """
    return build(read_api_mapping(data, source=source, workflow_id=workflow_id))


def read_api_mapping(data: Any, *, source: str, workflow_id: str) -> Draft:
    where = Where(source)
    wf_id = identifier(workflow_id, "workflow id", where)
    top = mapping(data, "the workflow", where)
    reject_unknown(top, _WORKFLOW_KEYS + _WORKFLOW_OUTPUT_ONLY, where)
    given_id = top.get("id")
    # Proto3 renders an unset string as "", so an empty id means "not given".
    if given_id not in (None, "") and identifier(given_id, "`id`", where) != wf_id:
        where.fail(f"`id` {quote(given_id)} does not match the workflow id {quote(wf_id)}")

    def jobs() -> tuple[int, Iterator[DraftJob]]:
        raw_jobs = required(top.get("jobs"), "jobs", where)
        if not isinstance(raw_jobs, list | tuple):
            where.fail(f"`jobs` must be a list of jobs, got {show(raw_jobs)}")
        return len(raw_jobs), (_job(index, body, where) for index, body in enumerate(raw_jobs))

    return Draft(
        where=where,
        dialect=API,
        id=wf_id,
        name=top.get("name"),
        trigger=top.get("trigger"),
        env=top.get("env"),
        jobs=jobs,
        inputs=top.get("inputs"),
        triggers=top.get("trigger"),
        rollback=top.get("rollback"),
        parallel_limit=top.get("parallel_limit"),
    )


def _job(index: int, body: Any, where: Where) -> DraftJob:
    position = where.within(f"jobs[{index}]")
    job = mapping(body, "the job", position)
    job_id = identifier(required(job.get("id"), "id", position), "`id`", position)
    at = where.job(job_id)
    reject_unknown(job, _JOB_KEYS + _JOB_OUTPUT_ONLY, at)
    return DraftJob(
        id=job_id,
        at=at,
        position=index,
        name=job.get("name"),
        command=job.get("command"),
        depends_on=job.get("depends_on"),
        required_labels=job.get("required_labels"),
        max_retries=job.get("max_retries"),
        retry_policy=job.get("retry_policy"),
        timeout=job.get("timeout_secs"),
        env=job.get("env"),
        compensate=job.get("compensation"),
    )


def _trigger(value: Any, where: Where) -> str:
    return "" if value is None else text(value, "`trigger`", where, empty=True)


def _name(value: Any, job_id: str, where: Where) -> str:
    # Proto3 renders an unset name as "", which means "the id", as in files.
    return job_id if value is None or value == "" else text(value, "`name`", where)


def seconds(value: Any, where: Where) -> int:
    return optional_int(value, "`timeout_secs`", 0, MAX_TIMEOUT_SECS, where)


API = Dialect(
    command="command",
    missing_command="missing required key `command`",
    needs="depends_on",
    needs_verb="depends on",
    needs_one_ok=False,
    labels="required_labels",
    retries="max_retries",
    trigger=_trigger,
    backoff=lambda value, where: backoff(value, BACKOFF_HINT, where),
    timeout=seconds,
    scalar_env=False,
    merge_env=True,
    job_name=_name,
    retries_first=True,
    duplicates_first=False,
    triggers=text_triggers,
)
