"""Second factors in the console, in a real browser: an authenticator app set up from
the Security page (pyotp plays the app, reading the key the page shows), the second
step of sign-in with a code or a recovery code, the step-up dialog a sensitive change
asks for, a tenant policy that makes users set up a factor at sign-in, and passkeys
(added, then used as the second step and alone) with Chromium's virtual authenticator
(the DevTools WebAuthn domain).

Passkeys need a host name: the console is opened at http://localhost:<port>, the
server's relying party is `localhost` with that origin, and Envoy listens on the port
chosen for it before the server starts.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pyotp
import pytest
from playwright.sync_api import Locator, Page, expect

from tahoe_auth.v1 import mfa_pb2, mfa_pb2_grpc
from tests import harness
from tests.e2e import stack as e2e
from tests.e2e.console.conftest import Console
from tests.support import Tenant, bearer

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser]

SLOW = 20_000  # ms: a loaded 2-core machine
CODE = re.compile(r"^[a-z0-9]{5}-[a-z0-9]{5}$")


@pytest.fixture(scope="module")
def console_port() -> int:
    return harness.free_port()


@pytest.fixture(scope="module")
def console_host() -> str:
    return "localhost"


@pytest.fixture(scope="module")
def module_env(module_env: dict[str, str], console_port: int) -> dict[str, str]:
    return {
        **module_env,
        "TAHOE_WEBAUTHN_RP_ID": "localhost",
        "TAHOE_WEBAUTHN_ORIGINS": f"http://localhost:{console_port}",
    }


def virtual_authenticator(page: Page) -> Any:
    """A platform authenticator that holds discoverable credentials and says yes at once."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, added["authenticatorId"]


def dialog(console: Console, name: str) -> Locator:
    return console.page.get_by_role("dialog", name=name)


def factors_of(live: e2e.Stack, tenant: Tenant) -> mfa_pb2.ListMfaFactorsResponse:
    """The owner's factors, read by the platform administrator."""
    return mfa_pb2_grpc.MfaServiceStub(live.auth.channel).ListMfaFactors(
        mfa_pb2.ListMfaFactorsRequest(tenant_id=tenant.id, user_id=tenant.owner_id),
        metadata=bearer(live.auth.platform_key),
    )


def shown_codes(scope: Locator) -> list[str]:
    codes = scope.locator("[data-recovery-codes] code")
    expect(codes).to_have_count(10, timeout=SLOW)
    found = [c.strip() for c in codes.all_inner_texts()]
    assert all(CODE.match(c) for c in found) and len(set(found)) == 10, found
    return found


def add_authenticator_app(console: Console) -> tuple[pyotp.TOTP, list[str]]:
    """On the Security page: the app's setup, confirmed with the code pyotp computes from
    the key the page shows; the recovery codes it then shows once."""
    page = console.page
    page.get_by_role("button", name="Add an authenticator app").click()
    setup = dialog(console, "Add an authenticator app")
    setup.get_by_label("Name", exact=True).fill("Work phone")
    setup.get_by_role("button", name="Continue").click()
    qr = setup.get_by_role("img", name=re.compile("QR code"))
    expect(qr).to_be_visible(timeout=SLOW)
    assert int(qr.get_attribute("data-qr-size") or 0) >= 29  # version 3+ with its quiet zone
    setup.get_by_text("Cannot scan? Type the key instead").click()
    secret = setup.locator("[data-totp-secret]").get_attribute("data-totp-secret") or ""
    assert re.fullmatch(r"[A-Z2-7]{32}", secret), secret
    app = pyotp.TOTP(secret)
    setup.get_by_label("Code from the app", exact=True).fill(app.now())
    setup.get_by_role("button", name="Confirm").click()
    codes = shown_codes(setup)
    console.screenshot("security-recovery-codes")
    setup.get_by_role("button", name="I have saved them").click()
    expect(setup).to_have_count(0)
    return app, codes


