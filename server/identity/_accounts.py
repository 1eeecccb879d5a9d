"""Administration of personal access tokens and machine users."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from trellis.server.core.callback_urls import check_callback_url
from trellis.server.core.errors import InvalidArgument, NotFound
from trellis.server.identity import store
from trellis.server.identity._base import Base, role_scopes, user_id_of
from trellis.server.identity._paging import FIRST_PAGE, Listing, PageRequest, listing_scope
from trellis.server.identity.principal import PermissionDenied, Principal, PrincipalKind
from trellis.server.identity.scopes import Scope, parse_scope_string
from trellis.server.identity.secrets_ import TokenKind, new_token, parse

# A PAT's lifetime in days: tokens expire, by default after a month.
DEFAULT_PAT_DAYS: Final = 30
MAX_PAT_DAYS: Final = 366


@dataclass(frozen=True, slots=True)
class CreatedPat:
    """A new PAT; ``token`` is shown to its owner this once and never again."""

    token: str
    pat: store.Pat


@dataclass(frozen=True, slots=True)
class CreatedMachineUser:
    """A new machine user; ``token`` is shown this once and never again."""

    token: str
    machine_user: store.MachineUser


@dataclass(frozen=True, slots=True)
class RegisteredBackend:
    """A machine user's backend, and whether this registration created it."""

    backend: store.MachineBackend
    created: bool


@dataclass(frozen=True, slots=True)
class MachineValidation:
    """Seed 000 validate-machine-user's answer."""

    valid: bool
    org_id: str = ""
    machine_user_id: str = ""


def known_scopes(scopes: Iterable[str] | str) -> tuple[str, ...]:
    """Scopes from a list or a space-separated string; unknown ones are InvalidArgument."""
    text = scopes if isinstance(scopes, str) else " ".join(scopes)
    try:
        return parse_scope_string(text)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


