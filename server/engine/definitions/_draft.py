"""The plain structure every source is first turned into, and how each source spells it.

A reader (file, API mapping, proto message, stored JSON) only checks its own shape (which keys
exist, whether jobs come as a mapping or a list) and renames its fields to the model's; the
values stay as given. :func:`~trellis.server.engine.definitions._validate.build` then checks
them all in one pass, quoting the source's own field names from its :class:`Dialect`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from trellis.server.engine.definitions._errors import Where
from trellis.server.engine.definitions._model import Backoff, TriggerDef


def no_triggers(value: Any, where: Where) -> tuple[TriggerDef, ...]:
    """The triggers of a source that cannot declare any."""
    return ()


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one source names the model's fields, and the value spellings it accepts."""

    command: str
    """The key of a job's command (``run`` or ``command``)."""
    missing_command: str
    needs: str
    """The key of a job's dependencies (``needs`` or ``depends_on``)."""
    needs_verb: str
    needs_one_ok: bool
    """Whether one job id may stand for a list of one."""
    labels: str
    retries: str
    trigger: Callable[[Any, Where], str]
    backoff: Callable[[Any, Where], Backoff]
    timeout: Callable[[Any, Where], int]
    scalar_env: bool
    """Whether env values may be numbers and booleans (kept as spelled) besides strings."""
    merge_env: bool
    """Whether a job's env is laid over the workflow's (stored jobs hold the merged env)."""
    job_name: Callable[[Any, str, Where], str]
    retries_first: bool
    """Whether retries are checked before dependencies and labels (the API's order)."""
    duplicates_first: bool
    """Whether a repeated job id is reported before its fields are checked."""
    triggers: Callable[[Any, Where], tuple[TriggerDef, ...]] = no_triggers
    """Reads the source's triggers (a file's `on:`, the stored list)."""


@dataclass(frozen=True, slots=True)
class DraftJob:
    """One job as its source gave it: the model's fields, values not yet checked."""

    id: str
    at: Where
    position: int | None = None
    """Index in a source that lists its jobs, for naming both places of a repeated id."""
    name: Any = None
    command: Any = None
    steps: Any = None
    depends_on: Any = None
    required_labels: Any = None
    max_retries: Any = None
    retry_policy: Any = None
    """``{max_retries, backoff}``: a second place for the count, which must then agree."""
    backoff: Any = None
    timeout: Any = None
    env: Any = None
    compensate: Any = None
    """A command, or ``{<command key>, <retries key>}`` in the source's spelling."""


JobsReader = Callable[[], tuple[int, Iterator[DraftJob]]]
"""Returns the number of jobs and then reads them one by one, so that errors come in order."""


@dataclass(frozen=True, slots=True)
class Draft:
    """A whole workflow as its source gave it; see :class:`DraftJob`."""

    where: Where
    dialect: Dialect
    id: str
    name: Any
    trigger: Any
    env: Any
    jobs: JobsReader
    inputs: Any = None
    """Input name -> ``{type, required, default, description}``, the form every source gives."""
    triggers: Any = None
    """What the dialect's ``triggers`` reads."""
    rollback: Any = None
    parallel_limit: Any = None
