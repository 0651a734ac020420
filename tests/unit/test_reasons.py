"""The one table of decision reasons (domain/reasons.py) agrees with every surface that
reads it: the gRPC API's error mapping, the ErrorReason enum, Check's denials; and
Check's outcomes are immutable, with the HTTP status following the decision."""

from __future__ import annotations

import dataclasses
import json

import grpc
import pytest

from tahoe_auth.api import ext_authz as api
from tahoe_auth.api.errors import code_for, to_status
from tahoe_auth.authz.access import AccessRequest
from tahoe_auth.authz.check import CheckContext, CheckOutcome, Gatekeeper
from tahoe_auth.domain import decision, errors, reasons
from tahoe_auth.domain.permissions import PermissionSet
from tahoe_auth.domain.principal import Principal
from tahoe_auth.store.kv import StoreUnavailable
from tahoe_auth.v1 import errors_pb2

ROWS = list(reasons.REASONS.values())
DENIALS = [row for row in ROWS if row.name != reasons.ALLOW]
CHALLENGES = {
    reasons.NO_CHALLENGE: None,
    reasons.BEARER: 'Bearer realm="tahoe"',
    reasons.BEARER_INVALID_TOKEN: 'Bearer realm="tahoe", error="invalid_token"',
    reasons.BEARER_INSUFFICIENT_SCOPE: 'Bearer realm="tahoe", error="insufficient_scope", scope="a:b"',
}


def test_every_reason_the_code_names_is_in_the_table() -> None:
    declared = {
        decision.ALLOW,
        decision.NO_CREDENTIAL,
        decision.INVALID_TOKEN,
        decision.TENANT_SUSPENDED,
        decision.SUBJECT_DISABLED,
        decision.PERMISSION_DENIED,
        decision.NOT_FOUND,
        decision.TENANT_REQUIRED,
        decision.UNAVAILABLE,
        decision.RATE_LIMITED,
        decision.QUOTA_EXCEEDED,
        decision.MFA_ENROLLMENT_REQUIRED,
    }
    assert declared == set(reasons.REASONS)


@pytest.mark.parametrize("row", DENIALS, ids=lambda row: row.name)
def test_the_grpc_api_raises_the_rows_error_with_the_rows_code_and_error_info(row: reasons.Reason) -> None:
    assert row.error is not None
    raised = decision.denial(decision.Decision(False, row.name, "why", permission="a:b"))
    assert type(raised) is row.error
    assert code_for(raised) == grpc.StatusCode[row.grpc_code]
    assert raised.reason == row.error_reason
    assert errors_pb2.ErrorReason.Value(f"ERROR_REASON_{row.error_reason}") > 0  # ValueError if absent
    assert to_status(raised, "r").code == grpc.StatusCode[row.grpc_code]


@pytest.mark.parametrize("row", DENIALS, ids=lambda row: row.name)
def test_checks_denial_has_the_rows_status_code_body_and_challenge(row: reasons.Reason) -> None:
    d = decision.Decision(False, row.name, "why", permission="a:b")
    assert d.http_status == row.http_status
    response = api.denied_response(CheckOutcome(d))
    headers = {h.header.key: h.header.value for h in response.denied_response.headers}
    assert response.status.code == grpc.StatusCode[row.grpc_code].value[0]
    assert response.denied_response.status.code == row.http_status
    assert json.loads(response.denied_response.body) == {"error": row.name, "message": "why"}
    assert row.body_error == row.name  # one spelling
    assert headers.get("www-authenticate") == CHALLENGES[row.challenge]


def test_allowed_is_ok_and_raises_nothing() -> None:
    row = reasons.of(reasons.ALLOW)
    assert (row.grpc_code, row.http_status, row.error) == ("OK", 200, None)
    with pytest.raises(ValueError):
        decision.denial(decision.Decision(True, reasons.ALLOW, "ok"))


def test_an_undeclared_reason_has_no_status() -> None:
    with pytest.raises(KeyError):
        _ = decision.Decision(False, "made_up", "x").http_status


def test_store_outages_are_unavailable_without_the_drivers_words() -> None:
    outage = StoreUnavailable("Error 111 connecting to 10.0.0.5:6379")
    assert isinstance(outage, errors.Unavailable)
    assert code_for(outage) == grpc.StatusCode.UNAVAILABLE
    status = to_status(outage, "r")
    assert status.code == grpc.StatusCode.UNAVAILABLE and "10.0.0.5" not in status.details
    assert "10.0.0.5" in str(outage) and "10.0.0.5" in outage.detail  # for the logs


class _Evaluator:
    def evaluate(self, request: AccessRequest) -> decision.Decision:
        principal = Principal("t1", "u1", "user", PermissionSet.of(["transcription:*"]))
        return decision.decide(principal, request.required_permission)


class _Identity:
    ttl = 60

    def token_for(self, facts: object, audience: str) -> str:
        return f"id-{audience}"


class _Trusted:
    def caches_trusted(self) -> bool:
        return True

    def changes_applied(self) -> int:
        return 0


def _gate() -> Gatekeeper:
    return Gatekeeper(_Evaluator(), _Identity(), _Trusted())  # type: ignore[arg-type]


def _context() -> CheckContext:
    return CheckContext(AccessRequest("tok", "transcription:read", "", "transcription"))


def test_a_hook_cannot_change_the_outcome_it_is_given() -> None:
    errors_seen: list[Exception] = []

    def meddler(ctx: CheckContext, outcome: CheckOutcome) -> CheckOutcome:
        try:
            outcome.decision = decision.Decision(False, reasons.RATE_LIMITED, "no")  # type: ignore[misc]
        except dataclasses.FrozenInstanceError as exc:
            errors_seen.append(exc)
        with pytest.raises(TypeError):
            outcome.response_headers["x"] = "1"  # type: ignore[index]
        return outcome

    gate = _gate()
    gate.hooks.append(meddler)
    result = gate.check(_context())
    assert result.allowed and result.http_status == 200 and errors_seen


def test_a_hook_that_changes_nothing_returns_the_same_outcome() -> None:
    from tahoe_auth.authz.admission import AdmissionControl

    seen: list[CheckOutcome] = []
    unavailable = CheckOutcome(decision.Decision(False, reasons.UNAVAILABLE, "down"))
    control = AdmissionControl.__new__(AdmissionControl)  # the 503 path touches nothing
    assert control.check_hook(_context(), unavailable) is unavailable

    def passthrough(ctx: CheckContext, outcome: CheckOutcome) -> CheckOutcome:
        seen.append(outcome)
        return outcome

    gate = _gate()
    gate.hooks.append(passthrough)
    assert gate.check(_context()) is seen[0]


@pytest.mark.parametrize("reason", [reasons.RATE_LIMITED, reasons.QUOTA_EXCEEDED, reasons.NOT_FOUND])
def test_the_status_follows_the_decision_a_hook_returns(reason: str) -> None:
    def refuse(ctx: CheckContext, outcome: CheckOutcome) -> CheckOutcome:
        refused = dataclasses.replace(outcome.decision, allowed=False, reason=reason)
        return dataclasses.replace(outcome, decision=refused, response_headers={"retry-after": "1"})

    gate = _gate()
    allowed = gate.check(_context())
    gate.hooks.append(refuse)
    result = gate.check(_context())
    assert allowed.http_status == 200 and allowed.allowed
    assert not result.allowed and result.http_status == reasons.of(reason).http_status
    assert dict(result.response_headers) == {"retry-after": "1"}
    assert [f.name for f in dataclasses.fields(CheckOutcome)].count("http_status") == 0
