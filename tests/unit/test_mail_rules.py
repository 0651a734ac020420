"""The mail templates and the mail settings: rendering (escaped HTML, one-line
subjects, every template's variables), the tenant's sender name and locale, and the
TAHOE_SMTP_URL forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from tahoe_auth.domain import mail
from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.mail.transport import LogTransport, MailUrlError, SmtpTransport, transport_from_url
from tahoe_auth.services.account_mail import Links
from tahoe_auth.services.mail import template_text

EXAMPLE = {
    mail.INVITATION: {
        "tenant_name": "Acme",
        "inviter": "Ada",
        "role": "member",
        "link": "https://x/#/a?token=t",
        "expires": "soon",
    },
    mail.PASSWORD_RESET: {"tenant_name": "Acme", "email": "a@b.c", "link": "https://x/#/r?token=t", "expires": "soon"},
    mail.EMAIL_VERIFICATION: {
        "tenant_name": "Acme",
        "email": "a@b.c",
        "link": "https://x/#/v?token=t",
        "expires": "soon",
    },
    mail.EMAIL_CHANGED: {"tenant_name": "Acme", "old_email": "a@b.c", "new_email": "d@e.f"},
    mail.PASSWORD_CHANGED: {"tenant_name": "Acme", "email": "a@b.c"},
}


@pytest.mark.parametrize("name", sorted(mail.TEMPLATES))
def test_every_template_renders_with_exactly_its_variables(name: str) -> None:
    assert set(EXAMPLE[name]) == mail.TEMPLATES[name]
    rendered = mail.render(name, template_text("en", name), EXAMPLE[name])
    assert rendered.subject and "\n" not in rendered.subject and "${" not in rendered.subject
    assert "${" not in rendered.text and "${" not in rendered.html
    assert "Acme" in rendered.text and "Acme" in rendered.html
    if "link" in EXAMPLE[name]:
        assert EXAMPLE[name]["link"] in rendered.text


def test_html_escapes_values_and_subjects_stay_one_line() -> None:
    variables = {**EXAMPLE[mail.INVITATION], "tenant_name": 'Evil <script>"\r\nBcc: x@y', "inviter": "<b>me</b>"}
    rendered = mail.render(mail.INVITATION, template_text("en", mail.INVITATION), variables)
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html and "&lt;b&gt;" in rendered.html
    assert "\r" not in rendered.subject and "\n" not in rendered.subject


def test_a_missing_variable_or_template_is_refused() -> None:
    with pytest.raises(mail.TemplateError):
        mail.check_variables(mail.PASSWORD_RESET, {"tenant_name": "Acme"})
    with pytest.raises(mail.TemplateError):
        mail.check_variables("no_such_template", {})


def test_an_unknown_locale_falls_back_to_english() -> None:
    assert template_text("pt-BR", mail.PASSWORD_RESET) == template_text("en", mail.PASSWORD_RESET)


def test_tenant_mail_settings() -> None:
    assert mail.parse_settings(None) == {}
    assert mail.parse_settings({"sender_name": " Acme Support ", "locale": "pt-BR"}) == {
        "sender_name": "Acme Support",
        "locale": "pt-BR",
    }
    assert mail.parse_settings({"sender_name": "", "locale": ""}) == {}
    for bad in ({"sender_name": "a\r\nBcc: x"}, {"sender_name": "x" * 101}, {"locale": "english!"}, {"other": 1}, "x"):
        with pytest.raises(InvalidArgument):
            mail.parse_settings(bad)
    assert mail.sender_name({"mail": {"sender_name": "Ops"}}, "Acme") == "Ops"
    assert mail.sender_name({}, "Acme") == "Acme"
    assert mail.locale_of({"mail": {"locale": "de"}}) == "de" and mail.locale_of({}) == "en"


def test_smtp_url_forms(tmp_path: Path) -> None:
    assert transport_from_url("", tmp_path) == LogTransport(tmp_path / "mail")
    assert transport_from_url("log:/srv/mail", tmp_path) == LogTransport(Path("/srv/mail"))
    starttls = transport_from_url("smtp://us%40er:p%3Ass@mx.example.com?timeout=3", tmp_path)
    assert starttls == SmtpTransport("mx.example.com", 587, "starttls", "us@er", "p:ss", 3.0)
    assert transport_from_url("smtps://mx.example.com", tmp_path) == SmtpTransport("mx.example.com", 465, "tls")
    assert transport_from_url("smtp+plain://relay:2525", tmp_path) == SmtpTransport("relay", 2525, "none")
    for bad in (
        "http://mx.example.com",
        "smtp://",
        "smtp+plain://user:pw@relay",  # a password in clear
        "smtp://mx.example.com?verify=false",
        "smtp://mx.example.com?timeout=0",
        "smtp://mx.example.com:notaport",
    ):
        with pytest.raises(MailUrlError):
            transport_from_url(bad, tmp_path)
    assert "p:ss" not in starttls.describe()


def test_links_carry_the_token_in_the_fragment() -> None:
    link = Links("https://auth.example.com/").reset_password("tahoe_pr_a/b+c")
    assert link == "https://auth.example.com/console/#/reset-password?token=tahoe_pr_a%2Fb%2Bc"