def sign_in_with_password(console: Console, tenant: Tenant) -> None:
    page = console.page
    if not page.url.startswith(console.url()):
        console.open()
    page.get_by_label("Tenant", exact=True).fill(tenant.slug)
    page.get_by_label("Email", exact=True).fill(tenant.owner_email)
    page.get_by_label("Password", exact=True).fill(tenant.owner_password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def sign_out(console: Console) -> None:
    console.page.get_by_role("button", name="Sign out").click()
    expect(console.page.get_by_role("heading", level=1, name="Sign in to Tahoe Auth")).to_be_visible(timeout=SLOW)


def signed_in(console: Console) -> None:
    """Signed in: the shell is there (on the page the hash names: where one signed out)."""
    expect(console.page.get_by_role("button", name="Sign out")).to_be_visible(timeout=SLOW)
    expect(console.page.get_by_role("heading", level=1, name="Sign in to Tahoe Auth")).to_have_count(0)


def test_an_authenticator_app_from_the_security_page_then_step_up_and_a_recovery_code(
    console: Console, live: e2e.Stack, tenant: Tenant
) -> None:
    page = console.page
    console.sign_in(tenant)  # password only: no factor yet
    console.go("Security")
    expect(page.get_by_text("No second factor yet")).to_be_visible(timeout=SLOW)
    app, codes = add_authenticator_app(console)
    expect(page.get_by_role("row").filter(has_text="Work phone")).to_contain_text("Authenticator app")
    expect(page.locator("[data-codes-remaining]")).to_have_text("10 of 10 recovery codes left.")
    listed = factors_of(live, tenant)
    assert [f.name for f in listed.factors] == ["Work phone"] and listed.recovery_codes_remaining == 10
    console.screenshot("security")
    assert console.sideways_overflow_at_200_percent() <= 0

    # This session signed in with the password alone: creating an API key asks for the
    # second factor in a dialog, then the key is made without starting over.
    console.go("API keys")
    page.get_by_role("button", name="New API key").click()
    dialog(console, "New API key").get_by_label("Name", exact=True).fill("after-step-up")
    dialog(console, "New API key").get_by_role("checkbox", name="usage:read", exact=True).check()
    dialog(console, "New API key").get_by_role("button", name="Create key").click()
    step_up = dialog(console, "Confirm it is you")
    expect(step_up).to_be_visible(timeout=SLOW)
    step_up.get_by_label("Code from your authenticator app", exact=True).fill(
        "000000" if app.now() != "000000" else "111111"
    )
    step_up.get_by_role("button", name="Confirm").click()
    expect(step_up.get_by_role("alert")).to_contain_text("the code is wrong or already used", timeout=SLOW)
    console.screenshot("step-up")
    # The code that confirmed the app is spent: the next step's is within the drift.
    step_up.get_by_label("Code from your authenticator app", exact=True).fill(app.at(time.time() + 30))
    step_up.get_by_role("button", name="Confirm").click()
    expect(step_up).to_have_count(0, timeout=SLOW)
    secret = page.locator("[data-secret]")
    expect(secret).to_have_count(1, timeout=SLOW)
    assert secret.inner_text().startswith("tahoe_sk_")
    page.get_by_role("button", name="I have saved it").click()

    # Signing in again: the second step, answered with a recovery code (any case).
    sign_out(console)
    sign_in_with_password(console, tenant)
    expect(page.get_by_role("heading", name="Second step")).to_be_visible(timeout=SLOW)
    assert console.sideways_overflow_at_200_percent() <= 0
    console.screenshot("sign-in-second-step")
    page.get_by_role("button", name="Use a recovery code instead").click()
    page.get_by_label("Recovery code", exact=True).fill(codes[0].upper())
    page.get_by_role("button", name="Verify").click()
    signed_in(console)
    console.go("Security")
    expect(page.locator("[data-codes-remaining]")).to_have_text("9 of 10 recovery codes left.", timeout=SLOW)

    # A used recovery code is refused like any wrong answer.
    sign_out(console)
    sign_in_with_password(console, tenant)
    page.get_by_role("button", name="Use a recovery code instead").click()
    page.get_by_label("Recovery code", exact=True).fill(codes[0])
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_contain_text("the code is wrong or already used", timeout=SLOW)
    page.get_by_label("Recovery code", exact=True).fill(codes[1])
    page.get_by_role("button", name="Verify").click()
    signed_in(console)


def test_a_step_up_dialog_closed_leaves_the_change_undone(console: Console, live: e2e.Stack, tenant: Tenant) -> None:
    page = console.page
    console.sign_in(tenant)
    console.go("Security")
    add_authenticator_app(console)
    console.go("Roles")
    page.get_by_role("button", name="Create a role").click()
    form = dialog(console, "Create a role")
    form.get_by_label("Name", exact=True).fill("auditor2")
    form.get_by_role("checkbox", name="audit:read", exact=True).check()
    form.get_by_role("button", name="Create role").click()
    step_up = dialog(console, "Confirm it is you")
    expect(step_up).to_be_visible(timeout=SLOW)
    step_up.get_by_role("button", name="Close").click()
    expect(step_up).to_have_count(0)
    expect(page.get_by_role("alert").first).to_contain_text("recent check of your second factor", timeout=SLOW)
    roles = live.call("GET", f"/auth/v1/tenants/{tenant.id}/roles", token=live.auth.platform_key).body["roles"]
    assert "auditor2" not in {r["name"] for r in roles}


def test_a_tenant_that_requires_a_second_factor_has_users_set_one_up_at_sign_in(
    console: Console, live: e2e.Stack, tenant: Tenant
) -> None:
    page = console.page
    console.sign_in(tenant)
    console.go("Security")
    policy = page.get_by_role("form", name="Tenant security policy")
    policy.get_by_label("Second factor", exact=True).select_option("MFA_REQUIREMENT_ALL_USERS")
    policy.get_by_label("Step-up window (minutes)", exact=True).fill("30")
    policy.get_by_role("button", name="Save the policy").click()
    expect(policy.get_by_text("The security policy was saved.")).to_be_visible(timeout=SLOW)
    got = live.call("GET", f"/auth/v1/tenants/{tenant.id}", token=live.auth.platform_key).body
    assert got["tenant"]["settings"]["security"]["mfaRequirement"] == "MFA_REQUIREMENT_ALL_USERS"
    assert got["tenant"]["settings"]["security"]["stepUpMinutes"] == 30
    expect(page.get_by_text("Your tenant requires a second factor for your account")).to_be_visible(timeout=SLOW)

    sign_out(console)
    sign_in_with_password(console, tenant)
    expect(page.get_by_role("heading", name="Set up a second factor")).to_be_visible(timeout=SLOW)
    console.screenshot("sign-in-enrollment")
    assert console.sideways_overflow_at_200_percent() <= 0
    # Until the factor is set up there is no session: a reload is back at sign-in.
    page.reload()
    expect(page.get_by_role("heading", level=1, name="Sign in to Tahoe Auth")).to_be_visible(timeout=SLOW)
    sign_in_with_password(console, tenant)
    page.get_by_role("button", name="Use an authenticator app").click()
    page.get_by_role("button", name="Continue").click()
    page.get_by_text("Cannot scan? Type the key instead").click()
    secret = page.locator("[data-totp-secret]").get_attribute("data-totp-secret") or ""
    app = pyotp.TOTP(secret)
    page.get_by_label("Code from the app", exact=True).fill(app.now())
    page.get_by_role("button", name="Confirm").click()
    shown_codes(page.locator("main"))
    page.get_by_role("button", name="I have saved them").click()
    signed_in(console)
    listed = factors_of(live, tenant)
    assert [f.type for f in listed.factors] == [mfa_pb2.MFA_FACTOR_TYPE_TOTP]

    # The session this made passed the second factor: a sensitive change needs no step-up.
    console.go("API keys")
    page.get_by_role("button", name="New API key").click()
    dialog(console, "New API key").get_by_label("Name", exact=True).fill("enrolled")
    dialog(console, "New API key").get_by_role("checkbox", name="usage:read", exact=True).check()
    dialog(console, "New API key").get_by_role("button", name="Create key").click()
    expect(page.locator("[data-secret]")).to_have_count(1, timeout=SLOW)
    expect(dialog(console, "Confirm it is you")).to_have_count(0)


def test_a_passkey_added_in_the_console_signs_in_as_second_step_and_alone(
    console: Console, live: e2e.Stack, tenant: Tenant
) -> None:
    page = console.page
    cdp, authenticator = virtual_authenticator(page)
    console.sign_in(tenant)
    console.go("Security")
    page.get_by_role("button", name="Add a passkey").click()
    setup = dialog(console, "Add a passkey")
    setup.get_by_label("Name", exact=True).fill("This laptop")
    setup.get_by_role("button", name="Create a passkey").click()
    shown_codes(setup)
    setup.get_by_role("button", name="I have saved them").click()
    expect(page.get_by_role("row").filter(has_text="This laptop")).to_contain_text("Passkey", timeout=SLOW)
    held = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert len(held) == 1 and held[0]["isResidentCredential"] and held[0]["rpId"] == "localhost"
    (factor,) = factors_of(live, tenant).factors
    assert factor.type == mfa_pb2.MFA_FACTOR_TYPE_PASSKEY and factor.name == "This laptop"

    # The second step of a password sign-in.
    sign_out(console)
    sign_in_with_password(console, tenant)
    expect(page.get_by_role("heading", name="Second step")).to_be_visible(timeout=SLOW)
    page.get_by_role("button", name="Use a passkey").click()
    signed_in(console)
    used_once = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"][0]
    assert used_once["signCount"] >= 1

    # Alone: the tenant, then the passkey; no email, no password.
    sign_out(console)
    page.get_by_label("Tenant", exact=True).fill(tenant.slug)
    page.get_by_role("button", name="Sign in with a passkey").click()
    signed_in(console)
    used_twice = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"][0]
    assert used_twice["signCount"] > used_once["signCount"]
    console.go("Security")
    expect(page.get_by_role("row").filter(has_text="This laptop")).not_to_contain_text("—", timeout=SLOW)

    # Removing the passkey: the session signed in with it moments ago, so no code is asked.
    page.get_by_role("row").filter(has_text="This laptop").get_by_role("button", name="Remove").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove This laptop").click()
    expect(page.get_by_text("This laptop was removed.")).to_be_visible(timeout=SLOW)
    assert not factors_of(live, tenant).factors
    # With no factor left, a password is enough again.
    assert live.auth.login(tenant).HasField("tokens")


def test_a_wrong_passkey_sign_in_is_refused_in_plain_words(console: Console, live: e2e.Stack, tenant: Tenant) -> None:
    page = console.page
    virtual_authenticator(page)  # holds no credential for this tenant
    console.open()
    page.get_by_label("Tenant", exact=True).fill(tenant.slug)
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_role("alert")).to_contain_text("no passkey here matches", timeout=SLOW)
    expect(page.get_by_role("heading", level=1, name="Sign in to Tahoe Auth")).to_be_visible()
    page.reload()  # and no session cookie was set
    expect(page.get_by_role("heading", level=1, name="Sign in to Tahoe Auth")).to_be_visible(timeout=SLOW)


