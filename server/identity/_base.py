"""State shared by the identity service's parts: keys, the principal cache, audit."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from sqlalchemy import Connection

from trellis.server.core.audit import AuditResult, append_audit
from trellis.server.core.db import Database
from trellis.server.core.errors import FailedPrecondition, InvalidArgument
from trellis.server.core.pagination import KeyValue, PageTokens, page_token_key
from trellis.server.identity import store
from trellis.server.identity._paging import Listing, PageRequest
from trellis.server.identity.jwt_keys import KeyRing, KeyState, SigningKey, TokenIssuer
from trellis.server.identity.policies import Policy
from trellis.server.identity.principal import DEFAULT_ORG, PermissionDenied, Principal
from trellis.server.identity.scopes import ROLE_SCOPES, Role
from trellis.server.identity.store import Conflict

T = TypeVar("T")

# Positive authentication results are reused this long (seconds). Short enough that a
# role change or a revocation on another replica takes effect within it; revocations
# made through this instance evict at once.
DEFAULT_CACHE_SECS: Final = 5.0
# At most this many cached principals; a flood of distinct valid tokens just clears it.
_CACHE_MAX: Final = 10_000
# A token naming an unknown kid reloads the key ring at most this often, so junk
# tokens with random kids cannot turn every request into a database read.
KEY_RELOAD_MIN_SECS: Final = 5.0
# The ring is also reloaded when older than this, to pick up retirements by others.
_KEY_MAX_AGE_SECS: Final = 300.0
THIRTY_DAYS_SECS: Final = 30 * 24 * 3600

# Machine users' store records carry no scopes; they get the operator set (see the
# package docstring).
MACHINE_SCOPES: Final = ROLE_SCOPES[Role.OPERATOR.value]
# Org ids are uuid hex or names like "default": what X-Organization-ID can name. An
# org of another shape could not be reached by credentials that need the header.
_ORG_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def well_formed_org(org_id: str) -> bool:
    """Whether ``org_id`` has the shape of an organization id."""
    return bool(_ORG_ID.fullmatch(org_id))


def role_scopes(roles: Iterable[str]) -> frozenset[str]:
    """The scopes of ``roles``; unknown role names grant nothing (fail closed)."""
    out: set[str] = set()
    for role in roles:
        out |= ROLE_SCOPES.get(role, frozenset())
    return frozenset(out)


def check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    if isinstance(roles, str):
        raise InvalidArgument("roles must be a list of role names")
    out = tuple(dict.fromkeys(roles))
    for role in out:
        if role not in ROLE_SCOPES:
            raise InvalidArgument(f"unknown role {role!r} (known: {', '.join(ROLE_SCOPES)})")
    return out


def user_id_of(principal: Principal) -> str | None:
    """The user id of a principal acting as a user (login JWT or PAT)."""
    kind, _, ident = principal.subject.partition(":")
    return ident if kind == "user" and ident else None


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user as shown to callers: no password hash, no TOTP secret."""

    id: str
    org_id: str
    username: str
    email: str
    roles: tuple[str, ...]
    enabled: bool
    mfa_enabled: bool
    created_at_ms: int
    updated_at_ms: int
    last_login_ms: int | None
    deleted_at_ms: int | None

    @classmethod
    def of(cls, user: store.User) -> UserInfo:
        return cls(
            id=user.id,
            org_id=user.org_id,
            username=user.username,
            email=user.email,
            roles=user.roles,
            enabled=user.enabled,
            mfa_enabled=user.mfa_enabled,
            created_at_ms=user.created_at_ms,
            updated_at_ms=user.updated_at_ms,
            last_login_ms=user.last_login_ms,
            deleted_at_ms=user.deleted_at_ms,
        )


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    basic_username: str | None
    until: float  # time.monotonic()


