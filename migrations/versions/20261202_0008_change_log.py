"""change log: the durable, ordered record of changes that caches must hear of

Revision ID: 0008_change_log
Revises: 0007_signing_key_stages
Create Date: 2026-12-02 01:00:00

Every revocation, role, tenant, plan and key change appends a row here in its own
transaction; each instance polls the rows after its high-water mark, so a change
reaches every cache even when the pub/sub message is lost. Rows are pruned after an
hour. No tenant wall: the rows carry only identifiers, and every instance reads all.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_change_log"
down_revision = "0007_signing_key_stages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("message", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_log")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("change_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_change_log_created_at"), ["created_at"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            DO $$
            BEGIN
              IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tahoe_app') THEN
                GRANT SELECT, INSERT, DELETE ON change_log TO tahoe_app;
                GRANT USAGE, SELECT ON SEQUENCE change_log_id_seq TO tahoe_app;
              END IF;
            END $$;
            """
        )


def downgrade() -> None:
    with op.batch_alter_table("change_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_change_log_created_at"))
    op.drop_table("change_log")
