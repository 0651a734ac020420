"""Engine, unit of work and the tenant wall.

A unit of work is bound either to one tenant or, explicitly, to the system scope. Every
ORM query on a tenant-bound session gets `tenant_id = :tenant` added for TenantScoped
models (one listener, not a filter in each repository), and on PostgreSQL the tenant is
also set for each transaction (`set_config(..., true)`) for row-level security: the
second wall (migrations/versions/*0004*), enforced when the app runs as `tahoe_app`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.orm import ORMExecuteState, sessionmaker, with_loader_criteria
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.pool import ConnectionPoolEntry

from tahoe_auth.domain.errors import InvalidArgument, Unavailable
from tahoe_auth.kernel.metrics import DATABASE_ERRORS
from tahoe_auth.store import repositories as r
from tahoe_auth.store.audit_repository import AuditRepository
from tahoe_auth.store.change_log import ChangeLogRepository
from tahoe_auth.store.dashboard_repository import DashboardRepository
from tahoe_auth.store.mail_repository import MailRepository
from tahoe_auth.store.mfa_repository import MfaRepository
from tahoe_auth.store.models import PlatformServiceAccount, ServiceAccount, TenantScoped
from tahoe_auth.store.usage_repository import UsageRepository
from tahoe_auth.store.webhook_repository import OutboxRepository, WebhookRepository

log = logging.getLogger(__name__)

TENANT_KEY = "tenant_id"
RLS_KEY = "row_level_security"
SYSTEM = "system"


def make_engine(url: str, role: str | None = None) -> Engine:
    # hide_parameters: a driver error's message would otherwise carry the statement's
    # parameters (emails, hashes, tokens' digests) into logs and exception chains.
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; issue it ourselves so that
        # a unit of work is one transaction (BEGIN IMMEDIATE would serialise readers).
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine
    engine = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, pool_timeout=5, hide_parameters=True)
    if role:
        event.listen(engine, "connect", _set_role(role))
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _: ConnectionPoolEntry) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _set_role(role: str) -> Any:
    def set_role(dbapi_connection: Any, _: ConnectionPoolEntry) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f'SET ROLE "{role}"')
        dbapi_connection.commit()

    return set_role


@event.listens_for(OrmSession, "do_orm_execute")
def _tenant_criteria(state: ORMExecuteState) -> None:
    tenant_id = state.session.info.get(TENANT_KEY)
    if tenant_id is None or tenant_id == SYSTEM:
        return
    is_query = state.is_select or state.is_update or state.is_delete
    if is_query and not (state.is_column_load or state.is_relationship_load):
        state.statement = state.statement.options(
            with_loader_criteria(TenantScoped, lambda cls: cls.tenant_id == tenant_id, include_aliases=True)
        )


@event.listens_for(OrmSession, "after_begin")
def _tenant_setting(session: OrmSession, _: Any, connection: Connection) -> None:
    """Row-level security reads the tenant from transaction-local settings: set them at
    the start of every transaction of the session (also after a commit), never for longer."""
    tenant_id = session.info.get(TENANT_KEY)
    if tenant_id is None or not session.info.get(RLS_KEY):
        return
    connection.execute(
        text("SELECT set_config('tahoe.tenant_id', :tenant, true), set_config('tahoe.scope', :scope, true)"),
        {"tenant": "" if tenant_id == SYSTEM else tenant_id, "scope": "system" if tenant_id == SYSTEM else "tenant"},
    )


@event.listens_for(OrmSession, "before_flush")
def _tenant_guard(session: OrmSession, *_: Any) -> None:
    tenant_id = session.info.get(TENANT_KEY)
    if tenant_id is None or tenant_id == SYSTEM:
        return
    for obj in list(session.new) + list(session.dirty):
        if isinstance(obj, TenantScoped) and obj.tenant_id != tenant_id:
            raise RuntimeError(f"{type(obj).__name__} of another tenant written in tenant {tenant_id}'s unit of work")


class Database:
    def __init__(self, url: str, role: str | None = None) -> None:
        self.url = url
        self.engine = make_engine(url, role)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.ping_error = ""
        self._disposed = False
        event.listen(self.engine, "checkin", self._close_if_disposed)

    @contextmanager
    def session(self, tenant_id: str) -> Iterator[OrmSession]:
        """A transaction bound to `tenant_id`, or to SYSTEM for cross-tenant work."""
        if not tenant_id:
            raise ValueError("a unit of work needs a tenant id or SYSTEM")
        session = self._sessions()
        session.info[TENANT_KEY] = tenant_id
        session.info[RLS_KEY] = self.is_postgres
        try:
            yield session
        except DBAPIError as exc:
            session.rollback()
            DATABASE_ERRORS.labels(type(exc.orig).__name__).inc()
            if exc.connection_invalidated or _is_connection_error(exc):
                log.warning("database unreachable: %s", type(exc.orig).__name__)
                raise Unavailable("database is unavailable") from exc
            if isinstance(exc, DataError):
                # The boundary rule (api/boundary.py) should have refused the value first.
                log.warning("database refused a value: %s", type(exc.orig).__name__)
                raise InvalidArgument("request", "a value in the request is outside what can be stored") from None
            raise
        finally:
            session.close()

    @contextmanager
    def unit_of_work(self, tenant_id: str) -> Iterator[UnitOfWork]:
        with self.session(tenant_id) as session:
            yield UnitOfWork(session)

    def ping(self) -> bool:
        """Whether the database answers; when not, `ping_error` says why in one line.
        Nothing is logged here: probes call this every few seconds, and the caller
        (health.py) logs when the answer changes, not each time it is asked."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means "not ready"
            self.ping_error = _one_line(exc)
            return False
        self.ping_error = ""
        return True

    def dispose(self) -> None:
        """Closes the pooled connections. One still in use (work a stopping server
        could not wait for) is closed when it comes back: the pool would otherwise keep
        it open until the garbage collector found it."""
        self._disposed = True
        self.engine.dispose()

    def _close_if_disposed(self, _dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if self._disposed:
            record.invalidate()


def _one_line(exc: BaseException) -> str:
    # Driver messages run over several lines (psycopg adds hints); the first says it.
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


def _is_connection_error(exc: DBAPIError) -> bool:
    name = type(exc.orig).__name__
    return name in {"OperationalError", "InterfaceError"} and "timeout" not in str(exc.orig).lower()


class UnitOfWork:
    """One transaction and the repositories over it. Nothing is written unless the
    use case calls commit(); leaving the block rolls back whatever was not committed.

    It is also a ChangeJournal (kernel/changes.py): a change notification is appended
    to the change log in this transaction and delivered only once it commits."""

    def __init__(self, session: OrmSession) -> None:
        self.session = session
        self._after_commit: list[Callable[[], None]] = []
        self.changes = ChangeLogRepository(session)
        self.tenants = r.TenantRepository(session)
        self.users = r.UserRepository(session)
        self.role_bindings = r.RoleBindingRepository(session)
        self.sessions = r.SessionRepository(session)
        self.refresh_tokens = r.RefreshTokenRepository(session)
        self.signing_keys = r.SigningKeyRepository(session)
        self.platform_credentials = r.PlatformCredentialRepository(session)
        self.roles = r.RoleRepository(session)
        self.api_keys = r.ApiKeyRepository(session)
        self.invitations = r.InvitationRepository(session)
        self.service_accounts = r.ServiceAccountRepository(session, ServiceAccount)
        self.platform_service_accounts = r.ServiceAccountRepository(session, PlatformServiceAccount)
        self.usage = UsageRepository(session)
        self.dashboards = DashboardRepository(session)
        self.audit = AuditRepository(session)
        self.outbox = OutboxRepository(session)
        self.webhooks = WebhookRepository(session)
        self.mfa = MfaRepository(session)
        self.mail = MailRepository(session)

    def record_change(self, channel: str, message: str) -> int:
        return self.changes.append(channel, message)

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    def commit(self) -> None:
        self.session.commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the transaction has committed; a delivery failure must not undo the call
                log.exception("after-commit callback failed")
