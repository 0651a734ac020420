"""The rules a password must pass when it is set (OWASP ASVS 5.0 V6.2), never at login:
accounts keep the passwords they have until they change them.

Rules, checked in this order, each named in `PasswordRejected.rule`:
- `max_length`: at most 1024 characters;
- `min_length`: at least 8, or the tenant's higher `security.password_min_length`;
- `common`: not among the 100,000 most common passwords of 8+ characters
  (`tahoe_auth/data/common_passwords/`, from the SecLists ten-million list);
- `contains_email`: not containing the user's email address, nor its local part when
  that has 4 or more characters;
- `contains_tenant_name`: not containing the tenant's slug or display name (those of 4
  or more characters).

Comparisons are case-insensitive and ignore Unicode compatibility forms: both sides are
casefolded and NFKC-normalised, so `PassWord123`, `password123` and its full-width form
are the same password.
"""

from __future__ import annotations

import gzip
import importlib.resources
import secrets
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tahoe_auth.domain.errors import PasswordRejected
from tahoe_auth.domain.passwords import MAX_LENGTH, MIN_LENGTH
from tahoe_auth.domain.security_policy import of_tenant_settings

MIN_LENGTH_RULE = "min_length"
MAX_LENGTH_RULE = "max_length"
COMMON_RULE = "common"
CONTAINS_EMAIL_RULE = "contains_email"
CONTAINS_TENANT_NAME_RULE = "contains_tenant_name"
RULES = (MAX_LENGTH_RULE, MIN_LENGTH_RULE, COMMON_RULE, CONTAINS_EMAIL_RULE, CONTAINS_TENANT_NAME_RULE)

# Shorter parts (a local part `al`, a tenant `io`) would refuse too many good passwords.
MIN_PART_LENGTH = 4
COMMON_LIST = "data/common_passwords/top-100000-8plus.txt.gz"
COMMON_LIST_SIZE = 100_000
GENERATED_BYTES = 18  # 24 URL-safe characters, 144 random bits


def normalise(text: str) -> str:
    """The form passwords are compared in: casefolded, then NFKC."""
    return unicodedata.normalize("NFKC", text.casefold())


_common: frozenset[str] | None = None
_common_lock = threading.Lock()


def common_passwords() -> frozenset[str]:
    """The common-password list, read and built once per process, on first use (about
    0.15 s and 10 MB): processes that never set a password never pay for it."""
    global _common  # noqa: PLW0603 - one lazily built table per process
    if _common is None:
        with _common_lock:
            if _common is None:
                _common = load_common_passwords()
    return _common


def load_common_passwords() -> frozenset[str]:
    data = importlib.resources.files("tahoe_auth").joinpath(COMMON_LIST).read_bytes()
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    return frozenset(normalise(line) for line in lines if line)


@dataclass(frozen=True)
class PasswordContext:
    """What a password is checked against besides the list: the tenant's minimum length,
    the account's email and the tenant's names."""

    min_length: int = MIN_LENGTH
    email: str = ""
    tenant_names: tuple[str, ...] = ()

    @classmethod
    def of(cls, min_length: int, email: str, tenant_names: Iterable[str]) -> PasswordContext:
        return cls(max(MIN_LENGTH, min_length), email, tuple(name for name in tenant_names if name))

    def email_parts(self) -> list[str]:
        if not self.email:
            return []
        whole = normalise(self.email)
        local = whole.rpartition("@")[0]
        return [whole, local] if len(local) >= MIN_PART_LENGTH else [whole]

    def tenant_parts(self) -> list[str]:
        return [name for name in (normalise(n) for n in self.tenant_names) if len(name) >= MIN_PART_LENGTH]


DEFAULT_CONTEXT = PasswordContext()


def context_for(tenant_settings: Mapping[str, Any] | None, tenant_names: Iterable[str], email: str) -> PasswordContext:
    """The context of a password set for `email` in a tenant with these settings and names."""
    return PasswordContext.of(of_tenant_settings(tenant_settings).password_min_length, email, tenant_names)


def violation(
    password: str,
    context: PasswordContext = DEFAULT_CONTEXT,
    common: Callable[[], frozenset[str]] = common_passwords,
) -> tuple[str, str] | None:
    """The first rule `password` breaks and what to tell the person, or None."""
    if len(password) > MAX_LENGTH:
        return MAX_LENGTH_RULE, f"password must be at most {MAX_LENGTH} characters"
    if len(password) < context.min_length:
        if context.min_length > MIN_LENGTH:
            return MIN_LENGTH_RULE, f"this tenant requires passwords of at least {context.min_length} characters"
        return MIN_LENGTH_RULE, f"password must be at least {context.min_length} characters"
    folded = normalise(password)
    if folded in common():
        return COMMON_RULE, (
            "this password is too common: it appears in lists of breached passwords; choose another, "
            "for example a few unrelated words"
        )
    if any(part in folded for part in context.email_parts()):
        return CONTAINS_EMAIL_RULE, "the password must not contain the account's email address or the name before the @"
    if any(part in folded for part in context.tenant_parts()):
        return CONTAINS_TENANT_NAME_RULE, "the password must not contain the tenant's name"
    return None


def check(
    password: str,
    context: PasswordContext = DEFAULT_CONTEXT,
    field: str = "password",
    common: Callable[[], frozenset[str]] = common_passwords,
) -> None:
    """PasswordRejected naming the first rule `password` breaks."""
    broken = violation(password, context, common)
    if broken is not None:
        raise PasswordRejected(field, *broken)


def generate(context: PasswordContext = DEFAULT_CONTEXT) -> str:
    """A random password that passes the policy (a random one could, rarely, contain a
    short tenant name such as `demo`; it is drawn again then)."""
    length = max(context.min_length, 4 * GENERATED_BYTES // 3)
    while True:
        candidate = secrets.token_urlsafe(length * 3 // 4 + 1)[:length]
        if violation(candidate, context) is None:
            return candidate
