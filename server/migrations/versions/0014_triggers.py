"""topics, their records, and the indexes of workflows' triggers

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 19:00:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "topics",
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("parent", sa.String(512), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_published_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "name", name=op.f("pk_topics")),
    )
    op.create_table(
        "topic_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(512), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("published_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topic_records")),
    )
    op.create_index(
        op.f("ix_topic_records_org_id_topic_published_at_ms_id"),
        "topic_records",
        ["org_id", "topic", "published_at_ms", "id"],
    )
    op.create_table(
        "topic_triggers",
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("workflow_id", sa.String(100), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("pattern", sa.String(512), nullable=False),
        sa.Column("prefix", sa.String(512), nullable=False),
        sa.Column("exact", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint(
            "org_id", "workflow_id", "position", name=op.f("pk_topic_triggers")
        ),
    )
    op.create_index(op.f("ix_topic_triggers_org_id_prefix"), "topic_triggers", ["org_id", "prefix"])
    op.create_table(
        "schedules",
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("workflow_id", sa.String(100), nullable=False),
        sa.Column("entry", sa.Integer(), nullable=False),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("next_fire_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "workflow_id", "entry", name=op.f("pk_schedules")),
    )
    op.create_index(op.f("ix_schedules_next_fire_ms"), "schedules", ["next_fire_ms"])
    _index_named_events()


# The names of `on:` that are not events (as in the definitions' model).
_KEYWORDS = ("topic", "schedule", "workflow_dispatch")


def _index_named_events() -> None:
    """Stored definitions predate topics and schedules, so their only triggers
    are the event names of their `trigger` text: those enter the index here,
    or a publish to `push` would not fire an unchanged `on: push` workflow."""
    conn = op.get_bind()
    stored = sa.table(
        "workflows", sa.column("org_id"), sa.column("id"), sa.column("definition", sa.JSON())
    )
    rows: list[dict[str, Any]] = []
    for org_id, workflow_id, definition in conn.execute(
        sa.select(stored.c.org_id, stored.c.id, stored.c.definition)
    ):
        trigger = (definition or {}).get("trigger") or ""
        names = [n.strip() for n in str(trigger).split(",")]
        # Numbered as the definition's triggers are (keywords aside), then
        # the names too long to be published to are left out of the index.
        events = [n for n in names if n and n not in _KEYWORDS]
        rows.extend(
            {
                "org_id": org_id,
                "workflow_id": workflow_id,
                "position": position,
                "pattern": name,
                "prefix": name,
                "exact": True,
            }
            for position, name in enumerate(events)
            if len(name) <= 512
        )
    if rows:
        triggers = sa.table(
            "topic_triggers",
            *(sa.column(c) for c in ("org_id", "workflow_id", "position", "pattern", "prefix")),
            sa.column("exact", sa.Boolean()),
        )
        op.bulk_insert(triggers, rows)


def downgrade() -> None:
    op.drop_index(op.f("ix_schedules_next_fire_ms"), table_name="schedules")
    op.drop_table("schedules")
    op.drop_index(op.f("ix_topic_triggers_org_id_prefix"), table_name="topic_triggers")
    op.drop_table("topic_triggers")
    op.drop_index(
        op.f("ix_topic_records_org_id_topic_published_at_ms_id"), table_name="topic_records"
    )
    op.drop_table("topic_records")
    op.drop_table("topics")
