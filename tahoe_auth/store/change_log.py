"""The change log's rows: appended inside a change's transaction, read by id.

Ids come from a sequence, so they are unique and increasing in insertion order but
not in commit order: a reader may see id 12 before id 11 commits. The reader
(services/change_feed.py) keeps such gaps open for a while instead of assuming them
lost.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session as OrmSession

from tahoe_auth.store.models import ChangeRecord, utcnow


class Change(NamedTuple):
    id: int
    channel: str
    message: str


class ChangeLogRepository:
    def __init__(self, session: OrmSession) -> None:
        self._session = session

    def append(self, channel: str, message: str) -> int:
        statement = (
            insert(ChangeRecord)
            .values(channel=channel, message=message, created_at=utcnow())
            .returning(ChangeRecord.id)
        )
        return int(self._session.execute(statement).scalar_one())

    def after(self, floor: int, limit: int) -> list[Change]:
        rows = self._session.execute(
            select(ChangeRecord.id, ChangeRecord.channel, ChangeRecord.message)
            .where(ChangeRecord.id > floor)
            .order_by(ChangeRecord.id)
            .limit(limit)
        )
        return [Change(int(i), c, msg) for i, c, msg in rows]

    def settled_before(self, cutoff: dt.datetime) -> int:
        """The highest id written before `cutoff` (0 for none): older transactions have
        long committed or rolled back, so nothing at or below it can still appear."""
        highest = self._session.execute(
            select(func.max(ChangeRecord.id)).where(ChangeRecord.created_at < cutoff)
        ).scalar_one()
        return int(highest or 0)

    def prune(self, cutoff: dt.datetime) -> int:
        result = self._session.execute(delete(ChangeRecord).where(ChangeRecord.created_at < cutoff))
        return int(getattr(result, "rowcount", 0) or 0)
