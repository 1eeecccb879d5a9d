"""Workflow files (workflow-graph's YAML/JSON format) and directories of them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from trellis.server.engine.definitions._checks import (
    backoff,
    duration,
    identifier,
    mapping,
    reject_unknown,
    required,
    text,
    unknown_keys,
)
from trellis.server.engine.definitions._draft import Dialect, Draft, DraftJob
from trellis.server.engine.definitions._errors import DefinitionError, Where, quote, show
from trellis.server.engine.definitions._model import MAX_TIMEOUT_SECS, WorkflowDef
from trellis.server.engine.definitions._steps import IF_REJECTED
from trellis.server.engine.definitions._text import load_json, load_yaml
from trellis.server.engine.definitions._triggers import file_triggers
from trellis.server.engine.definitions._validate import build

FORMATS: dict[str, Literal["yaml", "json"]] = {".yml": "yaml", ".yaml": "yaml", ".json": "json"}

_FILE_KEYS = ("name", "on", "env", "jobs", "inputs", "rollback", "parallel_limit")
_JOB_KEYS = (
    "name",
    "needs",
    "run",
    "steps",
    "env",
    "timeout",
    "if",
    "labels",
    "retries",
    "backoff",
    "compensate",
)
_BACKOFF_HINT = (
    "none, {fixed: N}, {fixed: {delay_secs: N}} or {exponential: {base_secs: N, max_secs: M}}"
)


def parse_file(path: Path) -> WorkflowDef:
    """Parse a ``.yml``/``.yaml``/``.json`` workflow file; the workflow id is the file stem."""
    source = str(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DefinitionError(source, "unsupported file type; expected .yml, .yaml or .json")
    try:
        # utf-8-sig: editors on Windows like to start files with a BOM, which JSON rejects.
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DefinitionError(source, "the file is not UTF-8 text") from None
    except OSError as exc:
        raise DefinitionError(source, f"cannot read the file: {exc.strerror or exc}") from None
    return parse_text(content, source=source, workflow_id=path.stem, fmt=fmt)


def parse_text(
    text: str, *, source: str, workflow_id: str, fmt: Literal["yaml", "json"] = "yaml"
) -> WorkflowDef:
    """Parse the text of a workflow file."""
    if not isinstance(text, str):
        raise DefinitionError(source, f"expected the file's text, got {show(text)}")
    if fmt == "yaml":
        data = load_yaml(text, source)
    elif fmt == "json":
        data = load_json(text, source)
    else:
        raise DefinitionError(source, f"unknown format {show(fmt)}; expected 'yaml' or 'json'")
    return parse_file_mapping(data, source=source, workflow_id=workflow_id)


def parse_file_mapping(data: Any, *, source: str, workflow_id: str) -> WorkflowDef:
    """Validate an already loaded workflow file (``name``, ``on``, ``env``, ``jobs``)."""
    return build(read_file_mapping(data, source=source, workflow_id=workflow_id))


def read_file_mapping(data: Any, *, source: str, workflow_id: str) -> Draft:
    where = Where(source)
    wf_id = identifier(workflow_id, "workflow id", where)
    if data is None:
        where.fail("the file is empty; expected name, on and jobs")
    top = mapping(data, "the workflow", where)

    fields: dict[str, Any] = {}
    unknown = [key for key in top if key is not True and key not in _FILE_KEYS]
    if unknown:
        where.fail(unknown_keys(unknown, _FILE_KEYS, "key"))
    for key, value in top.items():
        # YAML 1.1 reads a bare `on` key as the boolean true.
        field_name = "on" if key is True else str(key)
        if field_name in fields:
            where.fail("`on` is given twice")
        fields[field_name] = value

    inputs = fields.get("inputs")
    dispatch = _dispatch(fields.get("on"))
    if dispatch is not None and "inputs" in dispatch:
        if "inputs" in fields:
            where.fail(
                "inputs are given both as `inputs` and as `on.workflow_dispatch.inputs`; "
                "give them in one place"
            )
        inputs = dispatch["inputs"]

    def jobs() -> tuple[int, Iterator[DraftJob]]:
        raw_jobs = required(fields.get("jobs"), "jobs", where)
        jobs_map = mapping(raw_jobs, "`jobs` (job id -> job)", where)
        return len(jobs_map), (
            _job(identifier(job_id, "job id", where), body, where)
            for job_id, body in jobs_map.items()
        )

    return Draft(
        where=where,
        dialect=FILE,
        id=wf_id,
        name=fields.get("name"),
        trigger=fields.get("on"),
        env=fields.get("env"),
        jobs=jobs,
        inputs=inputs,
        triggers=fields.get("on"),
        rollback=fields.get("rollback"),
        parallel_limit=fields.get("parallel_limit"),
    )


def _dispatch(on: Any) -> Mapping[Any, Any] | None:
    """GitHub's `on: {workflow_dispatch: {inputs: ...}}`, which declares inputs too."""
    if not isinstance(on, Mapping):
        return None
    body = on.get("workflow_dispatch")
    return body if isinstance(body, Mapping) else None


