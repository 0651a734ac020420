"""TenantService and API-key messages to and from domain values and rows (typed as
`Any` here so that the API layer stays free of SQLAlchemy)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from google.protobuf import duration_pb2, field_mask_pb2, json_format

from tahoe_auth.api.convert import SUBJECT_TYPES, timestamp
from tahoe_auth.domain import security_policy
from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.services.invitations import state_of
from tahoe_auth.services.roles import RoleView
from tahoe_auth.services.users import UserView
from tahoe_auth.v1 import auth_pb2, principal_pb2, tenant_pb2

TENANT_STATES: dict[str, tenant_pb2.TenantState.ValueType] = {
    "active": tenant_pb2.TENANT_STATE_ACTIVE,
    "suspended": tenant_pb2.TENANT_STATE_SUSPENDED,
}
USER_STATES: dict[str, tenant_pb2.UserState.ValueType] = {
    "active": tenant_pb2.USER_STATE_ACTIVE,
    "disabled": tenant_pb2.USER_STATE_DISABLED,
}
INVITATION_STATES: dict[str, tenant_pb2.InvitationState.ValueType] = {
    "pending": tenant_pb2.INVITATION_STATE_PENDING,
    "accepted": tenant_pb2.INVITATION_STATE_ACCEPTED,
    "revoked": tenant_pb2.INVITATION_STATE_REVOKED,
    "expired": tenant_pb2.INVITATION_STATE_EXPIRED,
}
SUBJECT_TYPE_NAMES: dict[int, str] = {int(value): name for name, value in SUBJECT_TYPES.items() if value}


def state_filter(value: int, states: Mapping[str, int]) -> str | None:
    """An enum filter to its name (None for UNSPECIFIED: no filter)."""
    if value == 0:
        return None
    for name, number in states.items():
        if number == value:
            return name
    raise InvalidArgument("state", f"unknown state {value}")


def subject_type(value: int) -> str:
    if value == principal_pb2.SUBJECT_TYPE_UNSPECIFIED:
        return ""
    if value not in SUBJECT_TYPE_NAMES:
        raise InvalidArgument("subject_type", f"unknown subject type {value}")
    return SUBJECT_TYPE_NAMES[value]


def duration(value: duration_pb2.Duration, present: bool) -> dt.timedelta | None:
    return value.ToTimedelta() if present else None


def mask_paths(mask: field_mask_pb2.FieldMask) -> list[str]:
    return list(mask.paths)


def plain(value: Any) -> Any:
    """JSON from a Struct, with whole numbers as ints (Struct keeps every number as a double)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


MFA_REQUIREMENTS = {
    tenant_pb2.MFA_REQUIREMENT_UNSPECIFIED: security_policy.OPTIONAL,
    tenant_pb2.MFA_REQUIREMENT_OPTIONAL: security_policy.OPTIONAL,
    tenant_pb2.MFA_REQUIREMENT_ALL_USERS: security_policy.ALL_USERS,
    tenant_pb2.MFA_REQUIREMENT_ADMINS: security_policy.ADMINS,
}
MFA_REQUIREMENT_ENUMS = {
    security_policy.OPTIONAL: tenant_pb2.MFA_REQUIREMENT_OPTIONAL,
    security_policy.ALL_USERS: tenant_pb2.MFA_REQUIREMENT_ALL_USERS,
    security_policy.ADMINS: tenant_pb2.MFA_REQUIREMENT_ADMINS,
}


def security_to_dict(policy: tenant_pb2.SecurityPolicy) -> dict[str, Any]:
    if policy.mfa_requirement not in MFA_REQUIREMENTS:
        raise InvalidArgument("tenant.settings.security.mfa_requirement", "unknown MFA requirement")
    return {
        "mfa_requirement": MFA_REQUIREMENTS[policy.mfa_requirement],
        "step_up_minutes": policy.step_up_minutes,
        "password_min_length": policy.password_min_length,
    }


def security(stored: Any) -> tenant_pb2.SecurityPolicy:
    policy = security_policy.of_tenant_settings(stored)
    return tenant_pb2.SecurityPolicy(
        mfa_requirement=MFA_REQUIREMENT_ENUMS[policy.mfa_requirement],
        step_up_minutes=policy.step_up_minutes,
        password_min_length=policy.password_min_length,
    )


def settings_to_dict(settings: tenant_pb2.TenantSettings) -> dict[str, Any]:
    values = {
        "rate_limits": plain(json_format.MessageToDict(settings.rate_limits)),
        "quotas": plain(json_format.MessageToDict(settings.quotas)),
    }
    if settings.HasField("security"):
        values["security"] = security_to_dict(settings.security)
    if settings.HasField("mail"):
        values["mail"] = mail_to_dict(settings.mail)
    return values


