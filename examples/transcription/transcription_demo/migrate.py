"""The demo's own schema, migrated with Alembic (its own version table).

Revision 0001 is the service as it was before tenancy: jobs belonged to nobody.
Revision 0002 scopes jobs by tenant and backfills the existing rows into one
designated tenant (TRANSCRIPTION_LEGACY_TENANT_ID): the migration path for data that
predates multi-tenancy. Without a designated tenant it refuses to run while such rows
exist, rather than guess.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from transcription_demo.store import make_engine

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "transcription_alembic_version"


def alembic_config(url: str, legacy_tenant_id: str = "") -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(HERE / "migrations"))
    config.attributes["database_url"] = url
    config.attributes["legacy_tenant_id"] = legacy_tenant_id
    return config


def upgrade(url: str, revision: str = "head", legacy_tenant_id: str = "") -> None:
    command.upgrade(alembic_config(url, legacy_tenant_id), revision)


def current(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()
