"""Who is calling: the principal every RPC runs as, and the errors of authentication.

The gRPC interceptor resolves a principal from the call's metadata
(``authorization`` and ``x-organization-id``) once per call and hands it to
the servicers; the service layer then works within ``principal.org_id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from trellis.server.core.errors import TrellisError
from trellis.server.identity.scopes import satisfies

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


class AuthError(TrellisError):
    """A refused credential or permission. ``reason`` is a stable snake_case
    code that REST surfaces show (``insufficient_scope``,
    ``missing_organization``...); the message is safe to show."""

    reason = "unauthorized"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class Unauthenticated(AuthError):
    """Missing, malformed, expired, revoked or unknown credentials (401)."""

    reason = "invalid_token"


class PermissionDenied(AuthError):
    """Valid credentials without the right to do this (403)."""

    reason = "insufficient_scope"


class MissingOrganization(AuthError):
    """A credential that needs ``X-Organization-ID`` came without it, or with a
    malformed one (422, seed 003's ``missing_organization``)."""

    reason = "missing_organization"


class RateLimited(AuthError):
    """Over a rate limit (429 / RESOURCE_EXHAUSTED); ``retry_after`` in seconds."""

    reason = "rate_limited"

    def __init__(self, message: str, retry_after: int, headers: Mapping[str, str]) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = dict(headers)
