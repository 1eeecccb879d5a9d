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


class WorkerRow(Base):
    """Workers seen by the server; busy/idle/offline is derived when read."""

    __tablename__ = "workers"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    labels: Mapped[list[str]]
    registered_at_ms: Mapped[int] = mapped_column(BigInteger)
    last_heartbeat_ms: Mapped[int] = mapped_column(BigInteger)


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
