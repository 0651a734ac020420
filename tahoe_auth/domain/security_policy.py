"""A tenant's security policy: when a second factor is required, how recent an MFA
verification sensitive methods need (step-up), and the minimum password length.

Stored in the tenant's settings under `security`:
`{"mfa_requirement": "optional" | "all_users" | "admins", "step_up_minutes": 15,
"password_min_length": 8}`; every key optional.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tahoe_auth.domain.errors import InvalidArgument

OPTIONAL = "optional"
ALL_USERS = "all_users"
ADMINS = "admins"
MFA_REQUIREMENTS = (OPTIONAL, ALL_USERS, ADMINS)
# The built-in roles that `admins` covers: those that can change who holds what.
ADMIN_ROLES = frozenset({"owner", "admin"})

DEFAULT_STEP_UP_MINUTES = 15
MAX_STEP_UP_MINUTES = 24 * 60
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_MIN_LENGTH = 128


@dataclass(frozen=True)
class SecurityPolicy:
    mfa_requirement: str = OPTIONAL
    step_up_minutes: int = DEFAULT_STEP_UP_MINUTES
    password_min_length: int = MIN_PASSWORD_LENGTH

    @property
    def step_up_seconds(self) -> int:
        return self.step_up_minutes * 60

    def mfa_required_for(self, roles: Iterable[str]) -> bool:
        if self.mfa_requirement == ALL_USERS:
            return True
        return self.mfa_requirement == ADMINS and not ADMIN_ROLES.isdisjoint(roles)

    def to_settings(self) -> dict[str, Any]:
        return {
            "mfa_requirement": self.mfa_requirement,
            "step_up_minutes": self.step_up_minutes,
            "password_min_length": self.password_min_length,
        }


DEFAULT_POLICY = SecurityPolicy()


def _whole_number(raw: Mapping[str, Any], key: str, default: int, low: int, high: int, field: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidArgument(f"{field}.{key}", f"{key} must be a whole number from {low} to {high}")
    return value


def parse_security(raw: Mapping[str, Any] | None, field: str = "settings.security") -> SecurityPolicy:
    """The policy a tenant's `settings["security"]` describes; InvalidArgument naming the
    offending key otherwise. Zero or missing values take the defaults."""
    if not raw:
        return DEFAULT_POLICY
    if not isinstance(raw, Mapping):
        raise InvalidArgument(field, "security must be an object")
    unknown = set(raw) - {"mfa_requirement", "step_up_minutes", "password_min_length"}
    if unknown:
        raise InvalidArgument(f"{field}.{sorted(unknown)[0]}", f"unknown security setting {sorted(unknown)[0]!r}")
    requirement = raw.get("mfa_requirement") or OPTIONAL
    if requirement not in MFA_REQUIREMENTS:
        raise InvalidArgument(
            f"{field}.mfa_requirement", f"mfa_requirement must be one of {', '.join(MFA_REQUIREMENTS)}"
        )
    cleaned = {k: v for k, v in raw.items() if v not in (0, None)}
    return SecurityPolicy(
        mfa_requirement=str(requirement),
        step_up_minutes=_whole_number(
            cleaned, "step_up_minutes", DEFAULT_STEP_UP_MINUTES, 1, MAX_STEP_UP_MINUTES, field
        ),
        password_min_length=_whole_number(
            cleaned, "password_min_length", MIN_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, MAX_PASSWORD_MIN_LENGTH, field
        ),
    )


def of_tenant_settings(settings: Mapping[str, Any] | None) -> SecurityPolicy:
    """The stored policy (validated when it was written); defaults if it no longer parses."""
    try:
        return parse_security((settings or {}).get("security"))
    except InvalidArgument:
        return DEFAULT_POLICY
