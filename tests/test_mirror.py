"""The mirror's schema: its own migrations build exactly the tables the code reads and writes, on
SQLite and on PostgreSQL, and upgrading twice is a no-op."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from journal.mirror import MirrorStore, tables


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_build_the_tables_the_code_uses(backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_mirror_url")
    store = MirrorStore(url)
    try:
        store.upgrade()  # again: nothing to do
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": "rewind_mirror_version"})
            assert context.get_current_revision() == "m0002"
            assert compare_metadata(context, tables.metadata) == []
            names = set(inspect(conn).get_table_names())
        assert {t.name for t in tables.metadata.sorted_tables} | {"rewind_mirror_version"} == names
    finally:
        store.close()
