"""Which signing key signs, and which are published, from the key rows and the clock.

Staged rotation: a rotation adds a key that activates `publish_delay` seconds later.
Until then it is NEXT: published in the JWKS, not signing, so that every verifier's
cached JWKS holds it before the first token it signs. At its activation time it
becomes ACTIVE on every instance without any message between them: the time is data
in the row, and every instance computes the schedule from the rows and its clock.
The key it replaces is RETIRED: still published until its last token has expired
(`retention` after it stopped signing). A REVOKED key (compromised) is gone from the
JWKS at once, and nothing it signed is accepted any more.

The active key is the non-revoked key with the latest activation time that has
passed. A key's retirement time is the activation time of the key that followed it
(a key revoked before it ever signed does not count as having followed).
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
from collections.abc import Iterable
from dataclasses import dataclass


class KeyState(enum.Enum):
    NEXT = "next"
    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class KeyRecord:
    """What the database says about a key (times are aware UTC datetimes)."""

    kid: str
    created_at: dt.datetime
    activates_at: dt.datetime
    revoked_at: dt.datetime | None = None


@dataclass(frozen=True)
class KeyStatus:
    kid: str
    state: KeyState
    created_at: dt.datetime
    activates_at: dt.datetime
    retired_at: dt.datetime | None
    """When it stopped signing (the successor's activation); None while NEXT or ACTIVE."""
    revoked_at: dt.datetime | None
    unpublish_at: dt.datetime | None
    """When it leaves the JWKS: `retention` after retirement, at once when revoked; None
    while NEXT or ACTIVE (not scheduled yet)."""
    published: bool


@dataclass(frozen=True)
class Schedule:
    keys: tuple[KeyStatus, ...]
    """ACTIVE first, then NEXT (soonest first), RETIRED (newest first), REVOKED."""
    active_kid: str | None
    changes_at: dt.datetime | None
    """The next time the schedule changes by the clock alone (an activation, or a
    retired key leaving the JWKS); None if nothing is pending."""

    @property
    def published_kids(self) -> tuple[str, ...]:
        return tuple(k.kid for k in self.keys if k.published)

    def status(self, kid: str) -> KeyStatus | None:
        return next((k for k in self.keys if k.kid == kid), None)

    @property
    def next_keys(self) -> tuple[KeyStatus, ...]:
        return tuple(k for k in self.keys if k.state is KeyState.NEXT)


def _order(record: KeyRecord) -> tuple[dt.datetime, dt.datetime, str]:
    return (record.activates_at, record.created_at, record.kid)


def _signed(record: KeyRecord, now: dt.datetime) -> bool:
    """Whether the key became active at some point (revoked after, or never)."""
    if record.activates_at > now:
        return False
    return record.revoked_at is None or record.revoked_at > record.activates_at


def schedule(records: Iterable[KeyRecord], now: dt.datetime, retention: dt.timedelta) -> Schedule:
    """The state of every key at `now`. `retention`: how long a retired key stays
    published (the longest token lifetime plus clock skew)."""
    records = sorted(records, key=_order)
    tenure = [r for r in records if _signed(r, now)]
    active = next((r for r in reversed(tenure) if r.revoked_at is None), None)
    successor: dict[str, dt.datetime] = {}
    for earlier, later in itertools.pairwise(tenure):
        successor[earlier.kid] = later.activates_at

    statuses: list[KeyStatus] = []
    pending: list[dt.datetime] = []
    for r in records:
        retired_at = successor.get(r.kid) if (active is None or r.kid != active.kid) else None
        if r.revoked_at is not None:
            state, unpublish_at, published = KeyState.REVOKED, r.revoked_at, False
        elif active is not None and r.kid == active.kid:
            state, unpublish_at, published = KeyState.ACTIVE, None, True
        elif r.activates_at > now:
            state, unpublish_at, published = KeyState.NEXT, None, True
            pending.append(r.activates_at)
        else:
            state = KeyState.RETIRED
            # A retired key always has a successor (the active key activated after it).
            unpublish_at = (retired_at or now) + retention
            published = unpublish_at > now
            if published:
                pending.append(unpublish_at)
        statuses.append(
            KeyStatus(
                kid=r.kid,
                state=state,
                created_at=r.created_at,
                activates_at=r.activates_at,
                retired_at=retired_at if state in (KeyState.RETIRED, KeyState.REVOKED) else None,
                revoked_at=r.revoked_at,
                unpublish_at=unpublish_at,
                published=published,
            )
        )
    rank = {KeyState.ACTIVE: 0, KeyState.NEXT: 1, KeyState.RETIRED: 2, KeyState.REVOKED: 3}

    def listing_order(s: KeyStatus) -> tuple[int, float]:
        moment = s.activates_at.timestamp()
        return (rank[s.state], moment if s.state is KeyState.NEXT else -moment)

    statuses.sort(key=listing_order)
    return Schedule(
        keys=tuple(statuses),
        active_kid=active.kid if active is not None else None,
        changes_at=min(pending) if pending else None,
    )


def prunable(current: Schedule, now: dt.datetime, retention: dt.timedelta) -> list[str]:
    """Keys out of the JWKS for longer than `retention` more: their rows can go (the
    audit log keeps their history). Tokens naming them are refused as unknown keys."""
    return [
        k.kid
        for k in current.keys
        if not k.published and k.unpublish_at is not None and k.unpublish_at + retention <= now
    ]


def successor_to_promote(current: Schedule) -> str | None:
    """When the active key is revoked: the published NEXT key that should sign at once
    (the soonest scheduled), or None (then a new key must be made)."""
    nexts = current.next_keys
    return nexts[0].kid if nexts else None
