"""Capture gaps in the database (rewind.gap), for `rewind status` without the mirror.

Revision ID: 0004
Revises: 0003
"""

from journal.migrations.sqlfiles import run_sql_file

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("schema_0004.sql")
