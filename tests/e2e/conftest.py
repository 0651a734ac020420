"""End-to-end fixtures: one stack (auth server + Envoy + demo upstream) per module,
on the real PostgreSQL and Redis. Tests create their own tenants (random slugs), so
they share the stack without interfering."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
from collections.abc import Iterator

import pytest

from bench import harness
from tahoe_auth.domain import tokens
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM
from tests import support
from tests.e2e import stack as e2e

pytestmark = pytest.mark.envoy


def envoy_available() -> bool:
    try:
        harness.find_binary("envoy")
        return True
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def module_env(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if not envoy_available():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("envoy is not installed (make install provides it)")
        pytest.skip("envoy is not installed")
    # A clean database and Redis for the module (its master key is new); the tests
    # then share them, each with its own tenants.
    support.truncate_all(pg_url)
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    return {
        "TAHOE_DATABASE_URL": pg_url,
        "TAHOE_REDIS_URL": redis_url,
        "TAHOE_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "TAHOE_VAR_DIR": str(tmp_path_factory.mktemp("var")),
    }


@pytest.fixture(scope="module")
def live(module_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e.Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    with e2e.stack(module_env, tmp) as running:
        yield running
    shutil.rmtree(tmp, ignore_errors=True)


def add_user(auth: support.RunningServer, tenant: support.Tenant, role: str) -> str:
    """A user of `tenant` holding `role`; returns an access token.

    Written directly through a unit of work, as a tenant-admin use case would."""
    email = f"{role}-{secrets.token_hex(3)}@{tenant.slug}.test"
    password_hash = auth.app.hasher.hash(support.OWNER_PASSWORD)
    with auth.app.db.unit_of_work(tenant.id) as uow:
        user = uow.users.add(m.User(tenant_id=tenant.id, email=email, password_hash=password_hash))
        uow.role_bindings.add(tenant.id, user.id, role)
        uow.commit()
    from tahoe_auth.v1 import auth_pb2

    login = auth.auth.Login(auth_pb2.LoginRequest(tenant=tenant.slug, email=email, password=support.OWNER_PASSWORD))
    return login.tokens.access_token


def suspend(auth: support.RunningServer, tenant: support.Tenant) -> None:
    with auth.app.db.unit_of_work(SYSTEM) as uow:
        uow.tenants.get(tenant.id).status = "suspended"
        uow.commit()
    auth.app.notifier.tenant_changed(tenant.id)


def expired_token(auth: support.RunningServer, tenant: support.Tenant, session_id: str) -> str:
    settings = auth.app.settings
    token, _ = tokens.issue_access_token(
        auth.app.keys.ring(),
        issuer=settings.issuer,
        audience=settings.audience,
        subject=tenant.owner_id,
        tenant_id=tenant.id,
        subject_type="user",
        session_id=session_id,
        now=int(auth.app.clock.timestamp()) - 3600,
        ttl=600,
    )
    return token


def unsigned_token(auth: support.RunningServer, tenant: support.Tenant) -> str:
    """`alg: none`, otherwise well-formed claims and a known kid."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    import json
    import time

    kid = auth.app.keys.ring().active_kid
    header = {"alg": "none", "typ": tokens.ACCESS_TOKEN_TYPE, "kid": kid}
    now = int(time.time())
    payload = {
        "iss": auth.app.settings.issuer,
        "aud": auth.app.settings.audience,
        "sub": tenant.owner_id,
        "tid": tenant.id,
        "sty": "user",
        "jti": "x",
        "iat": now,
        "exp": now + 600,
    }
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."
