"""The engine's tables: workflows and their versions, runs, jobs and their
edges, label sets, leases, workers and log chunks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ._base import Base, BigId


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
    __table_args__ = (
        Index(None, "org_id", "workflow_id", "created_at_ms"),
        # A retried start finds its run by the caller's request id. Partial:
        # a start without one writes no index entry.
        Index(
            None,
            "org_id",
            "request_id",
            unique=True,
            sqlite_where=text("request_id IS NOT NULL"),
            postgresql_where=text("request_id IS NOT NULL"),
        ),
    )

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
    # The values the run was started with, defaults filled in; NULL: none.
    inputs: Mapped[dict[str, Any] | None]
    # The caller's id for the start, and a digest of what it asked for (the
    # workflow and the inputs given), so a reuse for another request is told
    # apart from a retry.
    request_id: Mapped[str | None] = mapped_column(String(200))
    request_digest: Mapped[str | None] = mapped_column(String(64))
    # Who started the run (``Principal.subject``; empty for a start by the
    # server itself) and how (``call``, or a topic, a schedule, a retry):
    # RUN_CREATED and RUN_FINISHED carry both.
    created_by: Mapped[str] = mapped_column(String(200), default="", server_default="")
    trigger: Mapped[str] = mapped_column(String(16), default="call", server_default="call")


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
