"""The journal: tracked tables, transactions, changes, DDL events, capture functions.

Revision ID: 0001
Revises:
"""

from alembic import context

from journal.migrations.sqlfiles import run_sql_file

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("schema_0001.sql")
    run_sql_file("capture.sql")
    if context.config.attributes.get("event_triggers", True):
        run_sql_file("event_triggers.sql")
