"""Alembic environment: the connection is always handed in by journal.schema.upgrade()."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table="alembic_version",
    version_table_schema="rewind",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
