"""audit log (hash-chained, append-only) and webhooks (endpoints, deliveries, outbox dispatch)

Revision ID: 0006_audit_webhooks
Revises: 0004_tenants
Create Date: 2026-11-26 01:00:00

Append-only audit entries, on both backends:
- a trigger refuses UPDATE and DELETE on audit_events (PostgreSQL and SQLite), and
  one refuses any change to audit_heads other than advancing the chain by one;
- on PostgreSQL the app role `tahoe_app` (created NOLOGIN if missing, as 0004_tenants
  does) gets SELECT and INSERT only on audit_events, and no DELETE on audit_heads:
  explicit REVOKEs, since 0004's default privileges grant full DML on later tables;
- row-level security on the new tables, as for every tenant table (0004): a tenant's
  transaction sees its own rows; the platform chain (tenant_id = '') only the system scope.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_audit_webhooks"
down_revision = "0004_tenants"
branch_labels = None
depends_on = None

TENANT_TABLES = ("audit_events", "audit_heads", "webhook_endpoints", "webhook_deliveries")
IN_SYSTEM_SCOPE = "current_setting('tahoe.scope', true) = 'system'"
IN_TENANT = "current_setting('tahoe.tenant_id', true)"


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("actor_type", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target", sa.String(length=400), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("traceparent", sa.String(length=64), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("previous_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "sequence", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_actor", ["tenant_id", "actor"], unique=False)
        batch_op.create_index("ix_audit_events_time", ["tenant_id", "occurred_at"], unique=False)
    op.create_table(
        "audit_heads",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_audit_heads")),
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("disabled_reason", sa.String(length=300), nullable=False),
        sa.Column("secrets", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_webhook_endpoints_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_endpoints_tenant_id"), ["tenant_id"], unique=False)
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("endpoint_id", sa.String(length=36), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        sa.Column("last_duration_ms", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["outbox_events.id"],
            name=op.f("fk_webhook_deliveries_event_id_outbox_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_webhook_deliveries_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_deliveries_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(
            "ix_webhook_deliveries_endpoint", ["tenant_id", "endpoint_id", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_webhook_deliveries_event_id"), ["event_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_webhook_deliveries_tenant_id"), ["tenant_id"], unique=False)
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=128), server_default="", nullable=False))
        batch_op.add_column(sa.Column("traceparent", sa.String(length=64), server_default="", nullable=False))
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_outbox_events_undispatched",
            ["created_at"],
            unique=False,
            postgresql_where=sa.text("dispatched_at IS NULL"),
            sqlite_where=sa.text("dispatched_at IS NULL"),
        )
    if op.get_bind().dialect.name == "postgresql":
        _postgres_protections()
    else:
        _sqlite_protections()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _drop_postgres_protections()
    else:
        for name in ("audit_events_no_update", "audit_events_no_delete", "audit_heads_append_only"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_outbox_events_undispatched",
            postgresql_where=sa.text("dispatched_at IS NULL"),
            sqlite_where=sa.text("dispatched_at IS NULL"),
        )
        batch_op.drop_column("dispatched_at")
        batch_op.drop_column("traceparent")
        batch_op.drop_column("request_id")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_event_id"))
        batch_op.drop_index("ix_webhook_deliveries_endpoint")
        batch_op.drop_index("ix_webhook_deliveries_due")
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_endpoints_tenant_id"))
    op.drop_table("webhook_endpoints")
    op.drop_table("audit_heads")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_time")
        batch_op.drop_index("ix_audit_events_actor")
    op.drop_table("audit_events")


def _sqlite_protections() -> None:
    op.execute(
        "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END"
    )
    op.execute(
        "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END"
    )
    op.execute(
        "CREATE TRIGGER audit_heads_append_only BEFORE UPDATE ON audit_heads "
        "WHEN NEW.last_sequence != OLD.last_sequence + 1 OR NEW.tenant_id != OLD.tenant_id "
        "BEGIN SELECT RAISE(ABORT, 'audit heads only advance by one entry'); END"
    )


def _postgres_protections() -> None:
    op.execute(
        """
        CREATE FUNCTION tahoe_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'audit entries are append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION tahoe_audit_append_only()"
    )
    op.execute(
        """
        CREATE FUNCTION tahoe_audit_head_advances() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' OR NEW.tenant_id <> OLD.tenant_id OR NEW.last_sequence <> OLD.last_sequence + 1 THEN
            RAISE EXCEPTION 'audit heads only advance by one entry' USING ERRCODE = 'insufficient_privilege';
          END IF;
          RETURN NEW;
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER audit_heads_advance_only BEFORE UPDATE OR DELETE ON audit_heads "
        "FOR EACH ROW EXECUTE FUNCTION tahoe_audit_head_advances()"
    )
    op.execute(
        """
        DO $$
        BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tahoe_app') THEN
            BEGIN
              CREATE ROLE tahoe_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
            EXCEPTION
              WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot create role tahoe_app (no CREATEROLE): create it, then re-run the grants';
              WHEN duplicate_object THEN
                NULL;
            END;
          END IF;
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tahoe_app') THEN
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO tahoe_app', current_schema());
            REVOKE ALL ON audit_events, audit_heads FROM tahoe_app;
            GRANT SELECT, INSERT ON audit_events TO tahoe_app;
            GRANT SELECT, INSERT, UPDATE ON audit_heads TO tahoe_app;
            GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_endpoints, webhook_deliveries, outbox_events TO tahoe_app;
          END IF;
        END $$;
        """
    )
    for table in TENANT_TABLES:
        condition = f"tenant_id = {IN_TENANT} OR {IN_SYSTEM_SCOPE}"
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tahoe_tenant_wall ON {table} USING ({condition}) WITH CHECK ({condition})")


def _drop_postgres_protections() -> None:
    for table in TENANT_TABLES:
        op.execute(f"DROP POLICY IF EXISTS tahoe_tenant_wall ON {table}")
    op.execute(
        """
        DO $$
        BEGIN
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tahoe_app') THEN
            REVOKE ALL ON audit_events, audit_heads, webhook_endpoints, webhook_deliveries FROM tahoe_app;
          END IF;
        END $$;
        """
    )
    op.execute("DROP TRIGGER IF EXISTS audit_heads_advance_only ON audit_heads")
    op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
    op.execute("DROP FUNCTION IF EXISTS tahoe_audit_head_advances()")
    op.execute("DROP FUNCTION IF EXISTS tahoe_audit_append_only()")
