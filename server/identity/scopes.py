"""The scope vocabulary, the built-in roles and the OAuth2 scope-string rules.

A scope names one capability. Every RPC in ``proto/trellis/v1`` declares the one scope it
needs with ``(trellis.v1.required_scope)``; a caller's credential carries a set of granted
scopes, and the call proceeds only when that set holds the required one. Scopes are flat:
no scope implies another (``admin:users`` does not imply ``workflows:read``), so what a
credential may do is exactly the list it carries. Roles are named bundles of scopes.

Scopes used by the protos today: ``workflows:read``, ``workflows:write``, ``workflows:run``,
``jobs:work``, ``logs:read`` and ``workers:read``. The ``admin:*``, ``audit:read`` and
``policies:write`` scopes guard the identity APIs; ``webhooks:read`` and
``webhooks:write`` the webhook subscriptions (administrators only: a subscription
sends the organization's events out).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from trellis.server.core.principal import not_bare_str, satisfies

__all__ = [
    "ALL_SCOPES",
    "ROLE_SCOPES",
    "Role",
    "Scope",
    "narrow",
    "parse_scope_string",
    "satisfies",
    "scope_catalogue",
    "scopes_for_roles",
]


class Scope(StrEnum):
    """Every scope Trellis knows; the value is the spelling on the wire."""

    WORKFLOWS_READ = "workflows:read"
    WORKFLOWS_WRITE = "workflows:write"
    WORKFLOWS_RUN = "workflows:run"
    JOBS_WORK = "jobs:work"
    LOGS_READ = "logs:read"
    WORKERS_READ = "workers:read"
    ADMIN_USERS = "admin:users"
    ADMIN_TOKENS = "admin:tokens"
    ADMIN_ORGS = "admin:orgs"
    AUDIT_READ = "audit:read"
    POLICIES_WRITE = "policies:write"
    WEBHOOKS_READ = "webhooks:read"
    WEBHOOKS_WRITE = "webhooks:write"

    @property
    def description(self) -> str:
        """One line for the README and the well-known scope document."""
        return _DESCRIPTIONS[self]


# Kept next to the enum so adding a scope without a description fails the test suite
# (tests check that every member has one) rather than rendering an empty README cell.
_DESCRIPTIONS: Final[Mapping[Scope, str]] = MappingProxyType(
    {
        Scope.WORKFLOWS_READ: "List and read workflows, their runs and job states.",
        Scope.WORKFLOWS_WRITE: "Create workflows and publish new versions of them.",
        Scope.WORKFLOWS_RUN: "Start and cancel workflow runs.",
        Scope.JOBS_WORK: "Act as a worker: register, claim jobs, heartbeat, report, push logs.",
        Scope.LOGS_READ: "Read and follow job logs.",
        Scope.WORKERS_READ: "List workers and their state.",
        Scope.ADMIN_USERS: "Create, change and deactivate users and their roles.",
        Scope.ADMIN_TOKENS: "Issue, list and revoke API tokens of any user.",
        Scope.ADMIN_ORGS: "Create and configure organisations.",
        Scope.AUDIT_READ: "Read the audit log.",
        Scope.POLICIES_WRITE: "Create, change and delete access policies.",
        Scope.WEBHOOKS_READ: "List webhook subscriptions and their delivery attempts.",
        Scope.WEBHOOKS_WRITE: "Create, change and delete webhook subscriptions.",
    }
)

ALL_SCOPES: Final[frozenset[str]] = frozenset(scope.value for scope in Scope)


class Role(StrEnum):
    """The built-in roles; a user holds any number of them."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


# viewer ⊂ operator ⊂ admin. audit:read is deliberately left out of viewer: the audit log
# shows who did what to whom, which is administrative information, and keeping it out
# preserves the nesting (an operator can do everything a viewer can).
_VIEWER: Final[frozenset[str]] = frozenset(
    {Scope.WORKFLOWS_READ.value, Scope.LOGS_READ.value, Scope.WORKERS_READ.value}
)
_OPERATOR: Final[frozenset[str]] = _VIEWER | {
    Scope.WORKFLOWS_WRITE.value,
    Scope.WORKFLOWS_RUN.value,
    Scope.JOBS_WORK.value,
}

ROLE_SCOPES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        Role.ADMIN.value: ALL_SCOPES,
        Role.OPERATOR.value: _OPERATOR,
        Role.VIEWER.value: _VIEWER,
    }
)

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), i.e. printable ASCII
# without space, double quote and backslash.
_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
# Offending input is echoed in error messages; cap it so a hostile string cannot bloat logs.
_ECHO_LIMIT: Final = 64


def scope_catalogue() -> tuple[tuple[str, str], ...]:
    """``(scope, description)`` pairs in declaration order, for documentation renderers."""
    return tuple((scope.value, scope.description) for scope in Scope)


def scopes_for_roles(roles: Iterable[str]) -> frozenset[str]:
    """The union of the scopes of ``roles``; ValueError names the first unknown role.

    A bare string is taken as one role name (iterating it would test single letters).
    """
    names = (roles,) if isinstance(roles, str) else roles
    granted: set[str] = set()
    for name in names:
        scopes = ROLE_SCOPES.get(name)
        if scopes is None:
            known = ", ".join(ROLE_SCOPES)
            raise ValueError(f"unknown role {_echo(name)} (known roles: {known})")
        granted |= scopes
    return frozenset(granted)


def parse_scope_string(text: str) -> tuple[str, ...]:
    """Split an OAuth2 space-delimited scope string into known scopes, in order, deduplicated.

    Runs of spaces are tolerated (clients differ); any other whitespace or character that
    RFC 6749 forbids makes the token malformed. ValueError names the offending token.
    """
    parsed: dict[str, None] = {}  # an ordered set
    for token in text.split(" "):
        if not token:
            continue
        if not _SCOPE_TOKEN.fullmatch(token):
            raise ValueError(f"malformed scope {_echo(token)}")
        if token not in ALL_SCOPES:
            raise ValueError(f"unknown scope {_echo(token)}")
        parsed[token] = None
    return tuple(parsed)


def narrow(requested: Iterable[str], allowed: Iterable[str]) -> frozenset[str]:
    """The scopes to grant: ``requested`` cut down to ``allowed``; nothing requested = all.

    Requested scopes outside ``allowed`` are dropped rather than refused, as OAuth2 permits;
    a caller that must refuse instead compares the result with its request.
    """
    wanted = frozenset(not_bare_str(requested, "requested"))
    permitted = frozenset(not_bare_str(allowed, "allowed"))
    return permitted if not wanted else wanted & permitted


def _echo(value: str) -> str:
    shown = value if len(value) <= _ECHO_LIMIT else value[:_ECHO_LIMIT] + "…"
    return repr(shown)
