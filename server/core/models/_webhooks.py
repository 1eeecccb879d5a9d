"""Webhook subscriptions and the record of every delivery attempt.

The event log is the outbox: a subscription's ``cursor`` is its position in
the log, and the deliverer of whichever replica holds the subscription's lease
(``owner``, ``owner_until_ms``) sends the matching events after it, in cursor
order. Backends registered by machine users get a subscription row of their
own (``backend_id``), made by the deliverer.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ._base import Base, BigId


class WebhookSubscriptionRow(Base):
    """Where to send which events, and how far delivery has come."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (
        UniqueConstraint("backend_id"),
        Index(None, "org_id", "created_at_ms"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    # 'api' | 'config' | 'backend'
    source: Mapped[str] = mapped_column(String(16))
    # The machine_backends row of a backend's implicit subscription.
    backend_id: Mapped[str | None] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(Text)
    # Canonical event names ('job.succeeded'); empty: every event.
    event_types: Mapped[list[str]]
    enabled: Mapped[bool] = mapped_column(Boolean)
    # The signing secret, AES-GCM sealed with a server secret; empty for
    # backends (theirs is derived, see trellis.server.events._signing).
    secret_sealed: Mapped[str] = mapped_column(String(256))
    secret_hint: Mapped[str] = mapped_column(String(32))
    # The last event delivered or finally failed (opaque event-log cursor).
    cursor: Mapped[str] = mapped_column(String(64))
    # The event after ``cursor`` being retried: attempts so far, the first
    # attempt's time, when the next one is due.
    attempts: Mapped[int] = mapped_column(Integer)
    first_attempt_ms: Mapped[int | None] = mapped_column(BigInteger)
    next_attempt_ms: Mapped[int | None] = mapped_column(BigInteger)
    owner: Mapped[str | None] = mapped_column(String(64))
    owner_until_ms: Mapped[int | None] = mapped_column(BigInteger)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class WebhookDeliveryRow(Base):
    """One attempt to deliver one event to one subscription."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index(None, "subscription_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(String(64))
    subscription_id: Mapped[str] = mapped_column(String(32))
    # The ``webhook-id`` header: the same for every attempt of one event.
    delivery_id: Mapped[str] = mapped_column(String(64))
    event_cursor: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    # 'delivered' | 'retrying' | 'failed'
    status: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int] = mapped_column(Integer)  # 0: no answer
    answer: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    attempted_at_ms: Mapped[int] = mapped_column(BigInteger)
    next_attempt_ms: Mapped[int | None] = mapped_column(BigInteger)
