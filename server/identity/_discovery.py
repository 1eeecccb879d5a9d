"""What the authorization server announces about itself (RFC 8414)."""

from __future__ import annotations

from dataclasses import dataclass

from trellis.server.identity.scopes import scope_catalogue


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    """The RFC 8414 document, with the endpoints under one public base URL."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    revocation_endpoint: str
    introspection_endpoint: str
    jwks_uri: str
    scopes_supported: tuple[str, ...]
    response_types_supported: tuple[str, ...] = ("code",)
    grant_types_supported: tuple[str, ...] = ("authorization_code", "client_credentials")
    token_endpoint_auth_methods_supported: tuple[str, ...] = (
        "client_secret_basic",
        "client_secret_post",
    )
    code_challenge_methods_supported: tuple[str, ...] = ("S256",)
    id_token_signing_alg_values_supported: tuple[str, ...] = ("ES256",)
    subject_types_supported: tuple[str, ...] = ("public",)


def server_metadata(issuer: str, public_url: str) -> ServerMetadata:
    """The document for a server reachable at ``public_url``."""
    base = public_url.rstrip("/")
    api = f"{base}/api/v1/oauth2"
    return ServerMetadata(
        issuer=issuer,
        authorization_endpoint=f"{api}/authorize",
        token_endpoint=f"{api}/token",
        revocation_endpoint=f"{api}/revoke",
        introspection_endpoint=f"{api}/introspect",
        jwks_uri=f"{base}/.well-known/jwks.json",
        scopes_supported=tuple(name for name, _ in scope_catalogue()),
    )
