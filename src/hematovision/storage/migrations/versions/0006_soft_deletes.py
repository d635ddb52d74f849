"""soft deletes of results and smear analyses: who deleted them, when and why

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("predictions", "smear_analyses")


def upgrade() -> None:
    for table in TABLES:  # nullable columns: a plain ADD COLUMN on SQLite and PostgreSQL
        op.add_column(table, sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        op.add_column(table, sa.Column("deleted_by", sa.String(64), nullable=True))
        op.add_column(table, sa.Column("delete_reason", sa.String(500), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            for column in ("delete_reason", "deleted_by", "deleted_at"):
                batch.drop_column(column)
