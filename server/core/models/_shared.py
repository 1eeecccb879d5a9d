"""Tables of the installation as a whole: the audit log every layer writes to,
and the secrets the replicas share."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Index,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from ._base import Base, BigId


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


class ServerSecretRow(Base):
    """Random keys the replicas of one database share, created on first use by
    whichever replica gets there first (e.g. the key that signs page tokens).
    Not per organization: they belong to the installation."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))  # base64url
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
