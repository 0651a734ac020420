"""Scenarios for authorization tests: users with a role, API keys, service tokens,
suspended tenants (through the real APIs), and tokens that must be refused (expired,
unsigned)."""

from __future__ import annotations

import base64
import json
import secrets
import time

from tahoe_auth.domain import tokens
from tahoe_auth.v1 import auth_pb2, tenant_pb2
from tests import support


def user_with_role(auth: support.RunningServer, tenant: support.Tenant, role: str) -> str:
    """A new user of `tenant` holding `role` (created by the owner); an access token."""
    return auth.add_user(tenant, [role])[1]


def suspend(auth: support.RunningServer, tenant: support.Tenant) -> None:
    auth.tenants.SuspendTenant(
        tenant_pb2.SuspendTenantRequest(tenant_id=tenant.id, reason="test"), metadata=support.bearer(auth.platform_key)
    )


def api_key(auth: support.RunningServer, tenant: support.Tenant, scopes: list[str]) -> tuple[str, str]:
    """An API key of the tenant's owner with `scopes`: (key id, `tahoe_sk_…` secret)."""
    created = auth.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(name=f"k{secrets.token_hex(3)}", scopes=scopes),
        metadata=support.bearer(auth.owner_token(tenant)),
    )
    return created.api_key.id, created.secret


def revoke_api_key(auth: support.RunningServer, tenant: support.Tenant, key_id: str) -> None:
    auth.auth.RevokeApiKey(
        auth_pb2.RevokeApiKeyRequest(api_key_id=key_id), metadata=support.bearer(auth.owner_token(tenant))
    )


def service_token(auth: support.RunningServer, tenant: support.Tenant, permissions: list[str]) -> tuple[str, str]:
    """A service account of the tenant with `permissions` and a token it obtained with
    its client credentials: (account id, access token)."""
    created = auth.tenants.CreateServiceAccount(
        tenant_pb2.CreateServiceAccountRequest(
            service_account=tenant_pb2.ServiceAccount(name=f"svc{secrets.token_hex(3)}", permissions=permissions)
        ),
        metadata=support.bearer(auth.owner_token(tenant)),
    )
    issued = auth.auth.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(client_id=created.client_id, client_secret=created.client_secret)
    )
    return created.service_account.id, issued.access_token


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
