"""Second factors: enrolling and removing them, recovery codes, and the challenges a login,
a passwordless sign-in or a step-up must answer.

This module decides whether an answer is right; SessionService turns a right answer
into a session or a fresh access token. Every wrong answer, whatever was wrong, raises
the same MfaCodeInvalid; it is counted against the challenge (dead after five) and
against the user (LoginThrottle's MFA policy), in its own transaction so that the count
survives the failing call.
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from tahoe_auth.config import Settings
from tahoe_auth.domain import audit, crypto, events, mfa, security_policy, tokens, totp
from tahoe_auth.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    MfaCodeInvalid,
    MfaEnrollmentRequired,
    MfaRequired,
    NotFound,
)
from tahoe_auth.domain.fields import check_display_name
from tahoe_auth.domain.principal import USER, Principal
from tahoe_auth.kernel.changes import ChangeNotifier
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services import access
from tahoe_auth.services.audit import Actor, AuditLog
from tahoe_auth.services.context import CallContext
from tahoe_auth.services.events import emit
from tahoe_auth.services.keys import KeyManager
from tahoe_auth.services.passkeys import Passkeys, StoredPasskey
from tahoe_auth.services.throttle import LoginThrottle
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database, UnitOfWork
from tahoe_auth.store.directory import user_permissions

log = logging.getLogger(__name__)

SEAL_PURPOSE = "mfa-totp-secrets"
RECOVERY_PURPOSE = "mfa-recovery-codes"
DEFAULT_TOTP_NAME = "Authenticator app"
DEFAULT_PASSKEY_NAME = "Passkey"


@dataclass(frozen=True)
class IssuedChallenge:
    token: str
    expires_at: dt.datetime
    tenant_id: str
    user_id: str
    methods: tuple[str, ...] = ()
    enrollment_required: bool = False
    enrollment_token: str = ""
    passkey_options: str = ""


@dataclass(frozen=True)
class Answer:
    totp_code: str = ""
    recovery_code: str = ""
    passkey_credential: str = ""

    @property
    def given(self) -> list[str]:
        return [
            name
            for name, value in (
                (mfa.METHOD_TOTP, self.totp_code),
                (mfa.METHOD_RECOVERY_CODE, self.recovery_code),
                (mfa.METHOD_PASSKEY, self.passkey_credential),
            )
            if value
        ]


@dataclass(frozen=True)
class Verified:
    """A challenge answered: what SessionService needs to finish the call."""

    purpose: str
    tenant_id: str
    user_id: str
    session_id: str
    amr: tuple[str, ...]
    method: str
    client_address: str = ""
    user_agent: str = ""


@dataclass(frozen=True)
class FactorList:
    factors: Sequence[m.MfaFactor]
    recovery_codes_remaining: int
    mfa_required: bool


@dataclass(frozen=True)
class TotpEnrollment:
    factor: m.MfaFactor
    secret: str
    uri: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class PasskeyRegistration:
    token: str
    options: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class NewFactor:
    factor: m.MfaFactor
    recovery_codes: list[str]


def provisioning_uri(secret: bytes, *, issuer: str, account: str) -> str:
    """The otpauth:// URI (the key URI format authenticator apps read from a QR code)."""
    label = urllib.parse.quote(f"{issuer}:{account}", safe="@:")
    query = urllib.parse.urlencode(
        {
            "secret": totp.to_base32(secret),
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": totp.DIGITS,
            "period": totp.PERIOD,
        },
        quote_via=urllib.parse.quote,
    )
    return f"otpauth://totp/{label}?{query}"


def _hash(token: str) -> str:
    return crypto.sha256_hex(token)


def _stored(factor: m.MfaFactor) -> StoredPasskey:
    return StoredPasskey(
        credential_id=factor.credential_id or "",
        public_key=factor.public_key or b"",
        sign_count=factor.sign_count,
        transports=tuple(factor.transports or ()),
    )


