"""rewind.commit_time(xid8): a transaction's commit time from PostgreSQL's commit timestamps, for
the transactions the sidecar has not stamped.

Revision ID: 0009
Revises: 0008
"""

from journal.migrations.sqlfiles import run_sql_file

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("schema_0009.sql")
