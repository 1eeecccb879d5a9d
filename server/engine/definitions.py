"""Workflow definitions: parsed, validated as a whole, then frozen.

Definitions arrive in two shapes: workflow files (workflow-graph's YAML/JSON format, read from
``WORKFLOWS_DIR``) and the workflow object of ``POST /api/workflows`` / ``CreateWorkflow``. Both
end in the same immutable :class:`WorkflowDef`, which is what the engine stores and runs. A
definition is either accepted completely or rejected with one :class:`DefinitionError` that names
the source and, where it applies, the job; no other exception escapes for any input.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

__all__ = [
    "MAX_BACKOFF_SECS",
    "MAX_ID_LENGTH",
    "MAX_JOBS",
    "MAX_LABEL_LENGTH",
    "MAX_RETRIES",
    "MAX_TIMEOUT_SECS",
    "Backoff",
    "BackoffKind",
    "DefinitionError",
    "JobDef",
    "WorkflowDef",
    "load_dir",
    "parse_api_mapping",
    "parse_file",
    "parse_file_mapping",
    "parse_text",
]

BackoffKind = Literal["none", "fixed", "exponential"]

MAX_JOBS = 20_000
MAX_ID_LENGTH = 100
MAX_LABEL_LENGTH = 64
MAX_RETRIES = 100
MAX_BACKOFF_SECS = 86_400
MAX_TIMEOUT_SECS = 7 * 86_400

_FORMATS: dict[str, Literal["yaml", "json"]] = {".yml": "yaml", ".yaml": "yaml", ".json": "json"}
_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# Names are restricted to what every shell accepts in `NAME=value cmd`, because step
# environments are applied exactly that way.
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION_RE = re.compile(r"(?:[0-9]{1,9}[smhd])+|[0-9]{1,9}")
_DURATION_PART_RE = re.compile(r"([0-9]+)([smhd])")
_UNIT_SECS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
# Longer cycles are abbreviated so that one bad edge in a huge graph gives a readable message.
_CYCLE_SHOWN = 12


# --------------------------------------------------------------------------- errors


class DefinitionError(ValueError):
    """A workflow definition was rejected.

    ``source`` is the file path (or ``"api"``), ``job_id`` the job concerned (if any) and
    ``problem`` the reason; ``str()`` joins them, e.g.
    ``workflows/ci.yml: job 'build': needs unknown job 'tset'``.
    """

    def __init__(self, source: str, problem: str, job_id: str | None = None) -> None:
        self.source = source
        self.problem = problem
        self.job_id = job_id
        where = f"{source}: job {_quote(job_id)}: " if job_id is not None else f"{source}: "
        super().__init__(where + problem)

    def __reduce__(self) -> tuple[type[DefinitionError], tuple[str, str, str | None]]:
        # The default reduction replays only the rendered message, which would not fit
        # __init__ when an error crosses a process boundary.
        return (type(self), (self.source, self.problem, self.job_id))


@dataclass(frozen=True, slots=True)
class _Where:
    """Where a check happens, so that every failure names its source, job and field."""

    source: str
    job_id: str | None = None
    prefix: str = ""

    def fail(self, problem: str) -> NoReturn:
        raise DefinitionError(self.source, self.prefix + problem, self.job_id)

    def job(self, job_id: str | None) -> _Where:
        return _Where(self.source, job_id)

    def within(self, context: str) -> _Where:
        return _Where(self.source, self.job_id, f"{self.prefix}{context}: ")


def _quote(text: str) -> str:
    short = text if len(text) <= 60 else text[:57] + "..."
    return f"'{short}'" if short.isprintable() else repr(short)


def _show(value: object) -> str:
    """Describe an offending value briefly; garbage may be huge or unprintable."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # str() refuses ints of more than a few thousand digits.
        return str(int(value)) if value.bit_length() <= 64 else "a very large number"
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a value of type {type(value).__name__}"


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before retrying a failed attempt."""

    kind: BackoffKind = "none"
    delay_secs: int = 0
    base_secs: int = 0
    max_secs: int = 0

    def delay_for(self, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` (0-based) failed."""
        if self.kind == "fixed":
            return float(self.delay_secs)
        if self.kind == "exponential":
            # Past 64 doublings any base exceeds any sane max; stopping there keeps a huge
            # attempt number from building a huge integer.
            if attempt >= 64:
                return float(self.max_secs)
            return float(min(self.base_secs << max(attempt, 0), self.max_secs))
        return 0.0

    def to_json(self) -> dict[str, Any]:
        """The storage form: ``{"kind", "delay_secs", "base_secs", "max_secs"}``."""
        return {
            "kind": self.kind,
            "delay_secs": self.delay_secs,
            "base_secs": self.base_secs,
            "max_secs": self.max_secs,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Backoff:
        """Read the storage form (the REST spellings are accepted too)."""
        return _stored_backoff(data, _Where("stored backoff"))


@dataclass(frozen=True, slots=True)
class JobDef:
    """One job of a workflow definition."""

    id: str
    name: str
    command: str
    depends_on: tuple[str, ...]
    required_labels: tuple[str, ...]
    max_retries: int
    backoff: Backoff
    timeout_secs: int
    # A plain dict that is never mutated; left out of the hash because dicts cannot be hashed.
    env: Mapping[str, str] = field(hash=False)


@dataclass(frozen=True, slots=True)
class WorkflowDef:
    """A validated workflow: jobs in definition order, dependencies known and acyclic."""

    id: str
    name: str
    trigger: str
    env: Mapping[str, str] = field(hash=False)
    jobs: tuple[JobDef, ...]

    def children(self) -> dict[str, tuple[str, ...]]:
        """Job id -> ids of the jobs that depend on it, in definition order."""
        found: dict[str, list[str]] = {job.id: [] for job in self.jobs}
        for job in self.jobs:
            for parent in job.depends_on:
                found[parent].append(job.id)
        return {job_id: tuple(kids) for job_id, kids in found.items()}

    def to_json(self) -> dict[str, Any]:
        """A lossless, JSON-serialisable form for storage (see :meth:`from_json`)."""
        return {
            "id": self.id,
            "name": self.name,
            "trigger": self.trigger,
            "env": dict(self.env),
            "jobs": [
                {
                    "id": job.id,
                    "name": job.name,
                    "command": job.command,
                    "depends_on": list(job.depends_on),
                    "required_labels": list(job.required_labels),
                    "max_retries": job.max_retries,
                    "backoff": job.backoff.to_json(),
                    "timeout_secs": job.timeout_secs,
                    "env": dict(job.env),
                }
                for job in self.jobs
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkflowDef:
        """Rebuild a definition from :meth:`to_json` output, validating it again."""
        return _from_storage(data)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form; equal definitions share a fingerprint."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()


# --------------------------------------------------------------------------- public parsers


def parse_file(path: Path) -> WorkflowDef:
    """Parse a ``.yml``/``.yaml``/``.json`` workflow file; the workflow id is the file stem."""
    source = str(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DefinitionError(source, "unsupported file type; expected .yml, .yaml or .json")
    try:
        # utf-8-sig: editors on Windows like to start files with a BOM, which JSON rejects.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DefinitionError(source, "the file is not UTF-8 text") from None
    except OSError as exc:
        raise DefinitionError(source, f"cannot read the file: {exc.strerror or exc}") from None
    return parse_text(text, source=source, workflow_id=path.stem, fmt=fmt)


def parse_text(
    text: str, *, source: str, workflow_id: str, fmt: Literal["yaml", "json"] = "yaml"
) -> WorkflowDef:
    """Parse the text of a workflow file."""
    if not isinstance(text, str):
        raise DefinitionError(source, f"expected the file's text, got {_show(text)}")
    if fmt == "yaml":
        data = _load_yaml(text, source)
    elif fmt == "json":
        data = _load_json(text, source)
    else:
        raise DefinitionError(source, f"unknown format {_show(fmt)}; expected 'yaml' or 'json'")
    return parse_file_mapping(data, source=source, workflow_id=workflow_id)


def parse_file_mapping(data: Any, *, source: str, workflow_id: str) -> WorkflowDef:
    """Validate an already loaded workflow file (``name``, ``on``, ``env``, ``jobs``)."""
    where = _Where(source)
    wf_id = _identifier(workflow_id, "workflow id", where)
    if data is None:
        where.fail("the file is empty; expected name, on and jobs")
    top = _mapping(data, "the workflow", where)

    fields: dict[str, Any] = {}
    unknown = [key for key in top if key is not True and key not in _FILE_KEYS]
    if unknown:
        where.fail(_unknown_keys(unknown, _FILE_KEYS, "key"))
    for key, value in top.items():
        # YAML 1.1 reads a bare `on` key as the boolean true.
        field_name = "on" if key is True else str(key)
        if field_name in fields:
            where.fail("`on` is given twice")
        fields[field_name] = value

    wf_name = _text(_required(fields, "name", where), "`name`", where)
    trigger = _trigger(_required(fields, "on", where), where)
    wf_env = _env(fields.get("env"), "`env`", where, strings_only=False)

    raw_jobs = fields.get("jobs")
    if raw_jobs is None:
        where.fail("missing required key `jobs`")
    jobs_map = _mapping(raw_jobs, "`jobs` (job id -> job)", where)
    _check_job_count(len(jobs_map), where)

    jobs = [
        _file_job(_identifier(job_id, "job id", where), body, wf_env, where)
        for job_id, body in jobs_map.items()
    ]
    _check_graph(jobs, "needs", where)
    return WorkflowDef(id=wf_id, name=wf_name, trigger=trigger, env=wf_env, jobs=tuple(jobs))


def parse_api_mapping(data: Any, *, source: str = "api", workflow_id: str) -> WorkflowDef:
    """Validate the workflow object of the REST and gRPC APIs.

    Output-only fields (a job's ``status``, ``attempt``, ... and the workflow's ``version``,
    ``run_id``, ``run_state``) are ignored so that a fetched workflow can be posted back.
    """
    where = _Where(source)
    wf_id = _identifier(workflow_id, "workflow id", where)
    top = _mapping(data, "the workflow", where)
    _reject_unknown(top, _API_WORKFLOW_KEYS + _API_WORKFLOW_OUTPUT_ONLY, where)

    given_id = top.get("id")
    # Proto3 renders an unset string as "", so an empty id means "not given".
    if given_id not in (None, "") and _identifier(given_id, "`id`", where) != wf_id:
        where.fail(f"`id` {_quote(given_id)} does not match the workflow id {_quote(wf_id)}")
    wf_name = _text(_required(top, "name", where), "`name`", where)
    raw_trigger = top.get("trigger")
    trigger = "" if raw_trigger is None else _text(raw_trigger, "`trigger`", where, empty=True)
    wf_env = _env(top.get("env"), "`env`", where, strings_only=True)

    raw_jobs = _required(top, "jobs", where)
    if not isinstance(raw_jobs, list | tuple):
        where.fail(f"`jobs` must be a list of jobs, got {_show(raw_jobs)}")
    if not raw_jobs:
        where.fail("`jobs` must not be empty")
    _check_job_count(len(raw_jobs), where)

    jobs: list[JobDef] = []
    first_index: dict[str, int] = {}
    for index, body in enumerate(raw_jobs):
        job = _api_job(index, body, wf_env, where)
        if job.id in first_index:
            where.job(job.id).fail(
                f"defined more than once (jobs[{first_index[job.id]}] and jobs[{index}])"
            )
        first_index[job.id] = index
        jobs.append(job)
    _check_graph(jobs, "depends_on", where)
    return WorkflowDef(id=wf_id, name=wf_name, trigger=trigger, env=wf_env, jobs=tuple(jobs))


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
                if path.suffix.lower() in _FORMATS
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
                    f"workflow id {_quote(workflow.id)} is already defined by "
                    f"{defined_by[workflow.id]}",
                )
            )
            continue
        defined_by[workflow.id] = str(path)
        loaded.append(workflow)
    return loaded, errors


# --------------------------------------------------------------------------- file format

_FILE_KEYS = ("name", "on", "env", "jobs")
_FILE_JOB_KEYS = (
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
)
_STEP_KEYS = ("id", "name", "run", "env", "if")
_IF_REJECTED = "`if` conditions are not supported; remove it or move the check into the command"
_FILE_BACKOFF_HINT = (
    "none, {fixed: N}, {fixed: {delay_secs: N}} or {exponential: {base_secs: N, max_secs: M}}"
)


def _file_job(job_id: str, body: Any, wf_env: Mapping[str, str], where: _Where) -> JobDef:
    where = where.job(job_id)
    if body is None:
        where.fail("has no body; it needs at least `run` or `steps`")
    job = _mapping(body, "the job", where)
    _reject_unknown(job, _FILE_JOB_KEYS, where)
    if "if" in job:
        where.fail(_IF_REJECTED)

    raw_name = job.get("name")
    name = job_id if raw_name is None else _text(raw_name, "`name`", where)
    run, steps = job.get("run"), job.get("steps")
    if run is not None and steps is not None:
        where.fail("give either `run` or `steps`, not both")
    if run is not None:
        command = _text(run, "`run`", where)
    elif steps is not None:
        command = _steps_command(steps, where)
    else:
        where.fail("needs a `run` command or `steps`")

    return JobDef(
        id=job_id,
        name=name,
        command=command,
        depends_on=_needs(job.get("needs"), where),
        required_labels=_labels(job.get("labels"), "`labels`", where),
        max_retries=_optional_int(job.get("retries"), "`retries`", 0, MAX_RETRIES, where),
        backoff=_backoff(job.get("backoff"), _FILE_BACKOFF_HINT, where),
        timeout_secs=_timeout(job.get("timeout"), where),
        env={**wf_env, **_env(job.get("env"), "`env`", where, strings_only=False)},
    )


def _trigger(value: Any, where: _Where) -> str:
    shape = "`on` must be an event name, a list of them or a mapping keyed by them"
    if isinstance(value, str):
        return _text(value, "`on`", where)
    if isinstance(value, list | tuple):
        events = [_text(event, f"`on` entry {i + 1}", where) for i, event in enumerate(value)]
    elif isinstance(value, Mapping):
        events = [_text(event, "an `on` key", where) for event in value]
    else:
        where.fail(f"{shape}, got {_show(value)}")
    if not events:
        where.fail("`on` must name at least one event")
    return ", ".join(events)


def _needs(value: Any, where: _Where) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple):
        where.fail(f"`needs` must be a job id or a list of job ids, got {_show(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            where.fail(f"`needs` entry {i + 1} must be a job id, got {_show(item)}")
    return tuple(value)


def _timeout(value: Any, where: _Where) -> int:
    if value is None:
        return 0
    problem = (
        "`timeout` must be a number of seconds or a duration such as '90s', '5m' or '1h', "
        f"more than 0 and at most 7 days, got {_show(value)}"
    )
    if isinstance(value, str):
        if not _DURATION_RE.fullmatch(value):
            where.fail(problem)
        if value.isdigit():
            seconds = int(value)
        else:
            seconds = sum(
                int(amount) * _UNIT_SECS[unit] for amount, unit in _DURATION_PART_RE.findall(value)
            )
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = int(value) if value.bit_length() <= 64 else -1
    else:
        where.fail(problem)
    if not 0 < seconds <= MAX_TIMEOUT_SECS:
        where.fail(problem)
    return seconds


def _steps_command(value: Any, where: _Where) -> str:
    """Fold steps into one `sh -c` script that stops at the first failing step.

    Each step runs in its own `sh -c`, so that its variables, `cd` and `exit` stay inside it,
    and its `env` is a `NAME=value` prefix, which the shell applies to that command only.
    """
    if not isinstance(value, list | tuple):
        where.fail(f"`steps` must be a list of steps, got {_show(value)}")
    if not value:
        where.fail("`steps` must not be empty")
    lines = ["set -e"]
    seen_ids: set[str] = set()
    for number, raw in enumerate(value, start=1):
        at = where.within(f"step {number}")
        step = _mapping(raw, "the step", at)
        _reject_unknown(step, _STEP_KEYS, at)
        if "if" in step:
            at.fail(_IF_REJECTED)
        step_id = None if step.get("id") is None else _text(step["id"], "`id`", at)
        if step_id is not None:
            if step_id in seen_ids:
                at.fail(f"step id {_quote(step_id)} is used twice")
            seen_ids.add(step_id)
        label = step_id if step.get("name") is None else _text(step["name"], "`name`", at)
        run = _text(_required(step, "run", at), "`run`", at)
        env = _env(step.get("env"), "`env`", at, strings_only=False)

        # The label is only a comment; flattening it keeps a newline from ending the comment.
        title = "" if label is None else ": " + " ".join(label.split())
        lines.append(f"# step {number}{title}")
        assignments = "".join(f"{key}={shlex.quote(val)} " for key, val in env.items())
        lines.append(f"{assignments}sh -c {shlex.quote(run)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- API shape

_API_WORKFLOW_KEYS = ("id", "name", "trigger", "env", "jobs")
_API_WORKFLOW_OUTPUT_ONLY = ("version", "run_id", "run_state")
_API_JOB_KEYS = (
    "id",
    "name",
    "command",
    "depends_on",
    "required_labels",
    "max_retries",
    "retry_policy",
    "timeout_secs",
    "env",
)
_API_JOB_OUTPUT_ONLY = (
    "status",
    "duration_secs",
    "started_at",
    "output",
    "attempt",
    "outputs",
    "delayed_until_ms",
    "attempts",
)
_RETRY_POLICY_KEYS = ("max_retries", "backoff")
_API_BACKOFF_HINT = (
    '"None", {"Fixed": {"delay_secs": N}} or {"Exponential": {"base_secs": N, "max_secs": M}}'
)


def _api_job(index: int, body: Any, wf_env: Mapping[str, str], where: _Where) -> JobDef:
    at = where.within(f"jobs[{index}]")
    job = _mapping(body, "the job", at)
    job_id = _identifier(_required(job, "id", at), "`id`", at)
    where = where.job(job_id)
    _reject_unknown(job, _API_JOB_KEYS + _API_JOB_OUTPUT_ONLY, where)

    raw_name = job.get("name")
    name = job_id if raw_name is None or raw_name == "" else _text(raw_name, "`name`", where)
    command = _text(_required(job, "command", where), "`command`", where)

    max_retries = _optional_int(job.get("max_retries"), "`max_retries`", 0, MAX_RETRIES, where)
    backoff = Backoff()
    raw_policy = job.get("retry_policy")
    if raw_policy is not None:
        policy_at = where.within("`retry_policy`")
        policy = _mapping(raw_policy, "`retry_policy`", where)
        _reject_unknown(policy, _RETRY_POLICY_KEYS, policy_at)
        policy_retries = _optional_int(
            policy.get("max_retries"), "`max_retries`", 0, MAX_RETRIES, policy_at
        )
        # Proto3 renders an unset count as 0, so only two different non-zero counts conflict.
        if max_retries and policy_retries and max_retries != policy_retries:
            where.fail(
                f"`max_retries` ({max_retries}) and `retry_policy.max_retries` "
                f"({policy_retries}) disagree"
            )
        max_retries = max_retries or policy_retries
        backoff = _backoff(policy.get("backoff"), _API_BACKOFF_HINT, policy_at)

    return JobDef(
        id=job_id,
        name=name,
        command=command,
        depends_on=_id_list(job.get("depends_on"), "`depends_on`", where),
        required_labels=_labels(job.get("required_labels"), "`required_labels`", where),
        max_retries=max_retries,
        backoff=backoff,
        timeout_secs=_optional_int(
            job.get("timeout_secs"), "`timeout_secs`", 0, MAX_TIMEOUT_SECS, where
        ),
        env={**wf_env, **_env(job.get("env"), "`env`", where, strings_only=True)},
    )


# --------------------------------------------------------------------------- storage form


def _from_storage(data: Any) -> WorkflowDef:
    where = _Where("stored definition")
    top = _mapping(data, "the workflow", where)
    # Unknown keys are tolerated here (unlike in the input shapes): during a rolling upgrade an
    # older server may read a row written by a newer one.
    wf_id = _identifier(_required(top, "id", where), "`id`", where)
    where = _Where(f"stored definition of {_quote(wf_id)}")
    wf_name = _text(_required(top, "name", where), "`name`", where)
    trigger = _text(_required(top, "trigger", where), "`trigger`", where, empty=True)
    wf_env = _env(top.get("env"), "`env`", where, strings_only=True)
    raw_jobs = _required(top, "jobs", where)
    if not isinstance(raw_jobs, list | tuple) or not raw_jobs:
        where.fail(f"`jobs` must be a non-empty list, got {_show(raw_jobs)}")
    _check_job_count(len(raw_jobs), where)

    jobs: list[JobDef] = []
    seen: set[str] = set()
    for index, body in enumerate(raw_jobs):
        at = where.within(f"jobs[{index}]")
        job = _mapping(body, "the job", at)
        job_id = _identifier(_required(job, "id", at), "`id`", at)
        at = where.job(job_id)
        if job_id in seen:
            at.fail("defined more than once")
        seen.add(job_id)
        raw_backoff = job.get("backoff")
        jobs.append(
            JobDef(
                id=job_id,
                name=_text(_required(job, "name", at), "`name`", at),
                command=_text(_required(job, "command", at), "`command`", at),
                depends_on=_id_list(job.get("depends_on"), "`depends_on`", at),
                required_labels=_labels(job.get("required_labels"), "`required_labels`", at),
                max_retries=_optional_int(
                    job.get("max_retries"), "`max_retries`", 0, MAX_RETRIES, at
                ),
                backoff=Backoff() if raw_backoff is None else _stored_backoff(raw_backoff, at),
                timeout_secs=_optional_int(
                    job.get("timeout_secs"), "`timeout_secs`", 0, MAX_TIMEOUT_SECS, at
                ),
                env=_env(job.get("env"), "`env`", at, strings_only=True),
            )
        )
    _check_graph(jobs, "depends_on", where)
    return WorkflowDef(id=wf_id, name=wf_name, trigger=trigger, env=wf_env, jobs=tuple(jobs))


def _stored_backoff(data: Any, where: _Where) -> Backoff:
    if not (isinstance(data, Mapping) and "kind" in data):
        return _backoff(data, _API_BACKOFF_HINT, where)
    _reject_unknown(data, ("kind", "delay_secs", "base_secs", "max_secs"), where.within("backoff"))
    kind = data["kind"]
    if kind not in ("none", "fixed", "exponential"):
        where.fail(f"backoff kind must be none, fixed or exponential, got {_show(kind)}")
    return _make_backoff(
        kind,
        data.get("delay_secs", 0),
        data.get("base_secs", 0),
        data.get("max_secs", 0),
        where,
    )


# --------------------------------------------------------------------------- shared checks


def _mapping(value: Any, what: str, where: _Where) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        where.fail(f"{what} must be a mapping, got {_show(value)}")
    return value


def _required(mapping: Mapping[Any, Any], key: str, where: _Where) -> Any:
    value = mapping.get(key)
    if value is None:
        where.fail(f"missing required key `{key}`")
    return value


def _unknown_keys(keys: Sequence[object], allowed: Sequence[str], noun: str) -> str:
    shown = ", ".join(_show(key) for key in keys[:5])
    more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
    plural = "s" if len(keys) > 1 else ""
    return f"unknown {noun}{plural} {shown}{more} (expected one of: {', '.join(allowed)})"


def _reject_unknown(mapping: Mapping[Any, Any], allowed: Sequence[str], where: _Where) -> None:
    unknown = [key for key in mapping if not isinstance(key, str) or key not in allowed]
    if unknown:
        where.fail(_unknown_keys(unknown, allowed, "key"))


def _text(value: Any, what: str, where: _Where, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        where.fail(f"{what} must be a string, got {_show(value)}")
    # PostgreSQL text cannot hold NUL, and neither can a process's argv or environment.
    if "\x00" in value:
        where.fail(f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        where.fail(f"{what} is not valid Unicode text")
    if not empty and not value.strip():
        where.fail(f"{what} must not be empty")
    return str(value)


def _identifier(value: Any, what: str, where: _Where) -> str:
    if not isinstance(value, str):
        # YAML turns unquoted keys such as 123 or `yes` into numbers and booleans.
        where.fail(f"{what} must be a string, got {_show(value)} (quote it)")
    if not value:
        where.fail(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        where.fail(f"{what} {_quote(value)} is longer than {MAX_ID_LENGTH} characters")
    if not _ID_RE.fullmatch(value):
        where.fail(
            f"{what} {_quote(value)} may only contain letters, digits, '_', '.' and '-', "
            "and must not start with '.' or '-'"
        )
    return str(value)


def _id_list(value: Any, what: str, where: _Where) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        where.fail(f"{what} must be a list of job ids, got {_show(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            where.fail(f"{what} entry {i + 1} must be a job id, got {_show(item)}")
    return tuple(value)


def _optional_int(value: Any, what: str, low: int, high: int, where: _Where) -> int:
    if value is None:
        return low
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        where.fail(f"{what} must be an integer from {low} to {high}, got {_show(value)}")
    return int(value)


def _labels(value: Any, what: str, where: _Where) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        where.fail(f"{what} must be a list of strings, got {_show(value)}")
    labels: set[str] = set()
    for i, item in enumerate(value):
        label = _text(item, f"{what} entry {i + 1}", where)
        # Workers send their labels as one comma-separated list in some surfaces.
        if "," in label:
            where.fail(f"label {_quote(label)} must not contain a comma")
        if len(label) > MAX_LABEL_LENGTH:
            where.fail(f"label {_quote(label)} is longer than {MAX_LABEL_LENGTH} characters")
        labels.add(label)
    return tuple(sorted(labels))


def _env(value: Any, what: str, where: _Where, *, strings_only: bool) -> dict[str, str]:
    if value is None:
        return {}
    mapping = _mapping(value, what, where)
    env: dict[str, str] = {}
    for key, raw in mapping.items():
        if not isinstance(key, str):
            # YAML 1.1 reads unquoted keys such as OFF or 1 as booleans and numbers.
            where.fail(f"{what} name {_show(key)} must be a string (quote it)")
        if not _ENV_NAME_RE.fullmatch(key):
            where.fail(
                f"{what} name {_show(key)} must be letters, digits and '_', "
                "not starting with a digit"
            )
        label = f"{what} {key}"
        if isinstance(raw, str):
            env[key] = _text(raw, label, where, empty=True)
        elif strings_only:
            where.fail(f"{label} must be a string, got {_show(raw)}")
        elif isinstance(raw, bool):
            env[key] = "true" if raw else "false"
        elif isinstance(raw, _SpelledInt | _SpelledFloat):
            # Keep what the file says: `1.10` must not turn into "1.1", nor `0755` into "493".
            env[key] = raw.spelling
        elif isinstance(raw, int) and raw.bit_length() <= 10_000:
            env[key] = str(int(raw))
        elif isinstance(raw, float):
            env[key] = repr(float(raw))
        elif raw is None:
            where.fail(f"{label} has no value; write '' for an empty string")
        else:
            where.fail(f"{label} must be a string, number or boolean, got {_show(raw)}")
    return env


def _backoff(value: Any, hint: str, where: _Where) -> Backoff:
    if value is None:
        return Backoff()
    problem = f"`backoff` must be {hint}, got {_show(value)}"
    if isinstance(value, str):
        if value in ("none", "None"):
            return Backoff()
        where.fail(problem)
    if not isinstance(value, Mapping) or len(value) != 1:
        where.fail(problem)
    ((key, body),) = value.items()
    kind = _BACKOFF_KINDS.get(key) if isinstance(key, str) else None
    if kind == "none":
        if body is not None and body != {}:
            where.fail(f"backoff `{key}` takes no settings, got {_show(body)}")
        return Backoff()
    if kind == "fixed":
        if isinstance(body, int) and not isinstance(body, bool):
            return _make_backoff("fixed", body, 0, 0, where)
        settings = _mapping(body, f"backoff `{key}`", where)
        _reject_unknown(settings, ("delay_secs",), where.within(f"backoff `{key}`"))
        return _make_backoff("fixed", settings.get("delay_secs", 0), 0, 0, where)
    if kind == "exponential":
        settings = _mapping(body, f"backoff `{key}`", where)
        _reject_unknown(settings, ("base_secs", "max_secs"), where.within(f"backoff `{key}`"))
        return _make_backoff(
            "exponential", 0, settings.get("base_secs", 0), settings.get("max_secs", 0), where
        )
    where.fail(problem)


_BACKOFF_KINDS: dict[str, BackoffKind] = {
    "none": "none",
    "None": "none",
    "fixed": "fixed",
    "Fixed": "fixed",
    "exponential": "exponential",
    "Exponential": "exponential",
}


def _make_backoff(kind: BackoffKind, delay: Any, base: Any, cap: Any, where: _Where) -> Backoff:
    if kind == "none":
        return Backoff()
    if kind == "fixed":
        delay_secs = _optional_int(delay, "backoff delay_secs", 0, MAX_BACKOFF_SECS, where)
        return Backoff(kind="fixed", delay_secs=delay_secs)
    base_secs = _optional_int(base, "backoff base_secs", 1, MAX_BACKOFF_SECS, where)
    max_secs = _optional_int(cap, "backoff max_secs", 1, MAX_BACKOFF_SECS, where)
    if max_secs < base_secs:
        where.fail(f"backoff max_secs ({max_secs}) must be at least base_secs ({base_secs})")
    return Backoff(kind="exponential", base_secs=base_secs, max_secs=max_secs)


def _check_job_count(count: int, where: _Where) -> None:
    if count == 0:
        where.fail("`jobs` must not be empty")
    if count > MAX_JOBS:
        where.fail(f"too many jobs ({count}); at most {MAX_JOBS} are allowed")


def _check_graph(jobs: Sequence[JobDef], field_name: str, where: _Where) -> None:
    """Reject unknown, self and repeated dependencies, then cycles; O(jobs + edges)."""
    index = {job.id: i for i, job in enumerate(jobs)}
    verb = "needs" if field_name == "needs" else "depends on"
    for job in jobs:
        at = where.job(job.id)
        seen: set[str] = set()
        for parent in job.depends_on:
            if parent == job.id:
                at.fail(f"{verb} itself")
            if parent not in index:
                at.fail(f"{verb} unknown job {_quote(parent)}")
            if parent in seen:
                at.fail(f"{verb} {_quote(parent)} more than once")
            seen.add(parent)

    # Kahn's algorithm: no recursion, so a 20,000-job chain is no deeper than a short one.
    waiting = [len(job.depends_on) for job in jobs]
    kids: list[list[int]] = [[] for _ in jobs]
    for i, job in enumerate(jobs):
        for parent in job.depends_on:
            kids[index[parent]].append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    done = 0
    while ready:
        node = ready.pop()
        done += 1
        for kid in kids[node]:
            waiting[kid] -= 1
            if waiting[kid] == 0:
                ready.append(kid)
    if done == len(jobs):
        return

    # Every job left over still waits on another left-over job, so following such parents
    # from any of them must come back round: that walk is the cycle.
    node = next(i for i, count in enumerate(waiting) if count > 0)
    position: dict[int, int] = {}
    path: list[int] = []
    while node not in position:
        position[node] = len(path)
        path.append(node)
        node = next(index[p] for p in jobs[node].depends_on if waiting[index[p]] > 0)
    cycle = path[position[node] :]
    first = cycle.index(min(cycle))  # start at the job defined first, for a stable message
    cycle = cycle[first:] + cycle[:first]
    names = [jobs[i].id for i in cycle]
    if len(names) > _CYCLE_SHOWN:
        hidden = len(names) - _CYCLE_SHOWN + 2
        names = [*names[: _CYCLE_SHOWN - 2], f"... {hidden} more ...", *names[-2:]]
    where.fail(f"cycle: {' -> '.join([*names, jobs[cycle[0]].id])}")


# --------------------------------------------------------------------------- loading text


class _SpelledInt(int):
    """An int that remembers how the document wrote it (for env values)."""

    spelling: str


class _SpelledFloat(float):
    """A float that remembers how the document wrote it (for env values)."""

    spelling: str


class _DuplicateKey(Exception):
    def __init__(self, mapping: MappingNode, key_node: Node) -> None:
        super().__init__()
        self.mapping = mapping
        self.key_node = key_node


class _Loader(_BaseLoader):
    """PyYAML's safe loader, minus its habit of keeping the last of duplicate keys."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<` merges are meant to be overridden by the keys beside them
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable; the base class reports it
            if duplicate:
                raise _DuplicateKey(node, key_node)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def _construct_int(self, node: ScalarNode) -> int:
        value = _SpelledInt(self.construct_yaml_int(node))
        value.spelling = str(node.value)
        return value

    def _construct_float(self, node: ScalarNode) -> float:
        value = _SpelledFloat(self.construct_yaml_float(node))
        value.spelling = str(node.value)
        return value

    def _construct_timestamp(self, node: ScalarNode) -> str:
        # Nothing in a workflow is a date; `name: 2024-01-01` means the text.
        return str(node.value)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader._construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader._construct_float)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader._construct_timestamp)


def _load_yaml(text: str, source: str) -> Any:
    root: Node | None = None
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        root = loader.get_single_node()
        return None if root is None else loader.construct_document(root)
    except _DuplicateKey as dup:
        raise _yaml_duplicate_error(source, root, dup) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise DefinitionError(source, f"invalid YAML{at}: {exc.problem or exc}") from None
    except Exception as exc:
        # Anything else from the YAML library (over-long numbers, bad base64, deep nesting in
        # the pure-Python parser, ...) still means the text is not a usable document.
        raise DefinitionError(source, f"invalid YAML: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_duplicate_error(source: str, root: Node | None, dup: _DuplicateKey) -> DefinitionError:
    key_node = dup.key_node
    key = str(key_node.value) if isinstance(key_node, ScalarNode) else "(complex key)"
    line = key_node.start_mark.line + 1 if key_node.start_mark is not None else None
    return _duplicate_error(source, _node_path(root, dup.mapping), key, line)


def _node_path(root: Node | None, target: Node) -> tuple[str | int, ...]:
    """The keys leading from the root to ``target``; aliases may share nodes, so walk once."""
    stack: list[tuple[Node, tuple[str | int, ...]]] = [] if root is None else [(root, ())]
    visited: set[int] = set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                label = str(key_node.value) if isinstance(key_node, ScalarNode) else "?"
                stack.append((value_node, (*path, label)))
        elif isinstance(node, SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
    return ()


def _load_json(text: str, source: str) -> Any:
    duplicates: list[tuple[dict[str, Any], str]] = []

    def make_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            keys: set[str] = set()
            for key, _ in pairs:
                if key in keys:
                    duplicates.append((obj, key))
                    break
                keys.add(key)
        return obj

    def make_int(spelling: str) -> int:
        value = _SpelledInt(spelling)
        value.spelling = spelling
        return value

    def make_float(spelling: str) -> float:
        value = _SpelledFloat(spelling)
        value.spelling = spelling
        return value

    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        data = json.loads(
            # A BOM is common in files saved on Windows and carries no meaning.
            text.removeprefix("\ufeff"),
            object_pairs_hook=make_object,
            parse_int=make_int,
            parse_float=make_float,
            parse_constant=reject_constant,
        )
    except json.JSONDecodeError as exc:
        raise DefinitionError(
            source, f"invalid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise DefinitionError(source, f"invalid JSON: {exc}") from None
    if duplicates:
        obj, key = duplicates[0]
        raise _duplicate_error(source, _data_path(data, obj), key, None)
    return data


def _data_path(root: Any, target: object) -> tuple[str | int, ...]:
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(root, ())]
    while stack:
        value, path = stack.pop()
        if value is target:
            return path
        if isinstance(value, dict):
            stack.extend((item, (*path, key)) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
    return ()


def _duplicate_error(
    source: str, path: tuple[str | int, ...], key: str, line: int | None
) -> DefinitionError:
    at = f" (line {line})" if line is not None else ""
    if path == ("jobs",):
        return DefinitionError(source, f"defined more than once{at}", job_id=key)
    job_id: str | None = None
    if len(path) >= 2 and path[0] == "jobs" and isinstance(path[1], str):
        job_id, path = path[1], path[2:]
    inside = f" in {_dotted(path)}" if path else ""
    return DefinitionError(source, f"duplicate key {_quote(key)}{inside}{at}", job_id=job_id)


def _dotted(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text
