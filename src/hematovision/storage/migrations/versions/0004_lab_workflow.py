"""the lab workflow: users, samples and their cells, corrections, signed versions, audit log

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

AUTO = {"sqlite_autoincrement": True}
WHEN = sa.DateTime(timezone=True)

# the audit log is append-only at the database level, whatever code runs against it
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER audit_events_no_{op_} BEFORE {op_.upper()} ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
    for op_ in ("update", "delete")
]
POSTGRES_TRIGGER = [
    "CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$ BEGIN "
    "RAISE EXCEPTION 'the audit log is append-only'; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
    "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=True, unique=True),
        sa.Column("created_at", WHEN, nullable=False),
        **AUTO,
    )
    op.create_table(
        "samples",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("public_id", sa.String(32), nullable=False, unique=True),
        sa.Column("accession", sa.String(128), nullable=False, index=True),
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("amend_reason", sa.String(500), nullable=True),
        sa.Column("created_at", WHEN, nullable=False, index=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("deleted_at", WHEN, nullable=True),
        sa.Column("deleted_by", sa.String(64), nullable=True),
        sa.Column("delete_reason", sa.String(500), nullable=True),
        **AUTO,
    )
    op.create_table(
        "sample_cells",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sample_id", sa.Integer(), sa.ForeignKey("samples.id"), nullable=False),
        sa.Column("prediction_id", sa.Integer(), nullable=True),
        sa.Column("smear_id", sa.Integer(), nullable=True),
        sa.Column("field_index", sa.Integer(), nullable=True),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("box", sa.JSON(), nullable=True),
        sa.Column("model_label", sa.String(64), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("uncertain", sa.Boolean(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("exclusion", sa.String(32), nullable=True),
        **AUTO,
    )
    op.create_index("ix_sample_cells_sample_id", "sample_cells", ["sample_id"])
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("cell_id", sa.Integer(), sa.ForeignKey("sample_cells.id"), nullable=False),
        sa.Column("sample_version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("old_label", sa.String(64), nullable=False),
        sa.Column("new_label", sa.String(64), nullable=True),
        sa.Column("exclusion", sa.String(32), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("at", WHEN, nullable=False),
        **AUTO,
    )
    op.create_index("ix_corrections_cell_id", "corrections", ["cell_id"])
    op.create_table(
        "sample_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sample_id", sa.Integer(), sa.ForeignKey("samples.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("signed_by", sa.String(64), nullable=False),
        sa.Column("signed_at", WHEN, nullable=False),
        sa.Column("amend_reason", sa.String(500), nullable=True),
        sa.Column("differential", sa.JSON(), nullable=False),
        sa.Column("cells", sa.JSON(), nullable=False),
        **AUTO,
    )
    op.create_index("ix_sample_versions_sample_id", "sample_versions", ["sample_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", WHEN, nullable=False, index=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        **AUTO,
    )
    for table in ("uploads", "smear_analyses"):  # the sample an upload was added to
        op.add_column(table, sa.Column("sample_id", sa.Integer(), nullable=True))
        op.create_index(f"ix_{table}_sample_id", table, ["sample_id"])
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRES_TRIGGER}.get(dialect, []):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION audit_events_append_only()")
    for table in ("uploads", "smear_analyses"):
        op.drop_index(f"ix_{table}_sample_id", table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("sample_id")
    for table in (
        "audit_events",
        "sample_versions",
        "corrections",
        "sample_cells",
        "samples",
        "users",
    ):
        op.drop_table(table)
