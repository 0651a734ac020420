"""The isolation matrix (tests/integration/test_isolation_matrix.py) through the JSON
API: every binding of every governed method, filled with tenant B's identifiers and
sent with the token of tenant A's owner through Envoy's transcoder, answers exactly as
the same request over gRPC (the same HTTP status for the gRPC code, the same ErrorInfo
reason): naming B is NOT_FOUND or PERMISSION_DENIED, never data. In A's own tenant
with B's resource ids, whatever the answer, no B data is in it and nothing crashes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message

from tests import http_rules, isolation
from tests.e2e import stack as e2e

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]

# The gRPC code -> the HTTP status the transcoder answers (google/rpc/code.proto's mapping).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


@pytest.fixture(scope="module")
def transport() -> str:
    """Check's transport does not matter here: the JSON API bypasses Check."""
    return "http"


@pytest.fixture(scope="module")
def world(live: e2e.Stack) -> Iterator[isolation.World]:
    yield isolation.build_world(live.auth)


def over_grpc(world: isolation.World, service: Any, method: Any, request: Any, token: str) -> tuple[int, str]:
    """(HTTP status the gRPC outcome maps to, ErrorInfo reason or "")."""
    from tests import support

    call = isolation.stub_method(world.server, service, method)
    try:
        call(request, metadata=support.bearer(token))
    except grpc.RpcError as error:
        return HTTP_STATUS[error.code()], support.error_reason(error)
    return 200, ""


def over_json(live: e2e.Stack, rule: http_rules.Rule, call: http_rules.HttpCall, token: str) -> tuple[int, str, str]:
    """(HTTP status, ErrorInfo reason or "", the body as text)."""
    if rule.method.server_streaming:
        with e2e.open_stream(live.port, call.path, token) as stream:
            if stream.status != 200:
                body = stream.error_body()
                return stream.status, e2e.error_reason(body), str(body)
            return 200, "", str(stream.next_message())
    response = live.call(call.method, call.path, token=token, body=call.body)
    reason = e2e.error_reason(response.body) if response.status != 200 else ""
    return response.status, reason, str(response.body)


# For the ids the matrix leaves empty (webhook endpoints, signing keys): a URL cannot
# hold an empty segment, and `.../webhookEndpoints/` would be another method's path.
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def name_every_path_id(request: message.Message, rules: list[http_rules.Rule]) -> None:
    for rule in rules:
        for path in rule.path_fields():
            *parents, last = path.split(".")
            target = request
            for part in parents:
                target = getattr(target, part)
            if not getattr(target, last):
                setattr(target, last, UNKNOWN_ID)


@pytest.mark.parametrize(("service", "method"), isolation.METHODS, ids=isolation.METHOD_IDS)
def test_tenant_a_owner_cannot_reach_tenant_b_over_json(
    live: e2e.Stack, world: isolation.World, service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor
) -> None:
    server, b = world.server, world.b
    rules = http_rules.method_rules(service, method)
    assert rules, f"{method.name} has no HTTP route"
    request = isolation.request_for(method, b)
    name_every_path_id(request, rules)
    public = isolation.is_public(service, method)
    token = isolation.fresh_owner_token(server, world.a)

    if method.name in isolation.CEREMONY_STARTS:
        # Answers for any tenant with nothing of its own (see tests/isolation.py): the
        # leak check below covers it.
        pass
    elif public or isolation.names_another_tenant(request):
        # Refused over gRPC (the gRPC matrix says so), hence changes nothing: the same
        # request over JSON must be refused alike, on every binding.
        expected = over_grpc(world, service, method, request, token)
        assert expected[0] in (400, 401, 403, 404), (method.name, expected)
        for rule in rules:
            status, reason, body = over_json(live, rule, http_rules.to_http(rule, request), token)
            assert (status, reason) == expected, (rule.name, body)

    # In A's own tenant (a URL cannot leave the tenant out: A's id) with B's other ids.
    own = isolation.clear_tenant(request)
    for rule in rules:
        call = http_rules.to_http(rule, own, overrides={"tenant_id": world.a.id, "tenant.id": world.a.id})
        status, _, body = over_json(live, rule, call, isolation.fresh_owner_token(server, world.a))
        assert status < 500, (rule.name, status, body)
        leaked = [value for value in b.secrets() if value in body]
        assert not leaked, f"{rule.name} returned tenant B's data: {leaked}"
