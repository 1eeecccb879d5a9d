"""The definition model: what every source of a definition is turned into."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from trellis.server.engine.definitions._values import resolve

BackoffKind = Literal["none", "fixed", "exponential"]
InputType = Literal["string", "number", "boolean", "json"]
TriggerKind = Literal["topic", "schedule"]

MAX_JOBS = 20_000
MAX_ID_LENGTH = 100
MAX_LABEL_LENGTH = 64
MAX_RETRIES = 100
MAX_BACKOFF_SECS = 86_400
MAX_TIMEOUT_SECS = 7 * 86_400
MAX_INPUTS = 100
MAX_PARALLEL_LIMIT = 100_000
RollbackPolicy = Literal["", "on_failure"]


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
        # The readers build model objects, so they are imported when first needed.
        from trellis.server.engine.definitions._stored import stored_backoff

        return stored_backoff(data)


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
    # The command that undoes the job's effect when its run is rolled back ("": none), and
    # how often a failed try of it is retried.
    compensate: str = ""
    compensate_retries: int = 0


@dataclass(frozen=True, slots=True)
class InputDef:
    """One input a workflow's runs take."""

    name: str
    type: InputType
    required: bool
    has_default: bool
    # A JSON value other than null, None when there is no default; left out of the hash
    # because lists and objects cannot be hashed.
    default: Any = field(hash=False)
    description: str


@dataclass(frozen=True, slots=True)
class TriggerDef:
    """One way a workflow starts by itself: a publish to a topic that matches ``pattern``
    (a named event such as ``push`` is a topic of one level), or a ``cron`` schedule read
    in ``timezone``."""

    kind: TriggerKind
    pattern: str = ""
    """MQTT-style: ``+`` stands for one level, a final ``#`` for any number of them."""
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """A named event's filters: field of the published value -> glob patterns, one of which
    the field's value must match."""
    cron: str = ""
    timezone: str = ""

    def to_json(self) -> dict[str, Any]:
        """The storage form: ``{"topic", "filters"?}`` or ``{"cron", "timezone"}``."""
        if self.kind == "schedule":
            return {"cron": self.cron, "timezone": self.timezone}
        found: dict[str, Any] = {"topic": self.pattern}
        if self.filters:
            found["filters"] = {name: list(globs) for name, globs in self.filters}
        return found

    def label(self) -> str:
        """How a run says which trigger started it: ``topic:<pattern>``, ``schedule:<cron>``."""
        return f"schedule:{self.cron}" if self.kind == "schedule" else f"topic:{self.pattern}"


KEYWORDS = ("topic", "schedule", "workflow_dispatch")
"""The names of `on:` that are not event names."""


def named_events(trigger: str) -> tuple[TriggerDef, ...]:
    """The triggers that the text ``trigger`` (``"push, pull_request"``) names: one topic
    per event name, with no filters."""
    names = (name.strip() for name in trigger.split(","))
    return tuple(
        TriggerDef(kind="topic", pattern=name) for name in names if name and name not in KEYWORDS
    )


@dataclass(frozen=True, slots=True)
class WorkflowDef:
    """A validated workflow: jobs in definition order, dependencies known and acyclic."""

    id: str
    name: str
    trigger: str
    env: Mapping[str, str] = field(hash=False)
    jobs: tuple[JobDef, ...]
    inputs: tuple[InputDef, ...] = ()
    """In declaration order; by name from a ``Workflow`` message, whose map has no order."""
    triggers: tuple[TriggerDef, ...] = ()
    """What ``on:`` subscribes the workflow to: topics (named events among them), then
    schedules, each in the order given."""
    rollback: RollbackPolicy = ""
    """``on_failure``: a run that fails runs its succeeded jobs' compensations."""
    parallel_limit: int = 0
    """The parallel limit of a run started without one (0: none)."""

    def resolve_inputs(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The input values of a run (plain JSON values, as ``json.loads`` or a Struct give
        them) checked whole against the declared inputs, with defaults filled in.

        Inputs given no value and declaring no default are absent; whole numbers come back
        as ints. Raises :class:`InputError` naming the first problem: an unknown input, then
        a missing required one, then a wrong value, each in order of name.
        """
        if not values and not self.inputs:
            return {}
        return resolve(self.inputs, values)

    def children(self) -> dict[str, tuple[str, ...]]:
        """Job id -> ids of the jobs that depend on it, in definition order."""
        found: dict[str, list[str]] = {job.id: [] for job in self.jobs}
        for job in self.jobs:
            for parent in job.depends_on:
                found[parent].append(job.id)
        return {job_id: tuple(kids) for job_id, kids in found.items()}

    def to_json(self) -> dict[str, Any]:
        """A lossless, JSON-serialisable form for storage (see :meth:`from_json`).

        ``inputs`` appears only when there are some, and ``triggers`` only when they say more
        than the event names of ``trigger``, so that the storage form and the fingerprint of
        a workflow without them stay what they were before either existed.
        """
        found: dict[str, Any] = {
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
                    # Only when set: definitions without stay as they were stored before.
                    **(
                        {
                            "compensate": {
                                "command": job.compensate,
                                "max_retries": job.compensate_retries,
                            }
                        }
                        if job.compensate
                        else {}
                    ),
                }
                for job in self.jobs
            ],
        }
        if self.inputs:
            found["inputs"] = [_input_json(spec) for spec in self.inputs]
        if self.triggers != named_events(self.trigger):
            found["triggers"] = [trigger.to_json() for trigger in self.triggers]
        if self.rollback:
            found["rollback"] = self.rollback
        if self.parallel_limit:
            found["parallel_limit"] = self.parallel_limit
        return found

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkflowDef:
        """Rebuild a definition from :meth:`to_json` output, validating it again."""
        from trellis.server.engine.definitions._stored import parse_stored

        return parse_stored(data)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form; equal definitions share a fingerprint."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _input_json(spec: InputDef) -> dict[str, Any]:
    # `default` only when there is one, so that the form has one spelling of "none".
    found: dict[str, Any] = {"name": spec.name, "type": spec.type, "required": spec.required}
    if spec.has_default:
        found["default"] = copy.deepcopy(spec.default)
    found["description"] = spec.description
    return found
