"""TenantService users: lifecycle, listing, passwords, standing over other users."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from tahoe_auth.v1 import auth_pb2, tenant_pb2
from tests.support import OWNER_PASSWORD, RunningServer, bearer, call_error, error_reason


def validates(server: RunningServer, token: str) -> bool:
    try:
        server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token))
        return True
    except grpc.RpcError:
        return False


def test_create_get_list_filter_and_page(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = bearer(server.owner_token(tenant))
    ids = []
    for i, roles in enumerate([["viewer"], ["member"], ["member", "viewer"]]):
        user = server.tenants.CreateUser(
            tenant_pb2.CreateUserRequest(
                user=tenant_pb2.User(email=f"User{i}@X.test", display_name=f"User {i}"), roles=roles
            ),
            metadata=owner,
        ).user
        assert user.email == f"user{i}@x.test" and list(user.roles) == sorted(roles) and not user.has_password
        ids.append(user.id)
    got = server.tenants.GetUser(tenant_pb2.GetUserRequest(user_id=ids[2]), metadata=owner).user
    assert list(got.roles) == ["member", "viewer"]

    members = server.tenants.ListUsers(tenant_pb2.ListUsersRequest(role="member"), metadata=owner).users
    assert [u.id for u in members] == ids[1:]
    page = server.tenants.ListUsers(tenant_pb2.ListUsersRequest(page_size=2), metadata=owner)
    rest = server.tenants.ListUsers(
        tenant_pb2.ListUsersRequest(page_size=2, page_token=page.next_page_token), metadata=owner
    )
    assert [u.id for u in [*page.users, *rest.users]] == [tenant.owner_id, *ids]

    server.tenants.DisableUser(tenant_pb2.DisableUserRequest(user_id=ids[0]), metadata=owner)
    disabled = server.tenants.ListUsers(
        tenant_pb2.ListUsersRequest(state=tenant_pb2.USER_STATE_DISABLED), metadata=owner
    ).users
    assert [u.id for u in disabled] == [ids[0]]

    duplicate = call_error(
        server.tenants.CreateUser,
        tenant_pb2.CreateUserRequest(user=tenant_pb2.User(email="user0@x.test")),
        metadata=owner,
    )
    assert duplicate.code() == grpc.StatusCode.ALREADY_EXISTS
    bad = call_error(
        server.tenants.CreateUser, tenant_pb2.CreateUserRequest(user=tenant_pb2.User(email="nope")), metadata=owner
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and error_reason(bad) == "INVALID_ARGUMENT"
    malformed = call_error(server.tenants.ListUsers, tenant_pb2.ListUsersRequest(page_token="%%%"), metadata=owner)
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_update_user_with_field_mask(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = bearer(server.owner_token(tenant))
    user_id, _ = server.add_user(tenant, ["viewer"])
    updated = server.tenants.UpdateUser(
        tenant_pb2.UpdateUserRequest(
            user=tenant_pb2.User(id=user_id, display_name="New Name", email="ignored@x.test"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=owner,
    ).user
    assert updated.display_name == "New Name" and updated.email != "ignored@x.test"


def test_disable_ends_sessions_and_enable_allows_login_again(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = bearer(server.owner_token(tenant))
    user_id, token = server.add_user(tenant, ["member"], email="m@x.test")
    assert validates(server, token)
    server.tenants.DisableUser(tenant_pb2.DisableUserRequest(user_id=user_id), metadata=owner)
    assert not validates(server, token)
    login = auth_pb2.LoginRequest(tenant=tenant.slug, email="m@x.test", password=OWNER_PASSWORD)
    assert call_error(server.auth.Login, login).code() == grpc.StatusCode.UNAUTHENTICATED
    server.tenants.EnableUser(tenant_pb2.EnableUserRequest(user_id=user_id), metadata=owner)
    assert server.auth.Login(login).tokens.access_token


def test_delete_ends_sessions_and_api_keys(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = bearer(server.owner_token(tenant))
    user_id, token = server.add_user(tenant, ["member"])
    key = server.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(name="k", scopes=["transcription:read"]), metadata=bearer(token)
    ).secret
    assert validates(server, key)
    server.tenants.DeleteUser(tenant_pb2.DeleteUserRequest(user_id=user_id), metadata=owner)
    assert not validates(server, token) and not validates(server, key)
    gone = call_error(server.tenants.GetUser, tenant_pb2.GetUserRequest(user_id=user_id), metadata=owner)
    assert gone.code() == grpc.StatusCode.NOT_FOUND


def test_change_password_keeps_this_session_and_ends_the_others(server: RunningServer) -> None:
    tenant = server.create_tenant()
    current, other = server.owner_token(tenant), server.owner_token(tenant)
    wrong = call_error(
        server.tenants.ChangePassword,
        tenant_pb2.ChangePasswordRequest(current_password="not it at all", new_password="another long one"),
        metadata=bearer(current),
    )
    assert error_reason(wrong) == "INVALID_CREDENTIALS"
    ended = server.tenants.ChangePassword(
        tenant_pb2.ChangePasswordRequest(current_password=OWNER_PASSWORD, new_password="another long one"),
        metadata=bearer(current),
    ).ended_session_count
    assert ended == 1
    assert validates(server, current) and not validates(server, other)
    tenant.owner_password = "another long one"
    assert server.owner_token(tenant)


def test_reset_password_ends_every_session(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = bearer(server.owner_token(tenant))
    user_id, token = server.add_user(tenant, ["member"], email="r@x.test")
    reset = server.tenants.ResetPassword(tenant_pb2.ResetPasswordRequest(user_id=user_id), metadata=owner)
    assert len(reset.generated_password) >= 16 and reset.ended_session_count == 1
    assert not validates(server, token)
    login = auth_pb2.LoginRequest(tenant=tenant.slug, email="r@x.test", password=reset.generated_password)
    assert server.auth.Login(login).tokens.access_token


def test_an_admin_has_no_standing_over_an_owner(server: RunningServer) -> None:
    tenant = server.create_tenant()
    _, admin_token = server.add_user(tenant, ["admin"])
    admin = bearer(admin_token)
    for call, request in [
        (server.tenants.ResetPassword, tenant_pb2.ResetPasswordRequest(user_id=tenant.owner_id)),
        (server.tenants.DisableUser, tenant_pb2.DisableUserRequest(user_id=tenant.owner_id)),
        (server.tenants.DeleteUser, tenant_pb2.DeleteUserRequest(user_id=tenant.owner_id)),
    ]:
        error = call_error(call, request, metadata=admin)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(error) == "PRIVILEGE_ESCALATION"
    # The admin does manage members.
    member_id, _ = server.add_user(tenant, ["member"])
    server.tenants.DisableUser(tenant_pb2.DisableUserRequest(user_id=member_id), metadata=admin)


def test_a_viewer_cannot_manage_users(server: RunningServer) -> None:
    tenant = server.create_tenant()
    _, viewer = server.add_user(tenant, ["viewer"])
    assert server.tenants.ListUsers(tenant_pb2.ListUsersRequest(), metadata=bearer(viewer)).users
    error = call_error(
        server.tenants.CreateUser,
        tenant_pb2.CreateUserRequest(user=tenant_pb2.User(email="x@x.test")),
        metadata=bearer(viewer),
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error_reason(error) == "PERMISSION_DENIED"
