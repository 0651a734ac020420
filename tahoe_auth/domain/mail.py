"""Mail the service sends: which templates exist, what each needs, and how a template
and its variables become a message (subject, plain text, HTML). Pure: the templates'
text is handed in (services/mail.py reads them from tahoe_auth/data/mail/<locale>/).

A template is two files, `<name>.txt` and `<name>.html`; the first line of the text one
is `Subject: ...`. Variables are `${name}` (string.Template); in the HTML every value is
escaped. A locale without a template falls back to English.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from string import Template

from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.domain.webhooks import RetryPolicy

INVITATION = "invitation"
PASSWORD_RESET = "password_reset"
EMAIL_VERIFICATION = "email_verification"
EMAIL_CHANGED = "email_changed"
PASSWORD_CHANGED = "password_changed"

# Each template's variables; queueing a message without one of them is a bug.
TEMPLATES: dict[str, frozenset[str]] = {
    INVITATION: frozenset({"tenant_name", "inviter", "role", "link", "expires"}),
    PASSWORD_RESET: frozenset({"tenant_name", "email", "link", "expires"}),
    EMAIL_VERIFICATION: frozenset({"tenant_name", "email", "link", "expires"}),
    EMAIL_CHANGED: frozenset({"tenant_name", "old_email", "new_email"}),
    PASSWORD_CHANGED: frozenset({"tenant_name", "email"}),
}

DEFAULT_LOCALE = "en"
LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")

PENDING, RETRYING, SENT, DEAD = "pending", "retrying", "sent", "dead"

# A mail server that is down for a while: retried for a day, then dead-lettered (an
# invitation link is only good for three days anyway, a reset link for 30 minutes).
RETRY = RetryPolicy(first_delay=10.0, factor=3.0, max_delay=3600.0, horizon=24 * 3600.0)
# After this many attempts a message is dead whatever the horizon says.
MAX_ATTEMPTS = 12

# Header injection: a display name or subject with a line break would start a new header.
_LINE_BREAK = re.compile(r"[\r\n]+")


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class TemplateText:
    text: str
    html: str


class TemplateError(ValueError):
    pass


def check_variables(template: str, variables: Mapping[str, str]) -> None:
    needed = TEMPLATES.get(template)
    if needed is None:
        raise TemplateError(f"no mail template {template!r}")
    missing = needed - set(variables)
    if missing:
        raise TemplateError(f"mail template {template!r} needs {sorted(missing)}")


def render(template: str, source: TemplateText, variables: Mapping[str, str]) -> Rendered:
    check_variables(template, variables)
    first, _, body = source.text.partition("\n")
    if not first.startswith("Subject:"):
        raise TemplateError(f"mail template {template!r}: the text's first line must be 'Subject: ...'")
    plain = {k: str(v) for k, v in variables.items()}
    escaped = {k: html.escape(v, quote=True) for k, v in plain.items()}
    subject = one_line(Template(first.removeprefix("Subject:").strip()).substitute(plain))
    return Rendered(
        subject=subject,
        text=Template(body.lstrip("\n")).substitute(plain),
        html=Template(source.html).substitute(escaped),
    )


def one_line(value: str) -> str:
    return _LINE_BREAK.sub(" ", value).strip()


MAX_SENDER_NAME = 100


def parse_settings(raw: object) -> dict[str, str]:
    """A tenant's `settings["mail"]`: {"sender_name": ..., "locale": ...}, both optional;
    InvalidArgument naming the offending key otherwise. Empty values are dropped."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidArgument("settings.mail", "settings.mail must be an object")
    unknown = set(raw) - {"sender_name", "locale"}
    if unknown:
        raise InvalidArgument("settings.mail", f"unknown keys {sorted(unknown)}")
    checked: dict[str, str] = {}
    name = raw.get("sender_name") or ""
    if not isinstance(name, str) or len(name) > MAX_SENDER_NAME or _LINE_BREAK.search(name):
        raise InvalidArgument("settings.mail.sender_name", "the sender name is one line of at most 100 characters")
    if name.strip():
        checked["sender_name"] = name.strip()
    locale = raw.get("locale") or ""
    if not isinstance(locale, str) or (locale and not LOCALE.match(locale)):
        raise InvalidArgument("settings.mail.locale", "the locale is a language tag like en or pt-BR")
    if locale:
        checked["locale"] = locale
    return checked


def sender_name(settings: Mapping[str, object], tenant_display_name: str) -> str:
    """The From name of a tenant's mail: settings.mail.sender_name, else its name."""
    mail = settings.get("mail")
    configured = mail.get("sender_name") if isinstance(mail, Mapping) else None
    return one_line(str(configured or tenant_display_name or "Tahoe Auth"))[:100]


def locale_of(settings: Mapping[str, object]) -> str:
    mail = settings.get("mail")
    configured = mail.get("locale") if isinstance(mail, Mapping) else None
    return str(configured) if isinstance(configured, str) and LOCALE.match(configured) else DEFAULT_LOCALE