class SecondFactors:
    def __init__(
        self,
        db: Database,
        keys: KeyManager,
        throttle: LoginThrottle,
        notifier: ChangeNotifier,
        settings: Settings,
        clock: Clock,
        audit_log: AuditLog,
        passkeys: Passkeys,
    ) -> None:
        self._db = db
        self._keys = keys
        self._throttle = throttle
        self._notifier = notifier
        self._settings = settings
        self._clock = clock
        self._audit = audit_log
        self._passkeys = passkeys
        self._seal_key = crypto.derive_key(settings.master_key, SEAL_PURPOSE)
        self._recovery_key = crypto.derive_key(settings.master_key, RECOVERY_PURPOSE)

    # -- challenges ---------------------------------------------------------------

    def login_step(self, tenant: m.Tenant, user: m.User, ctx: CallContext) -> IssuedChallenge | None:
        """After a right password: the challenge this user must answer, or None when the
        password is enough (no factor, and the tenant does not require one of them)."""
        now = self._clock.now()
        with self._db.unit_of_work(tenant.id) as uow:
            factors = uow.mfa.confirmed_factors(user.id)
            if factors:
                challenge, issued = self._new_challenge(uow, mfa.LOGIN, tenant.id, user.id, ctx, factors)
                uow.commit()
                return issued
            roles, _ = user_permissions(uow, user.id)
            if not security_policy.of_tenant_settings(tenant.settings).mfa_required_for(roles):
                return None
            challenge, issued = self._new_challenge(
                uow, mfa.LOGIN, tenant.id, user.id, ctx, (), ttl=mfa.ENROLLMENT_TTL_SECONDS
            )
            self._audit.record(
                uow, ctx, tenant.id, "mfa.enrollment_required", f"user:{user.id}", actor=Actor(user.id, USER)
            )
            uow.commit()
        enrollment_token, _ = tokens.issue_access_token(
            self._keys.ring(),
            issuer=self._settings.issuer,
            audience=self._settings.audience,
            subject=user.id,
            tenant_id=tenant.id,
            subject_type=USER,
            session_id="",
            now=int(now.timestamp()),
            ttl=mfa.ENROLLMENT_TTL_SECONDS,
            amr=(mfa.AMR_PASSWORD,),
            restriction=mfa.ENROLLMENT_RESTRICTION,
            challenge_id=challenge.id,
        )
        return IssuedChallenge(
            token=issued.token,
            expires_at=issued.expires_at,
            tenant_id=tenant.id,
            user_id=user.id,
            enrollment_required=True,
            enrollment_token=enrollment_token,
        )

    def passkey_sign_in(self, tenant_key: str, ctx: CallContext) -> IssuedChallenge:
        """A passwordless challenge; the user is whoever's passkey answers it. An unknown
        or inactive tenant gets a challenge all the same (nothing can answer it), so
        that this method says nothing about which tenants exist."""
        tenant_key = tenant_key.strip().lower()
        if not tenant_key:
            raise InvalidArgument("tenant", "tenant is required")
        with self._db.unit_of_work(SYSTEM) as uow:
            tenant = uow.tenants.find(tenant_key)
        now = self._clock.now()
        webauthn_challenge = self._passkeys.new_challenge()
        options = self._passkeys.request_options(webauthn_challenge, (), passwordless=True)
        expires = now + dt.timedelta(seconds=mfa.CHALLENGE_TTL_SECONDS)
        token = mfa.new_challenge_token()
        if tenant is not None and tenant.status == "active":
            with self._db.unit_of_work(tenant.id) as uow:
                uow.mfa.delete_expired_challenges(now)
                uow.mfa.add_challenge(
                    m.MfaChallenge(
                        tenant_id=tenant.id,
                        token_hash=_hash(token),
                        purpose=mfa.PASSKEY_SIGN_IN,
                        webauthn_challenge=webauthn_challenge,
                        created_at=now,
                        expires_at=expires,
                        client_address=ctx.client_address[:255],
                        user_agent=ctx.user_agent[:512],
                    )
                )
                uow.commit()
        return IssuedChallenge(
            token=token,
            expires_at=expires,
            tenant_id="",
            user_id="",
            methods=(mfa.METHOD_PASSKEY,),
            passkey_options=options,
        )

    def step_up_challenge(self, ctx: CallContext) -> IssuedChallenge:
        principal = ctx.require_principal()
        if principal.subject_type != USER or not principal.session_id:
            raise FailedPrecondition("a step-up needs a user's session (an access token from a login)")
        with self._db.unit_of_work(principal.tenant_id) as uow:
            factors = uow.mfa.confirmed_factors(principal.subject)
            if not factors:
                raise FailedPrecondition("add a second factor first (an authenticator app or a passkey)")
            _, issued = self._new_challenge(
                uow, mfa.STEP_UP, principal.tenant_id, principal.subject, ctx, factors, principal.session_id
            )
            uow.commit()
        return issued

    def _new_challenge(
        self,
        uow: UnitOfWork,
        purpose: str,
        tenant_id: str,
        user_id: str,
        ctx: CallContext,
        factors: Sequence[m.MfaFactor],
        session_id: str | None = None,
        ttl: int = mfa.CHALLENGE_TTL_SECONDS,
    ) -> tuple[m.MfaChallenge, IssuedChallenge]:
        now = self._clock.now()
        uow.mfa.delete_expired_challenges(now)  # the tenant's: what a table of challenges keeps is live ones
        token = mfa.new_challenge_token()
        passkeys = [f for f in factors if f.kind == mfa.PASSKEY]
        webauthn_challenge = self._passkeys.new_challenge() if passkeys else ""
        challenge = uow.mfa.add_challenge(
            m.MfaChallenge(
                tenant_id=tenant_id,
                token_hash=_hash(token),
                purpose=purpose,
                user_id=user_id,
                session_id=session_id,
                webauthn_challenge=webauthn_challenge,
                created_at=now,
                expires_at=now + dt.timedelta(seconds=ttl),
                client_address=ctx.client_address[:255],
                user_agent=ctx.user_agent[:512],
            )
        )
        methods: list[str] = []
        if any(f.kind == mfa.TOTP for f in factors):
            methods.append(mfa.METHOD_TOTP)
        if passkeys:
            methods.append(mfa.METHOD_PASSKEY)
        if factors and uow.mfa.remaining_codes(user_id):
            methods.append(mfa.METHOD_RECOVERY_CODE)
        options = (
            self._passkeys.request_options(webauthn_challenge, [_stored(f) for f in passkeys], passwordless=False)
            if passkeys
            else ""
        )
        issued = IssuedChallenge(
            token=token,
            expires_at=challenge.expires_at,
            tenant_id=tenant_id,
            user_id=user_id,
            methods=tuple(methods),
            passkey_options=options,
        )
        return challenge, issued

    # -- answering ------------------------------------------------------------------

    def verify(self, token: str, answer: Answer, ctx: CallContext) -> Verified:
        given = answer.given
        if len(given) > 1:
            raise InvalidArgument("totp_code", "give one answer: totp_code, recovery_code or passkey_credential_json")
        challenge = self._find_challenge(token)
        if challenge is None or challenge.purpose == mfa.PASSKEY_REGISTRATION:
            raise MfaCodeInvalid()
        tenant_id = challenge.tenant_id
        now = self._clock.now()
        if challenge.user_id:
            self._throttle.check_mfa(tenant_id, challenge.user_id)
        if not self._live(challenge, now):
            self._failed(challenge, ctx, "challenge_not_live", count=False)
        if not given:
            if challenge.satisfied_at is None:
                raise InvalidArgument("totp_code", "answer the challenge: totp_code, recovery_code or a passkey")
            amr = tuple(challenge.satisfied_amr.split())
            method = mfa.METHOD_PASSKEY if mfa.AMR_HARDWARE_KEY in amr else mfa.METHOD_TOTP
            return self._complete(challenge, method, amr, ctx)
        method = given[0]
        verified = self._accept(challenge, method, answer, ctx, now)
        if verified is None:
            self._failed(challenge, ctx, f"wrong_{method}")
        self._throttle.mfa_succeeded(tenant_id, verified.user_id)
        return verified

    def _accept(
        self, challenge: m.MfaChallenge, method: str, answer: Answer, ctx: CallContext, now: dt.datetime
    ) -> Verified | None:
        """Check the answer and spend the challenge in one transaction: a code is used
        up only if its challenge is (a lost race leaves both as they were)."""
        with self._db.unit_of_work(challenge.tenant_id) as uow:
            user_id = self._check_answer(uow, challenge, method, answer, now)
            if user_id is None or not uow.mfa.spend_challenge(challenge.id, now, mfa.MAX_FAILED_ANSWERS):
                return None
            if challenge.purpose == mfa.PASSKEY_SIGN_IN and not self._may_sign_in(uow, user_id):
                return None
            first = () if challenge.purpose == mfa.PASSKEY_SIGN_IN else (mfa.AMR_PASSWORD,)
            verified = self._verified(challenge, user_id, mfa.amr_after(first, method), method)
            self._record_verified(uow, ctx, verified)
            uow.commit()
        return verified

    def _find_challenge(self, token: str) -> m.MfaChallenge | None:
        if not token.startswith(mfa.CHALLENGE_PREFIX) or len(token) > 100:
            return None
        # The token names no tenant: found in the system scope, then used in its tenant's.
        with self._db.unit_of_work(SYSTEM) as uow:
            return uow.mfa.challenge_by_hash(_hash(token))

    @staticmethod
    def _live(challenge: m.MfaChallenge, now: dt.datetime) -> bool:
        return (
            challenge.consumed_at is None
            and challenge.expires_at > now
            and challenge.failed_attempts < mfa.MAX_FAILED_ANSWERS
        )

    def _complete(self, challenge: m.MfaChallenge, method: str, amr: tuple[str, ...], ctx: CallContext) -> Verified:
        """A challenge answered by enrolling a first factor: spend it, nothing to check."""
        now = self._clock.now()
        assert challenge.user_id is not None
        with self._db.unit_of_work(challenge.tenant_id) as uow:
            if not uow.mfa.spend_challenge(challenge.id, now, mfa.MAX_FAILED_ANSWERS):
                raise MfaCodeInvalid()
            verified = self._verified(challenge, challenge.user_id, amr, method)
            self._record_verified(uow, ctx, verified)
            uow.commit()
        return verified

    @staticmethod
    def _verified(challenge: m.MfaChallenge, user_id: str, amr: tuple[str, ...], method: str) -> Verified:
        return Verified(
            purpose=challenge.purpose,
            tenant_id=challenge.tenant_id,
            user_id=user_id,
            session_id=challenge.session_id or "",
            amr=amr,
            method=method,
            client_address=challenge.client_address,
            user_agent=challenge.user_agent,
        )

    def _record_verified(self, uow: UnitOfWork, ctx: CallContext, verified: Verified) -> None:
        action = "mfa.step_up" if verified.purpose == mfa.STEP_UP else "mfa.verified"
        details = {"method": verified.method, "purpose": verified.purpose, "amr": " ".join(verified.amr)}
        if verified.session_id:
            details["session_id"] = verified.session_id
        self._audit.record(
            uow,
            ctx,
            verified.tenant_id,
            action,
            f"user:{verified.user_id}",
            details=details,
            actor=Actor(verified.user_id, USER),
        )

    @staticmethod
    def _may_sign_in(uow: UnitOfWork, user_id: str) -> bool:
        user = uow.users.get(user_id)
        return user.status == "active" and uow.tenants.get(user.tenant_id).status == "active"

    def _check_answer(
        self, uow: UnitOfWork, challenge: m.MfaChallenge, method: str, answer: Answer, now: dt.datetime
    ) -> str | None:
        """The user the answer proves, or None when it is wrong."""
        if method == mfa.METHOD_PASSKEY:
            return self._check_passkey(uow, challenge, answer.passkey_credential)
        user_id = challenge.user_id
        if user_id is None:
            return None
        if method == mfa.METHOD_TOTP:
            return user_id if self._accept_totp(uow, user_id, answer.totp_code, now) else None
        return user_id if self._accept_recovery_code(uow, challenge.tenant_id, user_id, answer.recovery_code) else None

    def _accept_totp(self, uow: UnitOfWork, user_id: str, code: str, now: dt.datetime) -> bool:
        for factor in uow.mfa.confirmed_factors(user_id):
            if factor.kind != mfa.TOTP:
                continue
            secret = crypto.unseal(self._seal_key, factor.secret_sealed, self._seal_context(factor))
            step = totp.matching_step(secret, code, now.timestamp(), factor.last_step)
            if step is not None and uow.mfa.advance_step(factor.id, step, now):
                return True
        return False

    def _accept_recovery_code(self, uow: UnitOfWork, tenant_id: str, user_id: str, code: str) -> bool:
        digest = mfa.recovery_code_hash(self._recovery_key, tenant_id, user_id, code)
        return uow.mfa.use_code(user_id, digest, self._clock.now())

    def _check_passkey(self, uow: UnitOfWork, challenge: m.MfaChallenge, credential: str) -> str | None:
        if not challenge.webauthn_challenge:
            return None
        assertion = self._passkeys.parse_assertion(credential)
        factor = uow.mfa.passkey_by_credential(assertion.credential_id)
        if factor is None or factor.tenant_id != challenge.tenant_id:
            return None
        if challenge.user_id is not None and factor.user_id != challenge.user_id:
            return None
        passwordless = challenge.purpose == mfa.PASSKEY_SIGN_IN
        try:
            count = self._passkeys.verify_assertion(
                challenge.webauthn_challenge,
                credential,
                _stored(factor),
                passwordless=passwordless,
                expected_user_id=factor.user_id,
            )
        except MfaCodeInvalid:
            return None
        factor.sign_count = count
        factor.last_used_at = self._clock.now()
        return factor.user_id

    def _failed(self, challenge: m.MfaChallenge, ctx: CallContext, reason: str, count: bool = True) -> NoReturn:
        """Count the miss (challenge and user), audit it, and answer like every miss."""
        tenant_id, user_id = challenge.tenant_id, challenge.user_id
        with self._db.unit_of_work(tenant_id) as uow:
            if count:
                uow.mfa.count_failure(challenge.id)
            self._audit.record(
                uow,
                ctx,
                tenant_id,
                "mfa.failed",
                f"user:{user_id}" if user_id else f"challenge:{challenge.id}",
                audit.FAILURE,
                {"reason": reason, "purpose": challenge.purpose},
                actor=Actor(user_id, USER) if user_id else Actor("", audit.ANONYMOUS),
            )
            uow.commit()
        if count and user_id:
            self._throttle.mfa_failed(tenant_id, user_id)
        raise MfaCodeInvalid()

    # -- factors ------------------------------------------------------------------

    def list_factors(self, ctx: CallContext, tenant_id: str, user_id: str) -> FactorList:
        tenant_id, user_id = self._target(ctx.require_principal(), tenant_id, user_id, "users:read")
        with self._db.unit_of_work(tenant_id) as uow:
            uow.users.get(user_id)
            roles, _ = user_permissions(uow, user_id)
            policy = security_policy.of_tenant_settings(uow.tenants.get(tenant_id).settings)
            return FactorList(
                factors=uow.mfa.confirmed_factors(user_id),
                recovery_codes_remaining=uow.mfa.remaining_codes(user_id),
                mfa_required=policy.mfa_required_for(roles),
            )

    def begin_totp(self, ctx: CallContext, name: str) -> TotpEnrollment:
        principal = self._adding_user(ctx)
        name = check_display_name(name.strip(), "name") or DEFAULT_TOTP_NAME
        secret = totp.new_secret()
        now = self._clock.now()
        with self._db.unit_of_work(principal.tenant_id) as uow:
            user = uow.users.get(principal.subject)
            uow.mfa.delete_pending(user.id, now - dt.timedelta(seconds=mfa.ENROLLMENT_TTL_SECONDS))
            factor = m.MfaFactor(
                tenant_id=principal.tenant_id, user_id=user.id, kind=mfa.TOTP, name=name, created_at=now
            )
            uow.mfa.add_factor(factor)
            factor.secret_sealed = crypto.seal(self._seal_key, secret, self._seal_context(factor))
            uow.commit()
            uri = provisioning_uri(secret, issuer=self._settings.webauthn_rp_name, account=user.email)
        return TotpEnrollment(
            factor=factor,
            secret=totp.to_base32(secret),
            uri=uri,
            expires_at=now + dt.timedelta(seconds=mfa.ENROLLMENT_TTL_SECONDS),
        )

    @staticmethod
    def _seal_context(factor: m.MfaFactor) -> str:
        # Bound to its row: a sealed secret copied to another factor does not open.
        return f"totp:{factor.tenant_id}:{factor.user_id}:{factor.id}"

    def confirm_totp(self, ctx: CallContext, factor_id: str, code: str) -> NewFactor:
        principal = self._enrolling_user(ctx)
        tenant_id, user_id = principal.tenant_id, principal.subject
        self._throttle.check_mfa(tenant_id, user_id)
        now = self._clock.now()
        with self._db.unit_of_work(tenant_id) as uow:
            try:
                factor = uow.mfa.factor(factor_id, user_id)
            except NotFound:
                raise NotFound("mfa_factor") from None
            expired = factor.created_at < now - dt.timedelta(seconds=mfa.ENROLLMENT_TTL_SECONDS)
            if factor.kind != mfa.TOTP or factor.confirmed_at is not None or expired:
                raise FailedPrecondition("this enrollment is finished or expired: begin again")
            secret = crypto.unseal(self._seal_key, factor.secret_sealed, self._seal_context(factor))
            step = totp.matching_step(secret, code, now.timestamp(), factor.last_step)
            if step is not None:
                factor.confirmed_at = now
                factor.last_step = step
                factor.last_used_at = now
                codes = self._factor_added(uow, ctx, principal, factor)
                uow.commit()
                return NewFactor(factor, codes)
        self._throttle.mfa_failed(tenant_id, user_id)
        raise MfaCodeInvalid()

    def begin_passkey_registration(self, ctx: CallContext, name: str) -> PasskeyRegistration:
        principal = self._adding_user(ctx)
        check_display_name(name.strip(), "name")
        now = self._clock.now()
        token = mfa.new_challenge_token()
        webauthn_challenge = self._passkeys.new_challenge()
        expires = now + dt.timedelta(seconds=mfa.ENROLLMENT_TTL_SECONDS)
        with self._db.unit_of_work(principal.tenant_id) as uow:
            user = uow.users.get(principal.subject)
            existing = [_stored(f) for f in uow.mfa.confirmed_factors(user.id) if f.kind == mfa.PASSKEY]
            uow.mfa.delete_expired_challenges(now)
            uow.mfa.add_challenge(
                m.MfaChallenge(
                    tenant_id=principal.tenant_id,
                    token_hash=_hash(token),
                    purpose=mfa.PASSKEY_REGISTRATION,
                    user_id=user.id,
                    webauthn_challenge=webauthn_challenge,
                    created_at=now,
                    expires_at=expires,
                    client_address=ctx.client_address[:255],
                    user_agent=ctx.user_agent[:512],
                )
            )
            options = self._passkeys.creation_options(
                webauthn_challenge,
                user_id=user.id,
                user_name=user.email,
                display_name=user.display_name or user.email,
                exclude=existing,
            )
            uow.commit()
        return PasskeyRegistration(token=token, options=options, expires_at=expires)

    def finish_passkey_registration(
        self, ctx: CallContext, registration_id: str, credential_json: str, name: str
    ) -> NewFactor:
        principal = self._enrolling_user(ctx)
        name = check_display_name(name.strip(), "name") or DEFAULT_PASSKEY_NAME
        if not credential_json:
            raise InvalidArgument("credential_json", "credential_json is required")
        challenge = self._find_challenge(registration_id)
        now = self._clock.now()
        if (
            challenge is None
            or challenge.purpose != mfa.PASSKEY_REGISTRATION
            or challenge.user_id != principal.subject
            or challenge.tenant_id != principal.tenant_id
            or not self._live(challenge, now)
        ):
            raise MfaCodeInvalid()
        created = self._passkeys.verify_registration(challenge.webauthn_challenge, credential_json)
        with self._db.unit_of_work(principal.tenant_id) as uow:
            if not uow.mfa.spend_challenge(challenge.id, now, mfa.MAX_FAILED_ANSWERS):
                raise MfaCodeInvalid()
            if uow.mfa.passkey_by_credential(created.credential_id) is not None:
                raise FailedPrecondition("this passkey is registered already")
            factor = uow.mfa.add_factor(
                m.MfaFactor(
                    tenant_id=principal.tenant_id,
                    user_id=principal.subject,
                    kind=mfa.PASSKEY,
                    name=name,
                    created_at=now,
                    confirmed_at=now,
                    credential_id=created.credential_id,
                    public_key=created.public_key,
                    sign_count=created.sign_count,
                    transports=list(created.transports),
                    aaguid=created.aaguid,
                )
            )
            codes = self._factor_added(uow, ctx, principal, factor)
            uow.commit()
        return NewFactor(factor, codes)

    def _factor_added(self, uow: UnitOfWork, ctx: CallContext, principal: Principal, factor: m.MfaFactor) -> list[str]:
        """Recovery codes with a first factor (or when none is left), the audit entry,
        the event, a login challenge answered by enrolling, and the caches told."""
        tenant_id, user_id = factor.tenant_id, factor.user_id
        codes: list[str] = []
        if uow.mfa.remaining_codes(user_id) == 0:
            codes = self._replace_codes(uow, tenant_id, user_id)
        details = {
            "factor_id": factor.id,
            "type": factor.kind,
            "name": factor.name,
            "recovery_codes_issued": bool(codes),
        }
        self._audit.record(uow, ctx, tenant_id, "mfa.factor_added", f"user:{user_id}", details=details)
        emit(
            uow,
            tenant_id,
            events.USER_MFA_FACTOR_ADDED,
            {"user_id": user_id, "factor_id": factor.id, "type": factor.kind},
        )
        if principal.restriction == mfa.ENROLLMENT_RESTRICTION and principal.challenge_id:
            challenge = uow.mfa.challenge(principal.challenge_id)
            if challenge is not None and challenge.user_id == user_id and challenge.satisfied_at is None:
                challenge.satisfied_at = self._clock.now()
                challenge.satisfied_amr = " ".join(
                    mfa.amr_after(
                        (mfa.AMR_PASSWORD,), mfa.METHOD_PASSKEY if factor.kind == mfa.PASSKEY else mfa.METHOD_TOTP
                    )
                )
        self._notifier.user_changed(uow, tenant_id, user_id)
        return codes

    def _replace_codes(self, uow: UnitOfWork, tenant_id: str, user_id: str) -> list[str]:
        codes = mfa.new_recovery_codes()
        hashes = [mfa.recovery_code_hash(self._recovery_key, tenant_id, user_id, c) for c in codes]
        uow.mfa.replace_codes(tenant_id, user_id, hashes, self._clock.now())
        return codes

    def regenerate_codes(self, ctx: CallContext, answer: Answer) -> list[str]:
        principal = self._user(ctx)
        self._prove_presence(principal, answer, ctx)
        with self._db.unit_of_work(principal.tenant_id) as uow:
            if not uow.mfa.has_confirmed_factor(principal.subject):
                raise FailedPrecondition("recovery codes come with a second factor: add one first")
            codes = self._replace_codes(uow, principal.tenant_id, principal.subject)
            self._audit.record(
                uow, ctx, principal.tenant_id, "mfa.recovery_codes_generated", f"user:{principal.subject}"
            )
            uow.commit()
        return codes

    def delete_factor(self, ctx: CallContext, factor_id: str, tenant_id: str, user_id: str, answer: Answer) -> None:
        principal = ctx.require_principal()
        tenant_id, user_id = self._target(principal, tenant_id, user_id, "users:reset_mfa")
        own = access.is_self(principal, tenant_id, user_id)
        if own:
            self._prove_presence(principal, answer, ctx)
        with self._db.unit_of_work(tenant_id) as uow:
            if not own:
                # Standing, as for a password reset: an admin cannot strip an owner's factor.
                _, theirs = user_permissions(uow, user_id)
                access.ensure_can_grant(principal, theirs)
            factor = uow.mfa.factor(factor_id, user_id)
            kind = factor.kind
            uow.mfa.delete_factor(factor)
            last = not uow.mfa.has_confirmed_factor(user_id)
            if last:
                uow.mfa.delete_codes(user_id)
            details = {"factor_id": factor_id, "type": kind, "by_admin": not own, "last_factor": last}
            self._audit.record(uow, ctx, tenant_id, "mfa.factor_removed", f"user:{user_id}", details=details)
            emit(
                uow,
                tenant_id,
                events.USER_MFA_FACTOR_REMOVED,
                {"user_id": user_id, "factor_id": factor_id, "type": kind, "by_admin": not own},
            )
            self._notifier.user_changed(uow, tenant_id, user_id)
            uow.commit()

    def _prove_presence(self, principal: Principal, answer: Answer, ctx: CallContext) -> None:
        """The user's own sensitive change: a code now, or a session verified recently."""
        given = answer.given
        if not given:
            if not principal.mfa.fresh(self._clock.timestamp()):
                raise MfaRequired(principal.mfa.step_up_seconds)
            return
        if given not in ([mfa.METHOD_TOTP], [mfa.METHOD_RECOVERY_CODE]):
            raise InvalidArgument("totp_code", "give a totp_code or a recovery_code")
        tenant_id, user_id = principal.tenant_id, principal.subject
        self._throttle.check_mfa(tenant_id, user_id)
        now = self._clock.now()
        with self._db.unit_of_work(tenant_id) as uow:
            if given == [mfa.METHOD_TOTP]:
                ok = self._accept_totp(uow, user_id, answer.totp_code, now)
            else:
                ok = self._accept_recovery_code(uow, tenant_id, user_id, answer.recovery_code)
            if ok:
                uow.commit()
                return
        self._throttle.mfa_failed(tenant_id, user_id)
        self._audit.record_alone(
            ctx,
            tenant_id,
            "mfa.failed",
            f"user:{user_id}",
            audit.FAILURE,
            {"reason": "wrong_code", "purpose": "confirm"},
        )
        raise MfaCodeInvalid()

    # -- who ------------------------------------------------------------------------

    @staticmethod
    def _user(ctx: CallContext) -> Principal:
        principal = ctx.require_principal()
        if principal.subject_type != USER or principal.restriction:
            raise FailedPrecondition("second factors belong to users: sign in as the user")
        return principal

    @staticmethod
    def _enrolling_user(ctx: CallContext) -> Principal:
        """The user (a session, or a restricted enrollment token) adding their own factor."""
        principal = ctx.require_principal()
        if principal.subject_type != USER:
            raise FailedPrecondition("second factors belong to users: sign in as the user")
        return principal

    def _adding_user(self, ctx: CallContext) -> Principal:
        """Beginning to add a factor. For a user who has one already this is a sensitive
        change: a password-only session (stolen, or older than the first factor) must not
        add an authenticator of its own."""
        principal = self._enrolling_user(ctx)
        if principal.mfa.enrolled and not principal.mfa.fresh(self._clock.timestamp()):
            raise MfaRequired(principal.mfa.step_up_seconds)
        return principal

    @staticmethod
    def _target(principal: Principal, tenant_id: str, user_id: str, permission: str) -> tuple[str, str]:
        if principal.restriction:
            # An enrollment token (admitted by the method's policy) acts on its own user
            # only; the checks below would refuse it as restricted.
            if tenant_id not in ("", principal.tenant_id) or user_id not in ("", principal.subject):
                raise MfaEnrollmentRequired()
            return principal.tenant_id, principal.subject
        tenant_id = access.target_tenant(principal, tenant_id)
        if not user_id:
            if principal.subject_type != USER:
                raise InvalidArgument("user_id", "user_id is required for non-user callers")
            user_id = principal.subject
        if not access.is_self(principal, tenant_id, user_id):
            access.require(principal, permission, tenant_id)
        return tenant_id, user_id
