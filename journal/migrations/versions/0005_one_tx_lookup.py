"""The capture triggers find their transaction record through one inlined function, journal_tx.

Revision ID: 0005
Revises: 0004
"""

from journal.migrations.sqlfiles import run_sql_file

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("capture.sql")
