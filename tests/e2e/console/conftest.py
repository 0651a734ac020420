"""The web console in a real browser: Debian's chromium driven by Playwright (launched
with its executable_path; Playwright's own browsers are not downloaded), against the
whole stack (auth server, side port serving the console, Envoy) on the real PostgreSQL
and Redis. Each test gets a fresh browser context (no cookies) and its own tenants.

Every test fails on an uncaught script error or a Content-Security-Policy violation in
the page. Screenshots go to TAHOE_SCREENSHOT_DIR (default: the test's tmp dir); the
README's come from a run with TAHOE_SCREENSHOT_DIR=docs/screenshots.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import support
from tests.e2e import stack as e2e
from tests.support import Tenant

# expect() waits for a condition up to this long: generous, for a loaded 2-core machine.
EXPECT_TIMEOUT_MS = 15_000
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def transport() -> str:
    """The console talks to the JSON API, which bypasses Check: one transport is enough."""
    return "http"


@pytest.fixture(scope="module")
def module_env(module_env: dict[str, str]) -> dict[str, str]:
    # Envoy (127.0.0.1) is trusted to say who the browser is.
    return {**module_env, "TAHOE_TRUSTED_PROXIES": "127.0.0.1/32,::1"}


def chromium_path() -> str:
    configured = os.environ.get("TAHOE_CHROMIUM")
    for candidate in (configured, *CHROMIUM_CANDIDATES):
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("chromium")
    if found:
        return found
    support.unavailable("chromium is not installed (apt-get install chromium; .ci/run does)")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        support.unavailable("playwright is not installed (make install provides it)")
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Console:
    """One browser tab on the console, with what went wrong in it."""

    page: Any
    base: str
    shots: Path
    problems: list[str] = field(default_factory=list)

    def url(self, route: str = "") -> str:
        return f"{self.base}/console/{'#' + route if route else ''}"

    def open(self, route: str = "") -> None:
        self.page.goto(self.url(route))

    def sign_in(self, tenant: Tenant, email: str | None = None, password: str | None = None) -> None:
        """Signs in on the sign-in page and waits for the overview."""
        from playwright.sync_api import expect

        page = self.page
        if not page.url.startswith(self.url()):
            self.open()
        page.get_by_label("Tenant").fill(tenant.slug)
        page.get_by_label("Email").fill(email or tenant.owner_email)
        page.get_by_label("Password").fill(password or tenant.owner_password)
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()

    def go(self, title: str) -> None:
        """Follows the navigation link `title` and waits for the page's heading."""
        from playwright.sync_api import expect

        self.page.get_by_role("navigation", name="Console").get_by_role("link", name=title, exact=True).click()
        expect(self.page.get_by_role("heading", level=1)).to_have_text(title)

    def sideways_overflow_at_200_percent(self) -> int:
        """How many CSS px the current page is wider than the window at 200% zoom (a
        1280 px window at 200% is a 640 CSS px viewport); the window is put back after."""
        self.page.set_viewport_size({"width": VIEWPORT["width"] // 2, "height": VIEWPORT["height"]})
        try:
            overflow: int = self.page.evaluate("() => document.documentElement.scrollWidth - innerWidth")
        finally:
            self.page.set_viewport_size(VIEWPORT)
        return overflow

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture(scope="module")
def console_port() -> int | None:
    """Envoy's listener port: any free one, unless a module needs to know it before the
    server starts (links in mail, passkey origins) and picks it."""
    return None


@pytest.fixture(scope="module")
def live(
    module_env: dict[str, str], transport: str, tmp_path_factory: pytest.TempPathFactory, console_port: int | None
) -> Iterator[e2e.Stack]:
    def on_the_chosen_port(config: dict[str, Any]) -> dict[str, Any]:
        config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = console_port
        return config

    tmp = tmp_path_factory.mktemp("stack")
    configure = on_the_chosen_port if console_port is not None else None
    with e2e.stack(module_env, tmp, configure=configure, transport=transport) as running:
        yield running
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def console_host() -> str:
    """The host name the browser uses for the console (passkeys need a name, not an address)."""
    return "127.0.0.1"


@pytest.fixture
def console(browser: Any, live: e2e.Stack, tmp_path: Path, console_host: str) -> Iterator[Console]:
    shots = Path(os.environ.get("TAHOE_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    page = context.new_page()
    opened = Console(page, f"http://{console_host}:{live.port}", shots)

    def on_console(message: Any) -> None:
        # Chromium reports CSP violations as console errors ("Refused to ...").
        if message.type == "error" and "Refused to" in message.text:
            opened.problems.append(f"CSP: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: opened.problems.append(f"script error: {error}"))
    try:
        yield opened
    finally:
        context.close()
    assert not opened.problems, opened.problems


@pytest.fixture
def tenant(live: e2e.Stack) -> Tenant:
    """A new tenant with an owner who signs in with a password."""
    return live.auth.create_tenant()
