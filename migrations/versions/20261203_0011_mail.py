"""mail outbox, account tokens, password reset requests, verified email

Revision ID: 0011_mail
Revises: 0010_mfa
Create Date: 2026-12-03 06:46:54

The mail channel's queue (sealed variables, retries, dead letters), the hashed
single-use tokens of mailed links (password reset, email verification), "forgot
password" requests waiting for the worker (system scope only: the tenant they name may
not exist), and when a user's email address was verified (existing users: not yet).
Row-level security as on every tenant table (0004).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_mail"
down_revision = "0010_mfa"
branch_labels = None
depends_on = None

TENANT_TABLES = ("mail_messages", "account_tokens")
IN_SYSTEM_SCOPE = "current_setting('tahoe.scope', true) = 'system'"
IN_TENANT = "current_setting('tahoe.tenant_id', true)"


def upgrade() -> None:
    op.create_table(
        "password_reset_requests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_key", sa.String(length=100), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("client_address", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=128), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_reset_requests")),
    )
    op.create_index(
        op.f("ix_password_reset_requests_created_at"), "password_reset_requests", ["created_at"], unique=False
    )
    op.create_table(
        "mail_messages",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("locale", sa.String(length=16), nullable=False),
        sa.Column("to_address", sa.String(length=320), nullable=False),
        sa.Column("sender_name", sa.String(length=100), nullable=False),
        sa.Column("variables_sealed", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("request_id", sa.String(length=128), server_default="", nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_mail_messages_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_messages")),
    )
    op.create_index("ix_mail_messages_due", "mail_messages", ["status", "next_attempt_at"], unique=False)
    op.create_index("ix_mail_messages_tenant", "mail_messages", ["tenant_id", "created_at"], unique=False)
    op.create_index(op.f("ix_mail_messages_tenant_id"), "mail_messages", ["tenant_id"], unique=False)
    op.create_table(
        "account_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_account_tokens_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_account_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_account_tokens_token_hash")),
    )
    op.create_index(op.f("ix_account_tokens_tenant_id"), "account_tokens", ["tenant_id"], unique=False)
    op.create_index(op.f("ix_account_tokens_user_id"), "account_tokens", ["user_id"], unique=False)
    op.add_column("users", sa.Column("email_verified_at", sa.DateTime(timezone=True), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            condition = f"tenant_id = {IN_TENANT} OR {IN_SYSTEM_SCOPE}"
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(f"CREATE POLICY tahoe_tenant_wall ON {table} USING ({condition}) WITH CHECK ({condition})")
        op.execute("ALTER TABLE password_reset_requests ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE password_reset_requests FORCE ROW LEVEL SECURITY")
        op.execute(
            "CREATE POLICY tahoe_system_only ON password_reset_requests"
            f" USING ({IN_SYSTEM_SCOPE}) WITH CHECK ({IN_SYSTEM_SCOPE})"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP POLICY IF EXISTS tahoe_system_only ON password_reset_requests")
        for table in reversed(TENANT_TABLES):
            op.execute(f"DROP POLICY IF EXISTS tahoe_tenant_wall ON {table}")
    op.drop_column("users", "email_verified_at")
    op.drop_index(op.f("ix_account_tokens_user_id"), table_name="account_tokens")
    op.drop_index(op.f("ix_account_tokens_tenant_id"), table_name="account_tokens")
    op.drop_table("account_tokens")
    op.drop_index(op.f("ix_mail_messages_tenant_id"), table_name="mail_messages")
    op.drop_index("ix_mail_messages_tenant", table_name="mail_messages")
    op.drop_index("ix_mail_messages_due", table_name="mail_messages")
    op.drop_table("mail_messages")
    op.drop_index(op.f("ix_password_reset_requests_created_at"), table_name="password_reset_requests")
    op.drop_table("password_reset_requests")
