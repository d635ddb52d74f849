"""ids never reused (SQLite AUTOINCREMENT); image references across record types; rejected files

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("uploads", "predictions", "smear_analyses")


def upgrade() -> None:
    for table in ("uploads", "smear_analyses"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("rejected", sa.JSON(), nullable=False, server_default="[]"))
    if op.get_bind().dialect.name == "sqlite":
        # without AUTOINCREMENT SQLite hands a deleted newest id out again: an old link would
        # show another sample. Recreating the table is SQLite's only way to add it.
        for table in TABLES:
            with op.batch_alter_table(
                table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
            ):
                pass
    refs = op.create_table(
        "image_refs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("record_type", sa.String(16), nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=False),
    )
    op.create_index("ix_image_refs_image_sha256", "image_refs", ["image_sha256"])
    _backfill(refs)


def _backfill(refs) -> None:
    """One reference per stored image of every existing record."""
    bind = op.get_bind()
    rows = [
        {"image_sha256": sha, "record_type": "prediction", "record_id": pid}
        for pid, sha in bind.execute(
            sa.text("SELECT id, image_sha256 FROM predictions WHERE image_stored")
        )
    ]
    smears = sa.table("smear_analyses", sa.column("id"), sa.column("fields", sa.JSON()))
    for smear_id, fields in bind.execute(sa.select(smears.c.id, smears.c.fields)):
        shas = {f["image_sha256"] for f in fields or [] if f.get("image_stored")}
        rows += [{"image_sha256": s, "record_type": "smear", "record_id": smear_id} for s in shas]
    if rows:
        op.bulk_insert(refs, rows)


def downgrade() -> None:
    op.drop_table("image_refs")
    for table in ("uploads", "smear_analyses"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("rejected")
