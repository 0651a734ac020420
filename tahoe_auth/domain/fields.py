"""Validation of simple request fields: slugs, emails, display names."""

from __future__ import annotations

import re

from tahoe_auth.domain.errors import InvalidArgument

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
# A local part of at most 64 characters, then a domain of at least two labels of
# 1-63 characters each (RFC 5321's limits; internationalised names allowed as typed).
EMAIL = re.compile(r"^[^@\s]{1,64}@(?=[^@\s]{1,253}\Z)(?:[^@\s.]{1,63}\.)+[^@\s.]{1,63}\Z")
MAX_EMAIL = 320
MAX_DISPLAY_NAME = 200
MAX_DESCRIPTION = 500


def check_slug(slug: str, field: str = "slug") -> str:
    if not SLUG.match(slug):
        raise InvalidArgument(field, "slug must be 1-63 lowercase letters, digits or dashes")
    return slug


def check_email(email: str, field: str = "email") -> str:
    email = email.strip().lower()
    if len(email) > MAX_EMAIL or not EMAIL.match(email):
        raise InvalidArgument(field, f"{email!r} is not an email address")
    return email


def check_display_name(name: str, field: str = "display_name") -> str:
    name = name.strip()
    if len(name) > MAX_DISPLAY_NAME:
        raise InvalidArgument(field, f"{field} must be at most {MAX_DISPLAY_NAME} characters")
    return name


def check_description(description: str, field: str = "description") -> str:
    if len(description) > MAX_DESCRIPTION:
        raise InvalidArgument(field, f"{field} must be at most {MAX_DESCRIPTION} characters")
    return description
