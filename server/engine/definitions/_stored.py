"""The storage form of a definition (:meth:`WorkflowDef.to_json`), read back and re-checked."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from trellis.server.engine.definitions._api import BACKOFF_HINT, seconds
from trellis.server.engine.definitions._checks import (
    backoff,
    identifier,
    make_backoff,
    mapping,
    reject_unknown,
    required,
    text,
)
from trellis.server.engine.definitions._draft import Dialect, Draft, DraftJob
from trellis.server.engine.definitions._errors import Where, quote, show
from trellis.server.engine.definitions._inputs import INPUT_KEYS
from trellis.server.engine.definitions._model import Backoff, WorkflowDef
from trellis.server.engine.definitions._triggers import stored_triggers
from trellis.server.engine.definitions._validate import build

_BACKOFF_KEYS = ("kind", "delay_secs", "base_secs", "max_secs")


def parse_stored(data: Any) -> WorkflowDef:
    """Rebuild a stored definition, validating it as a new one would be."""
    return build(read_stored(data))


def read_stored(data: Any) -> Draft:
    where = Where("stored definition")
    top = mapping(data, "the workflow", where)
    # Unknown keys are tolerated here (unlike in the input shapes): during a rolling upgrade an
    # older server may read a row written by a newer one.
    wf_id = identifier(required(top.get("id"), "id", where), "`id`", where)
    where = Where(f"stored definition of {quote(wf_id)}")

    def jobs() -> tuple[int, Iterator[DraftJob]]:
        raw_jobs = required(top.get("jobs"), "jobs", where)
        if not isinstance(raw_jobs, list | tuple) or not raw_jobs:
            where.fail(f"`jobs` must be a non-empty list, got {show(raw_jobs)}")
        return len(raw_jobs), (_job(index, body, where) for index, body in enumerate(raw_jobs))

    return Draft(
        where=where,
        dialect=STORED,
        id=wf_id,
        name=top.get("name"),
        trigger=top.get("trigger"),
        env=top.get("env"),
        jobs=jobs,
        inputs=_inputs(top.get("inputs"), where),
        triggers=(top.get("triggers"), top.get("trigger")),
        rollback=top.get("rollback"),
        parallel_limit=top.get("parallel_limit"),
    )


def _inputs(value: Any, where: Where) -> dict[str, Any] | None:
    """The stored list of inputs in the mapping form every source gives."""
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        where.fail(f"`inputs` must be a list, got {show(value)}")
    found: dict[str, Any] = {}
    for index, body in enumerate(value):
        at = where.within(f"inputs[{index}]")
        spec = mapping(body, "the input", at)
        name = spec.get("name")
        if not isinstance(name, str):
            at.fail(f"`name` must be a string, got {show(name)}")
        if name in found:
            at.fail(f"input {quote(name)} is stored twice")
        # Keys written by a newer server are left out, as elsewhere in stored rows.
        found[name] = {key: spec[key] for key in INPUT_KEYS if key in spec}
    return found


def _job(index: int, body: Any, where: Where) -> DraftJob:
    position = where.within(f"jobs[{index}]")
    job = mapping(body, "the job", position)
    job_id = identifier(required(job.get("id"), "id", position), "`id`", position)
    return DraftJob(
        id=job_id,
        at=where.job(job_id),
        name=job.get("name"),
        command=job.get("command"),
        depends_on=job.get("depends_on"),
        required_labels=job.get("required_labels"),
        max_retries=job.get("max_retries"),
        backoff=job.get("backoff"),
        timeout=job.get("timeout_secs"),
        env=job.get("env"),
        compensate=job.get("compensate"),
    )


def stored_backoff(data: Any, where: Where | None = None) -> Backoff:
    """A backoff in its storage form ``{"kind", ...}``, or as the API spells it."""
    where = where or Where("stored backoff")
    if not (isinstance(data, Mapping) and "kind" in data):
        return backoff(data, BACKOFF_HINT, where)
    reject_unknown(data, _BACKOFF_KEYS, where.within("backoff"))
    kind = data["kind"]
    if kind not in ("none", "fixed", "exponential"):
        where.fail(f"backoff kind must be none, fixed or exponential, got {show(kind)}")
    return make_backoff(
        kind, data.get("delay_secs", 0), data.get("base_secs", 0), data.get("max_secs", 0), where
    )


def _trigger(value: Any, where: Where) -> str:
    return text(required(value, "trigger", where), "`trigger`", where, empty=True)


def _name(value: Any, job_id: str, where: Where) -> str:
    return text(required(value, "name", where), "`name`", where)


STORED = Dialect(
    command="command",
    missing_command="missing required key `command`",
    needs="depends_on",
    needs_verb="depends on",
    needs_one_ok=False,
    labels="required_labels",
    retries="max_retries",
    trigger=_trigger,
    backoff=lambda value, where: Backoff() if value is None else stored_backoff(value, where),
    timeout=seconds,
    scalar_env=False,
    merge_env=False,
    job_name=_name,
    retries_first=False,
    duplicates_first=True,
    triggers=stored_triggers,
)
