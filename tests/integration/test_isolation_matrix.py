"""The isolation matrix: for every method of the governed services (AuthService,
TenantService, UsageService; generated from the service descriptors, so a new method
or service is covered without editing this file), the owner of tenant A, A's highest
role, fills the request with tenant B's identifiers:

- naming B (`tenant_id` = B): NOT_FOUND or PERMISSION_DENIED, never data;
- in A's own tenant with B's resource ids: whatever the answer, no B data in it;
- afterwards, B's resources are all still there and unchanged.

Public methods take their credential in the body (password, refresh token, client
secret, invitation token), not A's token: with B's identifiers and no B credential
they answer UNAUTHENTICATED or INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from google.protobuf import descriptor

from tahoe_auth import server as server_module
from tahoe_auth.v1 import auth_pb2, tenant_pb2
from tests import support
from tests.conftest import APP_ROLE
from tests.isolation import (
    CEREMONY_STARTS,
    DENIED,
    METHOD_IDS,
    METHODS,
    PUBLIC_REFUSALS,
    World,
    build_world,
    clear_tenant,
    fresh_owner_token,
    is_public,
    names_another_tenant,
    request_for,
    stub_method,
)
from tests.support import RunningServer, bearer


@pytest.fixture(scope="module")
def world(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    support.truncate_all(pg_url)
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        "TAHOE_DATABASE_URL": pg_url,
        "TAHOE_DATABASE_ROLE": APP_ROLE,
        "TAHOE_REDIS_URL": redis_url,
        "TAHOE_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "TAHOE_VAR_DIR": str(Path(tmp_path_factory.mktemp("isolation")) / "var"),
    }
    with support.running_server(env) as server:
        yield build_world(server)


@pytest.mark.parametrize(("service", "method"), METHODS, ids=METHOD_IDS)
def test_tenant_a_owner_cannot_reach_tenant_b(
    world: World, service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor
) -> None:
    server, b = world.server, world.b
    public = is_public(service, method)
    call = stub_method(server, service, method)
    request = request_for(method, b)
    a_owner = bearer(fresh_owner_token(server, world.a))
    # The browser session methods refuse anything without it (CSRF): past that, the same rules.
    a_owner = (*a_owner, ("x-csrf-protection", "1"))

    for variant in (request, clear_tenant(request)):
        names_b = variant is request and names_another_tenant(request)
        try:
            response = call(variant, metadata=a_owner)
        except grpc.RpcError as error:
            if public:
                assert error.code() in PUBLIC_REFUSALS, (method.name, error.code(), error.details())
            elif names_b:
                assert error.code() in DENIED, (method.name, error.code(), error.details())
            else:  # A's own tenant (or a self-service method): any honest answer, never a crash
                assert error.code() != grpc.StatusCode.INTERNAL, (method.name, error.details())
            continue
        if method.name in CEREMONY_STARTS:
            assert b.tenant.id not in str(response) and b.tenant.slug not in str(response), method.name
        else:
            # A public method may succeed only by doing nothing (BrowserLogout without a cookie).
            assert (not public or response.ByteSize() == 0) and not names_b, f"{method.name} answered about tenant B"
        leaked = [value for value in b.secrets() if value in str(response)]
        assert not leaked, f"{method.name} returned tenant B's data: {leaked}"


def test_tenant_b_is_untouched_after_the_matrix(world: World) -> None:
    server, b = world.server, world.b
    owner = bearer(server.owner_token(b.tenant))
    member = server.tenants.GetUser(tenant_pb2.GetUserRequest(user_id=b.member_id), metadata=owner).user
    assert member.state == tenant_pb2.USER_STATE_ACTIVE and list(member.roles) == ["b-role", "member"]
    assert server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=b.key_secret)).principal.subject == b.key_id
    roles = server.tenants.GetRole(tenant_pb2.GetRoleRequest(name="b-role"), metadata=owner).role
    assert list(roles.permissions) == ["usage:read"]
    invitations = server.tenants.ListInvitations(
        tenant_pb2.ListInvitationsRequest(state=tenant_pb2.INVITATION_STATE_PENDING), metadata=owner
    ).invitations
    assert [i.id for i in invitations] == [b.invitation_id]
    account = server.tenants.GetServiceAccount(
        tenant_pb2.GetServiceAccountRequest(service_account_id=b.service_account_id), metadata=owner
    ).service_account
    assert not account.secret_revoked and account.description == ""
    tenant = server.tenants.GetTenant(tenant_pb2.GetTenantRequest(), metadata=owner).tenant
    assert tenant.state == tenant_pb2.TENANT_STATE_ACTIVE and tenant.display_name == b.tenant.slug.title()
    sessions = server.auth.ListSessions(auth_pb2.ListSessionsRequest(user_id=b.member_id), metadata=owner).sessions
    assert b.session_id in [s.id for s in sessions]


def test_the_matrix_covers_every_governed_method() -> None:
    assert {f"/{s.full_name}/{m.name}" for s, m in METHODS} == set(
        server_module.method_names(server_module.GOVERNED_SERVICES)
    )


def test_naming_another_tenant_or_none_at_all_reads_the_same(server: RunningServer) -> None:
    """The Authorize step answers a tenant that exists and one that does not alike."""
    mine, theirs = server.create_tenant(), server.create_tenant()
    token = server.login(mine).tokens.access_token

    def answer(tenant_id: str) -> tuple[grpc.StatusCode, str, str]:
        error = support.call_error(
            server.tenants.ListUsers, tenant_pb2.ListUsersRequest(tenant_id=tenant_id), metadata=bearer(token)
        )
        return error.code(), error.details(), support.error_reason(error)

    existing, missing = answer(theirs.id), answer(str(uuid.uuid4()))
    assert existing == missing == (grpc.StatusCode.NOT_FOUND, "resource not found", "NOT_FOUND")