class PrincipalCache:
    """Resolved principals by token digest, each kept a few seconds at most."""

    def __init__(self, ttl_secs: float) -> None:
        self._ttl = ttl_secs
        self._lock = threading.Lock()
        self._entries: dict[str, _Cached] = {}

    def get(self, digest: str, basic_username: str | None) -> Principal | None:
        if self._ttl <= 0:
            return None
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry.until <= time.monotonic():
                del self._entries[digest]
                return None
        # Basic auth names a username too: a cached Bearer result must not vouch for it.
        return entry.principal if entry.basic_username == basic_username else None

    def put(
        self, digest: str, basic_username: str | None, principal: Principal, valid_secs: float
    ) -> None:
        """Caches for the TTL, but never past ``valid_secs`` (the credential's expiry)."""
        secs = min(self._ttl, valid_secs)
        if secs <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._entries) >= _CACHE_MAX:
                self._entries = {k: v for k, v in self._entries.items() if v.until > now}
                if len(self._entries) >= _CACHE_MAX:
                    self._entries.clear()
            self._entries[digest] = _Cached(principal, basic_username, now + secs)

    def forget(self, digest: str) -> None:
        with self._lock:
            self._entries.pop(digest, None)

    def evict(self, matches: Callable[[Principal], bool]) -> None:
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if not matches(v.principal)}