def mail_to_dict(settings: tenant_pb2.MailSettings) -> dict[str, Any]:
    return {"sender_name": settings.sender_name, "locale": settings.locale}


def tenant_changes(tenant: tenant_pb2.Tenant, mask: field_mask_pb2.FieldMask) -> dict[str, Any]:
    values: dict[str, Any] = {
        "display_name": tenant.display_name,
        "slug": tenant.slug,
        "plan": tenant.plan,
        "settings": settings_to_dict(tenant.settings),
    }
    values["settings.rate_limits"] = values["settings"]["rate_limits"]
    values["settings.quotas"] = values["settings"]["quotas"]
    values["settings.security"] = security_to_dict(tenant.settings.security)
    values["settings.mail"] = mail_to_dict(tenant.settings.mail)
    unknown = [p for p in mask.paths if p not in values]
    if unknown:
        raise InvalidArgument("update_mask", f"cannot update {', '.join(unknown)}")
    return {path: values[path] for path in mask.paths}


def tenant(row: Any) -> tenant_pb2.Tenant:
    stored = row.settings or {}
    settings = tenant_pb2.TenantSettings()
    settings.rate_limits.update(stored.get("rate_limits") or {})
    settings.quotas.update(stored.get("quotas") or {})
    settings.security.CopyFrom(security(stored))
    stored_mail = stored.get("mail") or {}
    settings.mail.CopyFrom(
        tenant_pb2.MailSettings(sender_name=stored_mail.get("sender_name", ""), locale=stored_mail.get("locale", ""))
    )
    return tenant_pb2.Tenant(
        id=row.id,
        slug=row.slug,
        display_name=row.display_name,
        state=TENANT_STATES.get(row.status, tenant_pb2.TENANT_STATE_UNSPECIFIED),
        plan=row.plan,
        settings=settings,
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        suspend_time=timestamp(row.suspended_at),
        suspend_reason=row.suspend_reason,
    )


def user(view: UserView) -> tenant_pb2.User:
    row = view.row
    return tenant_pb2.User(
        id=row.id,
        tenant_id=row.tenant_id,
        email=row.email,
        display_name=row.display_name,
        state=USER_STATES.get(row.status, tenant_pb2.USER_STATE_UNSPECIFIED),
        roles=view.roles,
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        has_password=row.password_hash is not None,
        email_verified=row.email_verified_at is not None,
        email_verify_time=timestamp(row.email_verified_at),
    )


def role(view: RoleView) -> tenant_pb2.Role:
    return tenant_pb2.Role(
        name=view.name,
        description=view.description,
        permissions=view.permissions,
        builtin=view.builtin,
        create_time=timestamp(view.row.created_at) if view.row else None,
        update_time=timestamp(view.row.updated_at) if view.row else None,
    )


def invitation(row: Any, now: dt.datetime) -> tenant_pb2.Invitation:
    return tenant_pb2.Invitation(
        id=row.id,
        tenant_id=row.tenant_id,
        email=row.email,
        role=row.role,
        state=INVITATION_STATES[state_of(row, now)],
        invited_by=row.invited_by,
        create_time=timestamp(row.created_at),
        expire_time=timestamp(row.expires_at),
        accept_time=timestamp(row.accepted_at),
        revoke_time=timestamp(row.revoked_at),
        user_id=row.user_id or "",
    )


def service_account(row: Any) -> tenant_pb2.ServiceAccount:
    return tenant_pb2.ServiceAccount(
        id=row.id,
        # Platform-wide accounts have no tenant column.
        tenant_id=getattr(row, "tenant_id", ""),
        name=row.name,
        description=row.description,
        permissions=sorted(row.permissions),
        secret_prefix=row.secret_prefix if row.secret_hash else "",
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        secret_rotate_time=timestamp(row.secret_rotated_at),
        previous_secret_expire_time=timestamp(row.previous_expires_at),
        secret_revoked=row.secret_hash is None,
    )


def api_key(row: Any) -> auth_pb2.ApiKey:
    return auth_pb2.ApiKey(
        id=row.id,
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        scopes=sorted(row.scopes),
        create_time=timestamp(row.created_at),
        expire_time=timestamp(row.expires_at),
        last_used_time=timestamp(row.last_used_at),
        revoke_time=timestamp(row.revoked_at),
        rotate_time=timestamp(row.rotated_at),
        previous_secret_expire_time=timestamp(row.previous_expires_at),
        created_by=row.created_by,
    )
