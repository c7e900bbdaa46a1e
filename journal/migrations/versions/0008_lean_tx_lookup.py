"""The transaction-local setting holds the transaction record's id alone, and journal_tx checks it
with three function calls instead of eight.

Revision ID: 0008
Revises: 0007
"""

from journal.migrations.sqlfiles import run_sql_file

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("capture.sql")
