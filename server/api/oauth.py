"""OAuthService (oauth.proto): the RFC 6749 endpoints, discovery and JWKS,
translated to and from ``Identity``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import grpc

from trellis.server.api._auth import current_principal
from trellis.server.api._engine import unary
from trellis.server.identity import Identity, basic_credentials
from trellis.v1 import oauth_pb2, oauth_pb2_grpc


def _basic_credentials(context: grpc.ServicerContext) -> tuple[str, str] | None:
    """Client credentials sent as HTTP Basic authentication (RFC 6749 2.3.1)."""
    for key, value in context.invocation_metadata():
        if key == "authorization" and isinstance(value, str):
            return basic_credentials(value)
    return None


def _client_credentials(
    request: Any, context: grpc.ServicerContext
) -> tuple[str | None, str | None]:
    basic = _basic_credentials(context)
    if basic is not None:
        return basic
    return request.client_id or None, request.client_secret or None


def _fields(message_type: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    known = message_type.DESCRIPTOR.fields_by_name
    return {k: v for k, v in values.items() if k in known and v is not None}


class OAuth(oauth_pb2_grpc.OAuthServiceServicer):
    def __init__(self, identity: Identity, public_url: str) -> None:
        self.i = identity
        self.public_url = public_url

    @unary
    def Token(
        self, request: oauth_pb2.TokenRequest, context: grpc.ServicerContext
    ) -> oauth_pb2.TokenResponse:
        client_id, client_secret = _client_credentials(request, context)
        answer = self.i.token(
            request.grant_type or None,
            client_id,
            client_secret,
            scope=request.scope or None,
            code=request.code or None,
            redirect_uri=request.redirect_uri or None,
            code_verifier=request.code_verifier or None,
        )
        return oauth_pb2.TokenResponse(**_fields(oauth_pb2.TokenResponse, asdict(answer)))

    @unary
    def Authorize(
        self, request: oauth_pb2.AuthorizeRequest, context: grpc.ServicerContext
    ) -> oauth_pb2.AuthorizeResponse:
        grant = self.i.authorize(
            current_principal(),
            request.client_id,
            request.redirect_uri or None,
            request.scope or None,
            request.state or None,
            request.code_challenge or None,
            request.code_challenge_method or None,
            response_type=request.response_type or None,
        )
        return oauth_pb2.AuthorizeResponse(
            redirect_to=grant.location, code=grant.code, state=grant.state or ""
        )

    @unary
    def Revoke(
        self, request: oauth_pb2.RevokeRequest, context: grpc.ServicerContext
    ) -> oauth_pb2.RevokeResponse:
        client_id, client_secret = _client_credentials(request, context)
        self.i.revoke_token(request.token, client_id, client_secret)
        return oauth_pb2.RevokeResponse()

    @unary
    def Introspect(
        self, request: oauth_pb2.IntrospectRequest, context: grpc.ServicerContext
    ) -> oauth_pb2.IntrospectResponse:
        answer = self.i.introspect(current_principal(), request.token)
        return oauth_pb2.IntrospectResponse(**_fields(oauth_pb2.IntrospectResponse, asdict(answer)))

    @unary
    def GetServerMetadata(
        self, request: oauth_pb2.GetServerMetadataRequest, context: grpc.ServicerContext
    ) -> oauth_pb2.ServerMetadata:
        return oauth_pb2.ServerMetadata(**asdict(self.i.server_metadata(self.public_url)))

    @unary
    def GetJwks(
        self, request: oauth_pb2.GetJwksRequest, context: grpc.ServicerContext
    ) -> oauth_pb2.Jwks:
        document = self.i.jwks()
        return oauth_pb2.Jwks(
            keys=[oauth_pb2.Jwk(**_fields(oauth_pb2.Jwk, key)) for key in document["keys"]]
        )
