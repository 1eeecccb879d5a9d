"""Definitions as documents of the workflow file format, for export and import.

A document is a workflow file with its id in it: ``id``, then the file's keys (``name``,
``on``, ``env``, ``inputs``, ``jobs``). Many are one YAML stream, ``---`` between them. A
workflow made over the API may have no trigger; its document then has no ``on``, which is
the one place where a document differs from a file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import yaml

from trellis.server.engine.definitions._errors import DefinitionError, Where, quote, show
from trellis.server.engine.definitions._file import FILE, read_file_mapping
from trellis.server.engine.definitions._model import (
    Backoff,
    InputDef,
    JobDef,
    WorkflowDef,
    named_events,
)
from trellis.server.engine.definitions._text import load_yaml_documents
from trellis.server.engine.definitions._validate import build


def _trigger(value: Any, where: Where) -> str:
    return "" if value is None else FILE.trigger(value, where)


_DOCUMENT = dataclasses.replace(FILE, trigger=_trigger)


def to_document(wdef: WorkflowDef) -> dict[str, Any]:
    """The document of ``wdef``: read back by :func:`parse_documents`, it gives a definition
    equal to ``wdef`` (the same fingerprint)."""
    doc: dict[str, Any] = {"id": wdef.id, "name": wdef.name}
    if wdef.trigger:
        doc["on"] = _on(wdef)
    if wdef.env:
        doc["env"] = dict(wdef.env)
    if wdef.inputs:
        doc["inputs"] = {spec.name: _input(spec) for spec in wdef.inputs}
    if wdef.rollback:
        doc["rollback"] = wdef.rollback
    if wdef.parallel_limit:
        doc["parallel_limit"] = wdef.parallel_limit
    doc["jobs"] = {job.id: _job(job, wdef.env) for job in wdef.jobs}
    return doc


def to_api_mapping(wdef: WorkflowDef) -> dict[str, Any]:
    """``wdef`` as the workflow object of the API (what ``parse_api_mapping`` reads), to be
    edited and validated again: the storage form, with the API's spellings of a job's retry
    policy and of the inputs."""
    data = wdef.to_json()
    for job in data["jobs"]:
        if "compensate" in job:
            job["compensation"] = job.pop("compensate")
        stored = job.pop("backoff")
        kind = stored["kind"]
        backoff: dict[str, Any] = {"none": {}}
        if kind == "fixed":
            backoff = {"fixed": {"delay_secs": stored["delay_secs"]}}
        elif kind == "exponential":
            backoff = {
                "exponential": {"base_secs": stored["base_secs"], "max_secs": stored["max_secs"]}
            }
        job["retry_policy"] = {"backoff": backoff}
    if "inputs" in data:
        data["inputs"] = {
            spec["name"]: {key: value for key, value in spec.items() if key != "name"}
            for spec in data["inputs"]
        }
    return data


def _on(wdef: WorkflowDef) -> Any:
    """``on`` as the file says it: a name or a list of names while the triggers are the
    event names alone, else a mapping in the order of those names (the ``trigger`` text,
    part of the fingerprint), each with what the triggers keep of it."""
    names = wdef.trigger.split(", ")
    if wdef.triggers == named_events(wdef.trigger):
        return names[0] if len(names) == 1 else names
    events = {t.pattern: t for t in wdef.triggers if t.kind == "topic" and t.pattern in names}
    on: dict[str, Any] = {}
    for name in names:
        if name == "topic":
            on[name] = [
                t.pattern for t in wdef.triggers if t.kind == "topic" and t.pattern not in events
            ]
        elif name == "schedule":
            on[name] = [
                {"cron": t.cron, "timezone": t.timezone}
                for t in wdef.triggers
                if t.kind == "schedule"
            ]
        elif name in events:
            filters = events[name].filters
            on[name] = {field: list(globs) for field, globs in filters} or None
        else:
            on[name] = None
    return on


def _input(spec: InputDef) -> dict[str, Any]:
    body: dict[str, Any] = {"type": spec.type}
    if spec.required:
        body["required"] = True
    if spec.has_default:
        body["default"] = spec.default
    if spec.description:
        body["description"] = spec.description
    return body


def _job(job: JobDef, wf_env: Mapping[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if job.name != job.id:
        body["name"] = job.name
    if job.depends_on:
        body["needs"] = list(job.depends_on)
    body["run"] = job.command
    if job.required_labels:
        body["labels"] = list(job.required_labels)
    if job.max_retries:
        body["retries"] = job.max_retries
    if job.backoff.kind != "none":
        body["backoff"] = _backoff(job.backoff)
    if job.timeout_secs:
        body["timeout"] = job.timeout_secs
    # A file's job env is laid over the workflow's, so only what differs is written.
    own = {key: value for key, value in job.env.items() if wf_env.get(key) != value}
    if own:
        body["env"] = own
    if job.compensate:
        body["compensate"] = (
            {"run": job.compensate, "retries": job.compensate_retries}
            if job.compensate_retries
            else job.compensate
        )
    return body


def _backoff(backoff: Backoff) -> dict[str, Any]:
    if backoff.kind == "fixed":
        return {"fixed": {"delay_secs": backoff.delay_secs}}
    return {"exponential": {"base_secs": backoff.base_secs, "max_secs": backoff.max_secs}}


class _Dumper(yaml.SafeDumper):
    """Block style, with commands of several lines as literal blocks."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def dump_documents(definitions: list[WorkflowDef]) -> str:
    """The YAML stream of the definitions' documents, in the order given."""
    if not definitions:
        return ""
    return yaml.dump_all(
        [to_document(wdef) for wdef in definitions],
        Dumper=_Dumper,
        explicit_start=True,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
    )


def parse_documents(
    text: str, *, source: str = "import"
) -> tuple[list[WorkflowDef], list[DefinitionError]]:
    """The definitions of a YAML stream of documents (or of a JSON list of them), each
    validated whole. A bad stream raises :class:`DefinitionError`; a bad document is
    reported (naming its workflow and job) and the others are still read."""
    if not isinstance(text, str) or not text.strip():
        raise DefinitionError(
            source, "no documents; expected YAML documents with `id`, `name` and `jobs`"
        )
    documents: list[Any] = []
    for document in load_yaml_documents(text, source):
        # A JSON list of documents is one YAML document that is a list.
        documents.extend(document if isinstance(document, list) else [document])
    found: list[WorkflowDef] = []
    errors: list[DefinitionError] = []
    first: dict[str, int] = {}
    for number, document in enumerate(documents, start=1):
        at = f"{source}: document {number}"
        if not isinstance(document, Mapping):
            errors.append(DefinitionError(at, f"expected a workflow, got {show(document)}"))
            continue
        workflow_id = document.get("id")
        if not isinstance(workflow_id, str) or not workflow_id:
            errors.append(DefinitionError(at, "missing `id`, the workflow's id"))
            continue
        named = f"workflow {quote(workflow_id)}"
        if workflow_id in first:
            errors.append(
                DefinitionError(named, f"given twice (documents {first[workflow_id]} and {number})")
            )
            continue
        first[workflow_id] = number
        body = {key: value for key, value in document.items() if key != "id"}
        try:
            draft = read_file_mapping(body, source=named, workflow_id=workflow_id)
            found.append(build(dataclasses.replace(draft, dialect=_DOCUMENT)))
        except DefinitionError as exc:
            errors.append(exc)
    return found, errors