class Accounts(Base):
    # ------------------------------------------------------------------ PATs

    def create_pat(
        self,
        actor: Principal,
        *,
        name: str,
        scopes: Iterable[str] | str | None = None,
        expires_in_days: int | None = None,
        expires_at_ms: int | None = None,
        user_id: str | None = None,
    ) -> CreatedPat:
        """A PAT for the caller (or, with admin:tokens, for ``user_id``).

        Without scopes it carries all of the calling credential's; scopes beyond
        what the owner's roles (and, for one's own token, the calling credential)
        grant are refused, not silently dropped. It expires after
        ``expires_in_days`` (1 to ``MAX_PAT_DAYS``, default ``DEFAULT_PAT_DAYS``)
        or at ``expires_at_ms``.
        """
        if expires_in_days is not None and expires_at_ms is not None:
            raise InvalidArgument("give expires_in_days or expires_at, not both")
        lifetime_ms = None
        if expires_at_ms is None:
            days = DEFAULT_PAT_DAYS if expires_in_days is None else expires_in_days
            if not 1 <= days <= MAX_PAT_DAYS:
                raise InvalidArgument(f"expires_in_days: between 1 and {MAX_PAT_DAYS}")
            lifetime_ms = days * 86_400_000
        own = user_id_of(actor)
        owner_id = user_id or own
        if owner_id is None:
            raise PermissionDenied("only users have personal access tokens")
        if owner_id != own:
            self.require(actor, Scope.ADMIN_TOKENS, "pat.create")
        if not name.strip():
            raise InvalidArgument("name must not be empty")
        wanted = known_scopes(sorted(actor.scopes) if scopes is None else scopes)
        if not wanted:
            raise InvalidArgument("a token needs at least one scope")
        token = new_token(TokenKind.PAT)
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            owner = store.get_user(conn, actor.org_id, owner_id)
            if owner is None:
                raise NotFound(f"user {owner_id!r} not found")
            allowed = role_scopes(owner.roles)
            if owner_id == own:
                allowed &= actor.scopes  # a narrow credential cannot mint a wider one
            excess = sorted(set(wanted) - allowed)
            if excess:
                raise InvalidArgument(f"scopes not available to this user: {' '.join(excess)}")
            until = expires_at_ms if lifetime_ms is None else now + lifetime_ms
            if until is not None and until <= now:
                raise InvalidArgument("expires_at must be in the future")
            pat = store.create_pat(
                conn,
                actor.org_id,
                owner_id,
                name=name,
                digest=token.digest,
                hint=token.hint,
                scopes=wanted,
                now_ms=now,
                expires_at_ms=until,
            )
            self.audit(
                conn,
                actor,
                "pat.create",
                "success",
                now,
                resource=f"pat:{pat.id}",
                detail={"owner": f"user:{owner_id}", "scopes": list(wanted)},
            )
        return CreatedPat(token.token, pat)

    def list_pats(
        self,
        actor: Principal,
        *,
        user_id: str | None = None,
        all_users: bool = False,
        page: PageRequest = FIRST_PAGE,
    ) -> Listing[store.Pat]:
        """The caller's PATs, newest first; another user's or everyone's need
        admin:tokens. Pages hold all of them (up to 1000) unless sized."""
        owner_id = None if all_users else (user_id or user_id_of(actor))
        if owner_id is None and not all_users:
            raise PermissionDenied("only users have personal access tokens")
        if all_users or owner_id != user_id_of(actor):
            self.require(actor, Scope.ADMIN_TOKENS, "pat.list")
        scope = listing_scope("pats", actor.org_id, owner_id)
        size = page.size(default=store.MAX_LIMIT)
        after = self.resume_after(page, scope)
        with self.db.read() as conn:
            rows = store.list_pats(
                conn, actor.org_id, user_id=owner_id, after=after, limit=size + 1
            )
        return self.keyset_listing(scope, rows, size, lambda p: (p.created_at_ms, p.id))

    def revoke_pat(self, actor: Principal, pat_id: str) -> None:
        """Revokes one of the caller's PATs (anyone's with admin:tokens)."""
        only_of = None if actor.allows(Scope.ADMIN_TOKENS) else user_id_of(actor)
        if only_of is None and not actor.allows(Scope.ADMIN_TOKENS):
            raise NotFound(f"token {pat_id!r} not found")
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            if not store.revoke_pat(conn, actor.org_id, pat_id, now_ms=now, user_id=only_of):
                raise NotFound(f"token {pat_id!r} not found")
            self.audit(conn, actor, "pat.revoke", "success", now, resource=f"pat:{pat_id}")
        self.cache.evict(lambda p: p.kind is PrincipalKind.PAT and p.credential_id == pat_id)

    # ------------------------------------------------------------------ machine users

    def create_machine_user(
        self, actor: Principal, *, username: str, name: str = "", enabled: bool = True
    ) -> CreatedMachineUser:
        self.require(actor, Scope.ADMIN_USERS, "machine_user.create")
        if not username.strip():
            raise InvalidArgument("username must not be empty")
        token = new_token(TokenKind.MACHINE_USER)
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            machine = store.create_machine_user(
                conn,
                actor.org_id,
                username=username,
                name=name or username,
                digest=token.digest,
                hint=token.hint,
                now_ms=now,
                enabled=enabled,
            )
            self.audit(
                conn,
                actor,
                "machine_user.create",
                "success",
                now,
                resource=f"machine:{machine.id}",
                detail={"username": username},
            )
        return CreatedMachineUser(token.token, machine)

    def list_machine_users(
        self, actor: Principal, *, page: PageRequest = FIRST_PAGE
    ) -> Listing[store.MachineUser]:
        """The org's machine users, oldest first; pages hold all of them (up to
        1000) unless sized."""
        self.require(actor, Scope.ADMIN_USERS, "machine_user.list")
        scope = listing_scope("machine_users", actor.org_id)
        size = page.size(default=store.MAX_LIMIT)
        after = self.resume_after(page, scope)
        with self.db.read() as conn:
            rows = store.list_machine_users(conn, actor.org_id, after=after, limit=size + 1)
        return self.keyset_listing(scope, rows, size, lambda m: (m.created_at_ms, m.id))

    def set_machine_user_enabled(
        self, actor: Principal, machine_user_id: str, enabled: bool
    ) -> store.MachineUser:
        self.require(actor, Scope.ADMIN_USERS, "machine_user.update")
        action = "machine_user.enable" if enabled else "machine_user.disable"
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            if not store.set_machine_user_enabled(
                conn, actor.org_id, machine_user_id, enabled, now_ms=now
            ):
                raise NotFound(f"machine user {machine_user_id!r} not found")
            machine = store.get_machine_user(conn, actor.org_id, machine_user_id)
            assert machine is not None
            self.audit(conn, actor, action, "success", now, resource=f"machine:{machine.id}")
        self.cache.evict(lambda p: p.subject == f"machine:{machine_user_id}")
        return machine

    def validate_machine_user(self, username: str, token: str) -> MachineValidation:
        """Seed 000 validate-machine-user: does ``token`` belong to enabled ``username``?"""
        if not username or not token:
            raise InvalidArgument("username and token are required")
        parsed = parse(token)
        if parsed is None or parsed.kind is not TokenKind.MACHINE_USER:
            return MachineValidation(False)
        with self.db.read() as conn:
            machine = store.get_machine_user_by_digest(conn, parsed.digest)
            org = None if machine is None else store.get_org(conn, machine.org_id)
        if machine is None or machine.username != username:
            return MachineValidation(False)
        if org is not None and org.status != "active":
            return MachineValidation(False)
        return MachineValidation(True, machine.org_id, machine.id)

    # Seed 000's name for it.
    validate = validate_machine_user

    def check_machine_user(self, principal: Principal) -> MachineValidation:
        """Seed 000 check: the calling machine user and its organization."""
        _machine_only(principal)
        return MachineValidation(True, principal.org_id, principal.credential_id)

    def register_backend(
        self,
        principal: Principal,
        name: str,
        callback_url: str,
        description: str = "",
        *,
        replace: bool = False,
    ) -> RegisteredBackend:
        """A machine user registers a callback. A name it has registered already
        is a ``Conflict`` unless ``replace``."""
        _machine_only(principal)
        if not name.strip():
            raise InvalidArgument("name must not be empty")
        check_callback_url(callback_url)
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            backend, created = store.register_backend(
                conn,
                principal.org_id,
                principal.credential_id,
                name=name,
                callback_url=callback_url,
                now_ms=now,
                description=description,
                replace=replace,
            )
            self.audit(
                conn,
                principal,
                "backend.register",
                "success",
                now,
                resource=f"backend:{backend.id}",
                detail={"name": name, "created": created},
            )
        return RegisteredBackend(backend, created)


def _machine_only(principal: Principal) -> None:
    if principal.kind is not PrincipalKind.MACHINE:
        raise PermissionDenied("this endpoint is for machine users", "forbidden")
