"""The audit log, sessions and platform pages of the console in a real browser, and
tenant isolation across every tenant page: what the pages show is checked against the
API (and the database) too, so a page that only looks right fails."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import create_engine, pool, text

from tahoe_auth.v1 import auth_pb2, tenant_pb2, usage_pb2, usage_pb2_grpc
from tests.e2e import stack as e2e
from tests.e2e.console.conftest import VIEWPORT, Console
from tests.support import Tenant, bearer

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser]

SLOW = 20_000  # ms: a loaded 2-core machine
LOADING = re.compile(r"(Loading|Verifying)[^.]*…")
TENANT_PAGES = (
    "Overview",
    "Live usage",
    "Users",
    "Roles",
    "API keys",
    "Service accounts",
    "Invitations",
    "Webhooks",
    "Audit log",
    "Sessions",
    "Security",
)


def ok(response: e2e.Response) -> dict[str, Any]:
    assert response.status == 200, (response.status, response.body)
    return response.body


def tamper(pg_url: str, statement: str, **params: str) -> None:
    """As the database owner with the append-only trigger off: what an attacker with
    direct access to the database does (the app role may not UPDATE at all)."""
    engine = create_engine(pg_url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(statement), params)
    finally:
        engine.dispose()


@contextlib.contextmanager
def another_console(browser: Any, live: e2e.Stack, shots: Path) -> Iterator[Console]:
    """A second browser (its own cookies) on the console, failing on the same problems."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    page = context.new_page()
    opened = Console(page, f"http://127.0.0.1:{live.port}", shots)
    page.on("pageerror", lambda error: opened.problems.append(f"script error: {error}"))
    page.on(
        "console",
        lambda m: opened.problems.append(f"CSP: {m.text}") if m.type == "error" and "Refused to" in m.text else None,
    )
    try:
        yield opened
    finally:
        context.close()
    assert not opened.problems, opened.problems


def rows(console: Console, caption: str) -> Any:
    return console.page.get_by_role("region", name=caption).locator("tbody tr")


# -- audit log ---------------------------------------------------------------------------


