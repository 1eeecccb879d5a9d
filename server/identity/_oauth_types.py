"""What the OAuth2 endpoints answer and refuse with (RFC 6749, 7662)."""

from __future__ import annotations

from dataclasses import dataclass

from trellis.server.core.errors import InvalidArgument
from trellis.server.identity import store
from trellis.server.identity.principal import Unauthenticated


class OAuthError(InvalidArgument):
    """An RFC 6749 error answer (400); ``reason`` is the ``error`` code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidClient(Unauthenticated):
    """Client authentication failed (RFC 6749 5.2 ``invalid_client``, 401)."""

    reason = "invalid_client"


@dataclass(frozen=True, slots=True)
class CreatedClient:
    """A new client; ``client_secret`` (None for public clients) is shown this once."""

    client: store.OAuthClient
    client_secret: str | None


@dataclass(frozen=True, slots=True)
class AuthorizationGrant:
    """An issued authorization code and where to send the user agent with it."""

    code: str
    redirect_uri: str
    state: str | None
    location: str


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """RFC 6749 5.1's successful answer; never a refresh token (yet)."""

    access_token: str
    expires_in: int
    scope: str
    token_type: str = "bearer"
    refresh_token: str | None = None


@dataclass(frozen=True, slots=True)
class Introspection:
    """RFC 7662's answer: only ``active`` for a token that is not."""

    active: bool
    scope: str | None = None
    client_id: str | None = None
    username: str | None = None
    token_type: str | None = None
    exp: int | None = None
    sub: str | None = None
