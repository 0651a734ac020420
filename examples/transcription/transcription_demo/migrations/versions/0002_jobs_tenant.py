"""scope jobs by tenant; backfill legacy rows into a designated tenant

Revision ID: 0002
Revises: 0001

Adds `tenant_id` (and `created_by`) as nullable, assigns every existing row to the
tenant named by TRANSCRIPTION_LEGACY_TENANT_ID (`legacy_tenant_id`), then makes the
column NOT NULL and indexes it. With legacy rows and no designated tenant it stops
with an error before changing anything.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    connection = op.get_bind()
    # Before tenancy every row is a legacy row.
    legacy = connection.execute(sa.text("SELECT count(*) FROM jobs")).scalar()
    tenant_id = context.config.attributes.get("legacy_tenant_id", "")
    if legacy and not tenant_id:
        raise RuntimeError(
            f"{legacy} jobs predate tenancy: set TRANSCRIPTION_LEGACY_TENANT_ID to the tenant that owns them"
        )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("tenant_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("created_by", sa.String(64), nullable=False, server_default=""))
    if legacy:
        jobs = sa.table("jobs", sa.column("tenant_id", sa.String))
        connection.execute(sa.update(jobs).where(jobs.c.tenant_id.is_(None)).values(tenant_id=tenant_id))
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("tenant_id", existing_type=sa.String(36), nullable=False)
        batch.create_index("ix_jobs_tenant_created", ["tenant_id", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_tenant_created")
        batch.drop_column("created_by")
        batch.drop_column("tenant_id")