def test_audit_log_shows_filters_exports_and_verifies_the_chain(
    console: Console, live: e2e.Stack, tenant: Tenant, pg_url: str
) -> None:
    page = console.page
    token = live.auth.owner_token(tenant)
    marker = secrets.token_hex(4)
    live.auth.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(name=f"audit-key-{marker}", scopes=["users:read"]), metadata=bearer(token)
    )
    live.auth.tenants.CreateRole(
        tenant_pb2.CreateRoleRequest(role=tenant_pb2.Role(name=f"auditor-{marker}", permissions=["audit:read"])),
        metadata=bearer(token),
    )
    console.sign_in(tenant)
    console.go("Audit log")
    table = rows(console, "Audit log entries")
    expect(table.first).to_be_visible(timeout=SLOW)
    # Newest first: the console's own sign-in, then the role, then the key.
    actions = [a.strip() for a in table.locator("td:nth-child(4)").all_inner_texts()]
    assert actions[:3] == ["auth.login", "role.create", "apikey.create"], actions
    listed = ok(live.call("GET", f"/auth/v1/tenants/{tenant.id}/auditEvents", token=token))["events"]
    assert [e["action"] for e in listed][:3] == actions[:3]
    assert table.first.locator("td").nth(6).inner_text().strip() == (listed[0].get("requestId") or "—")
    # Details open on demand.
    key_row = table.filter(has_text="apikey.create")
    key_row.get_by_text(re.compile(r"\d+ fields?")).click()
    expect(key_row.locator("pre")).to_contain_text(f"audit-key-{marker}")

    # The chain, as the server verifies it.
    verified = ok(live.call("GET", f"/auth/v1/tenants/{tenant.id}/auditEvents:verify", token=token))
    assert verified["intact"] is True
    chain = page.locator("[data-chain]")
    expect(chain).to_have_attribute("data-chain", "intact", timeout=SLOW)
    expect(chain).to_contain_text(f"Chain verified: {int(verified['entriesChecked'])} entries intact")

    console.screenshot("audit")
    assert console.sideways_overflow_at_200_percent() <= 0

    # Filters narrow the list.
    page.get_by_label("Action").fill("apikey.*")
    page.get_by_role("button", name="Apply filters").click()
    expect(table).to_have_count(1, timeout=SLOW)
    expect(table.first).to_contain_text("apikey.create")
    page.get_by_role("button", name="Clear").click()
    expect(table.filter(has_text="role.create")).to_have_count(1, timeout=SLOW)
    page.get_by_label("Outcome").select_option("AUDIT_OUTCOME_FAILURE")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_text("No entries match these filters.")).to_be_visible(timeout=SLOW)
    page.get_by_label("Outcome").select_option("")
    page.get_by_label("From").fill("2099-01-01T00:00")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_text("No entries match these filters.")).to_be_visible(timeout=SLOW)
    page.get_by_label("From").fill("")
    page.get_by_label("Action").fill("role.*")
    page.get_by_role("button", name="Apply filters").click()
    expect(table).to_have_count(1, timeout=SLOW)

    # The export is the filtered entries, as a file.
    with page.expect_download(timeout=SLOW) as started:
        page.get_by_role("button", name="Export", exact=True).click()
    download = started.value
    assert download.suggested_filename.endswith(".jsonl")
    lines = [json.loads(line) for line in Path(download.path()).read_text().splitlines()]
    assert [line["action"] for line in lines] == ["role.create"]
    assert lines[0]["tenant_id"] == tenant.id and lines[0]["target"] == f"role:auditor-{marker}"
    assert len(lines[0]["hash"]) == 64
    page.get_by_label("Action").fill("apikey.create")
    page.get_by_role("button", name="Apply filters").click()
    expect(table).to_have_count(1, timeout=SLOW)
    page.get_by_label("Format").select_option("csv")
    with page.expect_download(timeout=SLOW) as started:
        page.get_by_role("button", name="Export", exact=True).click()
    exported = list(csv.DictReader(io.StringIO(Path(started.value.path()).read_text())))
    assert [r["action"] for r in exported] == ["apikey.create"]
    assert f"audit-key-{marker}" in exported[0]["details"]

    # Someone with the database edits an entry: the page says where the chain breaks.
    tamper(
        pg_url,
        "UPDATE audit_events SET outcome = 'failure' WHERE tenant_id = :t AND sequence = 2",
        t=tenant.id,
    )
    broken = ok(live.call("GET", f"/auth/v1/tenants/{tenant.id}/auditEvents:verify", token=token))
    assert broken["intact"] is False and broken["firstProblem"]["sequence"] == "2"
    page.get_by_role("button", name="Verify again").click()
    expect(chain).to_have_attribute("data-chain", "broken", timeout=SLOW)
    expect(chain).to_contain_text("The audit chain is broken at entry 2: entry was modified.")
    console.screenshot("audit-broken")


# -- sessions ----------------------------------------------------------------------------


def active_sessions(live: e2e.Stack, tenant: Tenant, user_id: str) -> set[str]:
    body = ok(
        live.call(
            "GET",
            f"/auth/v1/sessions?tenantId={tenant.id}&userId={user_id}&pageSize=100",
            token=live.auth.platform_key,
        )
    )
    return {s["id"] for s in body.get("sessions", [])}


def test_sessions_revoke_one_an_other_users_and_sign_out_everywhere(
    console: Console, live: e2e.Stack, tenant: Tenant
) -> None:
    page = console.page
    elsewhere = live.auth.login(tenant).tokens.session_id  # a second sign-in of the same owner
    member_email = f"member-{secrets.token_hex(3)}@{tenant.slug}.test"
    member_id, _ = live.auth.add_user(tenant, ["member"], email=member_email)
    (member_session,) = active_sessions(live, tenant, member_id)
    console.sign_in(tenant)
    console.go("Sessions")
    mine = rows(console, "Your sessions")
    expect(mine).to_have_count(3, timeout=SLOW)  # add_user signed the owner in too
    current = mine.filter(has_text="this session")
    expect(current).to_have_count(1)
    assert elsewhere not in current.inner_text()
    console.screenshot("sessions")
    assert console.sideways_overflow_at_200_percent() <= 0

    other = mine.filter(has_text=elsewhere)
    other.get_by_role("button", name="Revoke").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke the session").click()
    expect(page.get_by_text(f"Session {elsewhere} was revoked.")).to_be_visible(timeout=SLOW)
    expect(mine).to_have_count(2, timeout=SLOW)
    owned = active_sessions(live, tenant, tenant.owner_id)
    assert elsewhere not in owned and len(owned) == 2

    # An administrator looks at another user's sessions and ends one.
    page.get_by_label("User", exact=True).select_option(label=member_email)
    theirs = rows(console, f"Sessions of {member_email}")
    expect(theirs).to_have_count(1, timeout=SLOW)
    expect(theirs.first).to_contain_text(member_session)
    theirs.first.get_by_role("button", name="Revoke").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke the session").click()
    expect(theirs).to_have_count(0, timeout=SLOW)
    assert active_sessions(live, tenant, member_id) == set()

    page.get_by_role("button", name="Sign out everywhere").click()
    page.get_by_role("dialog").get_by_role("button", name="Sign out everywhere").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Tahoe Auth", timeout=SLOW)
    assert active_sessions(live, tenant, tenant.owner_id) == set()


