"""IdentityService (identity.proto): organizations, personal access tokens and
OAuth2 client registrations, translated to and from ``Identity``."""

from __future__ import annotations

import grpc

from trellis.server.api._auth import current_principal
from trellis.server.api._engine import unary
from trellis.server.api._paging import page_request, send_page_headers, token_page
from trellis.server.core.times import timestamp
from trellis.server.identity import (
    FirstAdmin,
    Identity,
    OAuthClient,
    Organization,
    Pat,
)
from trellis.v1 import identity_pb2, identity_pb2_grpc

_ORG_STATUS = {
    "active": identity_pb2.ORGANIZATION_STATUS_ACTIVE,
    "suspended": identity_pb2.ORGANIZATION_STATUS_SUSPENDED,
}


def _org(o: Organization) -> identity_pb2.Organization:
    return identity_pb2.Organization(
        id=o.id,
        name=o.name,
        status=_ORG_STATUS[o.status],
        created_at=timestamp(o.created_at_ms),
        updated_at=timestamp(o.updated_at_ms),
    )


def _pat(p: Pat) -> identity_pb2.PersonalAccessToken:
    return identity_pb2.PersonalAccessToken(
        id=p.id,
        name=p.name,
        scopes=list(p.scopes),
        hint=p.hint,
        created_at=timestamp(p.created_at_ms),
        expires_at=timestamp(p.expires_at_ms),
        last_used_at=timestamp(p.last_used_at_ms),
        user_id=p.user_id,
    )


def _client(c: OAuthClient) -> identity_pb2.OAuthClient:
    return identity_pb2.OAuthClient(
        client_id=c.id,
        name=c.name,
        public=c.is_public,
        redirect_uris=list(c.redirect_uris),
        grant_types=list(c.grant_types),
        scopes=list(c.scopes),
        created_at=timestamp(c.created_at_ms),
    )


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, identity: Identity) -> None:
        self.i = identity

    @unary
    def ListOrganizations(
        self, request: identity_pb2.ListOrganizationsRequest, context: grpc.ServicerContext
    ) -> identity_pb2.ListOrganizationsResponse:
        page = self.i.list_orgs(current_principal(), page=page_request(request))
        send_page_headers(context, page)
        return identity_pb2.ListOrganizationsResponse(
            organizations=[_org(o) for o in page.items], next_page_token=page.next_page_token
        )

    @unary
    def CreateOrganization(
        self, request: identity_pb2.CreateOrganizationRequest, context: grpc.ServicerContext
    ) -> identity_pb2.Organization:
        first_admin = (
            FirstAdmin(request.admin_username, request.admin_password, request.admin_email)
            if request.admin_username
            else None
        )
        org = self.i.create_org(
            current_principal(), request.name, request.id or None, first_admin=first_admin
        )
        return _org(org)

    @unary
    def GetOrganization(
        self, request: identity_pb2.GetOrganizationRequest, context: grpc.ServicerContext
    ) -> identity_pb2.Organization:
        return _org(self.i.get_org(current_principal(), request.organization_id))

    @unary
    def UpdateOrganization(
        self, request: identity_pb2.UpdateOrganizationRequest, context: grpc.ServicerContext
    ) -> identity_pb2.Organization:
        found = self.i.update_org(current_principal(), request.organization_id, name=request.name)
        return _org(found)

    @unary
    def SuspendOrganization(
        self, request: identity_pb2.SuspendOrganizationRequest, context: grpc.ServicerContext
    ) -> identity_pb2.Organization:
        return _org(self.i.suspend_org(current_principal(), request.organization_id))

    @unary
    def ActivateOrganization(
        self, request: identity_pb2.ActivateOrganizationRequest, context: grpc.ServicerContext
    ) -> identity_pb2.Organization:
        return _org(self.i.activate_org(current_principal(), request.organization_id))

    @unary
    def CreatePersonalAccessToken(
        self,
        request: identity_pb2.CreatePersonalAccessTokenRequest,
        context: grpc.ServicerContext,
    ) -> identity_pb2.CreatedPersonalAccessToken:
        created = self.i.create_pat(
            current_principal(),
            name=request.name,
            scopes=list(request.scopes) or None,
            expires_in_days=(
                request.expires_in_days if request.HasField("expires_in_days") else None
            ),
        )
        return identity_pb2.CreatedPersonalAccessToken(
            token=_pat(created.pat), access_token=created.token
        )

    @unary
    def ListPersonalAccessTokens(
        self,
        request: identity_pb2.ListPersonalAccessTokensRequest,
        context: grpc.ServicerContext,
    ) -> identity_pb2.ListPersonalAccessTokensResponse:
        page = self.i.list_pats(current_principal(), page=token_page(request))
        return identity_pb2.ListPersonalAccessTokensResponse(
            tokens=[_pat(p) for p in page.items], next_page_token=page.next_page_token
        )

    @unary
    def RevokePersonalAccessToken(
        self,
        request: identity_pb2.RevokePersonalAccessTokenRequest,
        context: grpc.ServicerContext,
    ) -> identity_pb2.RevokePersonalAccessTokenResponse:
        self.i.revoke_pat(current_principal(), request.token_id)
        return identity_pb2.RevokePersonalAccessTokenResponse()

    @unary
    def CreateOAuthClient(
        self, request: identity_pb2.CreateOAuthClientRequest, context: grpc.ServicerContext
    ) -> identity_pb2.CreatedOAuthClient:
        created = self.i.create_client(
            current_principal(),
            name=request.name,
            confidential=not request.public,
            redirect_uris=list(request.redirect_uris),
            grant_types=list(request.grant_types) or None,
            scopes=list(request.scopes) or None,
        )
        return identity_pb2.CreatedOAuthClient(
            client=_client(created.client), client_secret=created.client_secret or ""
        )

    @unary
    def ListOAuthClients(
        self, request: identity_pb2.ListOAuthClientsRequest, context: grpc.ServicerContext
    ) -> identity_pb2.ListOAuthClientsResponse:
        page = self.i.list_clients(current_principal(), page=token_page(request))
        return identity_pb2.ListOAuthClientsResponse(
            clients=[_client(c) for c in page.items], next_page_token=page.next_page_token
        )

    @unary
    def RevokeOAuthClient(
        self, request: identity_pb2.RevokeOAuthClientRequest, context: grpc.ServicerContext
    ) -> identity_pb2.RevokeOAuthClientResponse:
        self.i.revoke_client(current_principal(), request.client_id)
        return identity_pb2.RevokeOAuthClientResponse()

    @unary
    def ListScopes(
        self, request: identity_pb2.ListScopesRequest, context: grpc.ServicerContext
    ) -> identity_pb2.ListScopesResponse:
        page = self.i.list_scopes(current_principal(), token_page(request))
        return identity_pb2.ListScopesResponse(
            scopes=[identity_pb2.ScopeInfo(name=n, description=d) for n, d in page.items],
            next_page_token=page.next_page_token,
        )