def test_an_administrator_removes_a_members_lost_factor_on_the_users_page(
    console: Console, live: e2e.Stack, tenant: Tenant
) -> None:
    page = console.page
    email = f"lost-phone@{tenant.slug}.test"
    member_id, member_token = live.auth.add_user(tenant, ["member"], email=email)
    stub = mfa_pb2_grpc.MfaServiceStub(live.auth.channel)
    started = stub.BeginTotpEnrollment(
        mfa_pb2.BeginTotpEnrollmentRequest(name="Old phone"), metadata=bearer(member_token)
    )
    app = pyotp.parse_uri(started.otpauth_uri)
    stub.ConfirmTotpEnrollment(
        mfa_pb2.ConfirmTotpEnrollmentRequest(factor_id=started.factor_id, code=app.now()), metadata=bearer(member_token)
    )
    member = Tenant(tenant.id, tenant.slug, member_id, email, tenant.owner_password)
    assert live.auth.login(member).HasField("mfa_challenge")

    console.sign_in(tenant)
    console.go("Users")
    page.get_by_role("button", name=f"Second factors of {email}").click()
    factors = dialog(console, f"Second factors of {email}")
    expect(factors.get_by_role("row").filter(has_text="Old phone")).to_contain_text("Authenticator app", timeout=SLOW)
    factors.get_by_role("button", name="Remove Old phone").click()
    expect(factors.get_by_text("Old phone was removed.")).to_be_visible(timeout=SLOW)
    expect(factors.get_by_text("No second factor")).to_be_visible()
    assert live.auth.login(member).HasField("tokens")
