"""signing keys: staged activation and revocation

Revision ID: 0007_signing_key_stages
Revises: 0006_audit_webhooks
Create Date: 2026-12-01 21:30:00

A key's state is now computed from `activates_at` (when it starts signing: a rotation
schedules it a publication delay ahead) and `revoked_at` (emergency removal), instead
of being written into `retired_at` at rotation time: a key retires when the next key
activates. Backfill: every existing key activated when it was created, which is what
the previous immediate rotation did (a key's retirement equalled its successor's
creation), so the same key signs and the same keys stay published.

Downgrade restores `retired_at` as the successor's activation time and deletes
revoked keys (the previous schema has no way to refuse a key it still holds). A NEXT
key then signs at once under the previous code, which knows no staging.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_signing_key_stages"
down_revision = "0006_audit_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("activates_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE signing_keys SET activates_at = created_at")
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.alter_column("activates_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.drop_column("retired_at")


def downgrade() -> None:
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE signing_keys SET retired_at = (SELECT MIN(later.activates_at) FROM signing_keys AS later"
        " WHERE later.activates_at > signing_keys.activates_at)"
    )
    op.execute("DELETE FROM signing_keys WHERE revoked_at IS NOT NULL")
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("activates_at")
