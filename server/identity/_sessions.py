"""Bootstrap, and the first-party login session: login, refresh, logout."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import Connection

from trellis.server.core.errors import InvalidArgument
from trellis.server.identity import passwords, store, totp
from trellis.server.identity._authn import Authn, invalid, looks_like_jwt
from trellis.server.identity._base import UserInfo, role_scopes, well_formed_org
from trellis.server.identity.jwt_keys import InvalidToken
from trellis.server.identity.principal import (
    DEFAULT_ORG,
    AuthError,
    MissingOrganization,
    PermissionDenied,
    Principal,
    PrincipalKind,
    Unauthenticated,
)
from trellis.server.identity.scopes import Role
from trellis.server.identity.secrets_ import TokenKind, new_token, parse
from trellis.server.identity.store import Conflict


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A login's or refresh's answer. ``refresh_token`` is None when a refresh was made
    with an access token: the session's refresh token then stays what it was."""

    access_token: str
    expires_at_ms: int
    refresh_token: str | None
    user: UserInfo
    session_id: str


_BAD_LOGIN = "invalid username or password"


class Sessions(Authn):
    # ------------------------------------------------------------------ bootstrap

    def bootstrap(
        self,
        admin_username: str | None = None,
        admin_password: str | None = None,
        *,
        max_key_age_secs: float | None = None,
    ) -> str | None:
        """Ensures the default org, a signing key (a new one when the active key
        is older than ``max_key_age_secs``), and a first admin user.

        Returns the admin's generated password when one was made (print it once), else
        None. Idempotent; of replicas starting together one creates the admin.
        """
        self.ensure_signing_key(max_key_age_secs)
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            if store.get_org(conn, DEFAULT_ORG) is None:
                try:
                    store.create_org(conn, name=DEFAULT_ORG, org_id=DEFAULT_ORG, now_ms=now)
                except Conflict:
                    pass  # another replica made it
                else:
                    self.audit(
                        conn,
                        None,
                        "org.create",
                        "success",
                        now,
                        org_id=DEFAULT_ORG,
                        resource=f"org:{DEFAULT_ORG}",
                        actor_name="bootstrap",
                    )
            has_users = store.list_users(conn, DEFAULT_ORG, include_deleted=True, limit=1).total
        if has_users:
            return None
        generated = admin_password is None
        password = secrets.token_urlsafe(18) if admin_password is None else admin_password
        problem = passwords.check_strength(password)
        if problem is not None:
            raise ValueError(f"bootstrap admin password: {problem}")
        username = admin_username or "admin"
        hashed = passwords.hash_password(password)  # slow: outside the transaction
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            if store.list_users(conn, DEFAULT_ORG, include_deleted=True, limit=1).total:
                return None
            try:
                user = store.create_user(
                    conn,
                    DEFAULT_ORG,
                    username=username,
                    email="",
                    password_hash=hashed,
                    now_ms=now,
                    roles=[Role.ADMIN.value],
                )
            except Conflict:
                return None  # another replica created the admin first
            self.audit(
                conn,
                None,
                "user.create",
                "success",
                now,
                org_id=DEFAULT_ORG,
                resource=f"user:{user.id}",
                actor_name="bootstrap",
            )
        return password if generated else None

    # ------------------------------------------------------------------ login

    def login(
        self,
        username: str,
        password: str,
        mfa_code: str | None = None,
        org_id: str = DEFAULT_ORG,
        ip: str = "",
    ) -> LoginResult:
        """Password (and TOTP, when enrolled) login; opens a refreshable session."""
        if not well_formed_org(org_id):
            # No such org can exist, and its id would not fit the audit log either.
            raise MissingOrganization("the X-Organization-ID header is malformed")
        with self.db.read() as conn:
            user = store.get_user_by_username(conn, org_id, username)
            org = store.get_org(conn, org_id)
        # Argon2 runs outside any transaction: it must not hold SQLite's write lock.
        if user is None:
            passwords.dummy_verify(password)
            raise self._login_failed(org_id, username, ip, "invalid_credentials", _BAD_LOGIN)
        if not passwords.verify_password(user.password_hash, password):
            raise self._login_failed(org_id, username, ip, "invalid_credentials", _BAD_LOGIN, user)
        # Reported only to someone who knows the password.
        if not user.enabled:
            raise self._login_failed(
                org_id, username, ip, "account_disabled", "this account is disabled", user
            )
        if org is not None and org.status != "active":
            raise self._login_failed(
                org_id,
                username,
                ip,
                "organization_suspended",
                f"organization {org_id!r} is suspended",
                user,
                denied=True,
            )
        step: int | None = None
        if user.totp_secret is not None:
            code = (mfa_code or "").replace(" ", "")
            if not code:
                raise self._login_failed(
                    org_id, username, ip, "mfa_required", "a one-time code is required", user
                )
            with self.db.read() as conn:
                now_s = self.db.now_ms(conn) / 1000
            step = totp.verify(user.totp_secret, code, now_s, user.totp_last_step)
            if step is None:
                raise self._login_failed(
                    org_id, username, ip, "invalid_mfa_code", "invalid one-time code", user
                )
        rehash = (
            passwords.hash_password(password)
            if passwords.needs_rehash(user.password_hash)
            else None
        )
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            # Atomic: of two logins with the same code only one gets past this.
            replayed = step is not None and not store.record_totp_step(conn, org_id, user.id, step)
            if not replayed:
                store.record_login(conn, org_id, user.id, now_ms=now, password_hash=rehash)
                result = self._open_session(conn, user, now)
                self.audit(
                    conn,
                    None,
                    "auth.login",
                    "success",
                    now,
                    org_id=org_id,
                    ip=ip,
                    resource=f"user:{user.id}",
                    actor_name=f"user:{user.id}",
                    detail={"username": username, "session_id": result.session_id},
                )
        if replayed:
            raise self._login_failed(
                org_id, username, ip, "invalid_mfa_code", "invalid one-time code", user
            )
        self.cache.evict(lambda p: p.subject == f"user:{user.id}")  # fresh state on next call
        return result

    def _login_failed(
        self,
        org_id: str,
        username: str,
        ip: str,
        reason: str,
        message: str,
        user: store.User | None = None,
        *,
        denied: bool = False,
    ) -> AuthError:
        self.audit_alone(
            None,
            "auth.login",
            "denied" if denied else "failure",
            org_id=org_id,
            ip=ip,
            resource=f"user:{user.id}" if user else "",
            actor_name=username,
            detail={"username": username, "reason": reason},
        )
        if denied:
            return PermissionDenied(message, reason)
        return Unauthenticated(message, reason)

    def _open_session(self, conn: Connection, user: store.User, now: int) -> LoginResult:
        refresh = new_token(TokenKind.REFRESH)
        scopes = sorted(role_scopes(user.roles))
        session = store.create_session(
            conn,
            user.org_id,
            user.id,
            refresh_digest=refresh.digest,
            expires_at_ms=now + self.refresh_ttl_secs * 1000,
            now_ms=now,
            scopes=scopes,
        )
        access = self._issuer(conn).issue(
            subject=f"user:{user.id}",
            org=user.org_id,
            scopes=scopes,
            session_id=session.id,
            now=now / 1000,
        )
        return LoginResult(
            access.token, access.expires_at * 1000, refresh.token, UserInfo.of(user), session.id
        )

    # ------------------------------------------------------------------ refresh

    def refresh(self, token: str, ip: str = "") -> LoginResult:
        """Exchanges a refresh token, or the current access token of a live session, for
        new tokens; the presented one is retired. Presenting a retired one again is
        taken as theft and revokes the whole session."""
        if not token:
            raise InvalidArgument("token: required")
        if looks_like_jwt(token):
            return self._refresh_with_jwt(token, ip)
        parsed = parse(token)
        if parsed is None or parsed.kind is not TokenKind.REFRESH:
            raise invalid()
        new = new_token(TokenKind.REFRESH)
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            rotation = store.rotate_refresh(conn, parsed.digest, new.digest, now_ms=now)
            session = rotation.session
            user = None
            if rotation.outcome == "rotated" and session is not None:
                user = store.get_user(conn, session.org_id, session.user_id)
                if user is not None and user.enabled:
                    access = self._reissue(conn, user, session.id, now, ip)
                    return LoginResult(
                        access[0], access[1], new.token, UserInfo.of(user), session.id
                    )
                store.revoke_session(conn, session.org_id, session.id, now_ms=now)
        if rotation.outcome == "reused" and session is not None:
            self._refresh_reused(session.org_id, session.id, session.user_id, ip)
        raise invalid()

    def _refresh_with_jwt(self, token: str, ip: str) -> LoginResult:
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            issuer = self._issuer(conn)
            # Not verify_jwt: a denylisted jti here is a reuse to detect, not just a refusal.
            try:
                claims = issuer.verify(token, now=now / 1000)
            except InvalidToken:
                claims = None
            kind, _, user_id = claims.subject.partition(":") if claims else ("", "", "")
            if claims is None or kind != "user" or claims.session_id is None:
                raise invalid()
            session = store.get_session(conn, claims.org, claims.session_id)
            if session is None or not session.is_live(now):
                raise invalid()
            first = store.claim_jti(
                conn, claims.org, claims.jti, expires_at_ms=claims.expires_at * 1000
            )
            user = store.get_user(conn, claims.org, user_id)
            if first and user is not None and user.enabled:
                access = self._reissue(conn, user, session.id, now, ip)
        self.forget(token)
        if first and user is not None and user.enabled:
            return LoginResult(access[0], access[1], None, UserInfo.of(user), session.id)
        if not first:
            self._refresh_reused(claims.org, session.id, user_id, ip)
        raise invalid()

    def _reissue(
        self, conn: Connection, user: store.User, session_id: str, now: int, ip: str
    ) -> tuple[str, int]:
        """A new access token for a session being refreshed, and its audit event."""
        # The user's current roles, not the ones at login: a demotion sticks.
        access = self._issuer(conn).issue(
            subject=f"user:{user.id}",
            org=user.org_id,
            scopes=sorted(role_scopes(user.roles)),
            session_id=session_id,
            now=now / 1000,
        )
        self.audit(
            conn,
            None,
            "auth.refresh",
            "success",
            now,
            org_id=user.org_id,
            ip=ip,
            resource=f"user:{user.id}",
            actor_name=f"user:{user.id}",
            detail={"session_id": session_id},
        )
        return access.token, access.expires_at * 1000

    def _refresh_reused(self, org_id: str, session_id: str, user_id: str, ip: str) -> None:
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            store.revoke_session(conn, org_id, session_id, now_ms=now)
            self.audit(
                conn,
                None,
                "auth.refresh",
                "denied",
                now,
                org_id=org_id,
                ip=ip,
                resource=f"user:{user_id}",
                actor_name=f"user:{user_id}",
                detail={"session_id": session_id, "reason": "token_reuse"},
            )
        self.cache.evict(lambda p: p.session_id == session_id)
        raise Unauthenticated("token reuse detected; the session was revoked", "token_reused")

    # ------------------------------------------------------------------ logout

    def logout(self, principal: Principal, ip: str = "") -> None:
        """Revokes the caller's session (login JWTs) and access token."""
        if principal.kind not in (PrincipalKind.USER, PrincipalKind.CLIENT):
            raise PermissionDenied("only access tokens can be logged out; revoke the token")
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            if principal.session_id:
                store.revoke_session(conn, principal.org_id, principal.session_id, now_ms=now)
            if principal.credential_id:
                expires = principal.extra.get("expires_at_ms")
                until = int(expires) if expires else now + self.access_ttl_secs * 1000
                store.revoke_jti(
                    conn, principal.org_id, principal.credential_id, expires_at_ms=until
                )
            self.audit(
                conn,
                principal,
                "auth.logout",
                "success",
                now,
                ip=ip,
                resource=principal.subject,
                detail={"session_id": principal.session_id},
            )
        self.cache.evict(
            lambda p: (
                p.credential_id == principal.credential_id
                or (bool(principal.session_id) and p.session_id == principal.session_id)
            )
        )
