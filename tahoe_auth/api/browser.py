"""The browser session cookie: building the `set-cookie` value and reading the token
back from `cookie` metadata.

`tahoe_refresh`: HttpOnly (no script can read it, so an XSS cannot carry the refresh
token away), SameSite=Strict (never sent by a cross-site request), Path=/auth/v1/browser
(sent to the three browser session methods and nothing else) and Max-Age = what the
session has left of its absolute lifetime. Secure unless configured off, or, in `auto`
mode, when the request's host is loopback (local development over plain HTTP). Not
`__Host-tahoe_refresh`: that prefix requires `Path=/`, and the narrow path matters more
here (the cookie is not sent with every request to the origin); it is also why the
cookie has no Domain (host-only, as `__Host-` would force).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

COOKIE_NAME = "tahoe_refresh"
COOKIE_PATH = "/auth/v1/browser"
# Refresh tokens are `rt_` + URL-safe base64: anything else is not ours.
_TOKEN = re.compile(r"^rt_[A-Za-z0-9_-]{16,128}\Z")
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}


def host_of(authority: str) -> str:
    """`example.com:8080` -> `example.com`; `[::1]:8080` -> `[::1]`."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority.partition("]")[0] + "]"
    return authority.rpartition(":")[0] if authority.count(":") == 1 else authority


def is_loopback_host(authority: str) -> bool:
    host = host_of(authority)
    return host in _LOOPBACK_HOSTS or host.endswith(".localhost")


def secure_flag(mode: str, authority: str) -> bool:
    """`mode` is TAHOE_COOKIE_SECURE: true, false, or auto (Secure unless loopback)."""
    if mode == "true":
        return True
    if mode == "false":
        return False
    return not is_loopback_host(authority)


def set_cookie(token: str, max_age: int, secure: bool) -> str:
    """The `set-cookie` value carrying `token`; an empty token with max_age 0 clears it."""
    parts = [f"{COOKIE_NAME}={token}", f"Path={COOKIE_PATH}", f"Max-Age={max(0, max_age)}", "HttpOnly"]
    if secure:
        parts.append("Secure")
    parts.append("SameSite=Strict")
    return "; ".join(parts)


def clear_cookie(secure: bool) -> str:
    return set_cookie("", 0, secure)


def refresh_token_from(cookie_headers: Iterable[str]) -> str:
    """The first well-formed `tahoe_refresh` value among the `cookie` headers (HTTP/2
    may split one Cookie header into several), or "". A browser sends the cookie with
    the most specific path first."""
    for header in cookie_headers:
        for pair in header.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name.strip() == COOKIE_NAME:
                value = value.strip().strip('"')
                if _TOKEN.match(value):
                    return value
    return ""
