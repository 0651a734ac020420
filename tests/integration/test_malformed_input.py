"""Malformed input through the real server on PostgreSQL: the cases that once reached
INTERNAL with a traceback printing SQL, or were stored cut short or unchecked, now get
INVALID_ARGUMENT naming the field, one WARNING line, and change nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from sqlalchemy import create_engine, pool, text

from tahoe_auth.v1 import (
    auth_pb2,
    decision_pb2,
    decision_pb2_grpc,
    tenant_pb2,
    usage_pb2,
    usage_pb2_grpc,
)
from tests import support

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

Case = Callable[[support.RunningServer, support.Tenant, Any], Any]


def field_of(error: grpc.RpcError) -> str:
    return support.status_detail(error, error_details_pb2.ErrorInfo).metadata["field"]


def row_counts(url: str) -> dict[str, int]:
    engine = create_engine(url, poolclass=pool.NullPool)
    tables = ["users", "roles", "role_bindings", "api_keys", "invitations", "usage_events", "usage_plans"]
    tables += ["service_accounts", "tenants"]
    with engine.connect() as conn:
        counts = {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in tables}
    engine.dispose()
    return counts


CASES: dict[str, tuple[Case, str]] = {
    "login tenant with NUL": (
        lambda s, t, md: s.auth.Login(auth_pb2.LoginRequest(tenant="de\x00mo", email=t.owner_email, password="x")),
        "tenant",
    ),
    "login email with NUL": (
        lambda s, t, md: s.auth.Login(auth_pb2.LoginRequest(tenant=t.slug, email="a\x00@b.test", password="x")),
        "email",
    ),
    "create user email with NUL": (
        lambda s, t, md: s.tenants.CreateUser(
            tenant_pb2.CreateUserRequest(tenant_id=t.id, user=tenant_pb2.User(email="n\x00@x.test"), password="p" * 12),
            metadata=md,
        ),
        "user.email",
    ),
    "update user display name with NUL": (
        lambda s, t, md: s.tenants.UpdateUser(
            tenant_pb2.UpdateUserRequest(
                tenant_id=t.id,
                user=tenant_pb2.User(id=t.owner_id, display_name="a\x00"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=md,
        ),
        "user.display_name",
    ),
    "get user id with NUL": (
        lambda s, t, md: s.tenants.GetUser(tenant_pb2.GetUserRequest(tenant_id=t.id, user_id="\x00"), metadata=md),
        "user_id",
    ),
    "list users role with NUL": (
        lambda s, t, md: s.tenants.ListUsers(tenant_pb2.ListUsersRequest(tenant_id=t.id, role="o\x00"), metadata=md),
        "role",
    ),
    "create role name with NUL": (
        lambda s, t, md: s.tenants.CreateRole(
            tenant_pb2.CreateRoleRequest(tenant_id=t.id, role=tenant_pb2.Role(name="r\x00", permissions=["a:b"])),
            metadata=md,
        ),
        "role.name",
    ),
    "create API key name with NUL": (
        lambda s, t, md: s.auth.CreateApiKey(auth_pb2.CreateApiKeyRequest(tenant_id=t.id, name="k\x00"), metadata=md),
        "name",
    ),
    "create invitation email with NUL": (
        lambda s, t, md: s.tenants.CreateInvitation(
            tenant_pb2.CreateInvitationRequest(tenant_id=t.id, email="i\x00@x.test", role="member"), metadata=md
        ),
        "email",
    ),
    "get API key id with NUL": (
        lambda s, t, md: s.auth.GetApiKey(auth_pb2.GetApiKeyRequest(tenant_id=t.id, api_key_id="\x00"), metadata=md),
        "api_key_id",
    ),
    "usage idempotency key with NUL": (
        lambda s, t, md: usage_pb2_grpc.UsageServiceStub(s.channel).RecordUsage(
            usage_pb2.RecordUsageRequest(
                tenant_id=t.id, event=usage_pb2.UsageEvent(metric="api.requests", quantity=1, idempotency_key="k\x00")
            ),
            metadata=support.bearer(s.platform_key),
        ),
        "event.idempotency_key",
    ),
    "plan display name over 200": (
        lambda s, t, md: usage_pb2_grpc.UsageServiceStub(s.channel).UpsertPlan(
            usage_pb2.UpsertPlanRequest(plan=usage_pb2.Plan(name="pro", display_name="p" * 201)),
            metadata=support.bearer(s.platform_key),
        ),
        "plan.display_name",
    ),
    "role description over 500": (
        lambda s, t, md: s.tenants.CreateRole(
            tenant_pb2.CreateRoleRequest(
                tenant_id=t.id, role=tenant_pb2.Role(name="r", description="d" * 501, permissions=["a:b"])
            ),
            metadata=md,
        ),
        "role.description",
    ),
    "service account description over 500": (
        lambda s, t, md: s.tenants.CreateServiceAccount(
            tenant_pb2.CreateServiceAccountRequest(
                tenant_id=t.id,
                service_account=tenant_pb2.ServiceAccount(name="sa", description="d" * 501, permissions=["a:b"]),
            ),
            metadata=md,
        ),
        "service_account.description",
    ),
    "permission with a trailing newline": (
        lambda s, t, md: s.tenants.CreateRole(
            tenant_pb2.CreateRoleRequest(tenant_id=t.id, role=tenant_pb2.Role(name="r", permissions=["users:read\n"])),
            metadata=md,
        ),
        "role.permissions",
    ),
    "explained permission that is not one": (
        lambda s, t, md: decision_pb2_grpc.DecisionServiceStub(s.channel).ExplainDecision(
            decision_pb2.ExplainDecisionRequest(required_permission="::::x"), metadata=md
        ),
        "required_permission",
    ),
    "email domain label of 300 characters": (
        lambda s, t, md: s.tenants.CreateUser(
            tenant_pb2.CreateUserRequest(
                tenant_id=t.id, user=tenant_pb2.User(email="a@" + "b" * 300 + ".test"), password="p" * 12
            ),
            metadata=md,
        ),
        "user.email",
    ),
    "malformed page token": (
        lambda s, t, md: s.tenants.ListUsers(
            tenant_pb2.ListUsersRequest(tenant_id=t.id, page_token="not a token"), metadata=md
        ),
        "page_token",
    ),
    "field mask naming an unknown field": (
        lambda s, t, md: s.tenants.UpdateUser(
            tenant_pb2.UpdateUserRequest(
                tenant_id=t.id,
                user=tenant_pb2.User(id=t.owner_id),
                update_mask=field_mask_pb2.FieldMask(paths=["password_hash"]),
            ),
            metadata=md,
        ),
        "update_mask",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input_is_invalid_argument_naming_the_field(
    server: support.RunningServer, pg_env: dict[str, str], caplog: pytest.LogCaptureFixture, case: str
) -> None:
    tenant = server.create_tenant()
    metadata = support.bearer(server.owner_token(tenant))
    send, field = CASES[case]
    before = row_counts(pg_env["TAHOE_DATABASE_URL"])
    caplog.clear()
    caplog.set_level(logging.INFO)
    error = support.call_error(send, server, tenant, metadata)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert field_of(error).startswith(field)
    assert row_counts(pg_env["TAHOE_DATABASE_URL"]) == before
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings if "INVALID_ARGUMENT" in r.getMessage()], caplog.text
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert "SELECT" not in caplog.text and "INSERT" not in caplog.text
