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
import importlib
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from google.protobuf import descriptor, message, message_factory

from tahoe_auth import server as server_module
from tahoe_auth.services.context import CallContext
from tahoe_auth.v1 import auth_pb2, tenant_pb2
from tests import support
from tests.conftest import APP_ROLE
from tests.support import RunningServer, bearer

DENIED = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED}
PUBLIC_REFUSALS = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT}
METHODS = [(service, method) for service in server_module.GOVERNED_SERVICES for method in service.methods]


@dataclass
class TenantB:
    tenant: support.Tenant
    member_id: str
    member_email: str
    session_id: str
    key_id: str
    key_secret: str
    key_prefix: str
    invitation_id: str
    service_account_id: str

    def secrets(self) -> list[str]:
        """B's data that must never appear in an answer to A (inputs like role names and
        emails are echoed legitimately when A creates its own resources with them)."""
        t = self.tenant
        return [
            t.id,
            t.owner_id,
            t.owner_email,
            self.member_id,
            self.session_id,
            self.key_id,
            self.key_prefix,
            self.invitation_id,
            self.service_account_id,
        ]


@dataclass
class World:
    server: RunningServer
    a: support.Tenant
    b: TenantB


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
        a, b = server.create_tenant("tenant-a"), server.create_tenant("tenant-b")
        owner = bearer(server.owner_token(b))
        server.tenants.CreateRole(
            tenant_pb2.CreateRoleRequest(role=tenant_pb2.Role(name="b-role", permissions=["usage:read"])),
            metadata=owner,
        )
        member_id, member_token = server.add_user(b, ["member", "b-role"], email="member@tenant-b.test")
        session_id = server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=member_token)).principal.session_id
        key = server.auth.CreateApiKey(auth_pb2.CreateApiKeyRequest(name="b", scopes=["usage:read"]), metadata=owner)
        invitation = server.tenants.CreateInvitation(
            tenant_pb2.CreateInvitationRequest(email="invitee@tenant-b.test", role="member"), metadata=owner
        ).invitation
        account = server.tenants.CreateServiceAccount(
            tenant_pb2.CreateServiceAccountRequest(
                service_account=tenant_pb2.ServiceAccount(name="b-svc", permissions=["usage:read"])
            ),
            metadata=owner,
        ).service_account
        b_world = TenantB(
            b,
            member_id,
            "member@tenant-b.test",
            session_id,
            key.api_key.id,
            key.secret,
            key.api_key.prefix,
            invitation.id,
            account.id,
        )
        yield World(server, a, b_world)


def b_values(b: TenantB) -> dict[str, Any]:
    """What each request field is set to: B's identifier of that kind, else a harmless value."""
    return {
        "tenant_id": b.tenant.id,
        "user_id": b.member_id,
        "subject": b.member_id,
        "api_key_id": b.key_id,
        "invitation_id": b.invitation_id,
        "service_account_id": b.service_account_id,
        "client_id": b.service_account_id,
        "session_id": b.session_id,
        "role": "b-role",
        "roles": ["b-role"],
        "email": b.member_email,
        "owner_email": b.member_email,
        "tenant": b.tenant.slug,
        "slug": b.tenant.slug,
        "scopes": ["usage:read"],
        "permissions": ["usage:read"],
        "force": True,
        "show_ended": True,
    }


IDS_BY_MESSAGE = {"Tenant": "tenant", "User": "member", "ServiceAccount": "service_account"}
SECRETS = {"password", "current_password", "new_password", "client_secret"}
ROLE_MESSAGES = {"Role", "GetRoleRequest", "DeleteRoleRequest"}
FREE_TEXT = {"display_name", "description", "reason", "plan"}


