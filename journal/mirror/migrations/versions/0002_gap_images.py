"""Row images of bypass gaps: what WAL carried of the writes that went around the triggers.

Revision ID: m0002
Revises: m0001
"""

import sqlalchemy as sa
from alembic import op

revision = "m0002"
down_revision = "m0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rewind_gap") as batch:
        batch.add_column(sa.Column("images", sa.Text))
