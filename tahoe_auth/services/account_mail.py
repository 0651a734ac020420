"""The mail an account gets, with the links in it: an invitation, a password reset, an
email verification, notices of a changed address or password. Each is queued in the
caller's transaction. A link's token is random, stored only as its SHA-256, good once
and for a short while; it travels in the URL's fragment (after `#`), which browsers do
not send to servers, so it appears in no access log.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import quote

from tahoe_auth.domain import crypto, mail
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services.mail import MailQueue
from tahoe_auth.store import models as m
from tahoe_auth.store.db import UnitOfWork

PASSWORD_RESET = "password_reset"
EMAIL_VERIFICATION = "email_verification"
RESET_TOKEN_PREFIX = "tahoe_pr_"
VERIFY_TOKEN_PREFIX = "tahoe_ev_"
RESET_TTL = dt.timedelta(minutes=30)
VERIFY_TTL = dt.timedelta(hours=48)
PREFIXES = {PASSWORD_RESET: RESET_TOKEN_PREFIX, EMAIL_VERIFICATION: VERIFY_TOKEN_PREFIX}
TTLS = {PASSWORD_RESET: RESET_TTL, EMAIL_VERIFICATION: VERIFY_TTL}


@dataclass(frozen=True)
class Links:
    """The console's pages that take a mailed token (TAHOE_PUBLIC_URL + /console/)."""

    public_url: str

    def page(self, route: str, token: str) -> str:
        return f"{self.public_url.rstrip('/')}/console/#{route}?token={quote(token, safe='')}"

    def accept_invitation(self, token: str) -> str:
        return self.page("/accept", token)

    def reset_password(self, token: str) -> str:
        return self.page("/reset-password", token)

    def verify_email(self, token: str) -> str:
        return self.page("/verify-email", token)


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


class AccountMail:
    def __init__(self, queue: MailQueue, links: Links, clock: Clock) -> None:
        self.queue = queue
        self._links = links
        self._clock = clock

    def _token(self, uow: UnitOfWork, user: m.User, purpose: str) -> tuple[str, dt.datetime]:
        """A new link token for `user`; the user's earlier ones for `purpose` stop working."""
        now = self._clock.now()
        uow.mail.spend_all_tokens(user.id, purpose, now)
        token = PREFIXES[purpose] + crypto.random_token(32)
        expires = now + TTLS[purpose]
        uow.mail.add_token(
            m.AccountToken(
                tenant_id=user.tenant_id,
                user_id=user.id,
                purpose=purpose,
                token_hash=crypto.sha256_hex(token),
                email=user.email,
                created_at=now,
                expires_at=expires,
            )
        )
        return token, expires

    def invitation(
        self, uow: UnitOfWork, tenant: m.Tenant, invitation: m.Invitation, token: str, inviter: str
    ) -> m.MailMessage:
        variables = {
            "tenant_name": tenant.display_name,
            "inviter": inviter,
            "role": invitation.role,
            "link": self._links.accept_invitation(token),
            "expires": _when(invitation.expires_at),
        }
        return self.queue.queue(uow, tenant, mail.INVITATION, invitation.email, variables)

    def password_reset(self, uow: UnitOfWork, tenant: m.Tenant, user: m.User) -> m.MailMessage:
        token, expires = self._token(uow, user, PASSWORD_RESET)
        variables = {
            "tenant_name": tenant.display_name,
            "email": user.email,
            "link": self._links.reset_password(token),
            "expires": _when(expires),
        }
        return self.queue.queue(uow, tenant, mail.PASSWORD_RESET, user.email, variables)

    def email_verification(self, uow: UnitOfWork, tenant: m.Tenant, user: m.User) -> m.MailMessage:
        token, expires = self._token(uow, user, EMAIL_VERIFICATION)
        variables = {
            "tenant_name": tenant.display_name,
            "email": user.email,
            "link": self._links.verify_email(token),
            "expires": _when(expires),
        }
        return self.queue.queue(uow, tenant, mail.EMAIL_VERIFICATION, user.email, variables)

    def email_changed(self, uow: UnitOfWork, tenant: m.Tenant, old: str, new: str) -> m.MailMessage:
        variables = {"tenant_name": tenant.display_name, "old_email": old, "new_email": new}
        return self.queue.queue(uow, tenant, mail.EMAIL_CHANGED, old, variables)

    def password_changed(self, uow: UnitOfWork, tenant: m.Tenant, user: m.User) -> m.MailMessage:
        variables = {"tenant_name": tenant.display_name, "email": user.email}
        return self.queue.queue(uow, tenant, mail.PASSWORD_CHANGED, user.email, variables)
