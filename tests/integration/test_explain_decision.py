"""ExplainDecision: the decision Check would make, and why, for operators."""

from __future__ import annotations

import grpc
import pytest

from tahoe_auth.v1 import auth_pb2, decision_pb2, decision_pb2_grpc
from tests.scenarios import api_key, service_token, user_with_role
from tests.support import RunningServer, bearer, call_error, error_reason

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def explain(
    server: RunningServer, caller: str, credential: str = "", permission: str = "", **fields: str
) -> decision_pb2.ExplainDecisionResponse:
    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    request = decision_pb2.ExplainDecisionRequest(credential=credential, required_permission=permission, **fields)
    response: decision_pb2.ExplainDecisionResponse = stub.ExplainDecision(request, metadata=bearer(caller))
    return response


def test_explains_the_callers_own_credential(server: RunningServer) -> None:
    tenant = server.create_tenant()
    token = server.login(tenant).tokens.access_token
    allowed = explain(server, token, permission="transcription:write", upstream="transcription")
    assert (allowed.allowed, allowed.reason, allowed.http_status, allowed.rule) == (True, "allowed", 200, "*:*")
    assert allowed.principal.tenant_id == tenant.id
    assert allowed.credential.startswith("access token jti=")
    assert allowed.upstream_headers == {
        "x-tahoe-tenant-id": tenant.id,
        "x-tahoe-subject": tenant.owner_id,
        "x-tahoe-subject-type": "user",
        "x-tahoe-permissions": "*:*",
    }


def test_explains_a_denial_of_another_credential_in_the_tenant(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.login(tenant).tokens.access_token
    viewer = user_with_role(server, tenant, "viewer")
    denied = explain(server, owner, viewer, "transcription:write")
    assert (denied.allowed, denied.reason, denied.http_status) == (False, "permission_denied", 403)
    assert denied.rule == "no grant covers transcription:write"
    assert denied.upstream_headers == {}
    other_tenant = explain(server, owner, viewer, "", resource_tenant_id="someone-else")
    assert (other_tenant.reason, other_tenant.http_status) == ("not_found", 404)


def test_explaining_others_needs_audit_read_and_stays_in_the_tenant(server: RunningServer) -> None:
    tenant, other = server.create_tenant(), server.create_tenant()
    owner = server.login(tenant).tokens.access_token
    viewer = user_with_role(server, tenant, "viewer")
    error = call_error(explain, server, viewer, owner, "transcription:read")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error_reason(error) == "PERMISSION_DENIED"
    foreign = server.login(other).tokens.access_token
    error = call_error(explain, server, owner, foreign, "transcription:read")
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_only_platform_administrators_see_why_a_credential_is_invalid(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.login(tenant).tokens
    revoked = server.login(tenant).tokens
    server.auth.RevokeSession(
        auth_pb2.RevokeSessionRequest(session_id=revoked.session_id), metadata=bearer(owner.access_token)
    )
    for_owner = explain(server, owner.access_token, revoked.access_token, "transcription:read")
    assert (for_owner.reason, for_owner.http_status, for_owner.detail) == ("invalid_token", 401, "")
    for_admin = explain(server, server.platform_key, revoked.access_token, "transcription:read")
    assert for_admin.reason == "invalid_token" and "revoked" in for_admin.detail
    assert explain(server, server.platform_key, "", "").reason == "tenant_required"


def test_needs_a_credential(server: RunningServer) -> None:
    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    error = call_error(stub.ExplainDecision, decision_pb2.ExplainDecisionRequest(credential="x"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_explains_api_keys_and_service_tokens(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.login(tenant).tokens.access_token
    key_id, secret = api_key(server, tenant, ["transcription:read"])
    as_key = explain(server, owner, secret, "transcription:write")
    assert (as_key.allowed, as_key.reason, as_key.principal.subject) == (False, "permission_denied", key_id)
    assert as_key.credential.startswith("api key tahoe_sk_")
    account_id, token = service_token(server, tenant, ["transcription:read"])
    as_service = explain(server, owner, token, "transcription:read", upstream="transcription")
    assert as_service.allowed and as_service.upstream_headers["x-tahoe-subject-type"] == "service"
    assert as_service.upstream_headers["x-tahoe-subject"] == account_id
