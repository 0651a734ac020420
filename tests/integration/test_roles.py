"""Roles: custom roles, assignment, the granting rule, last-owner protection, and role
changes reaching access tokens already issued, on every instance, within a second."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf import field_mask_pb2

from tahoe_auth.v1 import auth_pb2, tenant_pb2
from tests.support import RunningServer, bearer, call_error, error_reason, wait_until


def create_role(server: RunningServer, token: str, name: str, permissions: list[str]) -> tenant_pb2.Role:
    return server.tenants.CreateRole(
        tenant_pb2.CreateRoleRequest(role=tenant_pb2.Role(name=name, permissions=permissions)),
        metadata=bearer(token),
    ).role


def permissions_of(server: RunningServer, token: str) -> set[str]:
    return set(server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token)).principal.permissions)


def test_builtin_and_custom_roles(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    role = create_role(server, owner, "transcriber", ["transcription:write", "transcription:read", "usage:read"])
    assert list(role.permissions) == ["transcription:read", "transcription:write", "usage:read"]
    listed = server.tenants.ListRoles(tenant_pb2.ListRolesRequest(), metadata=bearer(owner)).roles
    assert [r.name for r in listed] == ["owner", "admin", "member", "viewer", "transcriber"]
    assert [r.builtin for r in listed] == [True, True, True, True, False]

    updated = server.tenants.UpdateRole(
        tenant_pb2.UpdateRoleRequest(
            role=tenant_pb2.Role(name="transcriber", description="speech to text", permissions=["x:y"]),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        ),
        metadata=bearer(owner),
    ).role
    assert updated.description == "speech to text" and "x:y" not in updated.permissions

    for name, code in [("owner", grpc.StatusCode.ALREADY_EXISTS), ("transcriber", grpc.StatusCode.ALREADY_EXISTS)]:
        error = call_error(create_role, server, owner, name, ["a:b"])
        assert error.code() == code
    for bad in (["nope"], [], ["a:b:c"]):
        assert call_error(create_role, server, owner, "odd", bad).code() == grpc.StatusCode.INVALID_ARGUMENT
    builtin = call_error(server.tenants.DeleteRole, tenant_pb2.DeleteRoleRequest(name="viewer"), metadata=bearer(owner))
    assert builtin.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_assigning_a_custom_role_grants_its_permissions(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    create_role(server, owner, "billing", ["usage:read", "tenant:read"])
    user_id, token = server.add_user(tenant, [])
    assert permissions_of(server, token) == set()
    user = server.tenants.AssignRole(
        tenant_pb2.AssignRoleRequest(user_id=user_id, role="billing"), metadata=bearer(owner)
    ).user
    assert list(user.roles) == ["billing"]
    assert permissions_of(server, token) == {"usage:read", "tenant:read"}
    effective = server.tenants.GetEffectivePermissions(
        tenant_pb2.GetEffectivePermissionsRequest(subject=user_id), metadata=bearer(owner)
    )
    assert set(effective.permissions) == {"usage:read", "tenant:read"} and list(effective.roles) == ["billing"]
    unknown = call_error(
        server.tenants.AssignRole, tenant_pb2.AssignRoleRequest(user_id=user_id, role="ghost"), metadata=bearer(owner)
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


def test_nobody_grants_what_they_do_not_hold(server: RunningServer) -> None:
    tenant = server.create_tenant()
    _, admin = server.add_user(tenant, ["admin"])
    member_id, _ = server.add_user(tenant, ["member"])
    cases = [
        (server.tenants.AssignRole, tenant_pb2.AssignRoleRequest(user_id=member_id, role="owner"), "*:*"),
        (
            server.tenants.CreateRole,
            tenant_pb2.CreateRoleRequest(role=tenant_pb2.Role(name="boss", permissions=["tenant:write"])),
            "tenant:write",
        ),
        (
            server.tenants.CreateUser,
            tenant_pb2.CreateUserRequest(user=tenant_pb2.User(email="o@x.test"), roles=["owner"]),
            "*:*",
        ),
        (server.tenants.CreateInvitation, tenant_pb2.CreateInvitationRequest(email="o@x.test", role="owner"), "*:*"),
        (server.tenants.RemoveRole, tenant_pb2.RemoveRoleRequest(user_id=tenant.owner_id, role="owner"), "*:*"),
    ]
    for call, request, permission in cases:
        error = call_error(call, request, metadata=bearer(admin))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, call
        assert error_reason(error) == "PRIVILEGE_ESCALATION", call
        assert permission in error.details()
    # What the admin holds, it may grant.
    server.tenants.AssignRole(tenant_pb2.AssignRoleRequest(user_id=member_id, role="admin"), metadata=bearer(admin))


def test_the_last_owner_cannot_be_removed_disabled_or_deleted(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = bearer(server.owner_token(tenant))
    for call, request in [
        (server.tenants.RemoveRole, tenant_pb2.RemoveRoleRequest(user_id=tenant.owner_id, role="owner")),
        (server.tenants.DisableUser, tenant_pb2.DisableUserRequest(user_id=tenant.owner_id)),
        (server.tenants.DeleteUser, tenant_pb2.DeleteUserRequest(user_id=tenant.owner_id)),
    ]:
        error = call_error(call, request, metadata=owner)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, call
        assert error_reason(error) == "LAST_OWNER", call
    # With a second owner, the first may step down; then the second is the last.
    second_id, second = server.add_user(tenant, ["owner"])
    server.tenants.RemoveRole(
        tenant_pb2.RemoveRoleRequest(user_id=tenant.owner_id, role="owner"), metadata=bearer(second)
    )
    error = call_error(
        server.tenants.RemoveRole,
        tenant_pb2.RemoveRoleRequest(user_id=second_id, role="owner"),
        metadata=bearer(second),
    )
    assert error_reason(error) == "LAST_OWNER"


def test_two_owners_demoting_each_other_at_once_leave_one(server: RunningServer) -> None:
    tenant = server.create_tenant()
    second_id, second = server.add_user(tenant, ["owner"])
    first = server.owner_token(tenant)
    barrier = threading.Barrier(2)

    def demote(token: str, user_id: str) -> str:
        barrier.wait()
        try:
            server.tenants.RemoveRole(
                tenant_pb2.RemoveRoleRequest(user_id=user_id, role="owner"), metadata=bearer(token), timeout=30
            )
            return "ok"
        except grpc.RpcError as error:
            return error_reason(error)

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = sorted(pool.map(demote, [first, second], [second_id, tenant.owner_id]))
    # The tenant row lock serialises them: the second sees one owner left (or, if it
    # started after the first's change reached the caches, is no longer an owner).
    assert outcomes[1] == "ok", outcomes
    assert outcomes[0] in ("LAST_OWNER", "PRIVILEGE_ESCALATION", "PERMISSION_DENIED"), outcomes
    with server.app.db.unit_of_work(tenant.id) as uow:
        assert len(uow.role_bindings.active_holders("owner")) == 1


def test_a_disabled_owner_does_not_count(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = bearer(server.owner_token(tenant))
    second_id, _ = server.add_user(tenant, ["owner"])
    server.tenants.DisableUser(tenant_pb2.DisableUserRequest(user_id=second_id), metadata=owner)
    error = call_error(
        server.tenants.RemoveRole,
        tenant_pb2.RemoveRoleRequest(user_id=tenant.owner_id, role="owner"),
        metadata=owner,
    )
    assert error_reason(error) == "LAST_OWNER"


def test_a_role_in_use_is_not_deleted_silently(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    create_role(server, owner, "auditor", ["audit:read"])
    user_id, token = server.add_user(tenant, ["auditor"])
    assert permissions_of(server, token) == {"audit:read"}
    error = call_error(server.tenants.DeleteRole, tenant_pb2.DeleteRoleRequest(name="auditor"), metadata=bearer(owner))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error_reason(error) == "ROLE_IN_USE"
    removed = server.tenants.DeleteRole(
        tenant_pb2.DeleteRoleRequest(name="auditor", force=True), metadata=bearer(owner)
    ).removed_binding_count
    assert removed == 1
    assert permissions_of(server, token) == set()
    user = server.tenants.GetUser(tenant_pb2.GetUserRequest(user_id=user_id), metadata=bearer(owner)).user
    assert list(user.roles) == []


def test_role_changes_reach_issued_tokens_on_every_instance_within_a_second(
    pair: tuple[RunningServer, RunningServer],
) -> None:
    a, b = pair
    tenant = a.create_tenant()
    owner = a.owner_token(tenant)
    create_role(a, owner, "reader", ["transcription:read"])
    user_id, token = a.add_user(tenant, ["reader"])
    assert permissions_of(b, token) == {"transcription:read"}  # b caches the user's facts

    a.tenants.AssignRole(tenant_pb2.AssignRoleRequest(user_id=user_id, role="member"), metadata=bearer(owner))
    assert wait_until(lambda: "transcription:write" in permissions_of(b, token)) < 1.0

    a.tenants.UpdateRole(
        tenant_pb2.UpdateRoleRequest(
            role=tenant_pb2.Role(name="reader", permissions=["audit:read"]),
            update_mask=field_mask_pb2.FieldMask(paths=["permissions"]),
        ),
        metadata=bearer(owner),
    )
    assert wait_until(lambda: "audit:read" in permissions_of(b, token)) < 1.0

    a.tenants.RemoveRole(tenant_pb2.RemoveRoleRequest(user_id=user_id, role="member"), metadata=bearer(owner))
    assert wait_until(lambda: permissions_of(b, token) == {"audit:read"}) < 1.0
