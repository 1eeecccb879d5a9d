"""Resolving the credential of a call into a Principal (every RPC goes through here)."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from sqlalchemy import Connection

from trellis.server.identity import store
from trellis.server.identity._base import MACHINE_SCOPES, Base, role_scopes, well_formed_org
from trellis.server.identity.jwt_keys import Claims, InvalidToken
from trellis.server.identity.principal import (
    MissingOrganization,
    PermissionDenied,
    Principal,
    PrincipalKind,
    Unauthenticated,
)
from trellis.server.identity.secrets_ import TokenKind, basic_credentials, digest_of, parse
from trellis.server.identity.store import TOUCH_INTERVAL_MS

_BAD_TOKEN: Final = "missing or invalid token"
_MAX_HEADER: Final = 8192


def invalid() -> Unauthenticated:
    # One message for every failed check, so callers cannot probe which one failed.
    return Unauthenticated(_BAD_TOKEN)


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


@dataclass(frozen=True, slots=True)
class Resolved:
    principal: Principal
    expires_at_ms: int | None  # None: the credential does not expire by itself
    pat: store.Pat | None = None


def _parse_authorization(authorization: str | None) -> tuple[str, str | None]:
    """(token, username for Basic auth) or Unauthenticated."""
    if not authorization or len(authorization) > _MAX_HEADER:
        raise invalid()
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if not value:
        raise invalid()
    if scheme.lower() == "bearer":
        return value, None
    if scheme.lower() == "basic":
        # Seed 000: machine users may send base64(username:token).
        pair = basic_credentials(authorization)
        if pair is None or not pair[0] or not pair[1]:
            raise invalid()
        username, token = pair
        return token, username
    raise invalid()


class Authn(Base):
    def authenticate(self, authorization: str | None, org_header: str | None) -> Principal:
        """The principal of a call, from its ``authorization`` and ``x-organization-id``.

        Raises Unauthenticated (bad credential), MissingOrganization (a PAT without a
        well-formed org header) or PermissionDenied (org header names another org, or
        the org is suspended).
        """
        token, basic_username = _parse_authorization(authorization)
        digest = digest_of(token)
        principal = self.cache.get(digest, basic_username)
        if principal is None:
            resolved, now_ms = self._resolve_presented(token, basic_username)
            principal = resolved.principal
            if resolved.pat is not None:
                self._touch_pat(resolved.pat, now_ms)
            valid_secs = (
                float("inf")
                if resolved.expires_at_ms is None
                else (resolved.expires_at_ms - now_ms) / 1000
            )
            self.cache.put(digest, basic_username, principal, valid_secs)
        return _select_org(principal, org_header)

    def forget(self, token: str) -> None:
        """Drops a token's cached principal (after revoking it locally)."""
        self.cache.forget(digest_of(token))

    def _resolve_presented(self, token: str, basic_username: str | None) -> tuple[Resolved, int]:
        if basic_username is not None:
            parsed = parse(token)
            if parsed is None or parsed.kind is not TokenKind.MACHINE_USER:
                raise invalid()
        with self.db.read() as conn:
            now_ms = self.db.now_ms(conn)
            resolved = self.resolve(conn, token, now_ms)
        if resolved is None:
            raise invalid()
        if basic_username is not None and resolved.principal.name != basic_username:
            raise invalid()
        org = resolved.principal.org_id
        if resolved.principal.extra.get("org_status") == "suspended":
            raise PermissionDenied(f"organization {org!r} is suspended", "organization_suspended")
        return resolved, now_ms

    def resolve(self, conn: Connection, token: str, now_ms: int) -> Resolved | None:
        """The principal behind a token, or None when it is not (or no longer) valid.

        The org's status is reported in ``extra["org_status"]``, not enforced, so that
        introspection can share this.
        """
        if looks_like_jwt(token):
            claims = self.verify_jwt(conn, token, now_ms)
            return None if claims is None else self._resolve_jwt(conn, claims, now_ms)
        parsed = parse(token)
        if parsed is None:
            return None
        if parsed.kind is TokenKind.PAT:
            return self._resolve_pat(conn, parsed.digest, now_ms)
        if parsed.kind is TokenKind.MACHINE_USER:
            return self._resolve_machine(conn, parsed.digest)
        return None  # refresh tokens, codes and client secrets are not bearer credentials

    def verify_jwt(
        self, conn: Connection, token: str, now_ms: int, *, leeway_ok: bool = True
    ) -> Claims | None:
        issuer = self._issuer(conn)
        try:
            claims = issuer.verify(token, now=now_ms / 1000)
        except InvalidToken as exc:
            if exc.reason != "unknown signing key":
                return None
            reloaded = self._reload_ring_if_due(conn)
            if reloaded is None:
                return None
            try:
                claims = reloaded.verify(token, now=now_ms / 1000)
            except InvalidToken:
                return None
        if not leeway_ok and claims.expires_at * 1000 <= now_ms:
            return None
        if store.is_jti_revoked(conn, claims.jti):
            return None
        return claims

    def _org_status(self, conn: Connection, org_id: str) -> str:
        org = store.get_org(conn, org_id)
        # No row: data of the default org may predate its row (see models); treat as active.
        return "active" if org is None else org.status

    def _resolve_jwt(self, conn: Connection, claims: Claims, now_ms: int) -> Resolved | None:
        kind, _, ident = claims.subject.partition(":")
        status = self._org_status(conn, claims.org)
        extra = {"org_status": status, "expires_at_ms": str(claims.expires_at * 1000)}
        client_id = claims.raw.get("azp")
        if isinstance(client_id, str):
            extra["client_id"] = client_id
        if kind == "user":
            user = store.get_user(conn, claims.org, ident)
            if user is None or not user.enabled:
                return None
            if claims.session_id is not None:
                session = store.get_session(conn, claims.org, claims.session_id)
                if session is None or not session.is_live(now_ms):
                    return None
            # Roles may have shrunk since the token was issued.
            scopes = frozenset(claims.scopes) & role_scopes(user.roles)
            principal = Principal(
                org_id=claims.org,
                subject=claims.subject,
                kind=PrincipalKind.USER,
                scopes=scopes,
                name=user.username,
                roles=user.roles,
                credential_id=claims.jti,
                session_id=claims.session_id or "",
                extra=MappingProxyType(extra),
            )
        elif kind == "client":
            client = store.get_oauth_client(conn, claims.org, ident)
            if client is None:
                return None
            principal = Principal(
                org_id=claims.org,
                subject=claims.subject,
                kind=PrincipalKind.CLIENT,
                scopes=frozenset(claims.scopes) & frozenset(client.scopes),
                name=client.name,
                credential_id=claims.jti,
                extra=MappingProxyType(extra),
            )
        else:
            return None
        return Resolved(principal, claims.expires_at * 1000)

    def _resolve_pat(self, conn: Connection, digest: str, now_ms: int) -> Resolved | None:
        pat = store.get_pat_by_digest(conn, digest, now_ms=now_ms)
        if pat is None:
            return None
        user = store.get_user(conn, pat.org_id, pat.user_id)
        if user is None or not user.enabled:
            return None
        principal = Principal(
            org_id=pat.org_id,
            subject=f"user:{user.id}",
            kind=PrincipalKind.PAT,
            # The PAT inherits its user's access as it is now, not as it was at creation.
            scopes=frozenset(pat.scopes) & role_scopes(user.roles),
            name=user.username,
            roles=user.roles,
            credential_id=pat.id,
            extra=MappingProxyType({"org_status": self._org_status(conn, pat.org_id)}),
        )
        return Resolved(principal, pat.expires_at_ms, pat)

    def _resolve_machine(self, conn: Connection, digest: str) -> Resolved | None:
        machine = store.get_machine_user_by_digest(conn, digest)
        if machine is None:
            return None
        principal = Principal(
            org_id=machine.org_id,
            subject=f"machine:{machine.id}",
            kind=PrincipalKind.MACHINE,
            scopes=MACHINE_SCOPES,
            name=machine.username,
            credential_id=machine.id,
            extra=MappingProxyType({"org_status": self._org_status(conn, machine.org_id)}),
        )
        return Resolved(principal, None)

    def _touch_pat(self, pat: store.Pat, now_ms: int) -> None:
        # A write per request would make every PAT call a write transaction; the cache
        # and the interval keep it to about one a minute per token.
        if pat.last_used_at_ms is not None and now_ms - pat.last_used_at_ms < TOUCH_INTERVAL_MS:
            return
        with self.db.write() as conn:
            store.touch_pat(conn, pat.id, now_ms=self.db.now_ms(conn))


def _select_org(principal: Principal, org_header: str | None) -> Principal:
    """Applies ``X-Organization-ID``: it selects the credential's org, never grants one."""
    header = (org_header or "").strip()
    well_formed = well_formed_org(header)
    if principal.kind is PrincipalKind.PAT and not well_formed:
        raise MissingOrganization(
            "Personal Access Token requests require the X-Organization-ID header"
        )
    if header and not well_formed:
        raise MissingOrganization("the X-Organization-ID header is malformed")
    if header and header != principal.org_id:
        raise PermissionDenied(
            f"the caller is not a member of organization {header!r}",
            reason="organization_mismatch",
        )
    return principal
