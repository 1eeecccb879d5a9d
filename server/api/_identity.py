"""gRPC servicers of the identity surfaces: thin edges over ``Identity``.

The auth interceptor has already resolved the caller and checked the scope
each RPC declares; ``Identity`` checks again what depends on the object
(one's own token, another org's id) and audits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import grpc

from trellis.server.api import _status
from trellis.server.api._auth import client_address, current_principal
from trellis.server.api._engine import unary
from trellis.server.api.users import add_user_service
from trellis.server.core.errors import InvalidArgument
from trellis.server.identity import FirstAdmin, Identity, store
from trellis.server.identity.principal import PermissionDenied, Principal, PrincipalKind
from trellis.server.identity.scopes import ROLE_SCOPES, scope_catalogue
from trellis.server.identity.secrets_ import basic_credentials
from trellis.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    machine_pb2,
    machine_pb2_grpc,
    oauth_pb2,
    oauth_pb2_grpc,
)

DEFAULT_PAT_DAYS = 30
MAX_PAT_DAYS = 366


def iso(ms: int | None) -> str:
    """Epoch milliseconds as ISO 8601 UTC ("2025-09-26T10:00:00Z"); "" for none."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str, field: str) -> int | None:
    """An ISO 8601 time as epoch milliseconds (UTC unless it says otherwise)."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"{field}: not an ISO 8601 time: {text[:40]!r}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


def _page(request: Any, default: int = store.DEFAULT_LIMIT) -> tuple[int, int]:
    limit = request.limit if request.HasField("limit") else default
    return max(1, min(int(limit), store.MAX_LIMIT)), int(request.offset)


def _total(context: grpc.ServicerContext, total: int, limit: int, offset: int) -> None:
    # Seed 002's pagination headers (the bridge copies them to HTTP).
    _status.add_trailers(
        context,
        (("x-total-count", str(total)), ("x-limit", str(limit)), ("x-offset", str(offset))),
    )


def _rules(rules: Iterable[auth_pb2.PolicyRule]) -> list[store.PolicyRule]:
    out = []
    for i, r in enumerate(rules):
        if not r.resource or not r.action:
            raise InvalidArgument(f"rules[{i}]: resource and action are required")
        out.append(
            store.PolicyRule(
                effect=r.effect,
                actions=tuple(r.action),
                resources=(r.resource,),
                subjects=tuple(r.subjects) or ("*",),
                condition=r.condition or None,
            )
        )
    return out


def _policy(p: store.StoredPolicy) -> auth_pb2.Policy:
    return auth_pb2.Policy(
        id=p.id,
        name=p.name,
        version=p.version,
        enabled=p.enabled,
        created_at=iso(p.created_at_ms),
        rules=[
            auth_pb2.PolicyRule(
                effect=r.effect,
                resource=",".join(r.resources),
                action=list(r.actions),
                subjects=list(r.subjects),
                condition=r.condition or "",
            )
            for r in p.rules
        ],
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


class Auth(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, identity: Identity) -> None:
        self.i = identity

    @unary
    def Login(
        self, request: auth_pb2.LoginRequest, context: grpc.ServicerContext
    ) -> auth_pb2.LoginResponse:
        result = self.i.login(
            request.username,
            request.password,
            request.mfa_code or None,
            org_id=current_principal().org_id,
            ip=client_address(context),
        )
        u = result.user
        return auth_pb2.LoginResponse(
            token=result.access_token,
            expires_at=iso(result.expires_at_ms),
            refresh_token=result.refresh_token or "",
            user=auth_pb2.UserSummary(
                id=u.id, username=u.username, email=u.email, roles=list(u.roles)
            ),
        )

    @unary
    def Refresh(
        self, request: auth_pb2.RefreshRequest, context: grpc.ServicerContext
    ) -> auth_pb2.RefreshResponse:
        if not request.token:
            raise InvalidArgument("token: required")
        result = self.i.refresh(request.token, ip=client_address(context))
        return auth_pb2.RefreshResponse(
            token=result.access_token,
            expires_at=iso(result.expires_at_ms),
            refresh_token=result.refresh_token or "",
        )

    @unary
    def Logout(
        self, request: auth_pb2.LogoutRequest, context: grpc.ServicerContext
    ) -> auth_pb2.MessageResponse:
        self.i.logout(current_principal(), ip=client_address(context))
        return auth_pb2.MessageResponse(message="Successfully logged out")

    @unary
    def EnableMfa(
        self, request: auth_pb2.EnableMfaRequest, context: grpc.ServicerContext
    ) -> auth_pb2.EnableMfaResponse:
        uri = self.i.set_totp(current_principal(), request.user_id)
        return auth_pb2.EnableMfaResponse(otpauth_uri=uri)

    @unary
    def DisableMfa(
        self, request: auth_pb2.DisableMfaRequest, context: grpc.ServicerContext
    ) -> auth_pb2.MessageResponse:
        self.i.clear_totp(current_principal(), request.user_id)
        return auth_pb2.MessageResponse(message="Two-factor sign-in turned off")

    @unary
    def ListPolicies(
        self, request: auth_pb2.ListPoliciesRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ListPoliciesResponse:
        found = self.i.list_policies(current_principal())
        return auth_pb2.ListPoliciesResponse(policies=[_policy(p) for p in found])

    @unary
    def CreatePolicy(
        self, request: auth_pb2.CreatePolicyRequest, context: grpc.ServicerContext
    ) -> auth_pb2.Policy:
        created = self.i.create_policy(
            current_principal(),
            name=request.name,
            rules=_rules(request.rules),
            version=request.version or "1.0.0",
            enabled=request.enabled if request.HasField("enabled") else True,
        )
        return _policy(created)

    @unary
    def UpdatePolicy(
        self, request: auth_pb2.UpdatePolicyRequest, context: grpc.ServicerContext
    ) -> auth_pb2.MessageResponse:
        rules = _rules(request.rules) if request.rules or request.clear_rules else None
        self.i.update_policy(
            current_principal(),
            request.policy_id,
            name=request.name if request.HasField("name") else None,
            version=request.version if request.HasField("version") else None,
            rules=rules,
            enabled=request.enabled if request.HasField("enabled") else None,
        )
        return auth_pb2.MessageResponse(message="Policy updated successfully")

    @unary
    def ListAuditLogs(
        self, request: auth_pb2.ListAuditLogsRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ListAuditLogsResponse:
        limit, offset = _page(request)
        page = self.i.list_audit(
            current_principal(),
            actor_filter=request.user_id or None,
            action=request.action or None,
            resource=request.resource or None,
            since_ms=parse_iso(getattr(request, "from"), "from"),
            until_ms=parse_iso(request.to, "to"),
            limit=limit,
            offset=offset,
        )
        _total(context, page.total, limit, offset)
        return auth_pb2.ListAuditLogsResponse(
            logs=[
                auth_pb2.AuditLog(
                    id=str(e.id),
                    timestamp=iso(e.at_ms),
                    user_id=e.actor,
                    action=e.action,
                    resource=e.resource,
                    result=e.result,
                    details={k: _text(v) for k, v in e.detail.items()},
                )
                for e in page.items
            ]
        )


def _org(o: store.Organization) -> identity_pb2.Organization:
    return identity_pb2.Organization(
        id=o.id,
        name=o.name,
        status=o.status,
        created_at_ms=o.created_at_ms,
        updated_at_ms=o.updated_at_ms,
    )


def _pat(p: store.Pat) -> identity_pb2.PersonalAccessToken:
    return identity_pb2.PersonalAccessToken(
        id=p.id,
        name=p.name,
        scopes=list(p.scopes),
        hint=p.hint,
        created_at_ms=p.created_at_ms,
        expires_at_ms=p.expires_at_ms or 0,
        last_used_at_ms=p.last_used_at_ms or 0,
        user_id=p.user_id,
    )


def _client(c: store.OAuthClient) -> identity_pb2.OAuthClient:
    return identity_pb2.OAuthClient(
        client_id=c.id,
        name=c.name,
        public=c.is_public,
        redirect_uris=list(c.redirect_uris),
        grant_types=list(c.grant_types),
        scopes=list(c.scopes),
        created_at_ms=c.created_at_ms,
    )


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, identity: Identity) -> None:
        self.i = identity

    @unary
    def ListOrganizations(
        self, request: identity_pb2.ListOrganizationsRequest, context: grpc.ServicerContext
    ) -> identity_pb2.ListOrganizationsResponse:
        limit, offset = _page(request)
        page = self.i.list_orgs(current_principal(), limit=limit, offset=offset)
        _total(context, page.total, limit, offset)
        return identity_pb2.ListOrganizationsResponse(organizations=[_org(o) for o in page.items])

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
        days = request.expires_in_days if request.HasField("expires_in_days") else DEFAULT_PAT_DAYS
        if not 1 <= days <= MAX_PAT_DAYS:
            raise InvalidArgument(f"expires_in_days: between 1 and {MAX_PAT_DAYS}")
        principal = current_principal()
        created = self.i.create_pat(
            principal,
            name=request.name,
            scopes=list(request.scopes) or sorted(principal.scopes),
            expires_in_secs=days * 86_400,
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
        found = self.i.list_pats(current_principal())
        return identity_pb2.ListPersonalAccessTokensResponse(tokens=[_pat(p) for p in found])

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
        default_grants = ["authorization_code"] if request.public else ["client_credentials"]
        principal = current_principal()
        # Without a list, what an operator may do (never administration),
        # as far as the registering caller may do it too.
        default_scopes = sorted(ROLE_SCOPES["operator"] & principal.scopes)
        created = self.i.create_client(
            principal,
            name=request.name,
            confidential=not request.public,
            redirect_uris=list(request.redirect_uris),
            grant_types=list(request.grant_types) or default_grants,
            scopes=list(request.scopes) or default_scopes,
        )
        return identity_pb2.CreatedOAuthClient(
            client=_client(created.client), client_secret=created.client_secret or ""
        )

    @unary
    def ListOAuthClients(
        self, request: identity_pb2.ListOAuthClientsRequest, context: grpc.ServicerContext
    ) -> identity_pb2.ListOAuthClientsResponse:
        found = self.i.list_clients(current_principal())
        return identity_pb2.ListOAuthClientsResponse(clients=[_client(c) for c in found])

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
        return identity_pb2.ListScopesResponse(
            scopes=[identity_pb2.ScopeInfo(name=n, description=d) for n, d in scope_catalogue()]
        )


def _basic_credentials(context: grpc.ServicerContext) -> tuple[str, str] | None:
    """Client credentials sent as HTTP Basic authentication (RFC 6749 2.3.1)."""
    for key, value in context.invocation_metadata():
        if key == "authorization" and isinstance(value, str):
            return basic_credentials(value)
    return None


def _fields(message_type: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    known = message_type.DESCRIPTOR.fields_by_name
    return {k: v for k, v in values.items() if k in known and v is not None}


class OAuth(oauth_pb2_grpc.OAuthServiceServicer):
    def __init__(self, identity: Identity, public_url: str) -> None:
        self.i = identity
        self.base = public_url.rstrip("/")

    def _client_credentials(
        self, request: Any, context: grpc.ServicerContext
    ) -> tuple[str | None, str | None]:
        basic = _basic_credentials(context)
        if basic is not None:
            return basic
        return request.client_id or None, request.client_secret or None

    @unary
    def Token(
        self, request: oauth_pb2.TokenRequest, context: grpc.ServicerContext
    ) -> oauth_pb2.TokenResponse:
        client_id, client_secret = self._client_credentials(request, context)
        answer = self.i.token(
            request.grant_type or None,
            client_id,
            client_secret,
            scope=request.scope or None,
            code=request.code or None,
            redirect_uri=request.redirect_uri or None,
            code_verifier=request.code_verifier or None,
        )
        return oauth_pb2.TokenResponse(**_fields(oauth_pb2.TokenResponse, answer))

    @unary
    def Authorize(
        self, request: oauth_pb2.AuthorizeRequest, context: grpc.ServicerContext
    ) -> oauth_pb2.AuthorizeResponse:
        principal: Principal = current_principal()
        if principal.kind is not PrincipalKind.USER:
            raise PermissionDenied("only a signed-in user can authorize a client", "forbidden")
        if request.response_type and request.response_type != "code":
            raise InvalidArgument("response_type: only 'code' is supported")
        grant = self.i.authorize(
            principal,
            request.client_id,
            request.redirect_uri or None,
            request.scope or None,
            request.state or None,
            request.code_challenge or None,
            request.code_challenge_method or None,
        )
        return oauth_pb2.AuthorizeResponse(
            redirect_to=grant.location, code=grant.code, state=grant.state or ""
        )

    @unary
    def Revoke(
        self, request: oauth_pb2.RevokeRequest, context: grpc.ServicerContext
    ) -> oauth_pb2.RevokeResponse:
        client_id, client_secret = self._client_credentials(request, context)
        if not request.token:
            raise InvalidArgument("token: required")
        self.i.revoke_token(request.token, client_id, client_secret)
        return oauth_pb2.RevokeResponse()

    @unary
    def Introspect(
        self, request: oauth_pb2.IntrospectRequest, context: grpc.ServicerContext
    ) -> oauth_pb2.IntrospectResponse:
        if not request.token:
            raise InvalidArgument("token: required")
        answer = self.i.introspect(request.token)
        if answer.get("active") and answer.get("org_id") != current_principal().org_id:
            # Nothing about another organization's credentials.
            return oauth_pb2.IntrospectResponse(active=False)
        return oauth_pb2.IntrospectResponse(**_fields(oauth_pb2.IntrospectResponse, answer))

    @unary
    def GetServerMetadata(
        self, request: oauth_pb2.GetServerMetadataRequest, context: grpc.ServicerContext
    ) -> oauth_pb2.ServerMetadata:
        api = f"{self.base}/api/v1/oauth2"
        return oauth_pb2.ServerMetadata(
            issuer=self.i.issuer,
            authorization_endpoint=f"{api}/authorize",
            token_endpoint=f"{api}/token",
            revocation_endpoint=f"{api}/revoke",
            introspection_endpoint=f"{api}/introspect",
            jwks_uri=f"{self.base}/.well-known/jwks.json",
            scopes_supported=[name for name, _ in scope_catalogue()],
            response_types_supported=["code"],
            grant_types_supported=["authorization_code", "client_credentials"],
            token_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post"],
            code_challenge_methods_supported=["S256"],
            id_token_signing_alg_values_supported=["ES256"],
            subject_types_supported=["public"],
        )

    @unary
    def GetJwks(
        self, request: oauth_pb2.GetJwksRequest, context: grpc.ServicerContext
    ) -> oauth_pb2.Jwks:
        document = self.i.jwks()
        return oauth_pb2.Jwks(
            keys=[oauth_pb2.Jwk(**_fields(oauth_pb2.Jwk, key)) for key in document["keys"]]
        )


def _machine(m: store.MachineUser) -> machine_pb2.MachineUser:
    return machine_pb2.MachineUser(
        id=m.id,
        username=m.username,
        name=m.name,
        enabled=m.enabled,
        hint=m.hint,
        created_at=iso(m.created_at_ms),
    )


class Machines(machine_pb2_grpc.MachineUserServiceServicer):
    def __init__(self, identity: Identity) -> None:
        self.i = identity

    @unary
    def ValidateMachineUser(
        self, request: machine_pb2.ValidateMachineUserRequest, context: grpc.ServicerContext
    ) -> machine_pb2.ValidateMachineUserResponse:
        if not request.username or not request.token:
            raise InvalidArgument("username and token are required")
        checked = self.i.validate_machine_user(request.username, request.token)
        if not checked.valid:
            return machine_pb2.ValidateMachineUserResponse(valid=False, error="Invalid credentials")
        return machine_pb2.ValidateMachineUserResponse(
            valid=True, tenant_id=checked.org_id, machine_user_id=checked.machine_user_id
        )

    @unary
    def CheckMachineUser(
        self, request: machine_pb2.CheckMachineUserRequest, context: grpc.ServicerContext
    ) -> machine_pb2.CheckMachineUserResponse:
        principal = _machine_principal()
        return machine_pb2.CheckMachineUserResponse(
            authenticated=True,
            machine_user_id=principal.credential_id,
            tenant_id=principal.org_id,
        )

    @unary
    def RegisterBackend(
        self, request: machine_pb2.RegisterBackendRequest, context: grpc.ServicerContext
    ) -> machine_pb2.Backend:
        principal = _machine_principal()
        backend, _created = self.i.register_backend(
            principal,
            request.name,
            request.callback_url,
            request.description,
            replace=request.replace,
        )
        return machine_pb2.Backend(
            id=backend.id,
            name=backend.name,
            callback_url=backend.callback_url,
            machine_user_id=backend.machine_user_id,
            description=backend.description,
            created_at=iso(backend.created_at_ms),
        )

    @unary
    def CreateMachineUser(
        self, request: machine_pb2.CreateMachineUserRequest, context: grpc.ServicerContext
    ) -> machine_pb2.CreatedMachineUser:
        created = self.i.create_machine_user(
            current_principal(), username=request.username, name=request.name
        )
        return machine_pb2.CreatedMachineUser(
            machine_user=_machine(created.machine_user), generated_token=created.token
        )

    @unary
    def ListMachineUsers(
        self, request: machine_pb2.ListMachineUsersRequest, context: grpc.ServicerContext
    ) -> machine_pb2.ListMachineUsersResponse:
        found = self.i.list_machine_users(current_principal())
        return machine_pb2.ListMachineUsersResponse(machine_users=[_machine(m) for m in found])

    @unary
    def SetMachineUserEnabled(
        self, request: machine_pb2.SetMachineUserEnabledRequest, context: grpc.ServicerContext
    ) -> machine_pb2.MachineUser:
        changed = self.i.set_machine_user_enabled(
            current_principal(), request.machine_user_id, request.enabled
        )
        return _machine(changed)


def _machine_principal() -> Principal:
    principal = current_principal()
    if principal.kind is not PrincipalKind.MACHINE:
        raise PermissionDenied("this endpoint is for machine users", "forbidden")
    return principal


def add_identity_services(server: grpc.Server, identity: Identity, public_url: str) -> None:
    """Registers the servicers of auth.proto, identity.proto, oauth.proto and machine.proto."""
    # The generated registration helpers are untyped.
    auth_pb2_grpc.add_AuthServiceServicer_to_server(Auth(identity), server)  # type: ignore[no-untyped-call]
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(  # type: ignore[no-untyped-call]
        IdentityServicer(identity), server
    )
    add_user_service(server, identity)
    oauth_pb2_grpc.add_OAuthServiceServicer_to_server(  # type: ignore[no-untyped-call]
        OAuth(identity, public_url), server
    )
    machine_pb2_grpc.add_MachineUserServiceServicer_to_server(  # type: ignore[no-untyped-call]
        Machines(identity), server
    )
