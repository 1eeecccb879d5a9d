"""Who is calling: the principal every service method runs as.

The gRPC interceptor resolves a principal from the call's metadata
(``authorization`` and ``x-organization-id``) once per call; every service
method of every layer takes it, works within ``principal.org_id`` and records
``principal.subject`` in the audit log. It lives in core because the engine and
identity layers both take it and neither may import the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

__all__ = ["DEFAULT_ORG", "Principal", "PrincipalKind", "satisfies"]

DEFAULT_ORG = "default"


class PrincipalKind(StrEnum):
    """How the caller authenticated."""

    USER = "user"  # a JWT from /auth/login (or an authorization-code grant)
    PAT = "pat"  # a personal access token, acting as its user
    MACHINE = "machine"  # a machine user's token
    CLIENT = "client"  # a JWT from a client-credentials grant
    ANONYMOUS = "anonymous"  # development mode without auth (loopback only)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller within one organization."""

    org_id: str
    # Stable and unique within the org: "user:<id>", "machine:<id>", "client:<id>".
    # Leases are bound to it, and the audit log records it.
    subject: str
    kind: PrincipalKind
    scopes: frozenset[str]
    # For humans reading the audit log: a username, machine user or client name.
    name: str = ""
    roles: tuple[str, ...] = ()
    # The credential used: a JWT's jti, a PAT's or machine user's id.
    credential_id: str = ""
    # The session of a login JWT (logout and refresh act on it).
    session_id: str = ""
    extra: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def allows(self, scope: str | Iterable[str]) -> bool:
        return satisfies(self.scopes, scope)


def satisfies(granted: Iterable[str], required: str | Iterable[str]) -> bool:
    """Whether ``granted`` holds ``required`` (one scope, or every scope of a collection).

    An empty requirement is a ValueError, not a vacuous True: an RPC that declares no scope
    is a contract bug, and the safe answer to it is a refusal by the caller.
    """
    needed = frozenset((required,)) if isinstance(required, str) else frozenset(required)
    if not needed or "" in needed:
        raise ValueError("no required scope given; refuse the call instead")
    return needed <= frozenset(not_bare_str(granted, "granted"))


def not_bare_str(scopes: Iterable[str], what: str) -> Iterable[str]:
    """``scopes`` itself, refused when it is one string rather than a collection."""
    # Iterating "workflows:read" yields letters, which would silently grant nothing or,
    # worse, compare letters; a type error points at the caller's bug instead.
    if isinstance(scopes, str):
        raise TypeError(f"{what} must be a collection of scopes, not a string")
    return scopes