class Base:
    """The shared state; the other parts are mixins over it."""

    def __init__(
        self,
        db: Database,
        *,
        issuer: str = "trellis",
        audience: str = "trellis",
        access_ttl_secs: int = 900,
        refresh_ttl_secs: int = THIRTY_DAYS_SECS,
        cache_secs: float = DEFAULT_CACHE_SECS,
        totp_issuer: str = "Trellis",
        key_reload_secs: float = KEY_RELOAD_MIN_SECS,
    ) -> None:
        if access_ttl_secs <= 0 or refresh_ttl_secs <= 0:
            raise ValueError("token lifetimes must be positive")
        self.db = db
        self.issuer = issuer
        self.audience = audience
        self.access_ttl_secs = access_ttl_secs
        self.refresh_ttl_secs = refresh_ttl_secs
        self.totp_issuer = totp_issuer
        self.key_reload_secs = key_reload_secs
        self.cache = PrincipalCache(cache_secs)
        self._keys_lock = threading.Lock()
        self._token_issuer: TokenIssuer | None = None
        self._ring: KeyRing | None = None
        self._keys_loaded_at = float("-inf")
        # org id -> (valid until, compiled policies); see Admin.check_policy.
        self.policy_lock = threading.Lock()
        self.policy_cache: dict[str, tuple[float, tuple[Policy, ...]]] = {}
        self._page_tokens: PageTokens | None = None

    # ------------------------------------------------------------------ keys

    def _install_ring(self, ring: KeyRing) -> TokenIssuer:
        issuer = TokenIssuer(ring, self.issuer, self.audience, self.access_ttl_secs)
        with self._keys_lock:
            self._ring, self._token_issuer = ring, issuer
            self._keys_loaded_at = time.monotonic()
        return issuer

    def _load_ring(self, conn: Connection) -> TokenIssuer:
        keys = store.load_signing_keys(conn)
        if not any(k.state is KeyState.ACTIVE for k in keys):
            raise FailedPrecondition("the identity service has no signing key; run bootstrap")
        return self._install_ring(KeyRing(keys))

    def _issuer(self, conn: Connection) -> TokenIssuer:
        with self._keys_lock:
            issuer, loaded_at = self._token_issuer, self._keys_loaded_at
        if issuer is None or time.monotonic() - loaded_at > _KEY_MAX_AGE_SECS:
            issuer = self._load_ring(conn)
        return issuer

    def _reload_ring_if_due(self, conn: Connection) -> TokenIssuer | None:
        """Reloads the ring (another replica may have rotated) unless done recently."""
        with self._keys_lock:
            if time.monotonic() - self._keys_loaded_at < self.key_reload_secs:
                return None
            # Claim the reload so concurrent callers do not all go to the database.
            self._keys_loaded_at = time.monotonic()
        return self._load_ring(conn)

    def ensure_signing_key(self, max_key_age_secs: float | None = None) -> None:
        """Loads the key ring, creating an active key when there is none (or when the
        active one is older than ``max_key_age_secs``: the old one keeps verifying
        until its tokens have expired) and retiring keys whose every token has
        expired. Safe when replicas race (one wins)."""
        for _ in range(3):
            with self.db.write() as conn:
                now = self.db.now_ms(conn) / 1000
                keys = store.load_signing_keys(conn)
                active = [k for k in keys if k.state is KeyState.ACTIVE]
                if active and max_key_age_secs is not None:
                    if all(now - k.created_at >= max_key_age_secs for k in active):
                        ring = KeyRing(keys)
                        new = ring.rotate(now=now)
                        store.save_signing_keys(conn, ring.keys)
                        self.audit(
                            conn,
                            None,
                            "keys.rotate",
                            "success",
                            int(now * 1000),
                            org_id=DEFAULT_ORG,
                            resource=f"key:{new.kid}",
                        )
                        keys = list(ring.keys)
                elif not active:
                    new = SigningKey.generate(now=now)
                    try:
                        store.save_signing_key(conn, new)
                    except Conflict:
                        continue  # another replica made one; read it in a new transaction
                    keys.append(new)
                ring = KeyRing(keys)
                # Refresh tokens are opaque, so only access tokens bound a key's usefulness.
                retired = ring.retire_stale(max_token_ttl_secs=self.access_ttl_secs, now=now)
                store.save_signing_keys(conn, [k for k in ring.keys if k.kid in retired])
            self._install_ring(ring)
            return
        raise FailedPrecondition("could not settle on a signing key; try again")

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public keys that verify access tokens (the JWKS document)."""
        with self.db.read() as conn:
            self._issuer(conn)
        with self._keys_lock:
            ring = self._ring
        if ring is None:
            raise FailedPrecondition("the identity service has no signing key; run bootstrap")
        return ring.jwks()

    def rotate_signing_key(self, actor: Principal | None = None) -> str:
        """Makes a new active key (the old one keeps verifying); returns its kid."""
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            ring = KeyRing(store.load_signing_keys(conn))
            new = ring.rotate(now=now / 1000)
            store.save_signing_keys(conn, ring.keys)
            self.audit(conn, actor, "keys.rotate", "success", now, resource=f"key:{new.kid}")
        self._install_ring(ring)
        return new.kid

    # ------------------------------------------------------------------ page tokens

    def page_tokens(self) -> PageTokens:
        """The installation's page-token signer (its key never changes, so it is kept)."""
        tokens = self._page_tokens
        if tokens is None:
            with self.db.write() as conn:
                tokens = PageTokens(page_token_key(conn, self.db.now_ms(conn)))
            self._page_tokens = tokens
        return tokens

    def resume_after(self, page: PageRequest, scope: str) -> tuple[KeyValue, ...] | None:
        """The sort key a token request resumes after; None for the first page."""
        return self.page_tokens().decode(scope, page.page_token) if page.page_token else None

    def keyset_listing(
        self, scope: str, rows: Sequence[T], size: int, key: Callable[[T], Sequence[KeyValue]]
    ) -> Listing[T]:
        """A page of ``size`` from ``rows`` (fetched with one row more than the
        page, which tells whether another page follows)."""
        items = tuple(rows[:size])
        more = len(rows) > size and bool(items)
        token = self.page_tokens().encode(scope, key(items[-1])) if more else ""
        return Listing(items, None, size, 0, token)

    # ------------------------------------------------------------------ audit, checks

    def audit(
        self,
        conn: Connection,
        actor: Principal | None,
        action: str,
        result: AuditResult,
        now_ms: int,
        *,
        org_id: str | None = None,
        resource: str = "",
        ip: str = "",
        actor_name: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        org = org_id or (actor.org_id if actor is not None else "")
        append_audit(
            conn,
            org,
            at_ms=now_ms,
            action=action,
            result=result,
            actor=actor.subject if actor is not None else actor_name,
            actor_kind=actor.kind.value if actor is not None else "",
            resource=resource,
            ip=ip,
            detail={"name": actor.name, **(detail or {})} if actor is not None else detail,
        )

    def audit_alone(
        self,
        actor: Principal | None,
        action: str,
        result: AuditResult,
        **kwargs: Any,
    ) -> None:
        """An audit event in a transaction of its own, for a refusal about to be raised
        (raising inside the caller's transaction would roll the event back)."""
        with self.db.write() as conn:
            self.audit(conn, actor, action, result, self.db.now_ms(conn), **kwargs)

    def require(self, actor: Principal, scope: str, action: str) -> None:
        """Defence in depth: the edges check each RPC's scope, the service checks again."""
        if not actor.allows(scope):
            self.audit_alone(actor, action, "denied", detail={"missing_scope": scope})
            raise PermissionDenied(f"this requires the {scope} scope")
