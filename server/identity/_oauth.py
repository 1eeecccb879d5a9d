"""OAuth2 (seed 003; RFC 6749, 7636, 7009, 7662): clients, token, authorize, revoke,
introspect.

Errors carry RFC 6749 codes in ``reason`` for the edge to render as
``{"error": reason, "error_description": message}``: :class:`InvalidClient` (401) for
failed client authentication, :class:`OAuthError` (400) for the rest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import urlencode, urlsplit

from sqlalchemy import Connection

from trellis.server.core.errors import InvalidArgument, NotFound
from trellis.server.identity import store
from trellis.server.identity._accounts import known_scopes
from trellis.server.identity._authn import Authn, looks_like_jwt
from trellis.server.identity._base import role_scopes, user_id_of
from trellis.server.identity._discovery import ServerMetadata, server_metadata
from trellis.server.identity._oauth_types import (
    AuthorizationGrant,
    CreatedClient,
    Introspection,
    InvalidClient,
    OAuthError,
    TokenGrant,
)
from trellis.server.identity._paging import FIRST_PAGE, Listing, PageRequest, listing_scope
from trellis.server.identity.jwt_keys import IssuedJwt
from trellis.server.identity.principal import (
    PermissionDenied,
    Principal,
    PrincipalKind,
)
from trellis.server.identity.scopes import ROLE_SCOPES, Role, Scope, narrow, scope_catalogue
from trellis.server.identity.secrets_ import TokenKind, new_token, parse

GRANT_TYPES: Final = frozenset({"client_credentials", "authorization_code"})
# RFC 6749 4.1.2 recommends at most ten minutes; one is plenty for a redirect.
CODE_TTL_MS: Final = 60_000
# RFC 7636 4.1: 43-128 characters of [A-Z a-z 0-9 - . _ ~].
_VERIFIER: Final = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_CHALLENGE: Final = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256, no padding


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _requested_scopes(scope: str | None) -> tuple[str, ...]:
    try:
        return known_scopes(scope or "")
    except InvalidArgument as exc:
        raise OAuthError("invalid_scope", str(exc)) from None


class OAuth(Authn):
    # ------------------------------------------------------------------ clients

    def create_client(
        self,
        actor: Principal,
        *,
        name: str,
        confidential: bool = True,
        redirect_uris: Iterable[str] = (),
        grant_types: Iterable[str] | None = None,
        scopes: Iterable[str] | None = None,
    ) -> CreatedClient:
        """Registers a client. Without grant types a confidential client gets
        client_credentials and a public one authorization_code; without scopes,
        what an operator may do (never administration), as far as the
        registering caller may do it too."""
        self.require(actor, Scope.ADMIN_TOKENS, "oauth_client.create")
        if grant_types is None:
            grant_types = ("client_credentials",) if confidential else ("authorization_code",)
        if scopes is None:
            scopes = sorted(ROLE_SCOPES[Role.OPERATOR.value] & actor.scopes)
        if not name.strip():
            raise InvalidArgument("name must not be empty")
        grants = tuple(dict.fromkeys(grant_types))
        unknown = sorted(set(grants) - GRANT_TYPES)
        if not grants or unknown:
            raise InvalidArgument(f"grant_types must be among {sorted(GRANT_TYPES)}")
        if not confidential and "client_credentials" in grants:
            raise InvalidArgument("a public client cannot use client_credentials")
        uris = tuple(dict.fromkeys(redirect_uris))
        for uri in uris:
            parts = urlsplit(uri)
            if not parts.scheme or not parts.netloc or parts.fragment:
                raise InvalidArgument(f"redirect URI {uri!r} must be absolute, without fragment")
        if "authorization_code" in grants and not uris:
            raise InvalidArgument("authorization_code needs at least one redirect URI")
        wanted = known_scopes(scopes)
        excess = sorted(set(wanted) - actor.scopes)
        if excess:  # nobody registers a client mightier than themselves
            raise InvalidArgument(f"scopes you do not hold: {' '.join(excess)}")
        secret = new_token(TokenKind.CLIENT_SECRET) if confidential else None
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            client = store.create_oauth_client(
                conn,
                actor.org_id,
                name=name,
                secret_digest=secret.digest if secret else None,
                secret_hint=secret.hint if secret else None,
                redirect_uris=uris,
                grant_types=grants,
                scopes=wanted,
                now_ms=now,
            )
            self.audit(
                conn,
                actor,
                "oauth_client.create",
                "success",
                now,
                resource=f"client:{client.id}",
                detail={"name": name},
            )
        return CreatedClient(client, secret.token if secret else None)

    def list_clients(
        self, actor: Principal, *, page: PageRequest = FIRST_PAGE
    ) -> Listing[store.OAuthClient]:
        """The org's clients, oldest first; pages hold all of them (up to 1000)
        unless sized."""
        self.require(actor, Scope.ADMIN_TOKENS, "oauth_client.list")
        scope = listing_scope("oauth_clients", actor.org_id)
        size = page.size(default=store.MAX_LIMIT)
        after = self.resume_after(page, scope)
        with self.db.read() as conn:
            rows = store.list_oauth_clients(conn, actor.org_id, after=after, limit=size + 1)
        return self.keyset_listing(scope, rows, size, lambda c: (c.created_at_ms, c.id))

    def revoke_client(self, actor: Principal, client_id: str) -> None:
        self.require(actor, Scope.ADMIN_TOKENS, "oauth_client.revoke")
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            if not store.revoke_oauth_client(conn, actor.org_id, client_id, now_ms=now):
                raise NotFound(f"client {client_id!r} not found")
            self.audit(
                conn, actor, "oauth_client.revoke", "success", now, resource=f"client:{client_id}"
            )
        self.cache.evict(
            lambda p: p.subject == f"client:{client_id}" or p.extra.get("client_id") == client_id
        )

    def _client(self, client_id: str | None, client_secret: str | None) -> store.OAuthClient:
        if not client_id:
            raise InvalidClient("client authentication failed")
        digest = None
        if client_secret:
            parsed = parse(client_secret)
            if parsed is None or parsed.kind is not TokenKind.CLIENT_SECRET:
                raise InvalidClient("client authentication failed")
            digest = parsed.digest
        with self.db.read() as conn:
            client = store.authenticate_oauth_client(conn, client_id, digest)
            org = None if client is None else store.get_org(conn, client.org_id)
        if client is None or (org is not None and org.status != "active"):
            raise InvalidClient("client authentication failed")
        return client

    # ------------------------------------------------------------------ token

    def token(
        self,
        grant_type: str | None,
        client_id: str | None,
        client_secret: str | None = None,
        scope: str | None = None,
        code: str | None = None,
        redirect_uri: str | None = None,
        code_verifier: str | None = None,
    ) -> TokenGrant:
        """The token endpoint: RFC 6749 5.1's answer, or an OAuthError."""
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type not in GRANT_TYPES:
            raise OAuthError("unsupported_grant_type", f"unsupported grant_type {grant_type!r}")
        client = self._client(client_id, client_secret)
        if grant_type not in client.grant_types:
            raise OAuthError("unauthorized_client", f"this client may not use {grant_type}")
        if grant_type == "client_credentials":
            return self._client_credentials(client, scope)
        return self._authorization_code(client, code, redirect_uri, code_verifier)

    def _client_credentials(self, client: store.OAuthClient, scope: str | None) -> TokenGrant:
        if client.is_public:
            raise OAuthError("unauthorized_client", "public clients cannot use this grant")
        granted = narrow(_requested_scopes(scope), client.scopes)
        if not granted:
            raise OAuthError("invalid_scope", "none of the requested scopes is allowed")
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            access = self._issue_to_client(
                conn,
                now,
                client,
                subject=f"client:{client.id}",
                org=client.org_id,
                scopes=sorted(granted),
                grant_type="client_credentials",
                token_type="client",
            )
        # Never a refresh token here (RFC 6749 4.4.3): the client can simply ask again.
        return TokenGrant(access.token, self.access_ttl_secs, " ".join(sorted(granted)))

    def _issue_to_client(
        self,
        conn: Connection,
        now: int,
        client: store.OAuthClient,
        *,
        subject: str,
        org: str,
        scopes: Sequence[str],
        grant_type: str,
        token_type: str = "access",
    ) -> IssuedJwt:
        """An access token for ``subject`` handed to ``client`` (``azp``), and
        its audit event, in the caller's transaction."""
        access = self._issuer(conn).issue(
            subject=subject,
            org=org,
            scopes=scopes,
            token_type=token_type,
            extra={"azp": client.id},
            now=now / 1000,
        )
        self.audit(
            conn,
            None,
            "oauth.token",
            "success",
            now,
            org_id=org,
            actor_name=f"client:{client.id}",
            resource=subject,
            detail={"grant_type": grant_type, "jti": access.jti},
        )
        return access

    def _authorization_code(
        self,
        client: store.OAuthClient,
        code: str | None,
        redirect_uri: str | None,
        verifier: str | None,
    ) -> TokenGrant:
        parsed = parse(code or "")
        if parsed is None or parsed.kind is not TokenKind.AUTH_CODE:
            raise OAuthError("invalid_grant", "invalid authorization code")
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            # Spent before any check: a code presented by the wrong party is burnt too.
            redemption = store.consume_oauth_code(conn, parsed.digest, now_ms=now)
            grant = redemption.code
            problem = self._code_problem(redemption.outcome, grant, client, redirect_uri, verifier)
            user = None if grant is None else store.get_user(conn, grant.org_id, grant.user_id)
            if problem is None and (user is None or not user.enabled):
                problem = "the authorizing user is no longer active"
            if problem is None and grant is not None and user is not None:
                scopes = sorted(frozenset(grant.scopes) & role_scopes(user.roles))
                access = self._issue_to_client(
                    conn,
                    now,
                    client,
                    subject=f"user:{user.id}",
                    org=grant.org_id,
                    scopes=scopes,
                    grant_type="authorization_code",
                )
        if problem is not None:
            self.audit_alone(
                None,
                "oauth.token",
                "failure",
                org_id=client.org_id,
                actor_name=f"client:{client.id}",
                resource=f"client:{client.id}",
                detail={"grant_type": "authorization_code", "reason": problem},
            )
            raise OAuthError("invalid_grant", problem)
        return TokenGrant(access.token, self.access_ttl_secs, " ".join(scopes))

    @staticmethod
    def _code_problem(
        outcome: str,
        grant: store.OAuthCode | None,
        client: store.OAuthClient,
        redirect_uri: str | None,
        verifier: str | None,
    ) -> str | None:
        if outcome != "redeemed" or grant is None:
            return "invalid authorization code"
        if grant.client_id != client.id:
            return "invalid authorization code"
        if redirect_uri != grant.redirect_uri:
            return "redirect_uri does not match the authorization request"
        if grant.code_challenge is not None:
            if not verifier or not _VERIFIER.fullmatch(verifier):
                return "invalid code_verifier"
            if not hmac.compare_digest(_s256(verifier), grant.code_challenge):
                return "invalid code_verifier"
        return None

    # ------------------------------------------------------------------ authorize

    def authorize(
        self,
        principal: Principal,
        client_id: str,
        redirect_uri: str | None,
        scope: str | None,
        state: str | None,
        code_challenge: str | None,
        code_challenge_method: str | None,
        response_type: str | None = None,
    ) -> AuthorizationGrant:
        """Issues an authorization code to ``client_id`` for the signed-in user
        (``response_type`` "code", the only one, when given).

        Errors about the client or redirect URI must be shown to the user, never
        redirected (RFC 6749 4.1.2.1); the edge may redirect the others with ``state``.
        """
        user_id = user_id_of(principal)
        if principal.kind is not PrincipalKind.USER or user_id is None:
            raise PermissionDenied("only a signed-in user can authorize a client", "forbidden")
        if response_type is not None and response_type != "code":
            raise InvalidArgument("response_type: only 'code' is supported")
        with self.db.read() as conn:
            client = store.find_oauth_client(conn, client_id)
        if client is None or client.org_id != principal.org_id:
            raise OAuthError("invalid_request", "unknown client_id")
        if redirect_uri is None and len(client.redirect_uris) == 1:
            redirect_uri = client.redirect_uris[0]
        if redirect_uri is None or redirect_uri not in client.redirect_uris:
            raise OAuthError("invalid_request", "redirect_uri is not registered for this client")
        if "authorization_code" not in client.grant_types:
            raise OAuthError("unauthorized_client", "this client may not use authorization_code")
        if code_challenge is None and client.is_public:
            raise OAuthError("invalid_request", "public clients must use PKCE (code_challenge)")
        if code_challenge is not None:
            if (code_challenge_method or "plain") != "S256":
                raise OAuthError("invalid_request", "code_challenge_method must be S256")
            if not _CHALLENGE.fullmatch(code_challenge):
                raise OAuthError("invalid_request", "malformed code_challenge")
        granted = narrow(_requested_scopes(scope), frozenset(client.scopes) & principal.scopes)
        if not granted:
            raise OAuthError("invalid_scope", "none of the requested scopes can be granted")
        code = new_token(TokenKind.AUTH_CODE)
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            store.create_oauth_code(
                conn,
                client.org_id,
                digest=code.digest,
                client_id=client.id,
                user_id=user_id,
                redirect_uri=redirect_uri,
                scopes=sorted(granted),
                code_challenge=code_challenge,
                expires_at_ms=now + CODE_TTL_MS,
                now_ms=now,
            )
            self.audit(
                conn,
                principal,
                "oauth.authorize",
                "success",
                now,
                resource=f"client:{client.id}",
                detail={"scopes": sorted(granted)},
            )
        query = {"code": code.token, **({"state": state} if state is not None else {})}
        separator = "&" if urlsplit(redirect_uri).query else "?"
        location = f"{redirect_uri}{separator}{urlencode(query)}"
        return AuthorizationGrant(code.token, redirect_uri, state, location)

    # ------------------------------------------------------------------ revoke, introspect

    def revoke_token(self, token: str, client_id: str | None, client_secret: str | None) -> None:
        """RFC 7009: revokes an access token issued to the authenticated client.

        Unknown, invalid or foreign tokens are not an error (the answer is 200 anyway).
        """
        if not token:
            raise InvalidArgument("token: required")
        client = self._client(client_id, client_secret)
        if not looks_like_jwt(token):
            return
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            claims = self.verify_jwt(conn, token, now)
            if claims is None or claims.raw.get("azp") != client.id:
                return
            store.revoke_jti(conn, claims.org, claims.jti, expires_at_ms=claims.expires_at * 1000)
            self.audit(
                conn,
                None,
                "oauth.revoke",
                "success",
                now,
                org_id=claims.org,
                actor_name=f"client:{client.id}",
                resource=claims.subject,
                detail={"jti": claims.jti},
            )
        self.forget(token)

    def server_metadata(self, public_url: str) -> ServerMetadata:
        """RFC 8414 metadata for this server, reached at ``public_url``."""
        return server_metadata(self.issuer, public_url)

    def list_scopes(
        self, caller: Principal, page: PageRequest = FIRST_PAGE
    ) -> Listing[tuple[str, str]]:
        """The ``(scope, description)`` pairs Trellis knows, in declaration
        order; a page holds all of them unless sized. Public: a client reads it
        before it has a token."""
        catalogue = scope_catalogue()
        scope = listing_scope("scopes")
        after = self.resume_after(page, scope)
        start = int(after[0]) + 1 if after else 0
        size = page.size(default=store.MAX_LIMIT)
        rows = [(i, entry) for i, entry in enumerate(catalogue)][start : start + size + 1]
        listed = self.keyset_listing(scope, rows, size, lambda row: (row[0],))
        return Listing(
            tuple(entry for _, entry in listed.items),
            None,
            listed.limit,
            0,
            listed.next_page_token,
        )

    def introspect(self, caller: Principal, token: str) -> Introspection:
        """RFC 7662: inactive for anything not currently usable, and for
        credentials of another organization than the caller's."""
        if not token:
            raise InvalidArgument("token: required")
        with self.db.read() as conn:
            now = self.db.now_ms(conn)
            resolved = self.resolve(conn, token, now)
        if resolved is None or resolved.principal.extra.get("org_status") == "suspended":
            return Introspection(active=False)
        principal = resolved.principal
        if principal.org_id != caller.org_id:
            # Nothing about another organization's credentials.
            return Introspection(active=False)
        expires = resolved.expires_at_ms
        return Introspection(
            active=True,
            scope=" ".join(sorted(principal.scopes)),
            sub=principal.subject,
            username=principal.name,
            token_type=principal.kind.value,
            client_id=principal.extra.get("client_id") or None,
            exp=None if expires is None else expires // 1000,
        )
