"""Allow/Deny policies, evaluated after the scope check.

Semantics (restrictive only): a request reaches policy evaluation only once the caller's
scopes cover the RPC. Policies can then take access away, never add it:

* a policy applies when its subject, action *and* resource patterns all match;
  disabled policies and policies that do not apply are ignored;
* any applicable Deny wins over every applicable Allow, whatever the order;
* with no Deny the request is allowed. An Allow changes nothing about the outcome: it
  exists to state intent explicitly and to be named in the decision for the audit log.

Patterns use ``*`` as their only wildcard; it matches any run of characters, including none
and including ``/`` and ``:`` (``workflows/etl-*`` covers ``workflows/etl-daily/runs/7``).
Everything else matches itself, case-sensitively, and the whole value must match.
Subjects are strings such as ``user:alice`` or ``role:operator``; a request carries several
(its user and each of its roles) and a subject pattern matches when any of them matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

__all__ = [
    "MAX_PATTERN_LENGTH",
    "Decision",
    "Effect",
    "Policy",
    "evaluate",
    "glob_match",
    "policy_applies",
    "validate_policy_fields",
]

Effect = Literal["allow", "deny"]
_EFFECTS: Final[tuple[str, ...]] = get_args(Effect)

# Pattern characters: enough for ids, scopes and paths, and nothing that could mean
# something to another layer (no spaces, quotes, regex or shell metacharacters but `*`).
_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:/*-]+")
_PATTERN_CHARS_DOC: Final = "A-Z a-z 0-9 _ . : / * -"
MAX_PATTERN_LENGTH: Final = 256
_MAX_NAME_LENGTH: Final = 200


@dataclass(frozen=True, slots=True)
class Policy:
    """One Allow or Deny rule. Construction validates it, so a Policy is always usable."""

    id: str
    name: str
    effect: Effect
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    subjects: tuple[str, ...]
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("policy id must not be empty")
        error = validate_policy_fields(
            name=self.name,
            effect=self.effect,
            actions=self.actions,
            resources=self.resources,
            subjects=self.subjects,
        )
        if error is not None:
            raise ValueError(error)
        # Rows decoded from JSON arrive as lists; tuples keep the policy immutable.
        for field in ("actions", "resources", "subjects"):
            object.__setattr__(self, field, tuple(getattr(self, field)))


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :func:`evaluate` and what to record about it."""

    allowed: bool
    policy_id: str | None  # the policy that decided; None when none applied
    reason: str


def validate_policy_fields(
    *,
    name: str,
    effect: str,
    actions: Sequence[str],
    resources: Sequence[str],
    subjects: Sequence[str],
) -> str | None:
    """The first problem with these policy fields as a message for the caller, or None."""
    if not name.strip():
        return "name must not be empty"
    if len(name) > _MAX_NAME_LENGTH:
        return f"name must be at most {_MAX_NAME_LENGTH} characters"
    if effect not in _EFFECTS:
        return f"effect must be 'allow' or 'deny', got {effect!r}"
    for field, patterns in (("actions", actions), ("resources", resources), ("subjects", subjects)):
        error = _pattern_list_error(field, patterns)
        if error is not None:
            return error
    return None


def _pattern_list_error(field: str, patterns: Sequence[str]) -> str | None:
    # A bare string is a sequence of one-letter patterns; accepting it would turn
    # "workflows:*" into eleven unrelated patterns.
    if isinstance(patterns, str):
        return f"{field} must be a list of patterns, not a string"
    if not patterns:
        return f"{field} must list at least one pattern"
    for index, pattern in enumerate(patterns):
        error = _pattern_error(pattern)
        if error is not None:
            return f"{field}[{index}] {error}"
    return None


def _pattern_error(pattern: object) -> str | None:
    if not isinstance(pattern, str):
        return f"must be a string, got {type(pattern).__name__}"
    if not pattern:
        return "is empty"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"is longer than {MAX_PATTERN_LENGTH} characters"
    if not _PATTERN.fullmatch(pattern):
        bad = next(char for char in pattern if not _PATTERN.fullmatch(char))
        return f"{pattern!r} contains {bad!r}; allowed characters are {_PATTERN_CHARS_DOC}"
    return None


def glob_match(pattern: str, value: str) -> bool:
    """Whether ``value`` matches ``pattern`` in full, ``*`` matching any run of characters.

    Implemented without regular expressions: the literal pieces between stars are found
    left to right, which is correct for star-only globs and linear in practice, so a hostile
    pattern such as ``*a*a*a*a*b`` cannot trigger catastrophic backtracking.
    """
    head, *rest = pattern.split("*")
    if not rest:
        return pattern == value
    tail = rest.pop()
    if len(value) < len(head) + len(tail):
        return False
    if not (value.startswith(head) and value.endswith(tail)):
        return False
    position, end = len(head), len(value) - len(tail)
    for piece in rest:
        # Taking the leftmost occurrence never loses a match: it leaves the most room
        # for the pieces after it.
        found = value.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def policy_applies(
    policy: Policy, *, subject_ids: Sequence[str], action: str, resource: str
) -> bool:
    """Whether ``policy`` is enabled and its subject, action and resource patterns match."""
    return (
        policy.enabled
        and _any_match(policy.actions, (action,))
        and _any_match(policy.resources, (resource,))
        and _any_match(policy.subjects, subject_ids)
    )


def evaluate(
    policies: Iterable[Policy], *, subject_ids: Sequence[str], action: str, resource: str
) -> Decision:
    """Decide a request that already passed the scope check; see the module docstring.

    The outcome does not depend on the order of ``policies``; when several policies of the
    deciding effect apply, the first in that order is the one named in the decision.
    """
    subjects = _checked_subjects(subject_ids)
    first_allow: Policy | None = None
    for policy in policies:
        if not policy_applies(policy, subject_ids=subjects, action=action, resource=resource):
            continue
        if policy.effect == "deny":
            return Decision(False, policy.id, f"denied by policy {policy.name!r}")
        if first_allow is None:
            first_allow = policy
    if first_allow is not None:
        return Decision(True, first_allow.id, f"allowed by policy {first_allow.name!r}")
    return Decision(True, None, "no policy applies; the granted scopes decide")


def _checked_subjects(subject_ids: Sequence[str]) -> tuple[str, ...]:
    # Both mistakes below would make every Deny naming the caller miss, i.e. fail open.
    if isinstance(subject_ids, str):
        raise TypeError("subject_ids must be a sequence of subject ids, not a string")
    subjects = tuple(subject_ids)
    if not subjects:
        raise ValueError("subject_ids must not be empty; every caller has a subject")
    return subjects


def _any_match(patterns: Iterable[str], values: Iterable[str]) -> bool:
    return any(glob_match(pattern, value) for pattern in patterns for value in values)
