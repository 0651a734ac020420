"""Second factors, recovery codes and MFA challenges. The conditional updates (`spend`,
`advance_step`, `use_code`) are what make each code and challenge single-use however
many calls race."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session as OrmSession

from tahoe_auth.domain.errors import NotFound
from tahoe_auth.store import models as m


def _count(result: object) -> int:
    return int(result.rowcount)  # type: ignore[attr-defined]


class MfaRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    # -- factors ---------------------------------------------------------------

    def add_factor(self, factor: m.MfaFactor) -> m.MfaFactor:
        self.session.add(factor)
        self.session.flush()
        return factor

    def factor(self, factor_id: str, user_id: str) -> m.MfaFactor:
        row = self.session.get(m.MfaFactor, factor_id)
        if row is None or row.user_id != user_id:
            raise NotFound("mfa_factor")
        return row

    def confirmed_factors(self, user_id: str) -> Sequence[m.MfaFactor]:
        query = (
            select(m.MfaFactor)
            .where(m.MfaFactor.user_id == user_id, m.MfaFactor.confirmed_at.is_not(None))
            .order_by(m.MfaFactor.created_at, m.MfaFactor.id)
        )
        return self.session.scalars(query).all()

    def has_confirmed_factor(self, user_id: str) -> bool:
        query = select(m.MfaFactor.id).where(m.MfaFactor.user_id == user_id, m.MfaFactor.confirmed_at.is_not(None))
        return self.session.scalars(query.limit(1)).first() is not None

    def passkey_by_credential(self, credential_id: str) -> m.MfaFactor | None:
        query = select(m.MfaFactor).where(
            m.MfaFactor.credential_id == credential_id, m.MfaFactor.confirmed_at.is_not(None)
        )
        return self.session.scalars(query).first()

    def advance_step(self, factor_id: str, step: int, now: dt.datetime) -> bool:
        """Accept a TOTP step only if it is after the last accepted one: True for one caller."""
        result = self.session.execute(
            update(m.MfaFactor)
            .where(m.MfaFactor.id == factor_id, m.MfaFactor.last_step < step)
            .values(last_step=step, last_used_at=now)
        )
        return _count(result) == 1

    def delete_factor(self, factor: m.MfaFactor) -> None:
        self.session.delete(factor)
        self.session.flush()

    def delete_pending(self, user_id: str, before: dt.datetime) -> None:
        self.session.execute(
            delete(m.MfaFactor).where(
                m.MfaFactor.user_id == user_id, m.MfaFactor.confirmed_at.is_(None), m.MfaFactor.created_at < before
            )
        )

    # -- recovery codes ----------------------------------------------------------

    def replace_codes(self, tenant_id: str, user_id: str, hashes: Sequence[str], now: dt.datetime) -> None:
        self.session.execute(delete(m.RecoveryCode).where(m.RecoveryCode.user_id == user_id))
        self.session.add_all(
            m.RecoveryCode(tenant_id=tenant_id, user_id=user_id, code_hash=h, created_at=now) for h in hashes
        )
        self.session.flush()

    def remaining_codes(self, user_id: str) -> int:
        query = select(func.count(m.RecoveryCode.id)).where(
            m.RecoveryCode.user_id == user_id, m.RecoveryCode.used_at.is_(None)
        )
        return int(self.session.scalar(query) or 0)

    def use_code(self, user_id: str, code_hash: str, now: dt.datetime) -> bool:
        result = self.session.execute(
            update(m.RecoveryCode)
            .where(
                m.RecoveryCode.user_id == user_id,
                m.RecoveryCode.code_hash == code_hash,
                m.RecoveryCode.used_at.is_(None),
            )
            .values(used_at=now)
        )
        return _count(result) == 1

    def delete_codes(self, user_id: str) -> None:
        self.session.execute(delete(m.RecoveryCode).where(m.RecoveryCode.user_id == user_id))

    # -- challenges --------------------------------------------------------------

    def add_challenge(self, challenge: m.MfaChallenge) -> m.MfaChallenge:
        self.session.add(challenge)
        self.session.flush()
        return challenge

    def challenge_by_hash(self, token_hash: str) -> m.MfaChallenge | None:
        return self.session.scalars(select(m.MfaChallenge).where(m.MfaChallenge.token_hash == token_hash)).first()

    def challenge(self, challenge_id: str) -> m.MfaChallenge | None:
        return self.session.get(m.MfaChallenge, challenge_id)

    def count_failure(self, challenge_id: str) -> None:
        self.session.execute(
            update(m.MfaChallenge)
            .where(m.MfaChallenge.id == challenge_id)
            .values(failed_attempts=m.MfaChallenge.failed_attempts + 1)
        )

    def spend_challenge(self, challenge_id: str, now: dt.datetime, max_failures: int) -> bool:
        """Mark the challenge answered: True for exactly one caller, and only while it
        is live (not spent, not expired, not dead of failures)."""
        result = self.session.execute(
            update(m.MfaChallenge)
            .where(
                m.MfaChallenge.id == challenge_id,
                m.MfaChallenge.consumed_at.is_(None),
                m.MfaChallenge.expires_at > now,
                m.MfaChallenge.failed_attempts < max_failures,
            )
            .values(consumed_at=now)
        )
        return _count(result) == 1

    def delete_expired_challenges(self, before: dt.datetime) -> int:
        return _count(self.session.execute(delete(m.MfaChallenge).where(m.MfaChallenge.expires_at < before)))
