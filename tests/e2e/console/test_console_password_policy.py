"""A password the policy refuses, in the console: the person is told which rule, in
plain words, through Envoy's JSON errors, and no user is created."""

from __future__ import annotations

import secrets

import pytest
from playwright.sync_api import expect

from tahoe_auth.v1 import tenant_pb2
from tests.e2e import stack as e2e
from tests.e2e.console.conftest import Console
from tests.support import Tenant, bearer

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser]

SLOW = 20_000  # ms: a loaded 2-core machine hashes passwords slowly


def test_a_refused_password_is_explained_by_its_rule(console: Console, live: e2e.Stack, tenant: Tenant) -> None:
    email = f"pat{secrets.token_hex(3)}@{tenant.slug}.test"
    page = console.page
    console.sign_in(tenant)
    console.go("Users")
    page.get_by_role("button", name="Create a user").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Email").fill(email)
    dialog.get_by_label("Password").fill("Password123")
    dialog.get_by_role("button", name="Create user").click()
    alert = dialog.get_by_role("alert")
    expect(alert).to_contain_text("This password is too common", timeout=SLOW)
    expect(alert).to_contain_text("PASSWORD_REJECTED")

    dialog.get_by_label("Password").fill(f"my {tenant.slug} login")
    dialog.get_by_role("button", name="Create user").click()
    expect(alert).to_contain_text("must not contain the tenant's name", timeout=SLOW)

    owner = bearer(live.auth.owner_token(tenant))
    users = live.auth.tenants.ListUsers(tenant_pb2.ListUsersRequest(tenant_id=tenant.id), metadata=owner).users
    assert email not in [u.email for u in users]

    dialog.get_by_label("Password").fill("sixteen llamas at noon")
    dialog.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("status").filter(has_text=f"{email} is created.")).to_be_visible(timeout=SLOW)
