"""The definition model: what every source of a definition is turned into."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

BackoffKind = Literal["none", "fixed", "exponential"]

MAX_JOBS = 20_000
MAX_ID_LENGTH = 100
MAX_LABEL_LENGTH = 64
MAX_RETRIES = 100
MAX_BACKOFF_SECS = 86_400
MAX_TIMEOUT_SECS = 7 * 86_400


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


class InputError(ValueError):
    """A run's input values refused; the message names the input."""


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

    def resolve_inputs(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The run's inputs: ``values`` checked against the declaration."""
        if values:
            raise InputError(
                f"inputs: unknown input {sorted(values)[0]!r}; the workflow takes no inputs"
            )
        return {}

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
        from trellis.server.engine.definitions._stored import parse_stored

        return parse_stored(data)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form; equal definitions share a fingerprint."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()
