"""The boundary rule on request messages (api/boundary.py), without a server."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool, duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from tahoe_auth import server
from tahoe_auth.api import boundary
from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.services import paging
from tahoe_auth.v1 import auth_pb2, decision_pb2, tenant_pb2, usage_pb2, webhooks_pb2

DOC = Path(__file__).resolve().parents[2] / "docs" / "api-limits.md"


def refused_field(message: Message) -> str:
    with pytest.raises(InvalidArgument) as caught:
        boundary.check_request(message)
    return caught.value.field


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (auth_pb2.LoginRequest(tenant="demo\x00", email="a@b.test", password="p"), "tenant"),
        (auth_pb2.LoginRequest(tenant="demo", email="a\x00@b.test"), "email"),
        (tenant_pb2.CreateUserRequest(user=tenant_pb2.User(email="\x00")), "user.email"),
        (tenant_pb2.ListUsersRequest(role="owner\x00"), "role"),
        (tenant_pb2.CreateUserRequest(roles=["member", "x\x00"]), "roles[1]"),
        (usage_pb2.RecordUsageRequest(event=usage_pb2.UsageEvent(idempotency_key="k\x00")), "event.idempotency_key"),
    ],
)
def test_nul_characters_are_refused_naming_the_field(message: Message, field: str) -> None:
    assert refused_field(message) == field


def test_lengths_over_the_declared_maximum_are_refused_not_cut() -> None:
    plan = usage_pb2.UpsertPlanRequest(plan=usage_pb2.Plan(name="pro", display_name="x" * 201))
    assert refused_field(plan) == "plan.display_name"
    boundary.check_request(usage_pb2.UpsertPlanRequest(plan=usage_pb2.Plan(name="pro", display_name="x" * 200)))
    role = tenant_pb2.CreateRoleRequest(role=tenant_pb2.Role(name="r", description="d" * 501))
    assert refused_field(role) == "role.description"
    account = tenant_pb2.CreateServiceAccountRequest(service_account=tenant_pb2.ServiceAccount(description="d" * 501))
    assert refused_field(account) == "service_account.description"


def test_a_message_specific_entry_wins_over_the_field_name() -> None:
    boundary.check_request(auth_pb2.CreateApiKeyRequest(name="k" * 200))  # API key names: 200
    assert refused_field(tenant_pb2.CreateRoleRequest(role=tenant_pb2.Role(name="r" * 64))) == "role.name"


def test_unlisted_strings_get_the_default_maximum() -> None:
    boundary.check_request(decision_pb2.ExplainDecisionRequest(upstream="u" * 200))
    long = "x" * (boundary.DEFAULT_MAX_LENGTH + 1)
    assert refused_field(webhooks_pb2.ListWebhookDeliveriesRequest(tenant_id="t", endpoint_id="e", event_id=long))


def test_repeated_fields_and_maps_have_a_maximum_count() -> None:
    many = ["a:b"] * (boundary.MAX_ITEMS["scopes"] + 1)
    assert refused_field(auth_pb2.CreateApiKeyRequest(scopes=many)) == "scopes"
    dims = {f"d{i}": "v" for i in range(boundary.MAX_ITEMS["dimensions"] + 1)}
    assert refused_field(usage_pb2.RecordUsageRequest(event=usage_pb2.UsageEvent(dimensions=dims))) == (
        "event.dimensions"
    )
    bad_value = usage_pb2.RecordUsageRequest(event=usage_pb2.UsageEvent(dimensions={"route": "\x00"}))
    assert refused_field(bad_value).startswith("event.dimensions[")


def test_numbers_enums_and_times_must_be_meaningful() -> None:
    event = usage_pb2.UsageEvent(metric="m", quantity=math.nan)
    assert refused_field(usage_pb2.RecordUsageRequest(event=event)) == "event.quantity"
    assert refused_field(tenant_pb2.ListUsersRequest(state=99)) == "state"  # type: ignore[arg-type]
    far = timestamp_pb2.Timestamp(seconds=2**62)
    assert refused_field(auth_pb2.CreateApiKeyRequest(expire_time=far)) == "expire_time"
    nanos = timestamp_pb2.Timestamp(seconds=1, nanos=-1)
    assert refused_field(auth_pb2.CreateApiKeyRequest(expire_time=nanos)) == "expire_time"
    mixed = duration_pb2.Duration(seconds=5, nanos=-1)
    assert refused_field(tenant_pb2.CreateInvitationRequest(ttl=mixed)) == "ttl"
    boundary.check_request(tenant_pb2.CreateInvitationRequest(ttl=duration_pb2.Duration(seconds=3600)))


def test_deep_structs_are_refused() -> None:
    value = struct_pb2.Value(string_value="leaf")
    for _ in range(boundary.MAX_DEPTH):
        value = struct_pb2.Value(struct_value=struct_pb2.Struct(fields={"k": value}))
    settings = tenant_pb2.TenantSettings(quotas=value.struct_value)
    with pytest.raises(InvalidArgument):
        boundary.check_request(tenant_pb2.UpdateTenantRequest(tenant=tenant_pb2.Tenant(settings=settings)))


def test_well_formed_requests_pass() -> None:
    boundary.check_request(auth_pb2.LoginRequest(tenant="demo", email="owner@demo.test", password="x" * 1024))
    boundary.check_request(tenant_pb2.ListUsersRequest(tenant_id="t", page_size=10**9, page_token=""))


def test_page_sizes_are_clamped_to_the_documented_maximum() -> None:
    assert paging.page_size_or_default(10**9) == paging.MAX_PAGE_SIZE == 100
    assert paging.page_size_or_default(0) == paging.DEFAULT_PAGE_SIZE
    with pytest.raises(InvalidArgument):
        paging.page_size_or_default(-1)


def _request_fields() -> set[str]:
    pool = descriptor_pool.Default()
    names: set[str] = set()
    seen: set[str] = set()

    def walk(message: object) -> None:
        full_name = getattr(message, "full_name", "")
        if full_name in seen:
            return
        seen.add(full_name)
        for field in message.fields:  # type: ignore[attr-defined]
            names.update({field.name, f"{field.containing_type.name}.{field.name}"})
            if field.message_type is not None:
                walk(field.message_type)

    for service in server.SERVICE_NAMES:
        for method in pool.FindServiceByName(service).methods:
            walk(method.input_type)
    return names


def test_every_limit_names_a_request_field() -> None:
    fields = _request_fields()
    assert not set(boundary.MAX_LENGTH) - fields
    assert not set(boundary.MAX_ITEMS) - fields


def test_the_limits_document_lists_every_limit_with_its_figure() -> None:
    text = DOC.read_text()
    for table in (boundary.MAX_LENGTH, boundary.MAX_ITEMS):
        for name, most in table.items():
            assert re.search(rf"\| `{re.escape(name)}` \| {most} \|", text), name
