"""Alembic environment of the demo transcription service."""

from __future__ import annotations

from alembic import context
from transcription_demo.migrate import VERSION_TABLE
from transcription_demo.store import make_engine, metadata

engine = make_engine(context.config.attributes["database_url"])
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
engine.dispose()
