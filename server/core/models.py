"""The database schema, as typed SQLAlchemy models.

The declarative classes are the single place the schema is written down, and
Alembic's migrations are checked against them in tests. The engine queries the
tables through SQLAlchemy Core (``Model.__table__``), and on its hot paths
through the plain SQL of ``_sql`` (whose statements name these columns).

Times are integer epoch milliseconds taken from the database clock, so lease
expiry means the same thing on every replica. Every table carries ``org_id``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[str]: JSON}


class WorkflowRow(Base):
    """The current version of each workflow, with a pointer to its latest run."""

    __tablename__ = "workflows"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(64))
    definition: Mapped[dict[str, Any]]
    source: Mapped[str] = mapped_column(String(300))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)
    latest_run_id: Mapped[str | None] = mapped_column(String(32))


class WorkflowVersionRow(Base):
    """Every version a workflow has had; runs point at one."""

    __tablename__ = "workflow_versions"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    definition: Mapped[dict[str, Any]]
    created_at_ms: Mapped[int] = mapped_column(BigInteger)


class RunRow(Base):
    """One execution of one workflow version.

    ``unfinished_jobs`` counts jobs not yet terminal, so the run's end is known
    without scanning its jobs.
    """

    __tablename__ = "runs"
    __table_args__ = (Index(None, "org_id", "workflow_id", "created_at_ms"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    workflow_id: Mapped[str] = mapped_column(String(100))
    workflow_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    unfinished_jobs: Mapped[int] = mapped_column(Integer)
    failed_jobs: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    finished_at_ms: Mapped[int] = mapped_column(BigInteger, default=0)


class JobRow(Base):
    """One job of one run.

    ``pending_parents`` counts unfinished parents: a job becomes ``queued`` when
    it reaches zero. ``ready_at_ms`` holds retry backoff (``delayed_until``).
    ``attempt`` numbers the job's tries, a lost lease included; ``lost_leases``
    counts the tries whose lease expired unreported, which spend no retry.
    ``label_key`` is the sorted, comma-joined required labels, so matching a
    worker is an equality test against the label sets it covers.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("run_id", "key"),
        # The claim path: queued jobs of one org and label set, oldest first.
        Index(
            "ix_jobs_claimable",
            "org_id",
            "label_key",
            "id",
            sqlite_where=text("state = 'queued'"),
            postgresql_where=text("state = 'queued'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(String(32))
    workflow_id: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    command: Mapped[str] = mapped_column(Text)
    label_key: Mapped[str] = mapped_column(String(1000))
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lost_leases: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_retries: Mapped[int] = mapped_column(Integer)
    backoff: Mapped[dict[str, Any]]
    timeout_secs: Mapped[int] = mapped_column(Integer)
    env: Mapped[dict[str, Any]]
    parents: Mapped[list[str]]
    pending_parents: Mapped[int] = mapped_column(Integer)
    enqueued_at_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    ready_at_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    finished_at_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)


class JobEdgeRow(Base):
    """Parent -> child edges of a run's jobs, for set-based readiness updates."""

    __tablename__ = "job_edges"
    # Claims read a child's parents (for upstream outputs) by child.
    __table_args__ = (Index(None, "child_id"),)

    parent_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    child_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))


class LabelSetRow(Base):
    """Distinct label sets that jobs have required, per org (a small table)."""

    __tablename__ = "label_sets"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    label_key: Mapped[str] = mapped_column(String(1000), primary_key=True)


class LeaseRow(Base):
    """A worker's hold on one attempt of one job; its id is the fencing token.

    ``deadline_ms`` is the job's timeout: heartbeats never extend past it.
    ``state`` is how the attempt ended: ``completed``, ``failed``, ``expired``
    (lost: the worker stopped heartbeating), ``timed_out``, ``cancelled`` or
    ``released`` (handed back before it reached its worker); ``error`` says why
    it failed.
    """

    __tablename__ = "leases"
    __table_args__ = (
        Index(
            "ix_leases_active_expiry",
            "expires_at_ms",
            sqlite_where=text("state = 'active'"),
            postgresql_where=text("state = 'active'"),
        ),
        Index(None, "org_id", "worker_id", "state"),
        Index(None, "job_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[str] = mapped_column(String(32))
    workflow_id: Mapped[str] = mapped_column(String(100))
    job_key: Mapped[str] = mapped_column(String(100))
    worker_id: Mapped[str] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer)
    ttl_secs: Mapped[int] = mapped_column(Integer)
    granted_at_ms: Mapped[int] = mapped_column(BigInteger)
    expires_at_ms: Mapped[int] = mapped_column(BigInteger)
    deadline_ms: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    finished_at_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    # The principal (Principal.subject) the lease was granted to: only it
    # may heartbeat, report or log under it.
    owner: Mapped[str] = mapped_column(String(200), default="", server_default="")
    error: Mapped[str | None] = mapped_column(Text)


class WorkerRow(Base):
    """Workers seen by the server; busy/idle/offline is derived when read."""

    __tablename__ = "workers"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    labels: Mapped[list[str]]
    registered_at_ms: Mapped[int] = mapped_column(BigInteger)
    last_heartbeat_ms: Mapped[int] = mapped_column(BigInteger)
    # ``{"handlers": [...], "shell": bool}`` as the worker last said; null
    # (JSON or SQL) when it said nothing, which means it runs anything.
    capabilities: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class LogChunkRow(Base):
    """One chunk of a job attempt's output; ``id`` orders chunks for followers."""

    __tablename__ = "log_chunks"
    __table_args__ = (
        # A retried push of the same chunk is ignored, never duplicated.
        UniqueConstraint("job_id", "attempt", "stream", "sequence"),
        Index(None, "job_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(String(32))
    workflow_id: Mapped[str] = mapped_column(String(100))
    job_id: Mapped[int] = mapped_column(BigInteger)
    job_key: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer)
    stream: Mapped[str] = mapped_column(String(8))
    sequence: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[str] = mapped_column(Text)
    timestamp_ms: Mapped[int] = mapped_column(BigInteger)


class RunEventRow(Base):
    """What happened in a run, in order; followers resume by ``id``."""

    __tablename__ = "run_events"
    __table_args__ = (Index(None, "run_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(24))
    job_key: Mapped[str] = mapped_column(String(100), default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    time_ms: Mapped[int] = mapped_column(BigInteger)
    message: Mapped[str] = mapped_column(Text, default="")


def table(model: type[Base]) -> Table:
    """The Core table of a model, typed for query building."""
    t = model.__table__
    assert isinstance(t, Table)
    return t


# ---------------------------------------------------------------- identity and access
#
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


class AuditEventRow(Base):
    """Who did what to which resource, and how it ended; append-only."""

    __tablename__ = "audit_events"
    __table_args__ = (Index(None, "org_id", "at_ms"), Index(None, "org_id", "action"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(String(64))
    at_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(200))  # subject id, '' when anonymous
    actor_kind: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(100))
    resource: Mapped[str] = mapped_column(String(300))
    result: Mapped[str] = mapped_column(String(16))  # 'success' | 'failure' | 'denied'
    ip: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]]


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


class ServerSecretRow(Base):
    """Random keys the replicas of one database share, created on first use by
    whichever replica gets there first (e.g. the key that signs page tokens).
    Not per organization: they belong to the installation."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))  # base64url
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
