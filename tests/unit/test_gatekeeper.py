"""The Gatekeeper's reuse of allowed decisions: per credential and route, cleared by any
change notification, never past the credential's expiry, not while notifications
might be missed; hooks still run on every request. Allowed responses never pass the
caller's credential on."""

from __future__ import annotations

import time
from typing import Any

from tahoe_auth.api import ext_authz as api
from tahoe_auth.authz import check as check_module
from tahoe_auth.authz.access import AccessRequest
from tahoe_auth.authz.check import CheckContext, CheckOutcome, Gatekeeper
from tahoe_auth.domain import decision
from tahoe_auth.domain.permissions import PermissionSet
from tahoe_auth.domain.principal import Principal
from tahoe_auth.store.kv import MemoryStore


class Evaluator:
    def __init__(self, expires_at: int | None = None) -> None:
        self.calls = 0
        self.allow = True
        self.expires_at = expires_at

    def evaluate(self, request: AccessRequest) -> decision.Decision:
        self.calls += 1
        if not self.allow:
            return decision.unauthenticated(decision.INVALID_TOKEN, "revoked")
        principal = Principal("t1", "u1", "user", PermissionSet.of(["transcription:*"]), expires_at=self.expires_at)
        return decision.decide(principal, request.required_permission)


class Identity:
    ttl = 60

    def token_for(self, facts: Any, audience: str) -> str:
        return f"id-{audience}"


class NotLive(MemoryStore):
    def notifications_live(self) -> bool:
        return False


class TrustWhileLive:
    """Trust as the change feed gives it when only the store's subscription counts."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def caches_trusted(self) -> bool:
        return self._store.notifications_live()

    def changes_applied(self) -> int:
        return 0


def gatekeeper(evaluator: Evaluator, store: MemoryStore | None = None) -> tuple[Gatekeeper, MemoryStore]:
    store = store or MemoryStore()
    gate = Gatekeeper(evaluator, Identity(), TrustWhileLive(store))  # type: ignore[arg-type]
    store.subscribe(gate.apply_change)  # as the composition root wires it
    return gate, store


def context(
    credential: str = "tok", permission: str = "transcription:read", tahoe_headers: tuple[str, ...] = ()
) -> CheckContext:
    return CheckContext(AccessRequest(credential, permission, "", "transcription"), client_tahoe_headers=tahoe_headers)


def test_an_allowed_decision_is_reused_for_the_same_credential_and_route() -> None:
    evaluator = Evaluator()
    gate, _ = gatekeeper(evaluator)
    first, second = gate.check(context()), gate.check(context())
    assert first.allowed and second.allowed and evaluator.calls == 1
    assert second.upstream_headers == first.upstream_headers
    assert second.upstream_headers is not first.upstream_headers  # callers may change theirs
    gate.check(context(permission="transcription:write"))
    gate.check(context(credential="other"))
    assert evaluator.calls == 3


class ChangeDuringEvaluation(Evaluator):
    """A change reaches this instance while the decision is being made (after its facts
    were read): the decision may be stale and must not be kept."""

    def __init__(self) -> None:
        super().__init__()
        self.applied = 0

    def caches_trusted(self) -> bool:
        return True

    def changes_applied(self) -> int:
        return self.applied

    def evaluate(self, request: AccessRequest) -> decision.Decision:
        self.applied += 1
        return super().evaluate(request)


def test_a_decision_made_while_a_change_arrived_is_not_reused() -> None:
    racing = ChangeDuringEvaluation()
    gate = Gatekeeper(racing, Identity(), racing)  # type: ignore[arg-type]
    assert gate.check(context()).allowed and gate.check(context()).allowed
    assert racing.calls == 2


def test_any_change_notification_clears_them() -> None:
    evaluator = Evaluator()
    gate, store = gatekeeper(evaluator)
    assert gate.check(context()).allowed
    evaluator.allow = False
    store.publish("session.revoked", "t1:s1")
    assert gate.check(context()).http_status == 401


def test_they_end_with_the_credential_and_soon_in_any_case() -> None:
    expiring = Evaluator(expires_at=int(time.time()) - 1)
    gate, _ = gatekeeper(expiring)
    gate.check(context())
    gate.check(context())
    assert expiring.calls == 2
    assert check_module.DECISION_TTL <= 0.5
    evaluator = Evaluator()
    gate, _ = gatekeeper(evaluator)
    gate.check(context())
    time.sleep(check_module.DECISION_TTL + 0.05)
    gate.check(context())
    assert evaluator.calls == 2


def test_nothing_is_reused_while_notifications_might_be_missed() -> None:
    evaluator = Evaluator()
    gate, _ = gatekeeper(evaluator, NotLive())
    gate.check(context())
    gate.check(context())
    assert evaluator.calls == 2


def test_denials_are_not_reused_and_hooks_run_every_time() -> None:
    evaluator = Evaluator()
    evaluator.allow = False
    gate, _ = gatekeeper(evaluator)
    gate.check(context())
    gate.check(context())
    assert evaluator.calls == 2
    evaluator.allow = True
    runs: list[str] = []

    def hook(ctx: CheckContext, outcome: CheckOutcome) -> CheckOutcome:
        runs.append(ctx.access.credential)
        return outcome

    gate.hooks.append(hook)
    gate.check(context())
    gate.check(context())
    assert runs == ["tok", "tok"]


def test_every_allowed_response_removes_the_credential() -> None:
    gate, _ = gatekeeper(Evaluator())
    fresh = gate.check(context(tahoe_headers=("x-tahoe-role", "x-tahoe-tenant-id")))
    reused = gate.check(context(tahoe_headers=("x-tahoe-role", "x-tahoe-tenant-id")))
    plain = gate.check(context(credential="other"))
    for outcome in (fresh, reused, plain):
        response = api.allowed_response(outcome)
        assert response.ok_response.headers_to_remove[0] == "authorization"
        assert "authorization" not in {option.header.key for option in response.ok_response.headers}
        rate_limited = api.with_response_headers(response, {"ratelimit-remaining": "1"})
        assert "authorization" in rate_limited.ok_response.headers_to_remove
    assert list(api.allowed_response(fresh).ok_response.headers_to_remove) == ["authorization", "x-tahoe-role"]
    assert list(api.allowed_response(plain).ok_response.headers_to_remove) == ["authorization"]


def test_with_response_headers_is_replace_on_every_field() -> None:
    """The hooks' shortcut for `dataclasses.replace`: it must carry every other field
    over (a field added to CheckOutcome and not to the shortcut fails here)."""
    import dataclasses

    principal = Principal("t1", "u1", "user", PermissionSet.of(["transcription:*"]))
    outcome = CheckOutcome(
        decision.decide(principal, "transcription:read"),
        {"ratelimit-limit": "1"},
        {"x-tahoe-subject": "u1"},
        ("authorization",),
        {"http": b"HTTP/1.1 200 OK"},
    )
    for f in dataclasses.fields(CheckOutcome):
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        assert getattr(outcome, f.name) != default, f"give {f.name} a non-default value here"
    headers = {"ratelimit-limit": "2", "ratelimit-remaining": "1"}
    shortcut, replaced = outcome.with_response_headers(headers), dataclasses.replace(outcome, response_headers=headers)
    assert shortcut == replaced
    assert shortcut.memo is replaced.memo is outcome.memo  # not compared by ==
