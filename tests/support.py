"""Test helpers: databases, an in-process server on port 0, typed clients."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import create_engine, event, pool, text
from sqlalchemy.engine import make_url

from tahoe_auth import migrate
from tahoe_auth.api.ext_authz_http import HttpAuthzServer, HttpCheck
from tahoe_auth.app import App, build_app
from tahoe_auth.config import Settings
from tahoe_auth.health import HealthReporter
from tahoe_auth.http_side import SideServer
from tahoe_auth.server import create_server
from tahoe_auth.store.db import Database
from tahoe_auth.store.models import Base
from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc, tenant_pb2, tenant_pb2_grpc

OWNER_PASSWORD = "correct horse battery staple"


def unavailable(message: str) -> NoReturn:
    """A dependency of the test (a database, Redis, the envoy binary) is missing:
    skip outside CI; under CI=true fail, so that no feature goes untested there."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; in CI this is a failure, not a skip", pytrace=False)
    pytest.skip(message)


def create_database(url: str) -> None:
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}).first()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def reset_schema(url: str) -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    migrate.upgrade(url)


def truncate_all(url: str) -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()


@dataclass
class Tenant:
    id: str
    slug: str
    owner_id: str
    owner_email: str
    owner_password: str


@dataclass
class RunningServer:
    app: App
    address: str
    channel: grpc.Channel
    platform_key: str
    # The HTTP ext_authz transport of the same app (Envoy's http_service).
    authz_http_port: int = 0

    @property
    def auth(self) -> auth_pb2_grpc.AuthServiceStub:
        return auth_pb2_grpc.AuthServiceStub(self.channel)

    @property
    def tenants(self) -> tenant_pb2_grpc.TenantServiceStub:
        return tenant_pb2_grpc.TenantServiceStub(self.channel)

    def owner_token(self, tenant: Tenant) -> str:
        return self.login(tenant).tokens.access_token

    def add_user(
        self, tenant: Tenant, roles: list[str], email: str | None = None, password: str = OWNER_PASSWORD
    ) -> tuple[str, str]:
        """A user of `tenant` with `roles`, created by its owner: (user id, access token)."""
        email = email or f"u{secrets.token_hex(4)}@{tenant.slug}.test"
        user = self.tenants.CreateUser(
            tenant_pb2.CreateUserRequest(user=tenant_pb2.User(email=email), password=password, roles=roles),
            metadata=bearer(self.owner_token(tenant)),
        ).user
        tokens = self.auth.Login(auth_pb2.LoginRequest(tenant=tenant.slug, email=email, password=password)).tokens
        return user.id, tokens.access_token

    def create_tenant(self, slug: str | None = None, password: str = OWNER_PASSWORD) -> Tenant:
        slug = slug or f"t{secrets.token_hex(4)}"
        email = f"owner@{slug}.test"
        tenant, owner = self.app.tenants.create_tenant_with_owner(slug, slug.title(), email, password)
        return Tenant(tenant.id, slug, owner.id, email, password)

    def login(self, tenant: Tenant) -> auth_pb2.LoginResponse:
        return self.auth.Login(
            auth_pb2.LoginRequest(tenant=tenant.slug, email=tenant.owner_email, password=tenant.owner_password)
        )


REQUEST_THREADS = "grpc"  # server.create_server's worker thread prefix


@contextlib.contextmanager
def request_sql(db: Database) -> Iterator[list[str]]:
    """SQL that requests issue (on the server's gRPC threads, not its timers and
    pollers) while the block runs."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread().name.startswith(REQUEST_THREADS):
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@contextlib.contextmanager
def running_server(env: Mapping[str, str], **overrides: object) -> Iterator[RunningServer]:
    settings = Settings.from_env(env)
    if overrides:
        import dataclasses

        settings = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]
    app = build_app(settings)
    app.keys.ensure_active_key()
    app.keys.start_refresh()
    app.changes.start()
    server, port, health = create_server(app, "127.0.0.1:0")
    server.start()
    authz_http = HttpAuthzServer(HttpCheck(app.gatekeeper), "127.0.0.1:0")
    authz_http.start()
    health.check_once()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield RunningServer(app, f"127.0.0.1:{port}", channel, app.platform.create("tests"), authz_http.port)
    finally:
        channel.close()
        authz_http.stop()
        server.stop(None)
        app.close()


@dataclass
class ProbedServer:
    health: HealthReporter
    channel: grpc.Channel
    ready_url: str


@contextlib.contextmanager
def probed_server(database_url: str, var_dir: Path) -> Iterator[ProbedServer]:
    """A gRPC server with its side HTTP port (/readyz) on `database_url`, whose health
    nobody checks but the test (`health.check_once()`): what probes see, step by step."""
    settings = Settings.from_env(
        {"TAHOE_DATABASE_URL": database_url, "TAHOE_MASTER_KEY": "A" * 43, "TAHOE_VAR_DIR": str(var_dir)}
    )
    app = build_app(settings)
    app.keys.ensure_active_key()
    server, port, health = create_server(app, "127.0.0.1:0")
    side = SideServer(app, health, "127.0.0.1:0")
    server.start()
    side.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield ProbedServer(health, channel, f"http://{side.address}/readyz")
    finally:
        channel.close()
        side.stop()
        server.stop(None)
        app.close()


DetailT = TypeVar("DetailT", bound=Message)


def status_detail(error: grpc.RpcError, kind: type[DetailT]) -> DetailT:
    """The `kind` detail (a google.rpc message) of `error`'s rich status; fails the test without one."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich status on {error}"
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            info = kind()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no {kind.DESCRIPTOR.name} in {status}")


def error_reason(error: grpc.RpcError) -> str:
    return status_detail(error, error_details_pb2.ErrorInfo).reason


def retry_delay(error: grpc.RpcError) -> int:
    """Seconds the refusal's RetryInfo asks the client to wait."""
    return int(status_detail(error, error_details_pb2.RetryInfo).retry_delay.seconds)


def call_error(fn: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    """The RpcError that `fn(*args, **kwargs)` raises (fails the test if it succeeds)."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"{fn} succeeded; expected an error")


def wait_until(predicate: Any, limit: float = 3.0, step: float = 0.01) -> float:
    """Seconds until `predicate()` is true; fails after `limit`."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < limit, "condition not reached in time"
        time.sleep(step)
    return time.monotonic() - started


def parse_steps(output: str) -> dict[str, list[Any]]:
    """What a docs test printed, by `### title` heading: the JSON documents and errors
    (`Code: X`, with the ErrorInfo reason) printed after each (docs run by the tests)."""
    steps: dict[str, list[Any]] = {}
    for chunk in output.split("\n### ")[1:]:
        title, _, body = chunk.partition("\n")
        items: list[Any] = []
        decoder, position = json.JSONDecoder(), 0
        while position < len(body):
            if body[position] == "{":
                document, position = decoder.raw_decode(body, position)
                if "@type" in document and items and "error" in items[-1]:
                    items[-1]["reason"] = document["reason"]  # the error's google.rpc.ErrorInfo
                else:
                    items.append(document)
            elif body.startswith("ERROR:", position):
                code = re.compile(r"Code: (\w+)").search(body, position)
                assert code is not None
                items.append({"error": code.group(1)})
                position = code.end()
            else:
                position += 1
        steps[title.strip()] = items
    return steps


def token_is_valid(instance: RunningServer, token: str) -> bool:
    """Whether ValidateToken accepts `token` (any refusal must be UNAUTHENTICATED)."""
    try:
        instance.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token))
        return True
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        return False
