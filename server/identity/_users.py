"""Administration of users: their accounts, roles, passwords and two-factor sign-in."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from trellis.server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from trellis.server.identity import passwords, store, totp
from trellis.server.identity._base import Base, UserInfo, check_roles, user_id_of
from trellis.server.identity._paging import FIRST_PAGE, Listing, PageRequest, listing_scope
from trellis.server.identity.principal import Principal
from trellis.server.identity.scopes import Scope

# The roles of a user created without any: the least privileged one.
DEFAULT_ROLES: Final = ("viewer",)


class Users(Base):
    def create_user(
        self,
        actor: Principal,
        *,
        username: str,
        email: str,
        password: str,
        roles: Iterable[str] = (),
        enabled: bool = True,
    ) -> UserInfo:
        """A new user of the caller's organization (``DEFAULT_ROLES`` without roles)."""
        self.require(actor, Scope.ADMIN_USERS, "user.create")
        if not username.strip():
            raise InvalidArgument("username must not be empty")
        checked = check_roles(tuple(roles) or DEFAULT_ROLES)
        problem = passwords.check_strength(password)
        if problem is not None:
            raise InvalidArgument(problem)
        hashed = passwords.hash_password(password)
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            user = store.create_user(
                conn,
                actor.org_id,
                username=username,
                email=email,
                password_hash=hashed,
                now_ms=now,
                roles=checked,
                enabled=enabled,
            )
            self.audit(
                conn,
                actor,
                "user.create",
                "success",
                now,
                resource=f"user:{user.id}",
                detail={"username": username, "roles": list(checked)},
            )
        return UserInfo.of(user)

    def list_users(
        self,
        actor: Principal,
        *,
        role: str | None = None,
        enabled: bool | None = None,
        include_deleted: bool = False,
        page: PageRequest = FIRST_PAGE,
    ) -> Listing[UserInfo]:
        """The organization's users, oldest first, by token or by limit/offset."""
        self.require(actor, Scope.ADMIN_USERS, "user.list")
        scope = listing_scope("users", actor.org_id, role, enabled, include_deleted)
        with self.db.read() as conn:
            if page.by_token:
                size = page.size()
                rows = store.list_users_after(
                    conn,
                    actor.org_id,
                    role=role,
                    enabled=enabled,
                    include_deleted=include_deleted,
                    after=self.resume_after(page, scope),
                    limit=size + 1,
                )
                found = self.keyset_listing(scope, rows, size, _user_key)
                users = tuple(UserInfo.of(u) for u in found.items)
                return Listing(users, None, found.limit, 0, found.next_page_token)
            limit, offset = page.bounds()
            listed = store.list_users(
                conn,
                actor.org_id,
                role=role,
                enabled=enabled,
                include_deleted=include_deleted,
                limit=limit,
                offset=offset,
            )
        items = listed.items
        more = bool(items) and offset + len(items) < listed.total
        token = self.page_tokens().encode(scope, _user_key(items[-1])) if more else ""
        users = tuple(UserInfo.of(u) for u in items)
        return Listing(users, listed.total, limit, offset, token)

    def get_user(self, actor: Principal, user_id: str) -> UserInfo:
        # Anyone may read their own record; others' need admin:users.
        if user_id != user_id_of(actor):
            self.require(actor, Scope.ADMIN_USERS, "user.get")
        with self.db.read() as conn:
            user = store.get_user(conn, actor.org_id, user_id, include_deleted=True)
        if user is None:
            raise NotFound(f"user {user_id!r} not found")
        return UserInfo.of(user)

    def update_user(
        self,
        actor: Principal,
        user_id: str,
        *,
        email: str | None = None,
        roles: Iterable[str] | None = None,
        enabled: bool | None = None,
        password: str | None = None,
    ) -> UserInfo:
        """Changes the given fields. Disabling or a new password ends the user's sessions."""
        self.require(actor, Scope.ADMIN_USERS, "user.update")
        checked = None if roles is None else check_roles(roles)
        hashed = None
        if password is not None:
            problem = passwords.check_strength(password)
            if problem is not None:
                raise InvalidArgument(problem)
            hashed = passwords.hash_password(password)
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            user = store.update_user(
                conn, actor.org_id, user_id, now_ms=now, email=email, roles=checked, enabled=enabled
            )
            if user is None:
                raise NotFound(f"user {user_id!r} not found")
            if hashed is not None:
                store.set_password(conn, actor.org_id, user_id, hashed, now_ms=now)
                # A reset usually answers a compromise: nobody keeps a session through it.
                store.revoke_user_sessions(conn, actor.org_id, user_id, now_ms=now)
            changed = [
                k
                for k, v in (
                    ("email", email),
                    ("roles", checked),
                    ("enabled", enabled),
                    ("password", password),
                )
                if v is not None
            ]
            self.audit(
                conn,
                actor,
                "user.update",
                "success",
                now,
                resource=f"user:{user_id}",
                detail={"changed": changed},
            )
        self._forget_user(actor.org_id, user_id)
        return UserInfo.of(user)

    def delete_user(self, actor: Principal, user_id: str) -> None:
        """Soft delete: sessions end, PATs stop working, :meth:`restore_user` undoes it."""
        self.require(actor, Scope.ADMIN_USERS, "user.delete")
        if user_id == user_id_of(actor):
            raise FailedPrecondition("you cannot delete your own account")
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            if not store.delete_user(conn, actor.org_id, user_id, now_ms=now):
                raise NotFound(f"user {user_id!r} not found")
            self.audit(conn, actor, "user.delete", "success", now, resource=f"user:{user_id}")
        self._forget_user(actor.org_id, user_id)

    def restore_user(self, actor: Principal, user_id: str) -> UserInfo:
        self.require(actor, Scope.ADMIN_USERS, "user.restore")
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            user = store.restore_user(conn, actor.org_id, user_id, now_ms=now)
            if user is None:
                raise NotFound(f"no deleted user {user_id!r}")
            self.audit(conn, actor, "user.restore", "success", now, resource=f"user:{user_id}")
        return UserInfo.of(user)

    def set_totp(self, actor: Principal, user_id: str) -> str:
        """Enrols a new TOTP secret; returns the otpauth:// URI, shown this once."""
        if user_id != user_id_of(actor):
            self.require(actor, Scope.ADMIN_USERS, "user.totp.set")
        secret = totp.new_secret()
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            user = store.get_user(conn, actor.org_id, user_id)
            if user is None or not store.set_totp_secret(
                conn, actor.org_id, user_id, secret, now_ms=now
            ):
                raise NotFound(f"user {user_id!r} not found")
            self.audit(conn, actor, "user.totp.set", "success", now, resource=f"user:{user_id}")
        account = user.username.replace(":", "_")
        return totp.provisioning_uri(secret, account, self.totp_issuer.replace(":", "_"))

    def clear_totp(self, actor: Principal, user_id: str) -> None:
        self.require(actor, Scope.ADMIN_USERS, "user.totp.clear")
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            if not store.set_totp_secret(conn, actor.org_id, user_id, None, now_ms=now):
                raise NotFound(f"user {user_id!r} not found")
            self.audit(conn, actor, "user.totp.clear", "success", now, resource=f"user:{user_id}")

    def _forget_user(self, org_id: str, user_id: str) -> None:
        subject = f"user:{user_id}"
        self.cache.evict(lambda p: p.org_id == org_id and p.subject == subject)


def _user_key(user: store.User) -> tuple[int, str]:
    return user.created_at_ms, user.id
