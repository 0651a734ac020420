"""The signing-key schedule: states and times from the key rows and a fake clock."""

from __future__ import annotations

import datetime as dt

from tahoe_auth.domain.key_schedule import KeyRecord, KeyState, prunable, schedule, successor_to_promote
from tahoe_auth.kernel.clock import FakeClock

RETENTION = dt.timedelta(seconds=905)  # a 900 s token lifetime plus clock skew
DELAY = dt.timedelta(seconds=900)


def at(clock: FakeClock, seconds: float = 0) -> dt.datetime:
    return clock.now() + dt.timedelta(seconds=seconds)


def states(records: list[KeyRecord], now: dt.datetime) -> dict[str, KeyState]:
    return {k.kid: k.state for k in schedule(records, now, RETENTION).keys}


def test_a_rotated_key_is_published_at_once_and_signs_only_after_the_delay() -> None:
    clock = FakeClock()
    old = KeyRecord("old", at(clock, -3600), at(clock, -3600))
    clock.advance(10)
    new = KeyRecord("new", clock.now(), clock.now() + DELAY)
    now = schedule([old, new], clock.now(), RETENTION)
    assert now.active_kid == "old"
    assert now.published_kids == ("old", "new")
    assert now.status("new").state is KeyState.NEXT  # type: ignore[union-attr]
    assert now.changes_at == new.activates_at  # the next thing that happens by the clock alone

    clock.advance(DELAY.total_seconds() - 1)
    assert schedule([old, new], clock.now(), RETENTION).active_kid == "old"
    clock.advance(1)
    after = schedule([old, new], clock.now(), RETENTION)
    assert after.active_kid == "new"
    retired = after.status("old")
    assert retired is not None and retired.state is KeyState.RETIRED and retired.published
    assert retired.retired_at == new.activates_at
    assert retired.unpublish_at == new.activates_at + RETENTION
    assert after.changes_at == retired.unpublish_at
    assert [k.kid for k in after.keys] == ["new", "old"]  # active first


def test_a_retired_key_leaves_the_jwks_when_its_last_token_has_expired() -> None:
    clock = FakeClock()
    old = KeyRecord("old", at(clock), at(clock))
    new = KeyRecord("new", at(clock, 1), at(clock, 1 + DELAY.total_seconds()))
    clock.advance(1 + DELAY.total_seconds() + RETENTION.total_seconds() - 0.001)
    assert "old" in schedule([old, new], clock.now(), RETENTION).published_kids
    clock.advance(0.001)
    gone = schedule([old, new], clock.now(), RETENTION)
    assert gone.published_kids == ("new",)
    assert gone.status("old").state is KeyState.RETIRED  # type: ignore[union-attr]
    assert gone.changes_at is None
    assert prunable(gone, clock.now(), RETENTION) == []
    clock.advance(RETENTION.total_seconds())
    assert prunable(schedule([old, new], clock.now(), RETENTION), clock.now(), RETENTION) == ["old"]


def test_two_rotations_in_a_row_activate_in_order() -> None:
    clock = FakeClock()
    first = KeyRecord("k1", at(clock), at(clock))
    second = KeyRecord("k2", at(clock, 5), at(clock, 5 + 900))
    third = KeyRecord("k3", at(clock, 10), at(clock, 10 + 900))
    records = [first, second, third]
    assert states(records, at(clock, 20)) == {"k1": KeyState.ACTIVE, "k2": KeyState.NEXT, "k3": KeyState.NEXT}
    assert successor_to_promote(schedule(records, at(clock, 20), RETENTION)) == "k2"  # the soonest
    assert states(records, at(clock, 906)) == {"k2": KeyState.ACTIVE, "k1": KeyState.RETIRED, "k3": KeyState.NEXT}
    late = schedule(records, at(clock, 911), RETENTION)
    assert late.active_kid == "k3"
    assert late.status("k1").retired_at == second.activates_at  # type: ignore[union-attr]
    assert late.status("k2").retired_at == third.activates_at  # type: ignore[union-attr]


def test_a_revoked_key_is_unpublished_at_once_whatever_it_was() -> None:
    clock = FakeClock()
    now = at(clock, 100)
    retired = KeyRecord("retired", at(clock), at(clock), revoked_at=now)
    active = KeyRecord("active", at(clock, 50), at(clock, 50))
    staged = KeyRecord("staged", at(clock, 60), at(clock, 960), revoked_at=now)
    current = schedule([retired, active, staged], now, RETENTION)
    assert current.active_kid == "active"
    assert current.published_kids == ("active",)
    for kid in ("retired", "staged"):
        status = current.status(kid)
        assert status is not None and status.state is KeyState.REVOKED
        assert not status.published and status.unpublish_at == now and status.revoked_at == now
    assert [k.kid for k in current.keys][-2:] in (["retired", "staged"], ["staged", "retired"])


def test_revoking_the_active_key_and_promoting_the_next_one() -> None:
    """What KeyManager.revoke writes: revoked_at on the key, activates_at = now on the NEXT key."""
    clock = FakeClock()
    now = at(clock, 100)
    old = KeyRecord("old", at(clock), at(clock))
    compromised = KeyRecord("bad", at(clock, 10), at(clock, 10), revoked_at=now)
    promoted = KeyRecord("next", at(clock, 90), now)
    current = schedule([old, compromised, promoted], now, RETENTION)
    assert current.active_kid == "next"
    bad = current.status("bad")
    assert bad is not None and bad.state is KeyState.REVOKED and bad.retired_at == now
    # The key before the compromised one retired when the compromised one activated.
    earlier = current.status("old")
    assert earlier is not None and earlier.retired_at == compromised.activates_at
    assert earlier.unpublish_at == compromised.activates_at + RETENTION


def test_a_key_revoked_before_it_signed_does_not_count_as_a_successor() -> None:
    clock = FakeClock()
    old = KeyRecord("old", at(clock), at(clock))
    never = KeyRecord("never", at(clock, 1), at(clock, 901), revoked_at=at(clock, 2))
    later = KeyRecord("later", at(clock, 3), at(clock, 903))
    current = schedule([old, never, later], at(clock, 950), RETENTION)
    assert current.active_kid == "later"
    assert current.status("old").retired_at == later.activates_at  # type: ignore[union-attr]
    assert current.status("never").retired_at is None  # type: ignore[union-attr]


def test_no_key_is_active_before_any_activation_time() -> None:
    clock = FakeClock()
    staged = KeyRecord("k", at(clock), at(clock, 900))
    current = schedule([staged], at(clock, 1), RETENTION)
    assert current.active_kid is None and current.published_kids == ("k",)
    assert successor_to_promote(current) == "k"
    assert schedule([], at(clock), RETENTION).active_kid is None
