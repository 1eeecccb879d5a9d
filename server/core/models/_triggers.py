"""The tables of topics and triggers: topics and their records, and the two
indexes of the workflows' `on:` that a definition's store rebuilds (topic
patterns by literal prefix, and schedules with their next fire)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ._base import Base, BigId


class TopicRow(Base):
    """A topic of the hierarchy; a publish creates it and its parents."""

    __tablename__ = "topics"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(512), primary_key=True)
    # "" at the top of the hierarchy.
    parent: Mapped[str] = mapped_column(String(512))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    # 0: nothing was published to it (a parent only).
    last_published_at_ms: Mapped[int] = mapped_column(BigInteger, default=0)


class TopicRecordRow(Base):
    """One value published to a topic."""

    __tablename__ = "topic_records"
    __table_args__ = (Index(None, "org_id", "topic", "published_at_ms", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(String(64))
    topic: Mapped[str] = mapped_column(String(512))
    # Any JSON value, a bare number or string too.
    value: Mapped[Any] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(200), default="")
    published_at_ms: Mapped[int] = mapped_column(BigInteger)


class TopicTriggerRow(Base):
    """A topic pattern of a workflow's current version, keyed by the levels
    before its first wildcard: a publish looks up the prefixes of its topic
    instead of reading every workflow."""

    __tablename__ = "topic_triggers"
    __table_args__ = (Index(None, "org_id", "prefix"),)

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    # The trigger's place among the workflow's triggers.
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    pattern: Mapped[str] = mapped_column(String(512))
    prefix: Mapped[str] = mapped_column(String(512))
    # Without wildcards: the pattern is the prefix and matches that topic only.
    exact: Mapped[bool] = mapped_column(Boolean)


class ScheduleRow(Base):
    """A cron schedule of a workflow's current version and its next fire.

    Replicas claim a due fire by moving ``next_fire_ms`` on with a
    compare-and-set, so each fire is claimed once whichever replica sees it.
    """

    __tablename__ = "schedules"
    __table_args__ = (Index(None, "next_fire_ms"),)

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    # The schedule's place among the workflow's schedules.
    entry: Mapped[int] = mapped_column(Integer, primary_key=True)
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    next_fire_ms: Mapped[int] = mapped_column(BigInteger)
