"""The event log's table: every state change of workflows, runs and jobs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ._base import Base, BigId


class EventRow(Base):
    """One event, appended in the transaction of the change it records.

    Readers order by ``(tx, id)``: ``tx`` is the writing transaction's id on
    PostgreSQL (0 on SQLite, whose single writer commits ids in order). Ids
    never go back: SQLite gives a new row the largest id plus one, and
    pruning never deletes the newest event (see ``trellis.server.events``).
    """

    __tablename__ = "events"
    __table_args__ = (
        Index(None, "org_id", "tx", "id"),
        Index(None, "run_id", "tx", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tx: Mapped[int] = mapped_column(BigInteger)
    org_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    workflow_id: Mapped[str] = mapped_column(String(100))
    workflow_version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(String(32))
    job_key: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer)
    time_ms: Mapped[int] = mapped_column(BigInteger)
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
