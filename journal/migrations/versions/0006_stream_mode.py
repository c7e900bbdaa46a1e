"""Stream mode: tables whose row images the sidecar takes from WAL (rewind track --mode stream).

Revision ID: 0006
Revises: 0005
"""

from journal.migrations.sqlfiles import run_sql_file

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("schema_0006.sql")
    run_sql_file("capture.sql")
