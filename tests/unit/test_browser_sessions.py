"""The browser session cookie, the CSRF rule and whose client address to believe."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tahoe_auth.api import browser
from tahoe_auth.api.forwarded import TrustedProxies, peer_address
from tahoe_auth.api.interceptors import Call, ClientAddress, CsrfHeader, MethodPolicy, csrf_header_present
from tahoe_auth.config import ConfigError, Settings
from tahoe_auth.domain import errors
from tahoe_auth.server import POLICIES

TOKEN = "rt_" + "A" * 43


def test_the_cookie_is_httponly_strict_narrow_and_secure() -> None:
    cookie = browser.set_cookie(TOKEN, 3600, secure=True)
    assert cookie == f"tahoe_refresh={TOKEN}; Path=/auth/v1/browser; Max-Age=3600; HttpOnly; Secure; SameSite=Strict"
    assert "Domain" not in cookie  # host-only
    assert "Secure" not in browser.set_cookie(TOKEN, 3600, secure=False)


def test_clearing_expires_it_at_once_and_a_negative_age_never_appears() -> None:
    assert browser.clear_cookie(True).startswith("tahoe_refresh=; Path=/auth/v1/browser; Max-Age=0;")
    assert "Max-Age=0;" in browser.set_cookie(TOKEN, -5, secure=True)


@pytest.mark.parametrize(
    ("mode", "authority", "secure"),
    [
        ("auto", "app.example.com", True),
        ("auto", "app.example.com:8443", True),
        ("auto", "", True),  # unknown host: the safe side
        ("auto", "localhost:8080", False),
        ("auto", "127.0.0.1:8080", False),
        ("auto", "[::1]:8080", False),
        ("auto", "web.localhost", False),
        ("auto", "127.0.0.1.example.com", True),
        ("true", "localhost", True),
        ("false", "app.example.com", False),
    ],
)
def test_secure_unless_loopback_in_auto_mode(mode: str, authority: str, secure: bool) -> None:
    assert browser.secure_flag(mode, authority) is secure


@pytest.mark.parametrize(
    ("headers", "found"),
    [
        ([f"tahoe_refresh={TOKEN}"], TOKEN),
        ([f"a=1; tahoe_refresh={TOKEN}; b=2"], TOKEN),
        (["a=1", f"tahoe_refresh={TOKEN}"], TOKEN),  # HTTP/2 splits Cookie headers
        ([f'tahoe_refresh="{TOKEN}"'], TOKEN),
        (["tahoe_refresh=not-ours", f"tahoe_refresh={TOKEN}"], TOKEN),
        (["tahoe_refresh=rt_<script>"], ""),
        ([f"xtahoe_refresh={TOKEN}"], ""),
        ([], ""),
    ],
)
def test_the_token_is_read_from_cookie_headers(headers: list[str], found: str) -> None:
    assert browser.refresh_token_from(headers) == found


def call_with(metadata: dict[str, str], policy: MethodPolicy, peer: str = "ipv4:10.0.0.5:41000") -> Call:
    context: Any = SimpleNamespace(peer=lambda: peer)
    return Call("/x/Y", context, metadata, policy)


def test_browser_methods_need_the_csrf_header() -> None:
    browser_policy = MethodPolicy(public=True, browser=True)
    with pytest.raises(errors.CsrfHeaderMissing) as info:
        CsrfHeader()(call_with({}, browser_policy), lambda: "served")
    assert info.value.reason == "CSRF_HEADER_MISSING" and info.value.metadata == {"header": "x-csrf-protection"}
    assert isinstance(info.value, errors.PermissionDenied)  # 403 through the transcoder
    assert CsrfHeader()(call_with({"x-csrf-protection": "1"}, browser_policy), lambda: "served") == "served"
    assert not csrf_header_present({"x-csrf-protection": "  "})
    # Other methods do not care.
    assert CsrfHeader()(call_with({}, MethodPolicy()), lambda: "served") == "served"


def test_exactly_the_browser_methods_are_marked_and_public() -> None:
    marked = {name for name, policy in POLICIES.items() if policy.browser}
    assert marked == {
        f"/tahoe_auth.v1.BrowserSessionService/{m}"
        for m in ("BrowserLogin", "BrowserVerifyMfa", "BrowserRefresh", "BrowserLogout")
    }
    assert all(POLICIES[name].public for name in marked)
    assert POLICIES["/tahoe_auth.v1.BrowserSessionService/BrowserLogin"].hashes_password


def test_peer_addresses_lose_their_port() -> None:
    assert peer_address("ipv4:10.1.2.3:5678") == "10.1.2.3"
    assert peer_address("ipv6:[::1]:5678") == "::1"


@pytest.mark.parametrize(
    ("trusted", "peer", "header", "address"),
    [
        ((), "ipv4:127.0.0.1:1", "203.0.113.9", "127.0.0.1"),  # default: trust nobody
        (("127.0.0.1/32",), "ipv4:127.0.0.1:1", "203.0.113.9", "203.0.113.9"),
        (("127.0.0.1/32",), "ipv4:10.0.0.7:1", "203.0.113.9", "10.0.0.7"),  # not a proxy of ours
        (("10.0.0.0/8",), "ipv4:10.0.0.7:1", "2001:db8::1", "2001:db8::1"),
        (("127.0.0.1/32",), "ipv4:127.0.0.1:1", "not an address", "127.0.0.1"),
        (("127.0.0.1/32",), "ipv4:127.0.0.1:1", "1.2.3.4:80", "127.0.0.1"),
        (("127.0.0.1/32",), "ipv4:127.0.0.1:1", "", "127.0.0.1"),
        (("::1/128",), "ipv6:[::1]:1", "198.51.100.4", "198.51.100.4"),
        (("127.0.0.1/32",), "ipv6:[::ffff:127.0.0.1]:1", "198.51.100.4", "198.51.100.4"),
    ],
)
def test_the_forwarded_address_counts_only_from_a_trusted_proxy(
    trusted: tuple[str, ...], peer: str, header: str, address: str
) -> None:
    proxies = TrustedProxies(trusted)
    assert proxies.client_address(peer, {"x-tahoe-client-address": header}) == address
    call = call_with({"x-tahoe-client-address": header}, MethodPolicy(), peer)
    ClientAddress(proxies)(call, lambda: None)
    assert call.address() == address and call.as_context().client_address == address


def test_trusted_proxies_setting(tmp_path: Path) -> None:
    env = {"TAHOE_VAR_DIR": str(tmp_path)}
    assert Settings.from_env(env).trusted_proxies == ()
    parsed = Settings.from_env({**env, "TAHOE_TRUSTED_PROXIES": " 127.0.0.1, ::1 ,10.1.2.3/8"}).trusted_proxies
    assert parsed == ("127.0.0.1/32", "::1/128", "10.0.0.0/8")
    with pytest.raises(ConfigError, match=r"^TAHOE_TRUSTED_PROXIES: 'envoy' is not an IP address or network"):
        Settings.from_env({**env, "TAHOE_TRUSTED_PROXIES": "127.0.0.1,envoy"})


def test_cookie_secure_setting(tmp_path: Path) -> None:
    env = {"TAHOE_VAR_DIR": str(tmp_path)}
    assert Settings.from_env(env).cookie_secure == "auto"
    assert Settings.from_env({**env, "TAHOE_COOKIE_SECURE": "TRUE"}).cookie_secure == "true"
    with pytest.raises(ConfigError, match="TAHOE_COOKIE_SECURE='yes' is not one of auto, true, false"):
        Settings.from_env({**env, "TAHOE_COOKIE_SECURE": "yes"})
