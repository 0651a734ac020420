"""The isolation matrix's cases, shared by its gRPC run (tests/integration/
test_isolation_matrix.py) and its JSON run through Envoy (tests/e2e/
test_json_api_isolation.py): for every method of the governed services, a request
filled with tenant B's identifiers, sent with the token of tenant A's owner."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor, message, message_factory

from tahoe_auth import server as server_module
from tahoe_auth.services.context import CallContext
from tahoe_auth.v1 import auth_pb2, tenant_pb2
from tests import support
from tests.support import RunningServer, bearer

DENIED = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED}
PUBLIC_REFUSALS = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT}
# Public methods that start a ceremony for whoever asks, naming a tenant but no account
# of the caller's: they answer for any tenant, existing or not, with nothing of its own
# (a random challenge for a passkey to sign; an empty answer to "forgot password", whose
# link goes only to the account's own address); what would identify the tenant is
# checked as for every method.
CEREMONY_STARTS = {"BeginPasskeySignIn", "RequestPasswordReset"}
METHODS = [(service, method) for service in server_module.GOVERNED_SERVICES for method in service.methods]
METHOD_IDS = [f"{s.name}.{m.name}" for s, m in METHODS]


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


def build_world(server: RunningServer) -> World:
    """Tenants A and B on `server`; B with a member, a custom role, a session, an API
    key, an invitation and a service account."""
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
    return World(server, a, b_world)


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


def names_another_tenant(request: message.Message) -> bool:
    fields = request.DESCRIPTOR.fields_by_name
    return "tenant_id" in fields or ("tenant" in fields and fields["tenant"].message_type is not None)


def is_public(service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor) -> bool:
    return server_module.POLICIES[f"/{service.full_name}/{method.name}"].public


def fresh_owner_token(server: RunningServer, tenant: support.Tenant) -> str:
    """A new session of the tenant's owner, without the gRPC Login and its per-account
    rate limit (a case may log the caller out; the matrix is about what a token reaches)."""
    return server.app.sessions.login(tenant.slug, tenant.owner_email, tenant.owner_password, CallContext()).access_token
