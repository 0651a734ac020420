"""Scenarios for authorization tests: users with a role, suspended tenants, and tokens
that must be refused (expired, unsigned). Written through units of work, as the
tenant-admin use cases would."""

from __future__ import annotations

import base64
import json
import secrets
import time

from tahoe_auth.domain import tokens
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM
from tahoe_auth.v1 import auth_pb2
from tests import support


def user_with_role(auth: support.RunningServer, tenant: support.Tenant, role: str) -> str:
    """A user of `tenant` holding `role`; returns an access token.

    Written directly through a unit of work, as a tenant-admin use case would."""
    email = f"{role}-{secrets.token_hex(3)}@{tenant.slug}.test"
    password_hash = auth.app.hasher.hash(support.OWNER_PASSWORD)
    with auth.app.db.unit_of_work(tenant.id) as uow:
        user = uow.users.add(m.User(tenant_id=tenant.id, email=email, password_hash=password_hash))
        uow.role_bindings.add(tenant.id, user.id, role)
        uow.commit()
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
