"""Checks of single values, shared by every source: each returns the checked value or fails."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from trellis.server.engine.definitions._errors import Where, quote, show
from trellis.server.engine.definitions._model import (
    MAX_BACKOFF_SECS,
    MAX_ID_LENGTH,
    MAX_LABEL_LENGTH,
    Backoff,
    BackoffKind,
)
from trellis.server.engine.definitions._text import SpelledFloat, SpelledInt

_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# Names are restricted to what every shell accepts in `NAME=value cmd`, because step
# environments are applied exactly that way.
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_BACKOFF_KINDS: dict[str, BackoffKind] = {
    "none": "none",
    "None": "none",
    "fixed": "fixed",
    "Fixed": "fixed",
    "exponential": "exponential",
    "Exponential": "exponential",
}


def mapping(value: Any, what: str, where: Where) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        where.fail(f"{what} must be a mapping, got {show(value)}")
    return value


def required(value: Any, key: str, where: Where) -> Any:
    if value is None:
        where.fail(f"missing required key `{key}`")
    return value


def unknown_keys(keys: Sequence[object], allowed: Sequence[str], noun: str) -> str:
    shown = ", ".join(show(key) for key in keys[:5])
    more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
    plural = "s" if len(keys) > 1 else ""
    return f"unknown {noun}{plural} {shown}{more} (expected one of: {', '.join(allowed)})"


def reject_unknown(value: Mapping[Any, Any], allowed: Sequence[str], where: Where) -> None:
    unknown = [key for key in value if not isinstance(key, str) or key not in allowed]
    if unknown:
        where.fail(unknown_keys(unknown, allowed, "key"))


def text(value: Any, what: str, where: Where, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        where.fail(f"{what} must be a string, got {show(value)}")
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


def identifier(value: Any, what: str, where: Where) -> str:
    if not isinstance(value, str):
        # YAML turns unquoted keys such as 123 or `yes` into numbers and booleans.
        where.fail(f"{what} must be a string, got {show(value)} (quote it)")
    if not value:
        where.fail(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        where.fail(f"{what} {quote(value)} is longer than {MAX_ID_LENGTH} characters")
    if not _ID_RE.fullmatch(value):
        where.fail(
            f"{what} {quote(value)} may only contain letters, digits, '_', '.' and '-', "
            "and must not start with '.' or '-'"
        )
    return str(value)


def id_list(value: Any, what: str, where: Where, *, one_ok: bool) -> tuple[str, ...]:
    """A list of job ids; ``one_ok`` also takes a single id, as workflow files allow."""
    if value is None:
        return ()
    if one_ok and isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple):
        shape = "a job id or a list of job ids" if one_ok else "a list of job ids"
        where.fail(f"{what} must be {shape}, got {show(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            where.fail(f"{what} entry {i + 1} must be a job id, got {show(item)}")
    return tuple(value)


def optional_int(value: Any, what: str, low: int, high: int, where: Where) -> int:
    if value is None:
        return low
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        where.fail(f"{what} must be an integer from {low} to {high}, got {show(value)}")
    return int(value)


def labels(value: Any, what: str, where: Where) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        where.fail(f"{what} must be a list of strings, got {show(value)}")
    found: set[str] = set()
    for i, item in enumerate(value):
        label = text(item, f"{what} entry {i + 1}", where)
        # Workers send their labels as one comma-separated list in some surfaces.
        if "," in label:
            where.fail(f"label {quote(label)} must not contain a comma")
        if len(label) > MAX_LABEL_LENGTH:
            where.fail(f"label {quote(label)} is longer than {MAX_LABEL_LENGTH} characters")
        found.add(label)
    return tuple(sorted(found))


def env(value: Any, what: str, where: Where, *, strings_only: bool) -> dict[str, str]:
    """Environment variables; without ``strings_only`` scalars are kept as the file spells them."""
    if value is None:
        return {}
    given = mapping(value, what, where)
    found: dict[str, str] = {}
    for key, raw in given.items():
        if not isinstance(key, str):
            # YAML 1.1 reads unquoted keys such as OFF or 1 as booleans and numbers.
            where.fail(f"{what} name {show(key)} must be a string (quote it)")
        if not _ENV_NAME_RE.fullmatch(key):
            where.fail(
                f"{what} name {show(key)} must be letters, digits and '_', "
                "not starting with a digit"
            )
        label = f"{what} {key}"
        if isinstance(raw, str):
            found[key] = text(raw, label, where, empty=True)
        elif strings_only:
            where.fail(f"{label} must be a string, got {show(raw)}")
        elif isinstance(raw, bool):
            found[key] = "true" if raw else "false"
        elif isinstance(raw, SpelledInt | SpelledFloat):
            # Keep what the file says: `1.10` must not turn into "1.1", nor `0755` into "493".
            found[key] = raw.spelling
        elif isinstance(raw, int) and raw.bit_length() <= 10_000:
            found[key] = str(int(raw))
        elif isinstance(raw, float):
            found[key] = repr(float(raw))
        elif raw is None:
            where.fail(f"{label} has no value; write '' for an empty string")
        else:
            where.fail(f"{label} must be a string, number or boolean, got {show(raw)}")
    return found


def backoff(value: Any, hint: str, where: Where) -> Backoff:
    """A backoff as the inputs spell it: ``none``, or one kind mapped to its settings."""
    if value is None:
        return Backoff()
    problem = f"`backoff` must be {hint}, got {show(value)}"
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
            where.fail(f"backoff `{key}` takes no settings, got {show(body)}")
        return Backoff()
    if kind == "fixed":
        if isinstance(body, int) and not isinstance(body, bool):
            return make_backoff("fixed", body, 0, 0, where)
        settings = mapping(body, f"backoff `{key}`", where)
        reject_unknown(settings, ("delay_secs",), where.within(f"backoff `{key}`"))
        return make_backoff("fixed", settings.get("delay_secs", 0), 0, 0, where)
    if kind == "exponential":
        settings = mapping(body, f"backoff `{key}`", where)
        reject_unknown(settings, ("base_secs", "max_secs"), where.within(f"backoff `{key}`"))
        return make_backoff(
            "exponential", 0, settings.get("base_secs", 0), settings.get("max_secs", 0), where
        )
    where.fail(problem)


def make_backoff(kind: BackoffKind, delay: Any, base: Any, cap: Any, where: Where) -> Backoff:
    if kind == "none":
        return Backoff()
    if kind == "fixed":
        delay_secs = optional_int(delay, "backoff delay_secs", 0, MAX_BACKOFF_SECS, where)
        return Backoff(kind="fixed", delay_secs=delay_secs)
    base_secs = optional_int(base, "backoff base_secs", 1, MAX_BACKOFF_SECS, where)
    max_secs = optional_int(cap, "backoff max_secs", 1, MAX_BACKOFF_SECS, where)
    if max_secs < base_secs:
        where.fail(f"backoff max_secs ({max_secs}) must be at least base_secs ({base_secs})")
    return Backoff(kind="exponential", base_secs=base_secs, max_secs=max_secs)


_DURATION_RE = re.compile(r"(?:[0-9]{1,9}[smhd])+|[0-9]{1,9}")
_DURATION_PART_RE = re.compile(r"([0-9]+)([smhd])")
_UNIT_SECS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def duration(value: Any, what: str, high: int, where: Where) -> int:
    """Seconds, given as a number or as a duration such as ``1h30m``; 0 when not given."""
    if value is None:
        return 0
    problem = (
        f"{what} must be a number of seconds or a duration such as '90s', '5m' or '1h', "
        f"more than 0 and at most 7 days, got {show(value)}"
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
    if not 0 < seconds <= high:
        where.fail(problem)
    return seconds