def fill(msg: message.Message, b: TenantB) -> None:
    values = b_values(b)
    ids = {"tenant": b.tenant.id, "member": b.member_id, "service_account": b.service_account_id}
    for field in msg.DESCRIPTOR.fields:
        name, kind = field.name, field.type
        if kind == descriptor.FieldDescriptor.TYPE_MESSAGE:
            sub = getattr(msg, name)
            if field.message_type.full_name == "google.protobuf.FieldMask":
                sibling = [f.name for f in msg.DESCRIPTOR.fields if f.message_type and f.name != name]
                resource = getattr(msg, sibling[0]) if sibling else None
                names = [f.name for f in resource.DESCRIPTOR.fields] if resource is not None else []
                sub.paths.append("display_name" if "display_name" in names else "description")
            elif field.message_type.full_name.startswith("tahoe_auth.v1.") and not field.is_repeated:
                fill(sub, b)
            continue
        if name == "id" and msg.DESCRIPTOR.name in IDS_BY_MESSAGE:
            setattr(msg, name, ids[IDS_BY_MESSAGE[msg.DESCRIPTOR.name]])
        elif name == "name":
            setattr(
                msg, name, "b-role" if msg.DESCRIPTOR.name in ("Role", "GetRoleRequest", "DeleteRoleRequest") else "x"
            )
        elif name in SECRETS:
            setattr(msg, name, "not the right secret")
        elif name in values and field.is_repeated:
            getattr(msg, name).extend(values[name])
        elif name in values:
            setattr(msg, name, values[name])
        elif kind == descriptor.FieldDescriptor.TYPE_STRING and name in (
            "display_name",
            "description",
            "reason",
            "plan",
        ):
            setattr(msg, name, "x")


def stub_method(
    server: RunningServer, service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor
) -> Any:
    module = importlib.import_module(f"tahoe_auth.v1.{Path(service.file.name).stem}_pb2_grpc")
    call = getattr(getattr(module, f"{service.name}Stub")(server.channel), method.name)
    if not method.server_streaming:
        return call

    def first_message(request: message.Message, metadata: Any) -> Any:
        stream = call(request, metadata=metadata, timeout=5)
        try:
            return next(iter(stream))
        finally:
            stream.cancel()

    return first_message


def request_for(method: descriptor.MethodDescriptor, b: TenantB) -> message.Message:
    request = message_factory.GetMessageClass(method.input_type)()
    fill(request, b)
    return request


def clear_tenant(request: message.Message) -> message.Message:
    """The same request in the caller's own tenant (tenant_id empty), other ids kept."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "tenant_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("tenant_id")  # type: ignore[arg-type]
    if "tenant" in copy.DESCRIPTOR.fields_by_name and copy.DESCRIPTOR.fields_by_name["tenant"].message_type:
        copy.tenant.ClearField("id")  # type: ignore[attr-defined]
    return copy


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s.name}.{m.name}" for s, m in METHODS])
def test_tenant_a_owner_cannot_reach_tenant_b(
    world: World, service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor
) -> None:
    server, b = world.server, world.b
    public = server_module.POLICIES[f"/{service.full_name}/{method.name}"].public
    call = stub_method(server, service, method)
    request = request_for(method, b)
    # A fresh session per case (a case may log the caller out), without the gRPC Login and
    # its per-account rate limit: the matrix is about what that token can reach.
    a = world.a
    a_owner = bearer(server.app.sessions.login(a.slug, a.owner_email, a.owner_password, CallContext()).access_token)
    # The browser session methods refuse anything without it (CSRF): past that, the same rules.
    a_owner = (*a_owner, ("x-csrf-protection", "1"))

    for variant in (request, clear_tenant(request)):
        names_b = variant is request and _names_another_tenant(request)
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
        # A public method may succeed only by doing nothing (BrowserLogout without a cookie).
        assert (not public or response.ByteSize() == 0) and not names_b, f"{method.name} answered about tenant B"
        leaked = [value for value in b.secrets() if value in str(response)]
        assert not leaked, f"{method.name} returned tenant B's data: {leaked}"


def _names_another_tenant(request: message.Message) -> bool:
    fields = request.DESCRIPTOR.fields_by_name
    return "tenant_id" in fields or ("tenant" in fields and fields["tenant"].message_type is not None)


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
