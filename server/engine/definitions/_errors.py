"""The one error a definition can fail with, and where inside a definition it points."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn


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
        where = f"{source}: job {quote(job_id)}: " if job_id is not None else f"{source}: "
        super().__init__(where + problem)

    def __reduce__(self) -> tuple[type[DefinitionError], tuple[str, str, str | None]]:
        # The default reduction replays only the rendered message, which would not fit
        # __init__ when an error crosses a process boundary.
        return (type(self), (self.source, self.problem, self.job_id))


@dataclass(frozen=True, slots=True)
class Where:
    """Where a check happens, so that every failure names its source, job and field."""

    source: str
    job_id: str | None = None
    prefix: str = ""

    def fail(self, problem: str) -> NoReturn:
        raise DefinitionError(self.source, self.prefix + problem, self.job_id)

    def job(self, job_id: str | None) -> Where:
        return Where(self.source, job_id)

    def within(self, context: str) -> Where:
        return Where(self.source, self.job_id, f"{self.prefix}{context}: ")


def quote(text: str) -> str:
    short = text if len(text) <= 60 else text[:57] + "..."
    return f"'{short}'" if short.isprintable() else repr(short)


def show(value: object) -> str:
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
        return quote(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a value of type {type(value).__name__}"


class InputError(ValueError):
    """The input values of a run were refused.

    ``name`` is the input concerned (if any) and ``problem`` the reason; ``str()`` joins
    them, e.g. ``inputs.count: expected a number, got 'abc'`` or
    ``inputs: missing required input 'target'``.
    """

    def __init__(self, problem: str, name: str | None = None) -> None:
        self.problem = problem
        self.name = name
        super().__init__(f"inputs.{name}: {problem}" if name is not None else f"inputs: {problem}")

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str | None]]:
        return (type(self), (self.problem, self.name))
