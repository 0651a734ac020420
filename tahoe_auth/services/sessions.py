"""Login, refresh, logout and session management."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from tahoe_auth.config import Settings
from tahoe_auth.domain import audit, crypto, events, mfa, passwords, tokens
from tahoe_auth.domain.errors import (
    InvalidArgument,
    InvalidCredentials,
    LoginThrottled,
    MfaCodeInvalid,
    RefreshTokenInvalid,
    RefreshTokenReused,
)
from tahoe_auth.domain.principal import USER, Principal
from tahoe_auth.kernel.changes import ChangeNotifier
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.kernel.metrics import STORE_FAILURES
from tahoe_auth.services import access, paging
from tahoe_auth.services.audit import Actor, AuditLog
from tahoe_auth.services.context import CallContext
from tahoe_auth.services.events import emit
from tahoe_auth.services.keys import KeyManager
from tahoe_auth.services.login_stats import LoginStats
from tahoe_auth.services.mfa import Answer, IssuedChallenge, SecondFactors
from tahoe_auth.services.throttle import LoginThrottle
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database, UnitOfWork

log = logging.getLogger(__name__)

REFRESH_TOKEN_PREFIX = "rt_"


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    access_expires_at: int
    refresh_token: str
    session_id: str
    tenant_id: str
    user_id: str
    # When the session ends at the latest (its absolute lifetime): what a refresh token
    # kept in a cookie is good for.
    session_expires_at: int = 0


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _hash_refresh_token(token: str) -> str:
    return crypto.sha256_hex(token)


class SessionService:
    def __init__(
        self,
        db: Database,
        keys: KeyManager,
        hasher: passwords.BoundedHasher,
        throttle: LoginThrottle,
        notifier: ChangeNotifier,
        settings: Settings,
        clock: Clock,
        audit_log: AuditLog,
        login_stats: LoginStats,
        second_factors: SecondFactors,
    ) -> None:
        self._second_factors = second_factors
        self._audit = audit_log
        self._login_stats = login_stats
        self._db = db
        self._keys = keys
        self._hasher = hasher
        self._throttle = throttle
        self._notifier = notifier
        self._settings = settings
        self._clock = clock

    # -- login -----------------------------------------------------------------

    def login(self, tenant: str, email: str, password: str, ctx: CallContext) -> IssuedTokens | IssuedChallenge:
        """Tokens, or the challenge a second factor must answer (VerifyMfa) first."""
        tenant_key, email = tenant.strip().lower(), normalize_email(email)
        if not tenant_key or not email:
            raise InvalidArgument("tenant" if not tenant_key else "email", "tenant and email are required")
        try:
            self._throttle.check(tenant_key, email, ctx.client_address)
        except LoginThrottled:
            self._login_stats.throttled(tenant_key)
            raise
        tenant_row, user = self._find_login_subject(tenant_key, email)
        too_long = len(password) > passwords.MAX_LENGTH
        # Always one argon2 verification, against a dummy hash when there is no user, so
        # that unknown tenants and users answer as slowly as wrong passwords.
        encoded = None if user is None or too_long else user.password_hash
        result = self._hasher.verify(encoded, "" if too_long else password)
        if not result.ok or user is None or tenant_row is None:
            self._throttle.failed(tenant_key, email, ctx.client_address)
            self._login_failed(ctx, tenant_key, email, tenant_row, user, "bad_credentials")
            raise InvalidCredentials()
        if user.status != "active" or tenant_row.status != "active":
            self._throttle.failed(tenant_key, email, ctx.client_address)
            reason = "user_disabled" if user.status != "active" else "tenant_suspended"
            self._login_failed(ctx, tenant_key, email, tenant_row, user, reason)
            raise InvalidCredentials()
        self._throttle.succeeded(tenant_key, email)
        new_hash = self._hasher.hash(password) if result.needs_rehash else None
        challenge = self._second_factors.login_step(tenant_row, user, ctx)
        if challenge is None:
            return self._start_session(tenant_row.id, user.id, ctx, new_hash)
        if new_hash is not None:
            with self._db.unit_of_work(tenant_row.id) as uow:
                uow.users.get(user.id).password_hash = new_hash
                uow.commit()
        return challenge

    def verify_mfa(self, challenge: str, answer: Answer, ctx: CallContext) -> IssuedTokens:
        """A login or passwordless sign-in: a new session's tokens. A step-up: a new
        access token for the same session (no refresh token: the old one still holds)."""
        verified = self._second_factors.verify(challenge, answer, ctx)
        now = self._clock.now()
        if verified.purpose != mfa.STEP_UP:
            return self._start_session(
                verified.tenant_id, verified.user_id, ctx, None, amr=verified.amr, mfa_verified_at=now
            )
        with self._db.unit_of_work(verified.tenant_id) as uow:
            session = uow.sessions.get(verified.session_id)
            if session.revoked_at is not None or session.expires_at <= now or session.idle_expires_at <= now:
                raise MfaCodeInvalid()
            session.mfa_verified_at = now
            session.amr = " ".join(dict.fromkeys([*session.amr.split(), *verified.amr]))
            uow.commit()
            return self._issue(session, "")

    def begin_passkey_sign_in(self, tenant: str, ctx: CallContext) -> IssuedChallenge:
        return self._second_factors.passkey_sign_in(tenant, ctx)

    def _login_failed(
        self, ctx: CallContext, tenant_key: str, email: str, tenant: m.Tenant | None, user: m.User | None, reason: str
    ) -> None:
        """Audited, and counted for the dashboards, in its own transaction; unknown tenants
        on the platform chain. Never fails the call: the caller gets INVALID_CREDENTIALS anyway."""
        if tenant is None:
            reason = "unknown_tenant"
        elif user is None:
            reason = "unknown_user"
        actor = Actor(user.id, USER) if user is not None else Actor("", audit.ANONYMOUS)
        chain = tenant.id if tenant is not None else audit.PLATFORM_CHAIN
        try:
            with self._db.unit_of_work(chain or SYSTEM) as uow:
                self._audit.record(
                    uow,
                    ctx,
                    chain,
                    "auth.login",
                    f"user:{email}",
                    audit.FAILURE,
                    {"reason": reason, "tenant": tenant_key},
                    actor=actor,
                )
                if tenant is not None:
                    self._login_stats.failed(uow, tenant.id)
                uow.commit()
        except Exception as exc:  # the login fails either way; say that its record is missing
            STORE_FAILURES.labels("audit_login_failure", "dropped").inc()
            log.error("could not audit a failed login for tenant %r: %s", tenant_key, exc)

    def _find_login_subject(self, tenant_key: str, email: str) -> tuple[m.Tenant | None, m.User | None]:
        # Login names its tenant itself, so finding it is cross-tenant work by nature:
        # one system-scope query for the tenant and its user (one transaction, not two).
        with self._db.unit_of_work(SYSTEM) as uow:
            return uow.users.login_subject(tenant_key, email)

    def start_session(self, tenant_id: str, user_id: str, ctx: CallContext) -> IssuedTokens | IssuedChallenge:
        """A session for a user whom another use case has identified by their password
        (accepting an invitation): a second factor the user has, or must set up, still
        comes first, as after a login."""
        with self._db.unit_of_work(tenant_id) as uow:
            tenant, user = uow.tenants.get(tenant_id), uow.users.get(user_id)
        challenge = self._second_factors.login_step(tenant, user, ctx)
        if challenge is not None:
            return challenge
        return self._start_session(tenant_id, user_id, ctx, None, audited=False)

    def _start_session(
        self,
        tenant_id: str,
        user_id: str,
        ctx: CallContext,
        new_hash: str | None,
        audited: bool = True,
        amr: tuple[str, ...] = (mfa.AMR_PASSWORD,),
        mfa_verified_at: dt.datetime | None = None,
    ) -> IssuedTokens:
        """`audited=False` when the calling use case records its own entry (invitations)."""
        now = self._clock.now()
        refresh_token = REFRESH_TOKEN_PREFIX + crypto.random_token(32)
        with self._db.unit_of_work(tenant_id) as uow:
            if new_hash is not None:
                uow.users.get(user_id).password_hash = new_hash
            session = uow.sessions.add(
                m.Session(
                    tenant_id=tenant_id,
                    user_id=user_id,
                    created_at=now,
                    last_active_at=now,
                    idle_expires_at=now + dt.timedelta(seconds=self._settings.session_idle_ttl),
                    expires_at=now + dt.timedelta(seconds=self._settings.session_absolute_ttl),
                    client_address=ctx.client_address[:255],
                    user_agent=ctx.user_agent[:512],
                    amr=" ".join(amr),
                    mfa_verified_at=mfa_verified_at,
                )
            )
            uow.refresh_tokens.add(tenant_id, session.id, _hash_refresh_token(refresh_token))
            if audited:
                self._audit.record(
                    uow,
                    ctx,
                    tenant_id,
                    "auth.login",
                    f"user:{user_id}",
                    details={"session_id": session.id, "rehashed": new_hash is not None, "amr": " ".join(amr)},
                    actor=Actor(user_id, USER),
                )
                self._login_stats.succeeded(uow, tenant_id, user_id)
            uow.commit()
        return self._issue(session, refresh_token)

    def _issue(self, session: m.Session, refresh_token: str) -> IssuedTokens:
        now = int(self._clock.timestamp())
        ttl = min(self._settings.access_token_ttl, int(session.expires_at.timestamp()) - now)
        access, claims = tokens.issue_access_token(
            self._keys.ring(),
            issuer=self._settings.issuer,
            audience=self._settings.audience,
            subject=session.user_id,
            tenant_id=session.tenant_id,
            subject_type=USER,
            session_id=session.id,
            now=now,
            ttl=max(1, ttl),
            amr=tuple(session.amr.split()),
            mfa_at=int(session.mfa_verified_at.timestamp()) if session.mfa_verified_at is not None else 0,
        )
        return IssuedTokens(
            access_token=access,
            access_expires_at=claims.expires_at,
            refresh_token=refresh_token,
            session_id=session.id,
            tenant_id=session.tenant_id,
            user_id=session.user_id,
            session_expires_at=int(session.expires_at.timestamp()),
        )

    # -- refresh ---------------------------------------------------------------

    def refresh(self, refresh_token: str, ctx: CallContext) -> IssuedTokens:
        if not refresh_token.startswith(REFRESH_TOKEN_PREFIX):
            raise RefreshTokenInvalid()
        token_hash = _hash_refresh_token(refresh_token)
        with self._db.unit_of_work(SYSTEM) as uow:
            stored = uow.refresh_tokens.find(token_hash)
        if stored is None:
            raise RefreshTokenInvalid()
        now = self._clock.now()
        new_token = REFRESH_TOKEN_PREFIX + crypto.random_token(32)
        with self._db.unit_of_work(stored.tenant_id) as uow:
            spent = uow.refresh_tokens.spend(token_hash, now)
            if spent:
                session = self._extend_session(uow, stored.session_id, now)
                uow.refresh_tokens.add(session.tenant_id, session.id, _hash_refresh_token(new_token))
                self._audit.record(
                    uow,
                    ctx,
                    session.tenant_id,
                    "auth.refresh",
                    f"session:{session.id}",
                    actor=Actor(session.user_id, USER),
                )
                uow.commit()
        if not spent:
            self._on_reuse(stored, now, ctx)
        return self._issue(session, new_token)

    def _extend_session(self, uow: UnitOfWork, session_id: str, now: dt.datetime) -> m.Session:
        session = uow.sessions.get(session_id)
        if session.revoked_at is not None or session.expires_at <= now or session.idle_expires_at <= now:
            raise RefreshTokenInvalid()
        user = uow.users.get(session.user_id)
        tenant = uow.tenants.get(session.tenant_id)
        if user.status != "active" or tenant.status != "active":
            raise RefreshTokenInvalid()
        session.last_active_at = now
        session.idle_expires_at = min(session.expires_at, now + dt.timedelta(seconds=self._settings.session_idle_ttl))
        return session

    def _on_reuse(self, stored: m.RefreshToken, now: dt.datetime, ctx: CallContext) -> NoReturn:
        """A spent token came back: either a race within the leeway, or theft."""
        leeway = self._settings.refresh_reuse_leeway
        if leeway and stored.used_at is not None and (now - stored.used_at).total_seconds() <= leeway:
            raise RefreshTokenInvalid()
        # Its own transaction, so that the revocation commits although this call fails.
        reason = "refresh_token_reused"
        with self._db.unit_of_work(stored.tenant_id) as uow:
            owners = uow.sessions.active_owners([stored.session_id])
            revoked = uow.sessions.revoke([stored.session_id], now, reason)
            self._session_events(uow, stored.tenant_id, owners, reason)
            self._audit.record(
                uow,
                ctx,
                stored.tenant_id,
                "auth.refresh_reuse",
                f"session:{stored.session_id}",
                audit.FAILURE,
                {"session_revoked": bool(revoked)},
            )
            if revoked:
                self._notifier.sessions_revoked(uow, stored.tenant_id, [stored.session_id])
            uow.commit()
        if revoked:
            log.warning("refresh token reuse: session %s revoked", stored.session_id)
        raise RefreshTokenReused()

    # -- logout and sessions ---------------------------------------------------

    def logout(self, ctx: CallContext) -> None:
        principal = ctx.require_principal()
        if not principal.session_id:
            raise InvalidArgument("authorization", "logout needs a user access token")
        self._revoke(
            principal.tenant_id,
            [principal.session_id],
            "logout",
            (ctx, "auth.logout", f"session:{principal.session_id}"),
        )

    def logout_by_refresh_token(self, refresh_token: str, ctx: CallContext) -> bool:
        """Ends the session a refresh token belongs to (a browser's logout: its cookie is
        all it has). Also for a spent token: it names the same session, and whoever holds
        it could end the session anyway by presenting it to refresh (reuse revokes).
        False when the token names no session."""
        if not refresh_token.startswith(REFRESH_TOKEN_PREFIX):
            return False
        with self._db.unit_of_work(SYSTEM) as uow:
            stored = uow.refresh_tokens.find(_hash_refresh_token(refresh_token))
        if stored is None:
            return False
        with self._db.unit_of_work(stored.tenant_id) as uow:
            user_id = uow.sessions.get(stored.session_id).user_id
        self._revoke(
            stored.tenant_id,
            [stored.session_id],
            "logout",
            (ctx, "auth.logout", f"session:{stored.session_id}"),
            actor=Actor(user_id, USER),
        )
        return True

    def logout_all(self, ctx: CallContext, tenant_id: str, user_id: str) -> int:
        tenant_id, user_id = self._target_user(ctx.require_principal(), tenant_id, user_id, "sessions:revoke")
        with self._db.unit_of_work(tenant_id) as uow:
            uow.users.get(user_id)
            ids = uow.sessions.active_ids_for_user(user_id, self._clock.now())
        return self._revoke(tenant_id, ids, "logout_all", (ctx, "auth.logout_all", f"user:{user_id}"))

    def revoke_session(self, ctx: CallContext, tenant_id: str, session_id: str) -> m.Session:
        principal = ctx.require_principal()
        tenant_id = tenant_id or principal.tenant_id
        with self._db.unit_of_work(tenant_id) as uow:
            session = uow.sessions.get(session_id)
        self._target_user(principal, tenant_id, session.user_id, "sessions:revoke")
        self._revoke(tenant_id, [session_id], "revoked", (ctx, "session.revoke", f"session:{session_id}"))
        with self._db.unit_of_work(tenant_id) as uow:
            return uow.sessions.get(session_id)

    def revoke_user_sessions(self, tenant_id: str, user_id: str, reason: str, keep: str = "") -> int:
        """For other use cases (disable, delete, password change): end every session but `keep`."""
        with self._db.unit_of_work(tenant_id) as uow:
            ids = [i for i in uow.sessions.active_ids_for_user(user_id, self._clock.now()) if i != keep]
        return self._revoke(tenant_id, ids, reason)

    def _revoke(
        self,
        tenant_id: str,
        session_ids: Sequence[str],
        reason: str,
        audited: tuple[CallContext, str, str] | None = None,
        actor: Actor | None = None,
    ) -> int:
        """Revoke, emit a session.revoked event per session that was live, and (for the
        call's own action) write its one audit entry, in one transaction."""
        with self._db.unit_of_work(tenant_id) as uow:
            owners = uow.sessions.active_owners(session_ids)
            count = uow.sessions.revoke(session_ids, self._clock.now(), reason)
            self._session_events(uow, tenant_id, owners, reason)
            if audited is not None:
                ctx, action, target = audited
                self._audit.record(uow, ctx, tenant_id, action, target, details={"revoked_count": count}, actor=actor)
            self._notifier.sessions_revoked(uow, tenant_id, list(session_ids))
            uow.commit()
        return count

    @staticmethod
    def _session_events(uow: UnitOfWork, tenant_id: str, owners: dict[str, str], reason: str) -> None:
        for session_id, user_id in sorted(owners.items()):
            emit(
                uow, tenant_id, events.SESSION_REVOKED, {"session_id": session_id, "user_id": user_id, "reason": reason}
            )

    def list_sessions(
        self, ctx: CallContext, tenant_id: str, user_id: str, page_size: int, page_token: str, show_ended: bool
    ) -> tuple[list[m.Session], str]:
        tenant_id, user_id = self._target_user(ctx.require_principal(), tenant_id, user_id, "sessions:read")
        limit = paging.page_size_or_default(page_size)
        after = paging.decode_page_token(page_token)
        with self._db.unit_of_work(tenant_id) as uow:
            uow.users.get(user_id)
            rows = list(
                uow.sessions.list_for_user(
                    user_id, now=self._clock.now(), show_ended=show_ended, after=after, limit=limit + 1
                )
            )
        return rows[:limit], paging.next_token(rows, limit)

    @staticmethod
    def _target_user(principal: Principal, tenant_id: str, user_id: str, permission: str) -> tuple[str, str]:
        """Acting on oneself needs no permission; on others, `permission` in their tenant
        (decided by domain.decision like every other check)."""
        tenant_id = access.target_tenant(principal, tenant_id)
        if not user_id:
            if principal.subject_type != USER:
                raise InvalidArgument("user_id", "user_id is required for non-user callers")
            user_id = principal.subject
        if not access.is_self(principal, tenant_id, user_id):
            access.require(principal, permission, tenant_id)
        return tenant_id, user_id
