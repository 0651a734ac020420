"""mfa factors, recovery codes, challenges, session amr

Revision ID: 0010_mfa
Revises: 0009_dashboard_rollups
Create Date: 2026-12-02 18:20:00

Second factors (authenticator apps with their sealed secrets, passkeys), hashed
single-use recovery codes, pending MFA challenges, and on sessions how the user signed
in and when the session last passed a second factor. Existing sessions are
password-only (`pwd`). Row-level security as on every tenant table (0004).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_mfa"
down_revision = "0009_dashboard_rollups"
branch_labels = None
depends_on = None

TENANT_TABLES = ("mfa_factors", "mfa_recovery_codes", "mfa_challenges")
IN_SYSTEM_SCOPE = "current_setting('tahoe.scope', true) = 'system'"
IN_TENANT = "current_setting('tahoe.tenant_id', true)"


def upgrade() -> None:
    op.create_table(
        "mfa_factors",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("secret_sealed", sa.Text(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("credential_id", sa.String(length=1400), nullable=True),
        sa.Column("public_key", sa.LargeBinary(), nullable=True),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("transports", sa.JSON(), nullable=False),
        sa.Column("aaguid", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_mfa_factors_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_mfa_factors_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mfa_factors")),
        sa.UniqueConstraint("credential_id", name=op.f("uq_mfa_factors_credential_id")),
    )
    op.create_index(op.f("ix_mfa_factors_tenant_id"), "mfa_factors", ["tenant_id"], unique=False)
    op.create_index("ix_mfa_factors_user", "mfa_factors", ["tenant_id", "user_id"], unique=False)
    op.create_table(
        "mfa_recovery_codes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_mfa_recovery_codes_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_mfa_recovery_codes_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mfa_recovery_codes")),
    )
    op.create_index(op.f("ix_mfa_recovery_codes_tenant_id"), "mfa_recovery_codes", ["tenant_id"], unique=False)
    op.create_index("ix_mfa_recovery_codes_user", "mfa_recovery_codes", ["tenant_id", "user_id"], unique=False)
    op.create_table(
        "mfa_challenges",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.Column("session_id", sa.String(length=36), nullable=True),
        sa.Column("webauthn_challenge", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("satisfied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("satisfied_amr", sa.String(length=32), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("client_address", sa.String(length=255), nullable=False),
        sa.Column("user_agent", sa.String(length=512), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_mfa_challenges_session_id_sessions"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_mfa_challenges_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_mfa_challenges_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mfa_challenges")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_mfa_challenges_token_hash")),
    )
    op.create_index(op.f("ix_mfa_challenges_tenant_id"), "mfa_challenges", ["tenant_id"], unique=False)
    op.add_column("sessions", sa.Column("amr", sa.String(length=64), server_default="pwd", nullable=False))
    op.add_column("sessions", sa.Column("mfa_verified_at", sa.DateTime(timezone=True), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            condition = f"tenant_id = {IN_TENANT} OR {IN_SYSTEM_SCOPE}"
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(f"CREATE POLICY tahoe_tenant_wall ON {table} USING ({condition}) WITH CHECK ({condition})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in reversed(TENANT_TABLES):
            op.execute(f"DROP POLICY IF EXISTS tahoe_tenant_wall ON {table}")
    op.drop_column("sessions", "mfa_verified_at")
    op.drop_column("sessions", "amr")
    op.drop_index(op.f("ix_mfa_challenges_tenant_id"), table_name="mfa_challenges")
    op.drop_table("mfa_challenges")
    op.drop_index("ix_mfa_recovery_codes_user", table_name="mfa_recovery_codes")
    op.drop_index(op.f("ix_mfa_recovery_codes_tenant_id"), table_name="mfa_recovery_codes")
    op.drop_table("mfa_recovery_codes")
    op.drop_index("ix_mfa_factors_user", table_name="mfa_factors")
    op.drop_index(op.f("ix_mfa_factors_tenant_id"), table_name="mfa_factors")
    op.drop_table("mfa_factors")
