"""Each plain table's UPDATE row trigger calls a function of its own with its tracked id written in
(rewind.row_capture), instead of one shared function reading the id from TG_ARGV. The DDL-time
SECURITY DEFINER functions run with a fixed search_path, and the capture path looks up no operator
(rewind.nonempty for nullif), so that no role's operator runs as rewind's owner.

Revision ID: 0010
Revises: 0009
"""

from journal.migrations.sqlfiles import run_sql_file

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("capture.sql")
    run_sql_file("schema_0010.sql")
