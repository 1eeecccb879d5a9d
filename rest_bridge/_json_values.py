"""JSON value type, codec errors and the field paths those errors name."""

from __future__ import annotations

import json
from typing import TypeAlias

Json: TypeAlias = "bool | int | float | str | list[Json] | dict[str, Json] | None"

# Long values are cut in error messages: a client that sent a megabyte of text in
# the wrong field needs the field name, not its payload echoed back.
_MAX_SHOWN = 60


class CodecError(ValueError):
    """A JSON value that does not fit the message; ``path`` names the offending field."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path or 'body'}: {problem}")
        self.path = path or "body"
        self.problem = problem


class ServerRefusal(CodecError):
    """A value of a ``(trellis.v1.refused_by_server)`` field that does not fit: the
    server refuses the call with this message, after its checks of the caller."""


def describe(value: object) -> str:
    """A short JSON spelling of a value for error messages (``"x"``, ``1.5``, ``null``)."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return text


def child_path(path: str, key: str) -> str:
    """The path of field ``key`` inside the value at ``path`` (``jobs[2].max_retries``)."""
    return f"{path}.{key}" if path else key


def index_path(path: str, index: int) -> str:
    """The path of element ``index`` of the list at ``path`` (``jobs[2]``)."""
    return f"{path}[{index}]"


def entry_path(path: str, key: str) -> str:
    """The path of entry ``key`` of the map at ``path`` (``outputs["url"]``)."""
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
