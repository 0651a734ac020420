"""Mail in the console, in a real browser, with a real SMTP server (aiosmtpd, STARTTLS
and AUTH) receiving what the mail worker sends: "forgot password" from the sign-in page
and the link it mails, an invitation's mail opened in another browser, and an email
confirmation link sent from the Users page. The links point at the console through
Envoy (TAHOE_PUBLIC_URL is the listener's address, chosen before the server starts)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tahoe_auth.v1 import auth_pb2, tenant_pb2
from tests import harness
from tests.e2e import stack as e2e
from tests.e2e.console.conftest import Console
from tests.smtp_server import Received, SmtpServer, smtp_server
from tests.support import Tenant, bearer

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser]

SLOW = 20_000  # ms: a loaded 2-core machine


@pytest.fixture(scope="module")
def console_port() -> int:
    return harness.free_port()


@pytest.fixture(scope="module")
def mailbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    with smtp_server(tmp_path_factory.mktemp("smtp")) as running:
        yield running


@pytest.fixture(scope="module")
def module_env(module_env: dict[str, str], console_port: int, mailbox: SmtpServer) -> dict[str, str]:
    return {**module_env, "TAHOE_SMTP_URL": mailbox.url, "TAHOE_PUBLIC_URL": f"http://127.0.0.1:{console_port}"}


def delivered(live: e2e.Stack, mailbox: SmtpServer, to: str, count: int = 1) -> list[Received]:
    """The mail worker's rounds (a thread of `serve`; here the test drives it): a round
    sends synchronously, so what is due has arrived when it returns."""
    live.auth.app.mail_worker.drain()
    got = mailbox.to(to)
    assert len(got) == count, f"{to} got {len(got)} messages, expected {count}"
    return got


def link_in(received: Received, console: Console, route: str) -> str:
    found = re.search(rf"{re.escape(console.url())}#{re.escape(route)}\?token=\S+", received.part("plain"))
    assert found, received.part("plain")
    return found.group(0)


def test_forgot_password_from_the_sign_in_page_and_the_mailed_link(
    console: Console, live: e2e.Stack, mailbox: SmtpServer, tenant: Tenant, tmp_path: Path
) -> None:
    page = console.page
    console.open()
    page.get_by_label("Tenant").fill(tenant.slug)
    page.get_by_role("button", name="Forgot your password?").click()
    form = page.get_by_role("form", name="Reset your password")
    expect(form.get_by_label("Tenant")).to_have_value(tenant.slug)  # carried over from the sign-in form
    form.get_by_label("Email").fill(tenant.owner_email)
    form.get_by_role("button", name="Mail me a link").click()
    expect(page.get_by_text("a link to choose a new password is on its way")).to_be_visible(timeout=SLOW)
    assert console.sideways_overflow_at_200_percent() <= 0

    (mail,) = delivered(live, mailbox, tenant.owner_email)
    link = link_in(mail, console, "/reset-password")
    # The mail as a person sees it (its HTML part), for a look.
    viewer = page.context.new_page()
    viewer.set_content(mail.part("html"))
    expect(viewer.get_by_role("link", name="Open the link")).to_have_attribute("href", link)
    viewer.screenshot(path=str(console.shots / "mail-password-reset.png"), full_page=True)
    viewer.close()

    page.goto(link)
    expect(page.get_by_role("heading", level=1, name="Choose a new password")).to_be_visible(timeout=SLOW)
    page.get_by_label("New password", exact=True).fill("password1")
    page.get_by_label("New password again").fill("password1")
    page.get_by_role("button", name="Set the new password").click()
    expect(page.get_by_role("alert")).to_contain_text("too common", timeout=SLOW)
    console.screenshot("reset-password")
    page.get_by_label("New password", exact=True).fill("a fresh mailed pass phrase")
    page.get_by_label("New password again").fill("a fresh mailed pass phrase")
    page.get_by_role("button", name="Set the new password").click()
    expect(page.get_by_text("Your password is changed")).to_be_visible(timeout=SLOW)

    page.get_by_role("link", name="Sign in with the new password").click()
    console.sign_in(tenant, password="a fresh mailed pass phrase")
    # The link worked once.
    page.goto(link)
    page.get_by_label("New password", exact=True).fill("yet another pass phrase")
    page.get_by_label("New password again").fill("yet another pass phrase")
    page.get_by_role("button", name="Set the new password").click()
    expect(page.get_by_role("alert")).to_contain_text("This link no longer works", timeout=SLOW)


def test_an_invitation_mail_opens_the_accept_page_in_another_browser(
    console: Console, browser: Any, live: e2e.Stack, mailbox: SmtpServer, tenant: Tenant
) -> None:
    page = console.page
    email = f"mailed@{tenant.slug}.test"
    console.sign_in(tenant)
    console.go("Security")
    form = page.get_by_role("form", name="Tenant mail")
    form.get_by_label("Sender name").fill("Acme People Team")
    form.get_by_role("button", name="Save the mail settings").click()
    expect(form.get_by_text("The mail settings were saved.")).to_be_visible(timeout=SLOW)
    console.go("Invitations")
    page.get_by_role("button", name="Invite a user").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Email").fill(email)
    dialog.get_by_label("Role").select_option("viewer")
    dialog.get_by_role("button", name="Create invitation").click()
    expect(dialog.get_by_role("status")).to_contain_text(f"Invitation created for {email}")

    (mail,) = delivered(live, mailbox, email)
    assert mail.subject == f"You are invited to {tenant.slug.title()}" and "viewer" in mail.part("plain")
    assert str(mail.message["From"]) == "Acme People Team <no-reply@localhost>"  # the tenant's sender name
    link = link_in(mail, console, "/accept")
    context = browser.new_context()
    try:
        other = context.new_page()
        other.goto(link)
        expect(other.get_by_role("heading", level=1)).to_have_text("Accept an invitation", timeout=SLOW)
        other.get_by_label("Password", exact=True).fill("an invited pass phrase")
        other.get_by_label("Password again").fill("an invited pass phrase")
        other.get_by_role("button", name="Accept the invitation").click()
        expect(other.get_by_text("You are signed in.")).to_be_visible(timeout=SLOW)
    finally:
        context.close()
    token = live.auth.owner_token(tenant)
    users = live.auth.tenants.ListUsers(tenant_pb2.ListUsersRequest(page_size=100), metadata=bearer(token)).users
    (joined,) = [u for u in users if u.email == email]
    assert joined.email_verified and list(joined.roles) == ["viewer"]


def test_an_email_confirmation_link_sent_from_the_users_page(
    console: Console, live: e2e.Stack, mailbox: SmtpServer, tenant: Tenant
) -> None:
    page = console.page
    email = f"confirm@{tenant.slug}.test"
    user_id, _ = live.auth.add_user(tenant, ["member"], email=email)
    console.sign_in(tenant)
    console.go("Users")
    row = page.get_by_role("row").filter(has_text=email)
    expect(row.locator("[data-email-verified]")).to_have_text(re.compile("Email not confirmed"))
    row.get_by_role("button", name=f"Send a confirmation link to {email}").click()
    expect(page.get_by_text(f"A confirmation link is on its way to {email}.")).to_be_visible(timeout=SLOW)

    # The first mail is from the account's creation, the second from the button; only
    # the newest link works.
    first, second = delivered(live, mailbox, email, count=2)
    page.goto(link_in(first, console, "/verify-email"))
    expect(page.get_by_role("alert")).to_contain_text("a newer one replaced it", timeout=SLOW)
    page.goto(link_in(second, console, "/verify-email"))
    expect(page.get_by_text(f"Your email address {email} is confirmed.")).to_be_visible(timeout=SLOW)
    console.screenshot("verify-email")

    token = live.auth.owner_token(tenant)
    got = live.auth.tenants.GetUser(tenant_pb2.GetUserRequest(user_id=user_id), metadata=bearer(token)).user
    assert got.email_verified
    page.get_by_role("link", name="Go to the console").click()
    console.go("Users")
    expect(page.get_by_role("row").filter(has_text=email).locator("[data-email-verified]")).to_have_text(
        "Email confirmed", timeout=SLOW
    )
    assert live.auth.auth.Login(
        auth_pb2.LoginRequest(tenant=tenant.slug, email=email, password=tenant.owner_password)
    ).tokens.access_token