def test_a_member_sees_only_their_own_sessions(console: Console, live: e2e.Stack, tenant: Tenant) -> None:
    email = f"viewer-{secrets.token_hex(3)}@{tenant.slug}.test"
    live.auth.add_user(tenant, ["member"], email=email)
    console.sign_in(tenant, email=email)
    console.go("Sessions")
    expect(rows(console, "Your sessions")).to_have_count(2, timeout=SLOW)  # add_user signed in once too
    expect(console.page.get_by_text("You can see only your own sessions")).to_be_visible(timeout=SLOW)


# -- platform ----------------------------------------------------------------------------


def sign_in_with_key(console: Console, live: e2e.Stack) -> None:
    page = console.page
    console.open()
    page.get_by_role("button", name="Platform administrator? Sign in with a key").click()
    page.get_by_label("Platform administrator key").fill(live.auth.platform_key)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Platform overview", timeout=SLOW)


def tenant_state(live: e2e.Stack, tenant_id: str) -> dict[str, Any]:
    return ok(live.call("GET", f"/auth/v1/tenants/{tenant_id}", token=live.auth.platform_key))["tenant"]


def test_platform_overview_and_tenants(
    console: Console, live: e2e.Stack, tenant: Tenant, browser: Any, tmp_path: Path
) -> None:
    page = console.page
    plan = f"gold-{secrets.token_hex(3)}"
    usage = usage_pb2_grpc.UsageServiceStub(live.auth.channel)
    seconds = f"transcription.s{secrets.token_hex(2)}"
    quota = usage_pb2.MetricQuota(metric=seconds, included=100, limit=usage_pb2.LIMIT_KIND_SOFT)
    usage.UpsertPlan(
        usage_pb2.UpsertPlanRequest(plan=usage_pb2.Plan(name=plan, display_name=f"Gold {plan}", quotas=[quota])),
        metadata=bearer(live.auth.platform_key),
    )
    usage.RecordUsage(
        usage_pb2.RecordUsageRequest(event=usage_pb2.UsageEvent(metric="api.requests", quantity=7)),
        metadata=bearer(live.auth.owner_token(tenant)),
    )
    live.auth.app.usage_pipeline.run_once()  # the overview ranks rolled-up totals
    sign_in_with_key(console, live)
    overview = ok(live.call("GET", "/auth/v1/platform/overview", token=live.auth.platform_key))
    expect(page.locator('[data-stat="Tenants"]')).to_have_text(str(int(overview["tenants"])), timeout=SLOW)
    expect(rows(console, "Tenants by plan and status").first).to_be_visible()
    expect(page.get_by_label("Metric")).to_have_value("api.requests")
    top = rows(console, "Top tenants by api.requests")
    expect(top.first).to_contain_text(tenant.slug, timeout=SLOW)
    expect(top.first.locator("td").nth(2)).to_have_text("7")
    console.screenshot("platform")
    page.get_by_label("Metric").select_option(seconds)
    expect(page.get_by_text("No usage of this metric this period.")).to_be_visible(timeout=SLOW)
    assert console.sideways_overflow_at_200_percent() <= 0

    console.go("Tenants")
    table = rows(console, "Tenants")
    expect(table.first).to_be_visible(timeout=SLOW)
    console.screenshot("tenants")
    assert console.sideways_overflow_at_200_percent() <= 0

    # Create a tenant with an invited owner.
    slug = f"made-{secrets.token_hex(3)}"
    page.get_by_role("button", name="Create tenant").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Slug").fill("Not A Slug!")
    dialog.get_by_role("button", name="Create", exact=True).click()
    expect(dialog.get_by_role("alert")).to_contain_text("INVALID_ARGUMENT", timeout=SLOW)
    dialog.get_by_label("Slug").fill(slug)
    dialog.get_by_label("Name").fill(f"Made {slug}")
    dialog.get_by_label("Owner email").fill(f"boss@{slug}.test")
    dialog.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_text(f"Tenant {slug} was created")).to_be_visible(timeout=SLOW)
    expect(page.locator("[data-secret]")).to_have_text(re.compile(r"\S{20,}"))
    listed = ok(live.call("GET", "/auth/v1/tenants?pageSize=100", token=live.auth.platform_key))["tenants"]
    (made,) = [t for t in listed if t["slug"] == slug]
    assert made["displayName"] == f"Made {slug}" and made["state"] == "TENANT_STATE_ACTIVE"

    # Suspend the fixture tenant: its owner cannot sign in; reactivate: they can.
    page.get_by_label("Search").fill(tenant.slug)
    page.get_by_role("button", name="Search", exact=True).click()
    expect(table).to_have_count(1, timeout=SLOW)
    row = table.first
    row.get_by_role("button", name="Suspend").click()
    page.get_by_role("dialog").get_by_role("button", name=f"Suspend {tenant.slug}").click()
    expect(page.get_by_text(f"Tenant {tenant.slug} is suspended.")).to_be_visible(timeout=SLOW)
    expect(row).to_contain_text("suspended")
    assert tenant_state(live, tenant.id)["state"] == "TENANT_STATE_SUSPENDED"
    with another_console(browser, live, console.shots) as owner:
        owner.open()
        owner.page.get_by_label("Tenant").fill(tenant.slug)
        owner.page.get_by_label("Email").fill(tenant.owner_email)
        owner.page.get_by_label("Password").fill(tenant.owner_password)
        owner.page.get_by_role("button", name="Sign in", exact=True).click()
        # On purpose the same words as a wrong password: nothing tells a stranger the tenant exists.
        expect(owner.page.get_by_role("alert")).to_contain_text(
            "The tenant, email or password is not right.", timeout=SLOW
        )
        row.get_by_role("button", name="Reactivate").click()
        page.get_by_role("dialog").get_by_role("button", name=f"Reactivate {tenant.slug}").click()
        expect(page.get_by_text(f"Tenant {tenant.slug} is active again.")).to_be_visible(timeout=SLOW)
        assert tenant_state(live, tenant.id)["state"] == "TENANT_STATE_ACTIVE"
        owner.page.get_by_role("button", name="Sign in", exact=True).click()
        expect(owner.page.get_by_role("heading", level=1, name="Overview")).to_be_visible(timeout=SLOW)

    # Assign a plan.
    row.get_by_label(f"Plan of {tenant.slug}").select_option(plan)
    row.get_by_role("button", name="Assign plan").click()
    expect(page.get_by_text(f"Tenant {tenant.slug} is now on plan {plan}.")).to_be_visible(timeout=SLOW)
    assert tenant_state(live, tenant.id)["plan"] == plan

    # Open it: the tenant pages work for it.
    row.get_by_role("button", name=f"Open {tenant.slug}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview", timeout=SLOW)
    expect(page.locator("[data-who]")).to_contain_text(tenant.slug, timeout=SLOW)
    expect(page.get_by_text(re.compile(f"Plan {plan}"))).to_be_visible(timeout=SLOW)
    console.go("Audit log")
    expect(rows(console, "Audit log entries").filter(has_text="tenant.suspend")).to_have_count(1, timeout=SLOW)
    # Its users' sessions, as the platform administrator (who has none of their own there).
    console.go("Sessions")
    page.get_by_label("User", exact=True).select_option(label=tenant.owner_email)
    expect(rows(console, f"Sessions of {tenant.owner_email}").first).to_be_visible(timeout=SLOW)


