"""Alembic environment: runs on PostgreSQL and SQLite.

On PostgreSQL a session advisory lock serialises concurrent `migrate` runs (several
instances starting at once), and lock/statement timeouts keep a migration from
hanging behind a long transaction.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from tahoe_auth.config import Settings
from tahoe_auth.store.models import Base, UTCDateTime

MIGRATION_LOCK = 7_402_611


def database_url() -> str:
    url = context.config.attributes.get("database_url")
    return url or Settings.from_env().database_url


def render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    """Render app-only column types as plain SQLAlchemy ones: revisions stay self-contained."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.execute(text("SET lock_timeout = '10s'"))
            connection.execute(text("SET statement_timeout = '300s'"))
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=not postgres,
                compare_type=True,
                render_item=render_item,
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if postgres:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
                connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
