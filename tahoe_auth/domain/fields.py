"""Validation of simple request fields: slugs, emails, display names."""

from __future__ import annotations

import re

from tahoe_auth.domain.errors import InvalidArgument

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def check_slug(slug: str, field: str = "slug") -> str:
    if not SLUG.match(slug):
        raise InvalidArgument(field, "slug must be 1-63 lowercase letters, digits or dashes")
    return slug


def check_email(email: str, field: str = "email") -> str:
    email = email.strip().lower()
    if len(email) > 320 or not EMAIL.match(email):
        raise InvalidArgument(field, f"{email!r} is not an email address")
    return email


def check_display_name(name: str, field: str = "display_name") -> str:
    name = name.strip()
    if len(name) > 200:
        raise InvalidArgument(field, f"{field} must be at most 200 characters")
    return name
