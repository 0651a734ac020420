"""The tenant flow on the embedded default (SQLite, in-process store), where `make run`
starts: no row-level security there, the unit of work's tenant criteria still apply."""

from __future__ import annotations

import grpc

from tahoe_auth.v1 import auth_pb2, tenant_pb2
from tests.support import RunningServer, bearer, call_error, error_reason


def test_invite_role_key_and_isolation_on_sqlite(embedded_server: RunningServer) -> None:
    server = embedded_server
    platform = bearer(server.platform_key)
    acme = server.tenants.CreateTenant(
        tenant_pb2.CreateTenantRequest(tenant=tenant_pb2.Tenant(slug="acme"), owner_email="alice@acme.test"),
        metadata=platform,
    )
    accepted = server.tenants.AcceptInvitation(
        tenant_pb2.AcceptInvitationRequest(token=acme.owner_invitation_token, password="her own long passphrase")
    )
    alice = accepted.tokens.access_token
    server.tenants.CreateRole(
        tenant_pb2.CreateRoleRequest(role=tenant_pb2.Role(name="reader", permissions=["transcription:read"])),
        metadata=bearer(alice),
    )
    bob = server.tenants.CreateUser(
        tenant_pb2.CreateUserRequest(user=tenant_pb2.User(email="bob@acme.test"), roles=["reader"]),
        metadata=bearer(alice),
    ).user
    key = server.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(user_id=bob.id, name="k", scopes=["transcription:read"]), metadata=bearer(alice)
    ).secret
    found = server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=key)).principal
    assert list(found.permissions) == ["transcription:read"]

    other = server.create_tenant()
    error = call_error(
        server.tenants.GetUser, tenant_pb2.GetUserRequest(user_id=other.owner_id), metadata=bearer(alice)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    users = server.tenants.ListUsers(tenant_pb2.ListUsersRequest(), metadata=bearer(alice)).users
    assert sorted(u.email for u in users) == ["alice@acme.test", "bob@acme.test"]
    error = call_error(
        server.tenants.RemoveRole,
        tenant_pb2.RemoveRoleRequest(user_id=accepted.user_id, role="owner"),
        metadata=bearer(alice),
    )
    assert error_reason(error) == "LAST_OWNER"
