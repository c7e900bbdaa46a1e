"""The mirror of the journal: transactions, changes, DDL, tracked tables, gaps, checkpoint.

Revision ID: m0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "m0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rewind_tx",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("xid", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("application", sa.Text),
        sa.Column("client_addr", sa.Text),
        sa.Column("pid", sa.Integer),
        sa.Column("run", sa.Text),
        sa.Column("started_at", sa.Text, nullable=False),
        sa.Column("commit_lsn", sa.BigInteger),
        sa.Column("committed_at", sa.Text),
    )
    op.create_table(
        "rewind_change",
        sa.Column("commit_lsn", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("id", sa.BigInteger, nullable=False),
        sa.Column("pos", sa.BigInteger, nullable=False),
        sa.Column("tx", sa.BigInteger, nullable=False),
        sa.Column("tbl", sa.Integer, nullable=False),
        sa.Column("table_name", sa.Text, nullable=False),
        sa.Column("op", sa.String(1), nullable=False),
        sa.Column("before", sa.Text),
        sa.Column("after", sa.Text),
        sa.Column("at", sa.Text, nullable=False),
    )
    op.create_index("rewind_change_tx", "rewind_change", ["tx"])
    op.create_table(
        "rewind_ddl",
        sa.Column("commit_lsn", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("id", sa.BigInteger, nullable=False),
        sa.Column("tx", sa.BigInteger, nullable=False),
        sa.Column("tbl", sa.Integer),
        sa.Column("table_name", sa.Text),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("object_type", sa.Text),
        sa.Column("object_identity", sa.Text),
        sa.Column("at", sa.Text, nullable=False),
    )
    op.create_index("rewind_ddl_tx", "rewind_ddl", ["tx"])
    op.create_table(
        "rewind_tracked",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("relid", sa.BigInteger),
        sa.Column("schema_name", sa.Text, nullable=False),
        sa.Column("table_name", sa.Text, nullable=False),
        sa.Column("key_columns", sa.Text, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("tracked_at", sa.Text),
        sa.Column("untracked_at", sa.Text),
        sa.Column("dropped_at", sa.Text),
    )
    op.create_table(
        "rewind_gap",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("xid", sa.Text),
        sa.Column("table_name", sa.Text),
        sa.Column("changes", sa.BigInteger),
        sa.Column("complete", sa.Boolean, nullable=False),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("start_lsn", sa.BigInteger),
        sa.Column("end_lsn", sa.BigInteger),
        sa.Column("start_time", sa.Text),
        sa.Column("end_time", sa.Text),
        sa.Column("detail", sa.Text),
    )
    op.create_table(
        "rewind_checkpoint",
        sa.Column("slot", sa.Text, primary_key=True),
        sa.Column("database", sa.Text, nullable=False),
        sa.Column("confirmed_lsn", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
    )
