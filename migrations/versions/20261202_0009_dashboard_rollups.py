"""dashboard rollups: usage by dimension per hour, logins per hour and outcome, active users per day

Revision ID: 0009_dashboard_rollups
Revises: 0008_change_log
Create Date: 2026-12-02 05:00:00

Dashboards read these instead of raw events. usage_dimension_rollups is filled by the
usage rollup job from events rolled up from now on (older events carry no breakdown);
login_rollups and login_active_users by each login's own transaction. Row-level
security as on every tenant table (0004); 0004's default privileges grant the app role
its DML on them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_dashboard_rollups"
down_revision = "0008_change_log"
branch_labels = None
depends_on = None

TENANT_TABLES = ("usage_dimension_rollups", "login_rollups", "login_active_users")
IN_SYSTEM_SCOPE = "current_setting('tahoe.scope', true) = 'system'"
IN_TENANT = "current_setting('tahoe.tenant_id', true)"


def upgrade() -> None:
    op.create_table(
        "usage_dimension_rollups",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("metric", sa.String(length=100), nullable=False),
        sa.Column("dimension", sa.String(length=32), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("quantity", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_usage_dimension_rollups_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "metric", "dimension", "bucket_start", "value", name=op.f("pk_usage_dimension_rollups")
        ),
    )
    op.create_table(
        "login_rollups",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_login_rollups_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "bucket_start", "outcome", name=op.f("pk_login_rollups")),
    )
    op.create_table(
        "login_active_users",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_login_active_users_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "day", "user_id", name=op.f("pk_login_active_users")),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            condition = f"tenant_id = {IN_TENANT} OR {IN_SYSTEM_SCOPE}"
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(f"CREATE POLICY tahoe_tenant_wall ON {table} USING ({condition}) WITH CHECK ({condition})")


def downgrade() -> None:
    for table in reversed(TENANT_TABLES):
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP POLICY IF EXISTS tahoe_tenant_wall ON {table}")
        op.drop_table(table)
