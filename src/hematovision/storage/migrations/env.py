"""Alembic environment: the engine comes from the caller (Storage.migrate)."""

from alembic import context

from hematovision.storage.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=Base.metadata, render_as_batch=True
)  # SQLite needs batch mode for ALTER TABLE
with context.begin_transaction():
    context.run_migrations()
