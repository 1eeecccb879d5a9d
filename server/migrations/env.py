"""Alembic environment: runs on the connection the server hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from trellis.server.core.models import Base

target_metadata = Base.metadata


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        # `alembic` on the command line: DATABASE_URL-style URL in the config.
        from trellis.server.core.db import normalize_url

        url = normalize_url(context.config.get_main_option("sqlalchemy.url") or "")
        with create_engine(url).begin() as conn:
            context.configure(connection=conn, target_metadata=target_metadata)
            context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata)
    context.run_migrations()


_run()
