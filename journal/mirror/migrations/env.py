"""Alembic environment of the mirror: its own scripts and its own version table, so a mirror
kept in a PostgreSQL database next to other things (even a rewind-tracked one) never collides
with them. The connection is always handed in by journal.mirror.store.upgrade()."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table="rewind_mirror_version",
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
