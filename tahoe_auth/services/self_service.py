"""An account's own links by mail: "forgot password" and email verification.

RequestPasswordReset answers alike, in the same time, whether or not the account
exists: the call only writes the request (one insert either way); the mail worker's
round (`process_reset_requests`) then looks for the account and, if there is one,
makes the link and queues the mail. A link's token is single-use, short-lived and
stored hashed (services/account_mail.py).
"""

from __future__ import annotations

import datetime as dt
import logging

from tahoe_auth.domain import audit, crypto, events, fields, password_policy, passwords
from tahoe_auth.domain.errors import InvalidArgument, LinkInvalid
from tahoe_auth.domain.principal import USER
from tahoe_auth.kernel.changes import ChangeNotifier
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services import access
from tahoe_auth.services.account_mail import EMAIL_VERIFICATION, PASSWORD_RESET, PREFIXES, AccountMail
from tahoe_auth.services.audit import Actor, AuditLog
from tahoe_auth.services.context import CallContext
from tahoe_auth.services.events import emit
from tahoe_auth.services.sessions import SessionService, normalize_email
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database

log = logging.getLogger(__name__)

MAX_TENANT_KEY = 100
MAX_TOKEN = 200
REQUESTS_PER_ROUND = 100
# A request older than this is dropped unanswered: its sender has long given up waiting.
REQUEST_MAX_AGE = dt.timedelta(hours=1)


class SelfService:
    def __init__(
        self,
        db: Database,
        hasher: passwords.BoundedHasher,
        sessions: SessionService,
        account_mail: AccountMail,
        notifier: ChangeNotifier,
        clock: Clock,
        audit_log: AuditLog,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._sessions = sessions
        self._mail = account_mail
        self._notifier = notifier
        self._clock = clock
        self._audit = audit_log

    # -- forgot password --------------------------------------------------------------

    def request_password_reset(self, tenant_key: str, email: str, ctx: CallContext) -> None:
        tenant_key, email = tenant_key.strip().lower(), normalize_email(email)
        if not tenant_key or len(tenant_key) > MAX_TENANT_KEY:
            raise InvalidArgument("tenant", "tenant is required (its slug or id)")
        fields.check_email(email, "email")
        with self._db.unit_of_work(SYSTEM) as uow:
            uow.mail.add_reset_request(
                m.PasswordResetRequest(
                    tenant_key=tenant_key,
                    email=email,
                    client_address=ctx.client_address[:255],
                    created_at=self._clock.now(),
                )
            )
            uow.commit()

    def process_reset_requests(self) -> int:
        """One batch of waiting requests: a link mailed for each that names an active
        account of an active tenant; the others are dropped. Returns how many were taken."""
        now = self._clock.now()
        with self._db.unit_of_work(SYSTEM) as uow:
            requests = uow.mail.take_reset_requests(REQUESTS_PER_ROUND)
            found = [(r, *uow.users.login_subject(r.tenant_key, r.email)) for r in requests]
            for request, tenant, user in found:
                if request.created_at < now - REQUEST_MAX_AGE:
                    continue
                if tenant is None or user is None or tenant.status != "active" or user.status != "active":
                    continue
                self._mail.password_reset(uow, tenant, user)
                self._audit.record(
                    uow,
                    None,
                    tenant.id,
                    "password.reset_requested",
                    f"user:{user.id}",
                    details={"client_address": request.client_address},
                    actor=Actor("", audit.ANONYMOUS),
                )
            uow.commit()
        return len(requests)

    def reset_with_token(self, token: str, new_password: str, ctx: CallContext) -> tuple[m.User, int]:
        spent = self._live_token(token, PASSWORD_RESET)
        with self._db.unit_of_work(spent.tenant_id) as uow:
            tenant, user = uow.tenants.get(spent.tenant_id), uow.users.get(spent.user_id)
            rules = password_policy.context_for(tenant.settings, (tenant.slug, tenant.display_name), user.email)
        password_policy.check(new_password, rules, "new_password")
        password_hash = self._hasher.hash(new_password)
        now = self._clock.now()
        with self._db.unit_of_work(spent.tenant_id) as uow:
            # Spent here, in the transaction that sets the password: two racing calls
            # with one token set at most one password.
            if not uow.mail.spend_token(spent.id, now):
                raise LinkInvalid()
            user = uow.users.get(spent.user_id)
            if user.email != spent.email or user.status != "active":
                raise LinkInvalid()
            user.password_hash = password_hash
            user.password_changed_at = now
            user.email_verified_at = user.email_verified_at or now  # the link reached the address
            uow.mail.spend_all_tokens(user.id, PASSWORD_RESET, now)
            self._audit.record(
                uow, ctx, user.tenant_id, "password.reset_by_link", f"user:{user.id}", actor=Actor(user.id, USER)
            )
            self._mail.password_changed(uow, uow.tenants.get(user.tenant_id), user)
            self._notifier.user_changed(uow, user.tenant_id, user.id)
            uow.commit()
        ended = self._sessions.revoke_user_sessions(user.tenant_id, user.id, "password_reset")
        return user, ended

    # -- email verification -------------------------------------------------------------

    def verify_email(self, token: str, ctx: CallContext) -> m.User:
        spent = self._live_token(token, EMAIL_VERIFICATION)
        now = self._clock.now()
        with self._db.unit_of_work(spent.tenant_id) as uow:
            if not uow.mail.spend_token(spent.id, now):
                raise LinkInvalid()
            user = uow.users.get(spent.user_id)
            if user.email != spent.email:
                raise LinkInvalid()  # sent to an address the account has since left
            user.email_verified_at = now
            emit(uow, user.tenant_id, events.USER_UPDATED, {"user_id": user.id, "changed": ["email_verified"]})
            self._audit.record(
                uow,
                ctx,
                user.tenant_id,
                "user.email_verified",
                f"user:{user.id}",
                details={"email": user.email},
                actor=Actor(user.id, USER),
            )
            uow.commit()
        return user

    def send_verification(self, ctx: CallContext, tenant_id: str, user_id: str) -> None:
        principal = ctx.require_principal()
        tenant_id = access.target_tenant(principal, tenant_id)
        if not user_id:
            user_id = access.require_user(principal, "sending a verification mail to oneself")
        if not access.is_self(principal, tenant_id, user_id):
            access.require(principal, "users:update", tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            user = uow.users.get(user_id)
            self._mail.email_verification(uow, uow.tenants.get(tenant_id), user)
            self._audit.record(uow, ctx, tenant_id, "user.verification_sent", f"user:{user.id}")
            uow.commit()

    # -- tokens ---------------------------------------------------------------------------

    def _live_token(self, token: str, purpose: str) -> m.AccountToken:
        if not token.startswith(PREFIXES[purpose]) or len(token) > MAX_TOKEN:
            raise LinkInvalid()
        # Which tenant the token is of is what the lookup finds out: the system scope.
        with self._db.unit_of_work(SYSTEM) as uow:
            found = uow.mail.live_token(crypto.sha256_hex(token), purpose, self._clock.now())
        if found is None:
            raise LinkInvalid()
        return found
