"""Permission strings `resource:action` with `*` wildcards, and built-in roles.

A grant covers a permission when each segment is equal or the grant's segment is `*`:
`transcription:*` covers `transcription:read`, `*:read` covers every read, `*:*` covers
everything a tenant can hold. Platform-wide powers (creating tenants, acting across
tenants) are not permissions: they belong to platform administrators only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tahoe_auth.domain.errors import InvalidArgument

WILDCARD = "*"
_SEGMENT = re.compile(r"^(\*|[a-z][a-z0-9_.-]{0,62})\Z")


def parse(permission: str, field: str = "permission") -> tuple[str, str]:
    resource, sep, action = permission.partition(":")
    if not sep or not _SEGMENT.match(resource) or not _SEGMENT.match(action):
        raise InvalidArgument(field, f"{permission!r} is not a permission of the form resource:action")
    return resource, action


def validate(permissions: Iterable[str], field: str = "permissions") -> list[str]:
    """Parse each permission; return them sorted and without duplicates."""
    unique = set(permissions)
    for permission in unique:
        parse(permission, field)
    return sorted(unique)


def covers(grant: str, permission: str) -> bool:
    grant_resource, _, grant_action = grant.partition(":")
    resource, _, action = permission.partition(":")
    return grant_resource in (WILDCARD, resource) and grant_action in (WILDCARD, action)


def _meet_segment(a: str, b: str) -> str | None:
    if b in (a, WILDCARD):
        return a
    if a == WILDCARD:
        return b
    return None


def _meet(a: str, b: str) -> str | None:
    """The widest grant covered by both `a` and `b`, if any."""
    a_resource, _, a_action = a.partition(":")
    b_resource, _, b_action = b.partition(":")
    resource, action = _meet_segment(a_resource, b_resource), _meet_segment(a_action, b_action)
    if resource is None or action is None:
        return None
    return f"{resource}:{action}"


@dataclass(frozen=True)
class PermissionSet:
    """Granted permissions, indexed so that `allows` is a few set lookups."""

    grants: frozenset[str]

    @classmethod
    def of(cls, grants: Iterable[str]) -> PermissionSet:
        return cls(frozenset(grants))

    def allows(self, permission: str) -> bool:
        resource, _, action = permission.partition(":")
        grants = self.grants
        return permission in grants or f"{resource}:*" in grants or f"*:{action}" in grants or "*:*" in grants

    def covers_all(self, permissions: Iterable[str]) -> bool:
        """True when every permission (wildcards included) is within these grants."""
        return all(any(covers(g, p) for g in self.grants) for p in permissions)

    def missing(self, permissions: Iterable[str]) -> list[str]:
        return sorted(p for p in permissions if not any(covers(g, p) for g in self.grants))

    def intersect(self, other: PermissionSet) -> PermissionSet:
        """What both sets allow: `allows(p)` on the result is `self.allows(p) and
        other.allows(p)`, wildcards included (an API key's scopes within its owner's
        permissions)."""
        met = (_meet(a, b) for a in self.grants for b in other.grants)
        return PermissionSet.of(m for m in met if m is not None)

    def relevant_to(self, permission: str) -> list[str]:
        """The grants that cover `permission` (what upstreams need to see)."""
        return sorted(g for g in self.grants if covers(g, permission))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self.grants))


BUILTIN_ROLES: dict[str, tuple[str, ...]] = {
    # Everything in the tenant, including ownership and tenant settings.
    "owner": ("*:*",),
    # Runs the tenant day to day; cannot change tenant settings or grant `owner`.
    "admin": (
        "users:*",
        "roles:*",
        "sessions:*",
        "apikeys:*",
        "invitations:*",
        "service_accounts:*",
        "webhooks:*",
        "audit:read",
        "usage:read",
        "tenant:read",
        "transcription:*",
    ),
    # Uses the product and manages their own API keys.
    "member": (
        "transcription:read",
        "transcription:write",
        "usage:read",
        "users:read",
        "roles:read",
        "tenant:read",
        "apikeys:create",
        "apikeys:read",
        "apikeys:revoke",
        "apikeys:rotate",
    ),
    # Reads only.
    "viewer": (
        "transcription:read",
        "usage:read",
        "users:read",
        "roles:read",
        "tenant:read",
    ),
}


OWNER = "owner"
_ROLE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}\Z")


def is_builtin(role: str) -> bool:
    return role in BUILTIN_ROLES


def check_role_name(name: str, field: str = "name") -> str:
    if not _ROLE_NAME.match(name):
        raise InvalidArgument(
            field, "role names are 1-63 lowercase letters, digits, `_` or `-`, starting with a letter"
        )
    return name
