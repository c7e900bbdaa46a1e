"""rewind.sync_tables_publication() adds each table once, though adding a parent adds its children.

Revision ID: 0007
Revises: 0006
"""

from journal.migrations.sqlfiles import run_sql_file

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("sync_tables_publication.sql")
