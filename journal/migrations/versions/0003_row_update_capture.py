"""UPDATEs of plain tables captured by a row trigger; one BRIN index on the journal.

Revision ID: 0003
Revises: 0002
"""

from journal.migrations.sqlfiles import run_sql, run_sql_file

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("schema_0003.sql")
    run_sql_file("capture.sql")
    # Tables tracked before this revision carry the statement-level UPDATE trigger; attach
    # replaces the capture of every table whose kind now calls for the other one.
    run_sql("SELECT rewind.attach(relid::regclass, id) FROM rewind.tracked "
            "WHERE relid IS NOT NULL AND untracked_at IS NULL AND dropped_at IS NULL")
