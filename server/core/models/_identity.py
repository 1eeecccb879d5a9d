"""The identity and access tables: organizations, users and their sessions,
signing keys, tokens, machine users, OAuth clients, policies and the
shared rate-limit meters."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ._base import Base

# Ids minted by the store are uuid4 hex (32 characters), like runs and leases.
# Credentials (PATs, machine-user tokens, OAuth client secrets, refresh tokens,
# authorization codes) are never stored: only the SHA-256 hex digest of the
# whole token (``auth.secrets_.digest_of``, 64 characters) and a non-secret
# ``hint`` for listings. There are no foreign keys, as in the rest of the
# schema: the "default" org has data before it has an ``organizations`` row.


class OrganizationRow(Base):
    """A tenant. Its ``id`` is the ``org_id`` every other table carries."""

    __tablename__ = "organizations"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # 'active' | 'suspended'
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class UserRow(Base):
    """A human account. ``roles`` is a set (a JSON list without duplicates).

    Deleting a user is soft (``deleted_at_ms``): the S2 surface hides deleted
    users, the S3 admin surface can restore them. The username stays taken
    while the row exists, so a restore can never collide and audit entries
    keep naming one person.
    """

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("org_id", "username"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(Text)  # Argon2id PHC string
    roles: Mapped[list[str]]
    enabled: Mapped[bool] = mapped_column(Boolean)
    # The TOTP shared secret must be readable to compute codes (it is an HMAC key,
    # not a verifier); the last accepted step blocks replays of a code.
    totp_secret: Mapped[str | None] = mapped_column(String(128))
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)
    last_login_ms: Mapped[int | None] = mapped_column(BigInteger)
    deleted_at_ms: Mapped[int | None] = mapped_column(BigInteger)


class SigningKeyRow(Base):
    """One JWT signing key (``auth.jwt_keys.SigningKey``); holds the PRIVATE key.

    Keys sign for the whole deployment (one issuer), so they carry no org_id.
    The partial unique index allows one ``active`` key at most: two replicas
    rotating at once cannot both win, the loser gets a conflict and reloads.
    """

    __tablename__ = "signing_keys"
    __table_args__ = (
        Index(
            "ix_signing_keys_one_active",
            "state",
            unique=True,
            sqlite_where=text("state = 'active'"),
            postgresql_where=text("state = 'active'"),
        ),
    )

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))  # 'active' | 'verifying' | 'retired'
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    rotated_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    private_pem: Mapped[str] = mapped_column(Text)


class SessionRow(Base):
    """A login that can be refreshed: the current refresh token's digest.

    Each refresh rotates the token; the old digest moves to
    ``retired_refresh_tokens``, so presenting it again is recognised as reuse
    (a stolen token) and revokes the session. ``client_id`` is the OAuth
    client the session was issued to (None for first-party logins);
    ``scopes`` what refreshed access tokens may carry; ``generation`` counts
    rotations.
    """

    __tablename__ = "sessions"
    __table_args__ = (
        UniqueConstraint("refresh_digest"),
        Index(None, "org_id", "user_id"),
        Index(None, "expires_at_ms"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(32))
    client_id: Mapped[str | None] = mapped_column(String(64))
    scopes: Mapped[list[str]]
    refresh_digest: Mapped[str] = mapped_column(String(64))
    generation: Mapped[int] = mapped_column(Integer)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    expires_at_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_at_ms: Mapped[int | None] = mapped_column(BigInteger)


class RetiredRefreshTokenRow(Base):
    """A refresh token that was rotated away; seeing it again means reuse.

    Kept until its session's expiry (copied into ``expires_at_ms``), after
    which the token is worthless anyway and the row is purged.
    """

    __tablename__ = "retired_refresh_tokens"
    __table_args__ = (Index(None, "expires_at_ms"),)

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(String(32))
    retired_at_ms: Mapped[int] = mapped_column(BigInteger)
    expires_at_ms: Mapped[int] = mapped_column(BigInteger)


class RevokedJtiRow(Base):
    """Access tokens (JWT ``jti``) revoked before their expiry, e.g. by logout."""

    __tablename__ = "revoked_jtis"
    __table_args__ = (Index(None, "expires_at_ms"),)

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    expires_at_ms: Mapped[int] = mapped_column(BigInteger)


class ApiTokenRow(Base):
    """A personal access token of one user, with the scopes picked at creation."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("digest"), Index(None, "org_id", "user_id"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64))
    hint: Mapped[str] = mapped_column(String(32))
    scopes: Mapped[list[str]]
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    expires_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_used_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    revoked_at_ms: Mapped[int | None] = mapped_column(BigInteger)


class MachineUserRow(Base):
    """A service account (S0 "machine user") authenticating with one opaque token."""

    __tablename__ = "machine_users"
    __table_args__ = (UniqueConstraint("org_id", "username"), UniqueConstraint("digest"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64))
    hint: Mapped[str] = mapped_column(String(32))
    enabled: Mapped[bool] = mapped_column(Boolean)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class MachineBackendRow(Base):
    """A callback endpoint a machine user registered (S0 register-backend).

    Unique per machine user and name: a service that registers itself at every
    start updates its one row instead of piling up duplicate callbacks.
    """

    __tablename__ = "machine_backends"
    __table_args__ = (UniqueConstraint("org_id", "machine_user_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    machine_user_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    callback_url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(Text)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class OAuthClientRow(Base):
    """An OAuth2 client; ``id`` is its client_id. Public clients have no secret."""

    __tablename__ = "oauth_clients"
    __table_args__ = (Index(None, "org_id", "created_at_ms"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    secret_digest: Mapped[str | None] = mapped_column(String(64))
    secret_hint: Mapped[str | None] = mapped_column(String(32))
    redirect_uris: Mapped[list[str]]
    grant_types: Mapped[list[str]]
    scopes: Mapped[list[str]]
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_at_ms: Mapped[int | None] = mapped_column(BigInteger)


class OAuthCodeRow(Base):
    """An authorization code, single use: ``used_at_ms`` is set when redeemed."""

    __tablename__ = "oauth_codes"
    __table_args__ = (Index(None, "expires_at_ms"),)

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(32))
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    scopes: Mapped[list[str]]
    # PKCE S256 challenge; None for a confidential client that sent none.
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    expires_at_ms: Mapped[int] = mapped_column(BigInteger)
    used_at_ms: Mapped[int | None] = mapped_column(BigInteger)


class PolicyRow(Base):
    """A named, versioned list of Allow/Deny rules (S2 ``/policies``).

    ``rules`` is a JSON list of ``{"effect", "actions", "resources",
    "subjects", "condition"}`` objects: S2 gives one policy several rules of
    different effects, and a canonical single-rule policy
    (``auth.policies.Policy``) is a policy with one rule.
    """

    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(64))
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class RateLimitBucketRow(Base):
    """One key's meter of a rate-limit bucket, which the replicas on one
    PostgreSQL share (``auth.shared_limits``; SQLite keeps meters in memory).
    Keys are client addresses or ``org/subject``: an address belongs to no
    organization, so the table has no ``org_id``. UNLOGGED on PostgreSQL (see
    migration 0005): a crash empties it."""

    __tablename__ = "rate_limit_buckets"

    bucket: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    level: Mapped[float] = mapped_column(Double)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)
