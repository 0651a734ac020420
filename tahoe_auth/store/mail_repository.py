"""The mail queue, the tokens of mailed links, and "forgot password" requests. As for
webhook deliveries, a claim pushes a message's next attempt out by a lease and an
outcome is recorded only at the claimed attempt; a token is spent by one conditional
update, so that however many calls race, a link works once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session as OrmSession

from tahoe_auth.domain import mail
from tahoe_auth.store import models as m

DUE = (mail.PENDING, mail.RETRYING)


@dataclass(frozen=True)
class ClaimedMail:
    id: str
    tenant_id: str
    attempts: int
    created_at: dt.datetime


class MailRepository:
    def __init__(self, session: OrmSession) -> None:
        self.session = session

    # -- the queue ---------------------------------------------------------------------

    def add(self, message: m.MailMessage) -> m.MailMessage:
        self.session.add(message)
        self.session.flush()
        return message

    def claim_due(self, now: dt.datetime, lease_until: dt.datetime, limit: int) -> list[ClaimedMail]:
        t = m.MailMessage
        due = (
            select(t.id)
            .where(t.status.in_(DUE), t.next_attempt_at <= now)
            .order_by(t.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        result = self.session.execute(
            update(t)
            .where(t.id.in_(due.scalar_subquery()))
            .values(attempts=t.attempts + 1, next_attempt_at=lease_until, last_attempt_at=now)
            .returning(t.id, t.tenant_id, t.attempts, t.created_at)
            .execution_options(synchronize_session=False)
        )
        return [ClaimedMail(*row) for row in result]

    def by_ids(self, ids: Sequence[str]) -> dict[str, m.MailMessage]:
        rows = self.session.scalars(select(m.MailMessage).where(m.MailMessage.id.in_(list(ids))))
        return {row.id: row for row in rows}

    def record(
        self, claimed: ClaimedMail, status: str, next_attempt_at: dt.datetime, error: str, now: dt.datetime
    ) -> bool:
        """An attempt's outcome, if the row is still at the claimed attempt. A message that
        is done (sent or dead) loses its sealed variables: the link in it is not kept."""
        t = m.MailMessage
        values: dict[str, object] = {"status": status, "next_attempt_at": next_attempt_at, "last_error": error[:500]}
        if status == mail.SENT:
            values["sent_at"] = now
        if status in (mail.SENT, mail.DEAD):
            values["variables_sealed"] = ""
        result = self.session.execute(
            update(t)
            .where(t.id == claimed.id, t.attempts == claimed.attempts)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def due_count(self, now: dt.datetime) -> int:
        rows = self.session.scalars(
            select(m.MailMessage.id).where(m.MailMessage.status.in_(DUE), m.MailMessage.next_attempt_at <= now)
        )
        return len(list(rows))

    def recent(self, limit: int = 100) -> Sequence[m.MailMessage]:
        query = select(m.MailMessage).order_by(m.MailMessage.created_at.desc()).limit(limit)
        return self.session.scalars(query).all()

    # -- tokens of mailed links --------------------------------------------------------

    def add_token(self, token: m.AccountToken) -> m.AccountToken:
        self.session.add(token)
        self.session.flush()
        return token

    def live_token(self, token_hash: str, purpose: str, now: dt.datetime) -> m.AccountToken | None:
        t = m.AccountToken
        return self.session.scalars(
            select(t).where(t.token_hash == token_hash, t.purpose == purpose, t.used_at.is_(None), t.expires_at > now)
        ).first()

    def spend_token(self, token_id: str, now: dt.datetime) -> bool:
        t = m.AccountToken
        result = self.session.execute(
            update(t)
            .where(t.id == token_id, t.used_at.is_(None), t.expires_at > now)
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def spend_all_tokens(self, user_id: str, purpose: str, now: dt.datetime) -> None:
        """Every other live link of the user for `purpose` stops working (a newer one, or
        the change it was for, has happened)."""
        t = m.AccountToken
        self.session.execute(
            update(t)
            .where(t.user_id == user_id, t.purpose == purpose, t.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )

    def delete_expired_tokens(self, before: dt.datetime) -> None:
        self.session.execute(delete(m.AccountToken).where(m.AccountToken.expires_at < before))

    # -- "forgot password" requests (system scope) ---------------------------------------

    def add_reset_request(self, request: m.PasswordResetRequest) -> None:
        self.session.add(request)
        self.session.flush()

    def take_reset_requests(self, limit: int) -> list[m.PasswordResetRequest]:
        """The oldest waiting requests, deleted as they are taken (in the caller's
        transaction: a round that fails leaves them for the next)."""
        t = m.PasswordResetRequest
        rows = list(
            self.session.scalars(select(t).order_by(t.created_at).limit(limit).with_for_update(skip_locked=True))
        )
        if rows:
            self.session.execute(
                delete(t).where(t.id.in_([r.id for r in rows])).execution_options(synchronize_session=False)
            )
        return rows
