from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tahoe_auth.domain import permissions
from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.domain.permissions import PermissionSet, covers

segment = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
permission = st.builds(lambda r, a: f"{r}:{a}", segment, segment)
grant = st.builds(lambda r, a: f"{r}:{a}", st.one_of(segment, st.just("*")), st.one_of(segment, st.just("*")))


def reference_allows(grants: set[str], perm: str) -> bool:
    resource, action = perm.split(":")
    for g in grants:
        gr, ga = g.split(":")
        if gr in ("*", resource) and ga in ("*", action):
            return True
    return False


@given(st.sets(grant, max_size=6), permission)
def test_allows_matches_segmentwise_reference(grants: set[str], perm: str) -> None:
    assert PermissionSet.of(grants).allows(perm) == reference_allows(grants, perm)


@given(st.sets(grant, max_size=6), permission)
def test_relevant_grants_are_exactly_the_covering_ones(grants: set[str], perm: str) -> None:
    relevant = PermissionSet.of(grants).relevant_to(perm)
    assert set(relevant) == {g for g in grants if covers(g, perm)}
    assert bool(relevant) == PermissionSet.of(grants).allows(perm)


@given(grant, st.sets(grant, max_size=5))
def test_covers_all_never_lets_a_narrow_set_grant_a_wider_wildcard(wanted: str, held: set[str]) -> None:
    allowed = PermissionSet.of(held).covers_all([wanted])
    # Holding `x:*` (or broader) is required to grant `x:*`.
    assert allowed == any(covers(h, wanted) for h in held)
    if allowed and wanted == "*:*":
        assert "*:*" in held


@given(permission)
def test_full_wildcard_allows_everything(perm: str) -> None:
    assert PermissionSet.of(["*:*"]).allows(perm)


def test_examples() -> None:
    s = PermissionSet.of(["transcription:*", "users:read"])
    assert s.allows("transcription:read") and s.allows("transcription:write")
    assert s.allows("users:read") and not s.allows("users:write")
    assert not s.allows("transcriptions:read")
    assert s.missing(["users:write", "transcription:delete"]) == ["users:write"]


@pytest.mark.parametrize(
    "bad", ["", "users", ":read", "users:", "Users:read", "users:read:x", "us ers:read", "*x:read"]
)
def test_malformed_permissions_are_invalid_arguments(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        permissions.parse(bad)


def test_validate_sorts_and_dedupes() -> None:
    assert permissions.validate(["b:x", "a:y", "b:x"]) == ["a:y", "b:x"]


def test_builtin_roles_are_well_formed_and_nested() -> None:
    roles = {name: PermissionSet.of(grants) for name, grants in permissions.BUILTIN_ROLES.items()}
    for grants in permissions.BUILTIN_ROLES.values():
        permissions.validate(grants)
    assert roles["owner"].covers_all(permissions.BUILTIN_ROLES["admin"])
    assert roles["admin"].covers_all(permissions.BUILTIN_ROLES["member"])
    assert roles["member"].covers_all(permissions.BUILTIN_ROLES["viewer"])
    assert not roles["admin"].allows("tenant:write")
