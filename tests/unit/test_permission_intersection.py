"""Property tests for wildcard permissions beyond matching: intersection (an API key's
scopes within its owner's permissions) and the granting rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tahoe_auth.domain.permissions import PermissionSet, covers

segment = st.sampled_from(["users", "roles", "transcription", "read", "write", "x"])
wild = st.one_of(segment, st.just("*"))
permission = st.builds(lambda r, a: f"{r}:{a}", segment, segment)
grant = st.builds(lambda r, a: f"{r}:{a}", wild, wild)
grants = st.sets(grant, max_size=6)


@given(grants, grants, permission)
def test_intersection_allows_exactly_what_both_allow(a: set[str], b: set[str], perm: str) -> None:
    both = PermissionSet.of(a).intersect(PermissionSet.of(b))
    assert both.allows(perm) == (PermissionSet.of(a).allows(perm) and PermissionSet.of(b).allows(perm))


@given(grants, grants)
def test_intersection_is_covered_by_both_sides(a: set[str], b: set[str]) -> None:
    both = PermissionSet.of(a).intersect(PermissionSet.of(b))
    assert PermissionSet.of(a).covers_all(both.grants)
    assert PermissionSet.of(b).covers_all(both.grants)


@given(grants, grants)
def test_intersection_is_symmetric_in_effect(a: set[str], b: set[str]) -> None:
    ab = PermissionSet.of(a).intersect(PermissionSet.of(b))
    ba = PermissionSet.of(b).intersect(PermissionSet.of(a))
    assert ab.covers_all(ba.grants) and ba.covers_all(ab.grants)


@given(grants, grant)
def test_a_set_can_grant_what_it_covers_and_nothing_wider(held: set[str], wanted: str) -> None:
    allowed = PermissionSet.of(held).covers_all([wanted])
    # Granting `wanted` is allowed exactly when one held grant covers it segment-wise,
    # so whatever the grantee can do, the granter could already do.
    assert allowed == any(covers(h, wanted) for h in held)


def test_examples() -> None:
    scopes = PermissionSet.of(["transcription:*", "users:read"])
    owner = PermissionSet.of(["transcription:read", "*:read"])
    assert sorted(scopes.intersect(owner).grants) == ["transcription:read", "users:read"]
    assert not PermissionSet.of(["*:*"]).intersect(PermissionSet.of([])).grants
