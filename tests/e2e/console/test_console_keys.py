"""The console's credential pages in a real browser: API keys (a secret shown once and
then used through Envoy with the real curl, revoked, rotated with a grace period),
service accounts (a client secret shown once that gets a token, permissions changed,
the secret rotated and revoked, the account deleted) and webhooks (an endpoint on a
receiver the test runs, a test event and its delivery, a dead letter replayed).

The `live` stack's auth server runs no webhook worker (tests.support.running_server
starts none): the tests send due deliveries with the app's own worker (`drain()`,
the settings' egress policy), where a deployment's worker would run on its own.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Locator, expect

from tests import support
from tests.e2e import stack as e2e
from tests.e2e.console.conftest import Console
from tests.support import Tenant
from tests.webhook_receiver import Receiver, Reply, receiver

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser]

SLOW = 15_000  # ms: a loaded 2-core machine


@pytest.fixture(scope="module")
def module_env(module_env: dict[str, str]) -> dict[str, str]:
    # The test's receiver listens on loopback over http, which the SSRF guard refuses
    # unless the deployment allows it.
    return {**module_env, "TAHOE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "TAHOE_WEBHOOK_ALLOW_HTTP": "true"}


@pytest.fixture
def sink() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def curl_jobs(live: e2e.Stack, key: str) -> str:
    """The HTTP status of GET /v1/jobs through Envoy (route permission transcription:read)."""
    done = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            f"authorization: Bearer {key}",
            f"http://127.0.0.1:{live.port}/v1/jobs",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return done.stdout


def api(live: e2e.Stack, tenant: Tenant, method: str, suffix: str, body: Any = None) -> dict[str, Any]:
    """The JSON API as the platform administrator (polling as the owner would sign in again and again)."""
    response = live.call(method, f"/auth/v1/tenants/{tenant.id}{suffix}", token=live.auth.platform_key, body=body)
    assert response.status == 200, (response.status, response.body)
    result: dict[str, Any] = response.body
    return result


def row(console: Console, text: str) -> Locator:
    return console.page.get_by_role("row").filter(has_text=text)


def dialog(console: Console) -> Locator:
    return console.page.get_by_role("dialog")


def shown_secret(console: Console) -> str:
    secret = console.page.locator("[data-secret]")
    expect(secret).to_have_count(1, timeout=SLOW)
    return secret.inner_text().strip()


def expect_no_secret(console: Console, secret: str) -> None:
    expect(console.page.locator("[data-secret]")).to_have_count(0)
    assert secret not in console.page.content()


def check(console: Console, name: str) -> None:
    dialog(console).get_by_role("checkbox", name=name, exact=True).check()


# ---------------------------------------------------------------- API keys


def test_an_api_key_is_shown_once_works_through_envoy_and_revoking_stops_it(
    console: Console, live: e2e.Stack, tenant: Tenant
) -> None:
    page = console.page
    console.sign_in(tenant)
    console.go("API keys")
    expect(page.get_by_text("No active API keys.")).to_be_visible()
    page.get_by_role("button", name="New API key").click()
    dialog(console).get_by_label("Name").fill("ci-reader")
    check(console, "transcription:read")  # what GET /v1/jobs needs (envoy.yaml's jobs.read route)
    dialog(console).get_by_label("Expires (optional)").fill("2030-01-02T12:00")
    dialog(console).get_by_role("button", name="Create key").click()
    secret = shown_secret(console)
    assert secret.startswith("tahoe_sk_")
    expect(page.get_by_role("heading", name="API key “ci-reader” created")).to_be_visible()
    (listed,) = api(live, tenant, "GET", "/apiKeys")["apiKeys"]
    assert listed["name"] == "ci-reader" and listed["scopes"] == ["transcription:read"]
    assert listed["expireTime"].startswith("2030-01-02") and secret.startswith(listed["prefix"])
    expect(row(console, "ci-reader")).to_contain_text(listed["prefix"])
    expect(row(console, "ci-reader")).to_contain_text("active")

    assert curl_jobs(live, secret) == "200"
    assert curl_jobs(live, "tahoe_sk_not-a-key") == "401"

    console.screenshot("api-keys")
    assert console.sideways_overflow_at_200_percent() <= 0

    # Never again: not after "I have saved it", a reload, or another page and back.
    page.get_by_role("button", name="I have saved it").click()
    expect_no_secret(console, secret)
    page.reload()
    expect(page.get_by_role("heading", level=1, name="API keys")).to_be_visible(timeout=SLOW)
    expect(row(console, "ci-reader")).to_be_visible()
    expect_no_secret(console, secret)
    console.go("Overview")
    console.go("API keys")
    expect(row(console, "ci-reader")).to_be_visible()
    expect_no_secret(console, secret)

    row(console, "ci-reader").get_by_role("button", name="Revoke").click()
    expect(dialog(console)).to_contain_text("ci-reader")
    dialog(console).get_by_role("button", name="Revoke key").click()
    expect(page.get_by_text("No active API keys.")).to_be_visible(timeout=SLOW)
    (revoked,) = api(live, tenant, "GET", "/apiKeys?showEnded=true")["apiKeys"]
    assert revoked["revokeTime"]
    # Revocation reaches Check within about a second.
    support.wait_until(lambda: curl_jobs(live, secret) == "401", limit=5, step=0.1)
    page.get_by_label("Show revoked and expired keys").check()
    expect(row(console, "ci-reader")).to_contain_text("revoked", timeout=SLOW)


def test_rotating_an_api_key_shows_the_new_secret_once_and_the_old_works_for_the_grace(
    console: Console, live: e2e.Stack, tenant: Tenant
) -> None:
    owner = live.auth.owner_token(tenant)  # a key acts for a user: the owner's, not the platform's
    body = {"name": "deployer", "scopes": ["transcription:read"]}
    created = live.call("POST", f"/auth/v1/tenants/{tenant.id}/apiKeys", token=owner, body=body)
    assert created.status == 200, created.body
    old = created.body["secret"]
    page = console.page
    console.sign_in(tenant)
    console.go("API keys")
    page.get_by_role("button", name="Rotate deployer").click()
    dialog(console).get_by_label("Amount").fill("10")
    dialog(console).get_by_label("Unit").select_option("minutes")
    before = dt.datetime.now(dt.UTC)
    dialog(console).get_by_role("button", name="Rotate key").click()
    new = shown_secret(console)
    assert new.startswith("tahoe_sk_") and new != old
    until = page.locator("[data-old-secret-until]")
    expect(until).to_contain_text("The old secret keeps working until")
    shown_until = dt.datetime.fromisoformat(until.get_attribute("data-old-secret-until") or "")
    assert dt.timedelta(minutes=9) < shown_until - before < dt.timedelta(minutes=11)
    expect(row(console, "deployer")).to_contain_text("rotating", timeout=SLOW)
    expect(row(console, "deployer")).to_contain_text("Old secret works until")
    (key,) = api(live, tenant, "GET", "/apiKeys")["apiKeys"]
    assert key["previousSecretExpireTime"] and new.startswith(key["prefix"])
    assert curl_jobs(live, new) == "200"
    assert curl_jobs(live, old) == "200"  # within the grace period

    # A rotation without grace: the previous secret stops at once.
    page.get_by_role("button", name="I have saved it").click()
    page.get_by_role("button", name="Rotate deployer").click()
    dialog(console).get_by_label("Amount").fill("0")
    dialog(console).get_by_role("button", name="Rotate key").click()
    newest = shown_secret(console)
    expect(page.get_by_text("The old secret stopped working now.")).to_be_visible()
    assert curl_jobs(live, newest) == "200"
    support.wait_until(lambda: curl_jobs(live, new) == "401", limit=5, step=0.1)


def tab_to(console: Console, script: str, limit: int = 60) -> None:
    """Presses Tab until `script` (a predicate of the focused element `e`) holds."""
    for _ in range(limit):
        console.page.keyboard.press("Tab")
        if console.page.evaluate(f"() => {{ const e = document.activeElement; return !!({script}); }}"):
            return
    pytest.fail(f"Tab never reached {script}")


def test_the_keyboard_alone_creates_a_key(console: Console, live: e2e.Stack, tenant: Tenant) -> None:
    page = console.page
    console.sign_in(tenant)
    console.go("API keys")
    page.get_by_role("button", name="New API key").focus()
    page.keyboard.press("Enter")
    expect(dialog(console)).to_be_visible()
    tab_to(console, "e.name === 'name'")
    page.keyboard.type("typed-key")
    tab_to(console, "e.type === 'checkbox' && e.value === 'transcription:read'")
    page.keyboard.press("Space")
    tab_to(console, "e.textContent.trim() === 'Create key'")
    page.keyboard.press("Enter")
    assert shown_secret(console).startswith("tahoe_sk_")
    # Focus goes to the new secret's panel, where a keyboard user reads and copies it.
    expect(page.get_by_role("heading", name="API key “typed-key” created")).to_be_focused()
    (key,) = api(live, tenant, "GET", "/apiKeys")["apiKeys"]
    assert key["name"] == "typed-key" and key["scopes"] == ["transcription:read"]
    # Escape closes a dialog, and focus goes back to what opened it.
    page.get_by_role("button", name="Rotate typed-key").focus()
    page.keyboard.press("Enter")
    expect(dialog(console)).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog(console)).to_have_count(0)
    expect(page.get_by_role("button", name="Rotate typed-key")).to_be_focused()


def test_errors_are_said_in_plain_words(console: Console, live: e2e.Stack, tenant: Tenant) -> None:
    """A member may make keys, but only within their own permissions; a key needs one."""
    email = f"member@{tenant.slug}.test"
    live.auth.add_user(tenant, ["member"], email=email, password=tenant.owner_password)
    page = console.page
    console.sign_in(tenant, email=email)
    console.go("API keys")
    page.get_by_role("button", name="New API key").click()
    dialog(console).get_by_label("Name").fill("too-much")
    dialog(console).get_by_role("button", name="Create key").click()
    expect(dialog(console).get_by_role("alert")).to_have_text("Choose at least one permission for the key.")
    dialog(console).get_by_label("Other permission").fill("not a permission")
    dialog(console).get_by_role("button", name="Add permission").click()
    expect(dialog(console).get_by_role("alert").first).to_contain_text("Not of the form resource:action")
    dialog(console).get_by_label("Other permission").fill("users:write")
    dialog(console).get_by_role("button", name="Add permission").click()
    dialog(console).get_by_role("button", name="Create key").click()
    alert = dialog(console).get_by_role("alert").first
    expect(alert).to_contain_text("You cannot grant permissions you do not have yourself.", timeout=SLOW)
    expect(alert).to_contain_text("PRIVILEGE_ESCALATION")
    assert api(live, tenant, "GET", "/apiKeys").get("apiKeys", []) == []


# ---------------------------------------------------------------- service accounts


def service_token(live: e2e.Stack, client_id: str, client_secret: str) -> e2e.Response:
    return live.call("POST", "/auth/v1/serviceTokens", body={"clientId": client_id, "clientSecret": client_secret})


def test_a_service_account_is_created_changed_rotated_revoked_and_deleted(
    console: Console, live: e2e.Stack, tenant: Tenant
) -> None:
    page = console.page
    console.sign_in(tenant)
    console.go("Service accounts")
    expect(page.get_by_text("No service accounts.")).to_be_visible()
    page.get_by_role("button", name="New service account").click()
    dialog(console).get_by_label("Name").fill("billing-sync")
    dialog(console).get_by_label("Description").fill("Nightly billing export")
    check(console, "users:read")
    dialog(console).get_by_role("button", name="Create service account").click()
    client_secret = shown_secret(console)
    client_id = page.locator("[data-client-id]").inner_text().strip()
    assert client_secret.startswith("tahoe_sa_")
    (account,) = api(live, tenant, "GET", "/serviceAccounts")["serviceAccounts"]
    assert account["id"] == client_id and account["permissions"] == ["users:read"]
    issued = service_token(live, client_id, client_secret)
    assert issued.status == 200 and issued.body["tokenType"] == "Bearer", issued.body
    validated = live.call("POST", "/auth/v1/tokens:validate", body={"token": issued.body["accessToken"]})
    assert validated.status == 200, validated.body
    expect(row(console, "billing-sync")).to_contain_text("users:read")

    console.screenshot("service-accounts")
    assert console.sideways_overflow_at_200_percent() <= 0
    page.reload()
    expect(row(console, "billing-sync")).to_be_visible(timeout=SLOW)
    expect_no_secret(console, client_secret)

    # Its permissions change (UpdateServiceAccount with an update mask).
    page.get_by_role("button", name="Edit billing-sync").click()
    expect(dialog(console).get_by_role("checkbox", name="users:read", exact=True)).to_be_checked()
    check(console, "roles:read")
    dialog(console).get_by_label("Other permission").fill("usage:read")
    dialog(console).get_by_role("button", name="Add permission").click()
    expect(dialog(console).get_by_role("checkbox", name="usage:read", exact=True)).to_be_checked()
    dialog(console).get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("Saved “billing-sync”.")).to_be_visible(timeout=SLOW)
    (account,) = api(live, tenant, "GET", "/serviceAccounts")["serviceAccounts"]
    assert account["permissions"] == ["roles:read", "usage:read", "users:read"]
    assert account["description"] == "Nightly billing export"

    # A new secret, shown once; the old one stops at once (no grace chosen).
    page.get_by_role("button", name="Rotate secret of billing-sync").click()
    dialog(console).get_by_role("button", name="Rotate secret").click()
    rotated = shown_secret(console)
    assert rotated.startswith("tahoe_sa_") and rotated != client_secret
    assert service_token(live, client_id, rotated).status == 200
    assert service_token(live, client_id, client_secret).status == 401

    row(console, "billing-sync").get_by_role("button", name="Revoke secret").click()
    dialog(console).get_by_role("button", name="Revoke secret").click()
    expect(row(console, "billing-sync")).to_contain_text("revoked", timeout=SLOW)
    assert api(live, tenant, "GET", f"/serviceAccounts/{client_id}")["serviceAccount"]["secretRevoked"] is True
    assert service_token(live, client_id, rotated).status == 401

    row(console, "billing-sync").get_by_role("button", name="Delete").click()
    dialog(console).get_by_role("button", name="Delete service account").click()
    expect(page.get_by_text("No service accounts.")).to_be_visible(timeout=SLOW)
    assert api(live, tenant, "GET", "/serviceAccounts").get("serviceAccounts", []) == []


# ---------------------------------------------------------------- webhooks


def delivery_rows(console: Console) -> Locator:
    return console.page.get_by_role("region", name="Deliveries", exact=True).get_by_role("row")


def test_webhook_endpoint_test_event_delivery_and_dead_letter_replay(
    console: Console, live: e2e.Stack, tenant: Tenant, sink: Receiver
) -> None:
    page = console.page
    worker = live.auth.app.webhook_worker
    console.sign_in(tenant)
    console.go("Webhooks")
    expect(page.get_by_text("No webhook endpoints.")).to_be_visible()
    page.get_by_role("button", name="New endpoint").click()
    # A private address the deployment does not allow: refused, in words.
    dialog(console).get_by_label("URL").fill("http://10.0.0.8/hooks")
    dialog(console).get_by_role("button", name="Add endpoint").click()
    expect(dialog(console).get_by_role("alert")).to_contain_text("INVALID_ARGUMENT", timeout=SLOW)
    dialog(console).get_by_label("URL").fill(sink.url)
    dialog(console).get_by_label("Description").fill("Test receiver")
    expect(dialog(console).get_by_role("checkbox", name=re.compile(r"^user\.created\b"))).to_be_visible(timeout=SLOW)
    dialog(console).get_by_role("checkbox", name=re.compile(r"^user\.created\b")).check()
    dialog(console).get_by_label("Other event types or prefixes").fill("apikey.*")
    dialog(console).get_by_role("button", name="Add endpoint").click()
    secret = shown_secret(console)
    assert secret.startswith("whsec_")
    (endpoint,) = api(live, tenant, "GET", "/webhookEndpoints")["endpoints"]
    assert endpoint["url"] == sink.url and endpoint["eventTypes"] == ["apikey.*", "user.created"]
    assert endpoint["description"] == "Test receiver" and endpoint["enabled"] is True
    page.get_by_role("button", name="I have saved it").click()

    # A test event: its delivery appears in the endpoint's log, then its outcome.
    row(console, sink.url).get_by_role("button", name="Send test event").click()
    expect(page.get_by_role("heading", name=f"Deliveries to {sink.url}")).to_be_visible(timeout=SLOW)
    expect(delivery_rows(console).filter(has_text="webhook.test")).to_have_count(1, timeout=SLOW)
    worker.drain()
    (message,) = sink.wait_for(1)
    assert message.verify(secret)["type"] == "webhook.test"  # signed with the secret the page showed
    first = delivery_rows(console).filter(has_text="webhook.test")
    expect(first).to_contain_text("succeeded", timeout=SLOW)  # the log is read again while in flight
    expect(first.locator("[data-response-code]")).to_have_text("200")
    expect(first).to_contain_text(message.id)
    console.screenshot("webhooks")
    assert console.sideways_overflow_at_200_percent() <= 0

    # A receiver answering 410 Gone: the delivery is dead at once and the endpoint disabled.
    sink.default = Reply(410)
    row(console, sink.url).get_by_role("button", name="Send test event").click()
    expect(delivery_rows(console).filter(has_text="webhook.test")).to_have_count(2, timeout=SLOW)
    worker.drain()
    sink.wait_for(2)
    dead_id = sink.received[1].id
    dead = delivery_rows(console).filter(has_text=dead_id)
    expect(dead).to_contain_text("dead", timeout=SLOW)
    expect(dead.locator("[data-response-code]")).to_have_text("410")
    page.get_by_role("button", name="Refresh", exact=True).click()
    expect(row(console, sink.url).first).to_contain_text("the receiver answered 410 Gone", timeout=SLOW)
    page.get_by_label("Status").select_option("DEAD")
    expect(delivery_rows(console)).to_have_count(2)  # the header and the dead one
    page.get_by_label("Status").select_option("")

    # Enabled again and the dead letters replayed: the same webhook-id arrives again.
    sink.default = Reply(200)
    row(console, sink.url).first.get_by_role("button", name="Enable").click()
    expect(page.get_by_text(f"Enabled {sink.url}.")).to_be_visible(timeout=SLOW)
    assert api(live, tenant, "GET", f"/webhookEndpoints/{endpoint['id']}")["endpoint"]["enabled"] is True
    page.get_by_role("button", name="Replay dead deliveries").click()
    dialog(console).get_by_role("button", name="Replay them").click()
    expect(page.get_by_text("Replayed dead deliveries: 1 delivery queued to be sent again.")).to_be_visible(
        timeout=SLOW
    )
    worker.drain()
    assert sink.wait_for(3)[2].id == dead_id
    expect(dead).to_contain_text("succeeded", timeout=SLOW)
    logged = api(live, tenant, "GET", f"/webhookDeliveries?endpointId={endpoint['id']}")["deliveries"]
    statuses = [d["status"] for d in logged]
    assert statuses == ["WEBHOOK_DELIVERY_STATUS_SUCCEEDED"] * 2

    # Edited, disabled, the secret rotated (shown once), deleted.
    row(console, sink.url).first.get_by_role("button", name="Edit").click()
    expect(dialog(console).get_by_role("checkbox", name=re.compile(r"^user\.created\b"))).to_be_checked(timeout=SLOW)
    dialog(console).get_by_label("Description").fill("Renamed receiver")
    dialog(console).get_by_role("button", name="Save changes").click()
    expect(page.get_by_text(f"Saved {sink.url}.")).to_be_visible(timeout=SLOW)
    got = api(live, tenant, "GET", f"/webhookEndpoints/{endpoint['id']}")["endpoint"]
    assert got["description"] == "Renamed receiver" and got["eventTypes"] == ["apikey.*", "user.created"]
    row(console, sink.url).first.get_by_role("button", name="Disable").click()
    expect(page.get_by_text(f"Disabled {sink.url}.")).to_be_visible(timeout=SLOW)
    assert api(live, tenant, "GET", f"/webhookEndpoints/{endpoint['id']}")["endpoint"]["enabled"] is False
    row(console, sink.url).first.get_by_role("button", name="Rotate secret").click()
    dialog(console).get_by_label("Amount").fill("0")
    dialog(console).get_by_role("button", name="Rotate secret").click()
    rotated = shown_secret(console)
    assert rotated.startswith("whsec_") and rotated != secret
    assert api(live, tenant, "GET", f"/webhookEndpoints/{endpoint['id']}")["endpoint"]["secretsInForce"] == 1
    page.reload()
    expect(row(console, sink.url).first).to_be_visible(timeout=SLOW)
    expect_no_secret(console, rotated)
    row(console, sink.url).first.get_by_role("button", name="Delete").click()
    dialog(console).get_by_role("button", name="Delete endpoint").click()
    expect(page.get_by_text("No webhook endpoints.")).to_be_visible(timeout=SLOW)
    assert api(live, tenant, "GET", "/webhookEndpoints").get("endpoints", []) == []
