"""Each plain table's UPDATE row trigger calls a function of its own with its tracked id written in
(rewind.row_capture), instead of one shared function reading the id from TG_ARGV.

Revision ID: 0010
Revises: 0009
"""

from journal.migrations.sqlfiles import run_sql, run_sql_file

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("capture.sql")
    # attach replaces a row trigger that does not call the table's own function.
    run_sql("SELECT rewind.attach(relid::regclass, id) FROM rewind.tracked "
            "WHERE relid IS NOT NULL AND untracked_at IS NULL AND dropped_at IS NULL")
    run_sql("DROP FUNCTION IF EXISTS rewind.capture_update_row()")
