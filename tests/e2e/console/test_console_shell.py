"""The console's shell in a real browser: signing in and out, sessions that end,
what the page may do (its Content-Security-Policy, no tokens in script-readable
storage), the keyboard alone, and 200% zoom."""

from __future__ import annotations

import re
import socket
import threading

import pytest
from playwright.sync_api import expect

from tahoe_auth.v1 import auth_pb2
from tests.e2e import stack as e2e
from tests.e2e.console.conftest import Console
from tests.support import Tenant, bearer

TENANT_PAGES = 11  # links in the navigation's tenant section

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser]


def test_sign_in_and_out(console: Console, tenant: Tenant) -> None:
    console.open()
    expect(console.page.get_by_role("heading", level=1)).to_have_text("Sign in to Tahoe Auth")
    console.screenshot("signin")
    console.sign_in(tenant)
    expect(console.page.locator("[data-who]")).to_contain_text(tenant.owner_email)
    console.screenshot("overview")
    console.page.get_by_role("button", name="Sign out").click()
    expect(console.page.get_by_role("status")).to_have_text("You are signed out.")
    # The cookie went with the session: a reload does not sign back in.
    console.page.reload()
    expect(console.page.get_by_role("heading", level=1)).to_have_text("Sign in to Tahoe Auth")


def test_a_wrong_password_is_said_in_plain_words(console: Console, tenant: Tenant) -> None:
    console.open()
    console.page.get_by_label("Tenant").fill(tenant.slug)
    console.page.get_by_label("Email").fill(tenant.owner_email)
    console.page.get_by_label("Password").fill("not the password")
    console.page.get_by_role("button", name="Sign in", exact=True).click()
    alert = console.page.get_by_role("alert")
    expect(alert).to_contain_text("The tenant, email or password is not right.")
    expect(alert).to_contain_text("INVALID_CREDENTIALS")


def test_a_reload_keeps_the_session_and_no_token_is_readable_by_scripts(console: Console, tenant: Tenant) -> None:
    console.sign_in(tenant)
    console.page.reload()
    expect(console.page.get_by_role("heading", level=1, name="Overview")).to_be_visible()
    storage = console.page.evaluate("() => [localStorage.length, sessionStorage.length, document.cookie]")
    assert storage == [0, 0, ""]  # the refresh cookie is HttpOnly; the access token is in memory
    (cookie,) = [c for c in console.page.context.cookies() if c["name"] == "tahoe_refresh"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/auth/v1/browser"


def test_an_ended_session_sends_the_browser_to_sign_in(console: Console, live: e2e.Stack, tenant: Tenant) -> None:
    console.sign_in(tenant)
    # Every session of the owner ends elsewhere (LogoutAll from another client): the
    # console's access token is refused, its refresh cookie too.
    other = live.auth.login(tenant).tokens.access_token
    live.auth.auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=bearer(other))
    console.page.get_by_role("button", name="Refresh").click()
    expect(console.page.get_by_role("heading", level=1)).to_have_text("Sign in to Tahoe Auth")
    expect(console.page.get_by_role("status")).to_have_text("Your session has ended. Sign in again to continue.")


def test_every_answer_has_a_strict_content_security_policy(live: e2e.Stack) -> None:
    for path in ("/console/", "/console/js/main.js", "/console/console.css", "/console/no-such-file"):
        response = e2e.request(live.port, "GET", path)
        assert response.status == (404 if "no-such" in path else 200), path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
        assert "frame-ancestors 'none'" in policy and response.headers["x-content-type-options"] == "nosniff"
    assert e2e.request(live.port, "GET", "/console").status == 301
    # Only the console's files are routed to the side port: not its metrics.
    assert e2e.request(live.port, "GET", "/console/../metrics").status == 404


def test_no_inline_script_or_style_in_the_page(live: e2e.Stack) -> None:
    page = e2e.request(live.port, "GET", "/console/").body["raw"]
    assert re.search(r"<script type=\"module\" src=", page)
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "inline script"
    assert "style=" not in page and "<style" not in page
    assert not re.search(r"\son[a-z]+=", page), "inline event handler"


def test_the_keyboard_alone_signs_in_and_moves_between_pages(console: Console, tenant: Tenant) -> None:
    page = console.page
    console.open()
    expect(page.get_by_role("heading", level=1)).to_be_focused()
    for value in (tenant.slug, tenant.owner_email, tenant.owner_password):
        page.keyboard.press("Tab")
        page.keyboard.type(value)
    page.keyboard.press("Enter")
    heading = page.get_by_role("heading", level=1, name="Overview")
    expect(heading).to_be_focused()  # arriving on a page puts focus on its heading
    # Back from the heading into the navigation (it comes before the page), to the
    # "Users" link: each step shows a visible focus ring.
    for _ in range(TENANT_PAGES):
        page.keyboard.press("Shift+Tab")
        outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", page.evaluate("() => document.activeElement.outerHTML")
        if page.evaluate("() => document.activeElement.textContent.trim()") == "Users":
            break
    else:
        pytest.fail("Shift+Tab never reached the Users link")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1, name="Users")).to_be_focused()


def test_at_200_percent_zoom_nothing_needs_sideways_scrolling(console: Console, tenant: Tenant) -> None:
    console.sign_in(tenant)
    assert console.sideways_overflow_at_200_percent() <= 0
    console.page.set_viewport_size({"width": 640, "height": 900})
    console.screenshot("zoom-200")


def test_the_side_port_takes_a_page_loads_burst_of_connections(live: e2e.Stack) -> None:
    """A console page load makes Envoy open some 30 connections to the side port at
    once. With the default listen backlog (5) the kernel dropped some, Envoy's connect
    timed out (0.25 s) and it answered 503: the page stayed on "Loading the console…"
    about once in 30 loads. Here: 40 connections at once, with Envoy's connect timeout."""
    host, port = live.side_address.rsplit(":", 1)
    answers: list[str] = []

    def fetch() -> None:
        try:
            with socket.create_connection((host, int(port)), timeout=0.25) as connection:
                connection.settimeout(10)
                connection.sendall(b"GET /console/js/main.js HTTP/1.1\r\nhost: console\r\n\r\n")
                answers.append(connection.recv(12).decode())
        except OSError as exc:
            answers.append(repr(exc))

    for _ in range(3):
        threads = [threading.Thread(target=fetch) for _ in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [a for a in answers if not a.startswith("HTTP/1.1 200")] == []


def test_a_file_that_fails_to_load_is_said_and_a_reload_offered(console: Console, tenant: Tenant) -> None:
    page = console.page
    page.route("**/console/js/chart.js", lambda route: route.abort("connectionreset"))
    console.open()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The console did not load", timeout=30_000)
    page.unroute("**/console/js/chart.js")
    page.get_by_role("button", name="reload the page").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Tahoe Auth")
