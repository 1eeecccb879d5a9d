"""What a worker can run: the jobs its labels cover and, of those, the ones
whose command it runs (any command, or only those it has handlers for).

One definition serves the claim (which jobs a worker draws), the wake-ups and
hand-offs (which waiting worker a ready job goes to) and the waiting reasons
(why no one takes a queued job).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

MAX_HANDLERS = 1000
# Longer commands are shell scripts: no handler is named like one, so the
# wake-ups sent between replicas need not carry them.
MAX_HANDLER_CHARS = 200

# The commands a worker runs; None for any.
Commands = frozenset[str] | None


@lru_cache(maxsize=1024)
def required(label_key: str) -> frozenset[str]:
    """The labels of a label key (the sorted, comma-joined labels a job needs)."""
    return frozenset(x for x in label_key.split(",") if x)


def runs(commands: Commands, command: str) -> bool:
    return commands is None or command in commands


@dataclass(frozen=True)
class Capabilities:
    """What a worker said it runs. A worker that said nothing has none and
    runs whatever its labels cover."""

    handlers: tuple[str, ...] = ()
    shell: bool = False

    @property
    def commands(self) -> Commands:
        return None if self.shell else frozenset(self.handlers)

    def to_json(self) -> dict[str, Any]:
        return {"handlers": sorted(set(self.handlers)), "shell": self.shell}

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> Capabilities | None:
        if value is None:
            return None
        return cls(tuple(value.get("handlers", ())), bool(value.get("shell")))


def commands_of(capabilities: Capabilities | None) -> Commands:
    return None if capabilities is None else capabilities.commands


class Fleet:
    """The live workers of an org by what they can run, to tell why a queued
    job waits. Built per read from the workers' rows, not kept."""

    def __init__(self, workers: Iterable[tuple[Sequence[str], Capabilities | None]]) -> None:
        self._kinds = {(frozenset(labels), commands_of(caps)) for labels, caps in workers}
        self._reasons: dict[tuple[str, str], str] = {}

    def waiting_reason(self, label_key: str, command: str) -> str:
        """Why no live worker takes a job of ``label_key`` running ``command``;
        empty when one can."""
        key = (label_key, command)
        reason = self._reasons.get(key)
        if reason is None:
            reason = self._reasons[key] = self._reason(label_key, command)
        return reason

    def _reason(self, label_key: str, command: str) -> str:
        if not self._kinds:
            return "no worker is connected"
        need = required(label_key)
        covering = [commands for labels, commands in self._kinds if need <= labels]
        if not covering:
            return f"no connected worker has labels [{label_key}]"
        if any(runs(commands, command) for commands in covering):
            return ""
        return f"no connected worker handles command {_quoted(command)}"


def _quoted(command: str, limit: int = 60) -> str:
    """The command's first line, cut at ``limit`` characters, in double quotes."""
    lines = command.strip().splitlines() or [""]
    text = lines[0]
    if len(text) > limit or len(lines) > 1:
        text = text[: limit - 1] + "…"
    return json.dumps(text, ensure_ascii=False)
