"""AuthService (auth.proto): sign-in, sessions, two-factor sign-in, policies and
the audit log, translated to and from ``Identity``."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from trellis.server.api._auth import client_address, current_principal
from trellis.server.api._engine import unary
from trellis.server.api._paging import page_request, send_page_headers, token_page
from trellis.server.core.times import millis, timestamp
from trellis.server.identity import AuditEvent, Identity, PolicyRule, StoredPolicy
from trellis.v1 import auth_pb2, auth_pb2_grpc

_EFFECTS = {auth_pb2.POLICY_EFFECT_ALLOW: "allow", auth_pb2.POLICY_EFFECT_DENY: "deny"}
_EFFECT_VALUES = {text: value for value, text in _EFFECTS.items()}


def _rules(rules: Iterable[auth_pb2.PolicyRule]) -> list[PolicyRule]:
    # An unset or unknown effect reaches the service as "", which it refuses.
    return [
        PolicyRule(
            effect=_EFFECTS.get(r.effect, ""),
            actions=tuple(r.action),
            resources=(r.resource,),
            subjects=tuple(r.subjects),
            condition=r.condition,
        )
        for r in rules
    ]


def _policy(p: StoredPolicy) -> auth_pb2.Policy:
    return auth_pb2.Policy(
        id=p.id,
        name=p.name,
        version=p.version,
        enabled=p.enabled,
        created_at=timestamp(p.created_at_ms),
        rules=[
            auth_pb2.PolicyRule(
                # Rows written before effects were an enum keep the case given.
                effect=_EFFECT_VALUES.get(r.effect.lower(), auth_pb2.POLICY_EFFECT_UNSPECIFIED),
                resource=",".join(r.resources),
                action=list(r.actions),
                subjects=list(r.subjects),
                condition=r.condition or "",
            )
            for r in p.rules
        ],
    )


def _audit_log(e: AuditEvent) -> auth_pb2.AuditLog:
    return auth_pb2.AuditLog(
        id=str(e.id),
        timestamp=timestamp(e.at_ms),
        user_id=e.actor,
        action=e.action,
        resource=e.resource,
        result=e.result,
        details={k: v if isinstance(v, str) else str(v) for k, v in e.detail.items()},
    )


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
            expires_at=timestamp(result.expires_at_ms),
            refresh_token=result.refresh_token or "",
            user=auth_pb2.UserSummary(
                id=u.id, username=u.username, email=u.email, roles=list(u.roles)
            ),
        )

    @unary
    def Refresh(
        self, request: auth_pb2.RefreshRequest, context: grpc.ServicerContext
    ) -> auth_pb2.RefreshResponse:
        result = self.i.refresh(request.token, ip=client_address(context))
        return auth_pb2.RefreshResponse(
            token=result.access_token,
            expires_at=timestamp(result.expires_at_ms),
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
        page = self.i.list_policies(current_principal(), page=token_page(request))
        return auth_pb2.ListPoliciesResponse(
            policies=[_policy(p) for p in page.items], next_page_token=page.next_page_token
        )

    @unary
    def CreatePolicy(
        self, request: auth_pb2.CreatePolicyRequest, context: grpc.ServicerContext
    ) -> auth_pb2.Policy:
        created = self.i.create_policy(
            current_principal(),
            name=request.name,
            rules=_rules(request.rules),
            version=request.version or None,
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
        page = self.i.list_audit(
            current_principal(),
            actor_filter=request.user_id or None,
            action=request.action or None,
            resource=request.resource or None,
            since_ms=millis(request, "from"),
            until_ms=millis(request, "to"),
            page=page_request(request),
        )
        send_page_headers(context, page)
        return auth_pb2.ListAuditLogsResponse(
            logs=[_audit_log(e) for e in page.items], next_page_token=page.next_page_token
        )
