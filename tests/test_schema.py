"""The Alembic migrations build exactly the schema the models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from trellis.server.db import connect, upgrade_schema
from trellis.server.models import Base


def test_migrations_match_the_models(database_url: str) -> None:
    db = connect(database_url)
    try:
        upgrade_schema(db)
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        db.dispose()