def test_a_tenant_token_cannot_use_the_platform_pages_api(live: e2e.Stack, tenant: Tenant) -> None:
    token = live.auth.owner_token(tenant)
    assert live.call("GET", "/auth/v1/platform/overview", token=token).status == 403
    # The platform binding names no tenant: for a tenant's credential that is its own chain.
    assert ok(live.call("GET", "/auth/v1/platform/auditEvents:verify", token=token))["tenantId"] == tenant.id
    assert live.call("GET", "/auth/v1/tenants", token=token).status == 403


# -- tenant isolation --------------------------------------------------------------------


def test_another_tenants_admin_sees_nothing_of_tenant_a(console: Console, live: e2e.Stack, tenant: Tenant) -> None:
    page = console.page
    a = tenant
    marker = f"only-in-a-{secrets.token_hex(4)}"
    a_token = live.auth.owner_token(a)
    a_user_id, _ = live.auth.add_user(a, ["member"], email=f"{marker}@example.test")
    live.auth.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(name=marker, scopes=["users:read"]), metadata=bearer(a_token)
    )
    live.auth.tenants.CreateRole(
        tenant_pb2.CreateRoleRequest(role=tenant_pb2.Role(name=marker, permissions=["users:read"])),
        metadata=bearer(a_token),
    )
    b = live.auth.create_tenant()
    b_member_id, _ = live.auth.add_user(b, ["member"])
    console.sign_in(b)
    for title in TENANT_PAGES:
        console.go(title)
        main = page.locator("main")
        expect(main).not_to_contain_text(LOADING, timeout=SLOW)
        for shown in (main.inner_text(), page.content()):
            assert marker not in shown, title
            assert a.id not in shown and a.slug not in shown, title
    # B's own audit log and sessions are there: the pages did load data.
    console.go("Audit log")
    expect(rows(console, "Audit log entries").first).to_be_visible(timeout=SLOW)
    console.go("Sessions")
    expect(rows(console, "Your sessions").first).to_be_visible(timeout=SLOW)
    picker = page.get_by_label("User", exact=True)
    options = picker.locator("option").evaluate_all("(all) => all.map((o) => o.value)")
    assert options == ["", b_member_id]  # B's other user, and nobody of A

    # B's credential on A's paths through the JSON API: refused.
    b_token = live.auth.owner_token(b)
    for path in (
        f"/auth/v1/tenants/{a.id}",
        f"/auth/v1/tenants/{a.id}/users",
        f"/auth/v1/tenants/{a.id}/users/{a_user_id}",
        f"/auth/v1/tenants/{a.id}/apiKeys",
        f"/auth/v1/tenants/{a.id}/roles",
        f"/auth/v1/tenants/{a.id}/auditEvents",
        f"/auth/v1/tenants/{a.id}/auditEvents:verify",
        f"/auth/v1/tenants/{a.id}/overview",
        f"/auth/v1/sessions?tenantId={a.id}&userId={a_user_id}",
    ):
        response = live.call("GET", path, token=b_token)
        assert response.status in (403, 404), (path, response.status, response.body)
        assert marker not in json.dumps(response.body), path


def test_audit_log_pages_through_many_entries(console: Console, live: e2e.Stack, tenant: Tenant) -> None:
    for n in range(60):
        live.auth.app.audit.record_alone(None, tenant.id, "test.filler", f"thing:{n}", "success")
    console.sign_in(tenant)
    console.go("Audit log")
    table = rows(console, "Audit log entries")
    expect(table).to_have_count(50, timeout=SLOW)
    first_page = table.locator("td:first-child").all_inner_texts()
    pages = console.page.get_by_role("navigation", name="Pages")
    pages.get_by_role("button", name="Next page").click()
    # tenant.create, 60 fillers and the console's sign-in: 62, newest first.
    expect(table).to_have_count(12, timeout=SLOW)
    assert [int(n) for n in table.locator("td:first-child").all_inner_texts()] == list(range(12, 0, -1))
    expect(pages.get_by_role("button", name="Next page")).to_be_disabled()
    pages.get_by_role("button", name="First page").click()
    expect(table).to_have_count(50, timeout=SLOW)
    assert table.locator("td:first-child").all_inner_texts() == first_page
    assert [int(n) for n in first_page] == list(range(62, 12, -1))