def _job(job_id: str, body: Any, where: Where) -> DraftJob:
    at = where.job(job_id)
    if body is None:
        at.fail("has no body; it needs at least `run` or `steps`")
    job = mapping(body, "the job", at)
    reject_unknown(job, _JOB_KEYS, at)
    if "if" in job:
        at.fail(IF_REJECTED)
    return DraftJob(
        id=job_id,
        at=at,
        name=job.get("name"),
        command=job.get("run"),
        steps=job.get("steps"),
        depends_on=job.get("needs"),
        required_labels=job.get("labels"),
        max_retries=job.get("retries"),
        backoff=job.get("backoff"),
        timeout=job.get("timeout"),
        env=job.get("env"),
        compensate=job.get("compensate"),
    )


def _trigger(value: Any, where: Where) -> str:
    value = required(value, "on", where)
    shape = "`on` must be an event name, a list of them or a mapping keyed by them"
    if isinstance(value, str):
        return text(value, "`on`", where)
    if isinstance(value, list | tuple):
        events = [text(event, f"`on` entry {i + 1}", where) for i, event in enumerate(value)]
    elif isinstance(value, Mapping):
        events = [text(event, "an `on` key", where) for event in value]
    else:
        where.fail(f"{shape}, got {show(value)}")
    if not events:
        where.fail("`on` must name at least one event")
    return ", ".join(events)


def _name(value: Any, job_id: str, where: Where) -> str:
    return job_id if value is None else text(value, "`name`", where)


FILE = Dialect(
    command="run",
    missing_command="needs a `run` command or `steps`",
    needs="needs",
    needs_verb="needs",
    needs_one_ok=True,
    labels="labels",
    retries="retries",
    trigger=_trigger,
    backoff=lambda value, where: backoff(value, _BACKOFF_HINT, where),
    timeout=lambda value, where: duration(value, "`timeout`", MAX_TIMEOUT_SECS, where),
    scalar_env=True,
    merge_env=True,
    job_name=_name,
    retries_first=False,
    duplicates_first=True,
    triggers=file_triggers,
)


def load_dir(directory: Path) -> tuple[list[WorkflowDef], list[DefinitionError]]:
    """Load every workflow file in ``directory`` (sorted by name).

    A bad file is reported and skipped; the others still load. Hidden files (editor swap and
    lock files) are not read.
    """
    try:
        paths = sorted(
            (
                path
                for path in directory.iterdir()
                if path.suffix.lower() in FORMATS
                and not path.name.startswith(".")
                and path.is_file()
            ),
            key=lambda path: path.name,
        )
    except OSError as exc:
        return [], [DefinitionError(str(directory), f"cannot list: {exc.strerror or exc}")]

    loaded: list[WorkflowDef] = []
    errors: list[DefinitionError] = []
    defined_by: dict[str, str] = {}
    for path in paths:
        try:
            workflow = parse_file(path)
        except DefinitionError as exc:
            errors.append(exc)
            continue
        # ci.yml and ci.json would both claim the id "ci"; the first by name wins.
        if workflow.id in defined_by:
            errors.append(
                DefinitionError(
                    str(path),
                    f"workflow id {quote(workflow.id)} is already defined by "
                    f"{defined_by[workflow.id]}",
                )
            )
            continue
        defined_by[workflow.id] = str(path)
        loaded.append(workflow)
    return loaded, errors
