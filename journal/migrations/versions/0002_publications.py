"""Publications for the decoding stream: rewind_journal, rewind_tracked, rewind_tables.

Revision ID: 0002
Revises: 0001
"""

from alembic import context

from journal.migrations.sqlfiles import run_sql_file

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("publications.sql")
    run_sql_file("sync_tables_publication.sql")
    if context.config.attributes.get("event_triggers", True):
        run_sql_file("publication_trigger.sql")
