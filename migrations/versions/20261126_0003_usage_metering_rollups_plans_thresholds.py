"""usage metering: raw events, minute rollups, period totals, plans, threshold marks

Revision ID: 0003_usage
Revises: 0001
Create Date: 2026-11-26 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_usage"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_plans",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("quotas", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_usage_plans")),
    )
    op.create_table(
        "usage_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("metric", sa.String(length=100), nullable=False),
        sa.Column("quantity", sa.Double(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dimensions", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rolled_up", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_usage_events_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_events")),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_usage_events_idempotency"),
    )
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_usage_events_unrolled",
            ["id"],
            unique=False,
            postgresql_where=sa.text("NOT rolled_up"),
            sqlite_where=sa.text("NOT rolled_up"),
        )
    for table, bucket in (("usage_rollups", "bucket_start"), ("usage_period_totals", "period_start")):
        op.create_table(
            table,
            sa.Column("tenant_id", sa.String(length=36), nullable=False),
            sa.Column("metric", sa.String(length=100), nullable=False),
            sa.Column(bucket, sa.DateTime(timezone=True), nullable=False),
            sa.Column("quantity", sa.Double(), nullable=False),
            sa.ForeignKeyConstraint(
                ["tenant_id"], ["tenants.id"], name=op.f(f"fk_{table}_tenant_id_tenants"), ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("tenant_id", "metric", bucket, name=op.f(f"pk_{table}")),
        )
    op.create_table(
        "usage_threshold_marks",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("metric", sa.String(length=100), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_usage_threshold_marks_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "metric", "period_start", "threshold", name=op.f("pk_usage_threshold_marks")
        ),
    )


def downgrade() -> None:
    op.drop_table("usage_threshold_marks")
    op.drop_table("usage_period_totals")
    op.drop_table("usage_rollups")
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_events_unrolled")
    op.drop_table("usage_events")
    op.drop_table("usage_plans")
