"""TenantService: validate, convert, call one use case, convert back.

Permissions per method are declared in server.POLICIES and enforced by the Authorize
interceptor; use cases add what depends on the data (acting on others, granting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import grpc

from tahoe_auth.api import convert, convert_mfa
from tahoe_auth.api import convert_tenants as c
from tahoe_auth.api.convert import required
from tahoe_auth.api.interceptors import current_call
from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services.invitations import Invitations
from tahoe_auth.services.mfa import IssuedChallenge
from tahoe_auth.services.roles import Roles
from tahoe_auth.services.service_accounts import ServiceAccounts
from tahoe_auth.services.tenants import TenantAdmin
from tahoe_auth.services.users import ACTIVE, DISABLED, Users, UserView
from tahoe_auth.v1 import tenant_pb2 as pb
from tahoe_auth.v1 import tenant_pb2_grpc

Ctx: TypeAlias = grpc.ServicerContext


@dataclass(frozen=True)
class TenantUseCases:
    tenants: TenantAdmin
    users: Users
    roles: Roles
    invitations: Invitations
    service_accounts: ServiceAccounts
    clock: Clock


class TenantServicer(tenant_pb2_grpc.TenantServiceServicer):
    def __init__(self, use_cases: TenantUseCases) -> None:
        self._u = use_cases

    # -- tenants ---------------------------------------------------------------

    def CreateTenant(self, request: pb.CreateTenantRequest, context: Ctx) -> pb.CreateTenantResponse:
        t = request.tenant
        row, invitation, token = self._u.tenants.create(
            current_call(), t.slug, t.display_name, t.plan, c.settings_to_dict(t.settings), request.owner_email
        )
        return pb.CreateTenantResponse(
            tenant=c.tenant(row),
            owner_invitation=c.invitation(invitation, self._u.clock.now()) if invitation else None,
            owner_invitation_token=token,
        )

    def GetTenant(self, request: pb.GetTenantRequest, context: Ctx) -> pb.GetTenantResponse:
        return pb.GetTenantResponse(tenant=c.tenant(self._u.tenants.get(current_call(), request.tenant_id)))

    def ListTenants(self, request: pb.ListTenantsRequest, context: Ctx) -> pb.ListTenantsResponse:
        state = c.state_filter(request.state, c.TENANT_STATES)
        rows, token = self._u.tenants.page(current_call(), state, request.page_size, request.page_token)
        return pb.ListTenantsResponse(tenants=[c.tenant(r) for r in rows], next_page_token=token)

    def UpdateTenant(self, request: pb.UpdateTenantRequest, context: Ctx) -> pb.UpdateTenantResponse:
        changes = c.tenant_changes(request.tenant, request.update_mask)
        row = self._u.tenants.update(current_call(), request.tenant.id, changes)
        return pb.UpdateTenantResponse(tenant=c.tenant(row))

    def SuspendTenant(self, request: pb.SuspendTenantRequest, context: Ctx) -> pb.SuspendTenantResponse:
        row = self._u.tenants.suspend(current_call(), required(request.tenant_id, "tenant_id"), request.reason)
        return pb.SuspendTenantResponse(tenant=c.tenant(row))

    def ReactivateTenant(self, request: pb.ReactivateTenantRequest, context: Ctx) -> pb.ReactivateTenantResponse:
        row = self._u.tenants.reactivate(current_call(), required(request.tenant_id, "tenant_id"))
        return pb.ReactivateTenantResponse(tenant=c.tenant(row))

    # -- users -----------------------------------------------------------------

    def CreateUser(self, request: pb.CreateUserRequest, context: Ctx) -> pb.CreateUserResponse:
        u = request.user
        view = self._u.users.create(
            current_call(), request.tenant_id, u.email, u.display_name, request.password, list(request.roles)
        )
        return pb.CreateUserResponse(user=c.user(view))

    def GetUser(self, request: pb.GetUserRequest, context: Ctx) -> pb.GetUserResponse:
        view = self._u.users.get(current_call(), request.tenant_id, required(request.user_id, "user_id"))
        return pb.GetUserResponse(user=c.user(view))

    def ListUsers(self, request: pb.ListUsersRequest, context: Ctx) -> pb.ListUsersResponse:
        state = c.state_filter(request.state, c.USER_STATES)
        views, token = self._u.users.page(
            current_call(), request.tenant_id, request.role, state, request.page_size, request.page_token
        )
        return pb.ListUsersResponse(users=[c.user(v) for v in views], next_page_token=token)

    def UpdateUser(self, request: pb.UpdateUserRequest, context: Ctx) -> pb.UpdateUserResponse:
        u = request.user
        values = {"display_name": u.display_name, "email": u.email}
        changes = {path: values.get(path, "") for path in request.update_mask.paths}
        if set(changes) - set(values):
            raise InvalidArgument("update_mask", "update_mask paths must be among display_name, email")
        view = self._u.users.update(current_call(), request.tenant_id, required(u.id, "user.id"), changes)
        return pb.UpdateUserResponse(user=c.user(view))

    def DisableUser(self, request: pb.DisableUserRequest, context: Ctx) -> pb.DisableUserResponse:
        user_id = required(request.user_id, "user_id")
        view = self._u.users.set_status(current_call(), request.tenant_id, user_id, DISABLED)
        return pb.DisableUserResponse(user=c.user(view))

    def EnableUser(self, request: pb.EnableUserRequest, context: Ctx) -> pb.EnableUserResponse:
        user_id = required(request.user_id, "user_id")
        view = self._u.users.set_status(current_call(), request.tenant_id, user_id, ACTIVE)
        return pb.EnableUserResponse(user=c.user(view))

    def DeleteUser(self, request: pb.DeleteUserRequest, context: Ctx) -> pb.DeleteUserResponse:
        self._u.users.delete(current_call(), request.tenant_id, required(request.user_id, "user_id"))
        return pb.DeleteUserResponse()

    def ChangePassword(self, request: pb.ChangePasswordRequest, context: Ctx) -> pb.ChangePasswordResponse:
        ended = self._u.users.change_password(current_call(), request.current_password, request.new_password)
        return pb.ChangePasswordResponse(ended_session_count=ended)

    def ResetPassword(self, request: pb.ResetPasswordRequest, context: Ctx) -> pb.ResetPasswordResponse:
        generated, ended = self._u.users.reset_password(
            current_call(), request.tenant_id, required(request.user_id, "user_id"), request.new_password
        )
        return pb.ResetPasswordResponse(generated_password=generated, ended_session_count=ended)

    # -- roles -----------------------------------------------------------------

    def ListRoles(self, request: pb.ListRolesRequest, context: Ctx) -> pb.ListRolesResponse:
        return pb.ListRolesResponse(roles=[c.role(v) for v in self._u.roles.all(current_call(), request.tenant_id)])

    def GetRole(self, request: pb.GetRoleRequest, context: Ctx) -> pb.GetRoleResponse:
        view = self._u.roles.get(current_call(), request.tenant_id, required(request.name, "name"))
        return pb.GetRoleResponse(role=c.role(view))

    def CreateRole(self, request: pb.CreateRoleRequest, context: Ctx) -> pb.CreateRoleResponse:
        r = request.role
        view = self._u.roles.create(current_call(), request.tenant_id, r.name, r.description, list(r.permissions))
        return pb.CreateRoleResponse(role=c.role(view))

    def UpdateRole(self, request: pb.UpdateRoleRequest, context: Ctx) -> pb.UpdateRoleResponse:
        r = request.role
        view = self._u.roles.update(
            current_call(),
            request.tenant_id,
            required(r.name, "role.name"),
            c.mask_paths(request.update_mask),
            r.description,
            list(r.permissions),
        )
        return pb.UpdateRoleResponse(role=c.role(view))

    def DeleteRole(self, request: pb.DeleteRoleRequest, context: Ctx) -> pb.DeleteRoleResponse:
        removed = self._u.roles.delete(current_call(), request.tenant_id, required(request.name, "name"), request.force)
        return pb.DeleteRoleResponse(removed_binding_count=removed)

    def AssignRole(self, request: pb.AssignRoleRequest, context: Ctx) -> pb.AssignRoleResponse:
        user, roles = self._u.roles.assign(
            current_call(), request.tenant_id, required(request.user_id, "user_id"), required(request.role, "role")
        )
        return pb.AssignRoleResponse(user=c.user(UserView(user, roles)))

    def RemoveRole(self, request: pb.RemoveRoleRequest, context: Ctx) -> pb.RemoveRoleResponse:
        user, roles = self._u.roles.remove(
            current_call(), request.tenant_id, required(request.user_id, "user_id"), required(request.role, "role")
        )
        return pb.RemoveRoleResponse(user=c.user(UserView(user, roles)))

    def GetEffectivePermissions(
        self, request: pb.GetEffectivePermissionsRequest, context: Ctx
    ) -> pb.GetEffectivePermissionsResponse:
        found = self._u.roles.effective(
            current_call(), request.tenant_id, c.subject_type(request.subject_type), request.subject
        )
        return pb.GetEffectivePermissionsResponse(
            subject_type=convert.SUBJECT_TYPES[found.subject_type],
            subject=found.subject,
            permissions=found.permissions,
            roles=found.roles,
        )

    # -- invitations -----------------------------------------------------------

    def CreateInvitation(self, request: pb.CreateInvitationRequest, context: Ctx) -> pb.CreateInvitationResponse:
        row, token = self._u.invitations.create(
            current_call(),
            request.tenant_id,
            request.email,
            request.role,
            c.duration(request.ttl, request.HasField("ttl")),
        )
        return pb.CreateInvitationResponse(invitation=c.invitation(row, self._u.clock.now()), token=token)

    def ListInvitations(self, request: pb.ListInvitationsRequest, context: Ctx) -> pb.ListInvitationsResponse:
        state = c.state_filter(request.state, c.INVITATION_STATES)
        rows, token = self._u.invitations.page(
            current_call(), request.tenant_id, state, request.page_size, request.page_token
        )
        now = self._u.clock.now()
        return pb.ListInvitationsResponse(invitations=[c.invitation(r, now) for r in rows], next_page_token=token)

    def ResendInvitation(self, request: pb.ResendInvitationRequest, context: Ctx) -> pb.ResendInvitationResponse:
        row, token = self._u.invitations.resend(
            current_call(),
            request.tenant_id,
            required(request.invitation_id, "invitation_id"),
            c.duration(request.ttl, request.HasField("ttl")),
        )
        return pb.ResendInvitationResponse(invitation=c.invitation(row, self._u.clock.now()), token=token)

    def RevokeInvitation(self, request: pb.RevokeInvitationRequest, context: Ctx) -> pb.RevokeInvitationResponse:
        row = self._u.invitations.revoke(
            current_call(), request.tenant_id, required(request.invitation_id, "invitation_id")
        )
        return pb.RevokeInvitationResponse(invitation=c.invitation(row, self._u.clock.now()))

    def AcceptInvitation(self, request: pb.AcceptInvitationRequest, context: Ctx) -> pb.AcceptInvitationResponse:
        issued, row = self._u.invitations.accept(
            required(request.token, "token"), request.password, request.display_name, current_call()
        )
        response = pb.AcceptInvitationResponse(
            tenant_id=issued.tenant_id, user_id=issued.user_id, invitation=c.invitation(row, self._u.clock.now())
        )
        if isinstance(issued, IssuedChallenge):
            response.mfa_challenge.CopyFrom(convert_mfa.challenge(issued))
        else:
            response.tokens.CopyFrom(convert.token_pair(issued, int(self._u.clock.timestamp())))
        return response

    # -- service accounts ------------------------------------------------------

    def CreateServiceAccount(
        self, request: pb.CreateServiceAccountRequest, context: Ctx
    ) -> pb.CreateServiceAccountResponse:
        a = request.service_account
        row, secret = self._u.service_accounts.create(
            current_call(), request.tenant_id, a.name, a.description, list(a.permissions)
        )
        return pb.CreateServiceAccountResponse(
            service_account=c.service_account(row), client_id=row.id, client_secret=secret
        )

    def GetServiceAccount(self, request: pb.GetServiceAccountRequest, context: Ctx) -> pb.GetServiceAccountResponse:
        row = self._u.service_accounts.get(
            current_call(), request.tenant_id, required(request.service_account_id, "service_account_id")
        )
        return pb.GetServiceAccountResponse(service_account=c.service_account(row))

    def ListServiceAccounts(
        self, request: pb.ListServiceAccountsRequest, context: Ctx
    ) -> pb.ListServiceAccountsResponse:
        rows, token = self._u.service_accounts.page(
            current_call(), request.tenant_id, request.page_size, request.page_token
        )
        return pb.ListServiceAccountsResponse(
            service_accounts=[c.service_account(r) for r in rows], next_page_token=token
        )

    def UpdateServiceAccount(
        self, request: pb.UpdateServiceAccountRequest, context: Ctx
    ) -> pb.UpdateServiceAccountResponse:
        a = request.service_account
        row = self._u.service_accounts.update(
            current_call(),
            request.tenant_id,
            required(a.id, "service_account.id"),
            c.mask_paths(request.update_mask),
            a.description,
            list(a.permissions),
        )
        return pb.UpdateServiceAccountResponse(service_account=c.service_account(row))

    def DeleteServiceAccount(
        self, request: pb.DeleteServiceAccountRequest, context: Ctx
    ) -> pb.DeleteServiceAccountResponse:
        self._u.service_accounts.delete(
            current_call(), request.tenant_id, required(request.service_account_id, "service_account_id")
        )
        return pb.DeleteServiceAccountResponse()

    def RotateServiceAccountSecret(
        self, request: pb.RotateServiceAccountSecretRequest, context: Ctx
    ) -> pb.RotateServiceAccountSecretResponse:
        row, secret = self._u.service_accounts.rotate(
            current_call(),
            request.tenant_id,
            required(request.service_account_id, "service_account_id"),
            c.duration(request.grace_period, request.HasField("grace_period")),
        )
        return pb.RotateServiceAccountSecretResponse(service_account=c.service_account(row), client_secret=secret)

    def RevokeServiceAccountSecret(
        self, request: pb.RevokeServiceAccountSecretRequest, context: Ctx
    ) -> pb.RevokeServiceAccountSecretResponse:
        row = self._u.service_accounts.revoke(
            current_call(), request.tenant_id, required(request.service_account_id, "service_account_id")
        )
        return pb.RevokeServiceAccountSecretResponse(service_account=c.service_account(row))
