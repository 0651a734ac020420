"""PostgreSQL row-level security, the second tenant wall, with the app running as the
`tahoe_app` role as in production: raw SQL that forgets the tenant still sees only
the transaction's tenant, and a pooled connection outside a transaction sees nothing."""

from __future__ import annotations

import pytest
import sqlalchemy.exc
from sqlalchemy import create_engine, pool, text

from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM
from tests.conftest import APP_ROLE
from tests.support import RunningServer

TENANT_TABLES = sorted(
    mapper.local_table.name  # type: ignore[union-attr]
    for mapper in m.Base.registry.mappers
    if issubclass(mapper.class_, m.TenantScoped)
)


def count(conn, table: str) -> int:  # type: ignore[no-untyped-def]
    return int(conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one())


def test_the_app_runs_as_a_role_that_cannot_bypass_the_wall(server: RunningServer, pg_env: dict[str, str]) -> None:
    with server.app.db.engine.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar_one() == APP_ROLE
        super_, bypass = conn.execute(
            text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        ).one()
        assert not super_ and not bypass
        with pytest.raises(sqlalchemy.exc.ProgrammingError, match="must be owner"):
            conn.execute(text("ALTER TABLE users DISABLE ROW LEVEL SECURITY"))
    admin = create_engine(pg_env["TAHOE_DATABASE_URL"], poolclass=pool.NullPool)
    with admin.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT relname, relrowsecurity, relforcerowsecurity, pg_get_userbyid(relowner) FROM pg_class "
                "WHERE relname = ANY(:names)"
            ),
            {"names": [*TENANT_TABLES, "tenants"]},
        ).all()
    admin.dispose()
    assert {r[0] for r in rows} == {*TENANT_TABLES, "tenants"}
    for name, enabled, forced, owner in rows:
        # Every tenant table, including those of later revisions, carries the wall.
        assert enabled and forced, name
        assert owner != APP_ROLE, name


def test_a_pooled_connection_outside_a_transaction_sees_no_tenant_rows(server: RunningServer) -> None:
    a, b = server.create_tenant(), server.create_tenant()
    server.login(a)
    server.login(b)
    db = server.app.db
    db.engine.dispose()  # one connection only, so the next checkout reuses the tenant's
    with db.session(a.id) as session:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert count(session, "users") == 1
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == pid
        assert conn.execute(text("SELECT current_setting('tahoe.tenant_id', true)")).scalar_one() in ("", None)
        for table in [*TENANT_TABLES, "tenants", "signing_keys", "platform_credentials"]:
            assert count(conn, table) == 0, table


def test_raw_sql_in_a_tenant_transaction_sees_only_that_tenant(server: RunningServer) -> None:
    a, b = server.create_tenant(), server.create_tenant()
    for tenant in (a, b):
        server.login(tenant)
    db = server.app.db
    with db.session(a.id) as session:
        # No WHERE clause, not through the ORM: only the wall filters.
        assert set(session.execute(text("SELECT DISTINCT tenant_id FROM users")).scalars()) == {a.id}
        assert set(session.execute(text("SELECT DISTINCT tenant_id FROM sessions")).scalars()) == {a.id}
        assert set(session.execute(text("SELECT id FROM tenants")).scalars()) == {a.id}
        assert count(session, "signing_keys") == 0  # platform tables: system scope only
        session.commit()
        # The setting is re-applied to the next transaction of the same unit of work.
        assert set(session.execute(text("SELECT DISTINCT tenant_id FROM users")).scalars()) == {a.id}
    with db.session(SYSTEM) as session:
        assert set(session.execute(text("SELECT DISTINCT tenant_id FROM users")).scalars()) == {a.id, b.id}
        assert count(session, "signing_keys") >= 1


def test_the_wall_refuses_writes_into_another_tenant(server: RunningServer) -> None:
    a, b = server.create_tenant(), server.create_tenant()
    refused = pytest.raises(sqlalchemy.exc.ProgrammingError, match="row-level security")
    with server.app.db.session(a.id) as session, refused:
        session.execute(
            text(
                "INSERT INTO roles (id, tenant_id, name, description, permissions, created_at, updated_at) "
                "VALUES ('r1', :b, 'x', '', '[]', now(), now())"
            ),
            {"b": b.id},
        )
    with server.app.db.session(a.id) as session:
        updated = session.execute(text("UPDATE users SET display_name = 'pwned' WHERE tenant_id = :b"), {"b": b.id})
        assert updated.rowcount == 0  # type: ignore[attr-defined]


def test_turning_row_security_off_fails_instead_of_bypassing(server: RunningServer) -> None:
    server.create_tenant()
    with server.app.db.engine.connect() as conn:
        conn.execute(text("SET row_security = off"))
        with pytest.raises(sqlalchemy.exc.ProgrammingError, match="row-level security"):
            count(conn, "users")
