"""why the model flagged a sample's cell (its reasons), for the sample's new-lab notice

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable: cells stored before keep None, read as "uncertain" where the model flagged them
    op.add_column("sample_cells", sa.Column("reasons", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sample_cells") as batch:
        batch.drop_column("reasons")
