from __future__ import annotations

from tahoe_auth.domain import decision
from tahoe_auth.domain.permissions import PermissionSet
from tahoe_auth.domain.principal import Principal


def principal(**kwargs: object) -> Principal:
    base: dict[str, object] = {
        "tenant_id": "t1",
        "subject": "u1",
        "subject_type": "user",
        "permissions": PermissionSet.of(["transcription:*"]),
    }
    base.update(kwargs)
    return Principal(**base)  # type: ignore[arg-type]


def test_allowed_names_the_grant() -> None:
    d = decision.decide(principal(), "transcription:write")
    assert d.allowed and d.http_status == 200 and d.rule == "transcription:*"


def test_missing_permission_is_403() -> None:
    d = decision.decide(principal(), "users:write")
    assert not d.allowed and d.reason == decision.PERMISSION_DENIED and d.http_status == 403


def test_no_required_permission_needs_only_a_valid_credential() -> None:
    assert decision.decide(principal(permissions=PermissionSet.of([]))).allowed


def test_suspended_tenant_and_disabled_subject_are_denied_first() -> None:
    assert decision.decide(principal(tenant_active=False), "").reason == decision.TENANT_SUSPENDED
    assert decision.decide(principal(subject_active=False), "").reason == decision.SUBJECT_DISABLED
    assert decision.decide(principal(subject_active=False), "").http_status == 403


def test_other_tenants_resources_are_denied_except_for_platform_admins() -> None:
    assert decision.decide(principal(), "transcription:read", resource_tenant="t2").reason == decision.NOT_FOUND
    admin = principal(platform_admin=True, permissions=PermissionSet.of([]))
    assert decision.decide(admin, "transcription:read", resource_tenant="t2").allowed


def test_unauthenticated_decisions_are_401() -> None:
    assert decision.unauthenticated(decision.NO_CREDENTIAL, "no credential").http_status == 401
    assert decision.unauthenticated(decision.INVALID_TOKEN, "bad").http_status == 401
