"""The errors of authentication, beside the principal (defined in core) they concern.

The gRPC interceptor resolves a principal from the call's metadata
(``authorization`` and ``x-organization-id``) once per call and hands it to
the servicers; the service layer then works within ``principal.org_id``.
"""

from __future__ import annotations

from collections.abc import Mapping

from trellis.server.core.errors import TrellisError
from trellis.server.core.principal import DEFAULT_ORG, Principal, PrincipalKind

__all__ = [
    "DEFAULT_ORG",
    "AuthError",
    "MissingOrganization",
    "PermissionDenied",
    "Principal",
    "PrincipalKind",
    "RateLimited",
    "Unauthenticated",
]


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
