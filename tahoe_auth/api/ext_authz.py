"""Envoy's ext_authz `Check` (envoy.service.auth.v3.Authorization): CheckRequest ->
authz.check.Gatekeeper -> CheckResponse.

Every request through Envoy comes here. The answer is always OK at the RPC level,
with the decision in `CheckResponse.status` and, when denied, a `denied_response`
with a small JSON body `{"error": ..., "message": ...}`:

    allowed                    upstream gets x-tahoe-* (overwrite); `authorization` and
                               other client-sent x-tahoe-* headers are removed
    no credential              401 missing_credential, www-authenticate: Bearer realm="tahoe"
    invalid/expired/revoked    401 invalid_token, www-authenticate: Bearer ... error="invalid_token"
    lacks the route permission 403 permission_denied, www-authenticate: Bearer ...
                               error="insufficient_scope", scope="<permission>"
    suspended tenant, disabled 403 tenant_suspended, subject_disabled, tenant_required
    subject, tenant-less key
    another tenant's resource  404 not_found (not there, for the caller)
    rate limit, quota          429 rate_limited, quota_exceeded (authz/admission.py)
    cannot decide              503 unavailable + retry-after (database/Redis unreachable
                               for a cold credential, or an unexpected error): fail closed

The reason's row in domain/reasons.py gives each denial its gRPC code, HTTP status,
body `error` (the reason itself) and challenge; metrics and logs use the same name.

Every answer but the 503 also carries the `ratelimit-*` headers of the limit that
counted the request (authz/admission.py check_hook; docs/usage.md).

Only a failure to answer at all (server down, timeout) is left to Envoy, whose
`status_on_error` is 503 as well. The handler runs outside the interceptor chain
(server.POLICIES) and never raises into gRPC.

What a route requires comes from its `context_extensions`:
    required_permission   e.g. transcription:write; absent = any valid credential
    upstream              the upstream's name = the identity token's audience
    route                 a stable name for the route (limits and usage by route)
    tenant_path_prefix    e.g. /v1/tenants/: the path segment after it names the
                          tenant the resource belongs to (another tenant's -> 404)
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, cast

import grpc
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3 import external_auth_pb2 as ext_authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_authz_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from tahoe_auth.api.ext_authz_common import UNAVAILABLE_MESSAGE, ObservedCheck
from tahoe_auth.authz import upstream
from tahoe_auth.authz.access import AccessRequest, bearer_credential
from tahoe_auth.authz.check import CheckContext, CheckOutcome, Gatekeeper, resource_tenant
from tahoe_auth.domain import decision, reasons
from tahoe_auth.kernel.cache import TTLCache

SERVICE_NAME = "envoy.service.auth.v3.Authorization"
OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def context_of(request: ext_authz.CheckRequest) -> CheckContext:
    attributes = request.attributes
    http = attributes.request.http
    headers = http.headers
    extensions = attributes.context_extensions
    audience = extensions.get("upstream", "") or upstream.DEFAULT_AUDIENCE
    return CheckContext(
        access=AccessRequest(
            credential=bearer_credential(headers.get("authorization", "")),
            required_permission=extensions.get("required_permission", ""),
            resource_tenant=resource_tenant(http.path, extensions.get("tenant_path_prefix", "")),
            upstream=audience,
        ),
        request_id=headers.get("x-request-id", ""),
        method=http.method,
        path=http.path,
        route=extensions.get("route", "") or audience,
        client_address=attributes.source.address.socket_address.address,
        client_tahoe_headers=tuple(name for name in headers if name.startswith(upstream.PREFIX)),
    )


def _header(name: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(header=HeaderValue(key=name, value=value), append_action=OVERWRITE)


def allowed_response(outcome: CheckOutcome) -> ext_authz.CheckResponse:
    """What the upstream gets; the same for a credential and route until the identity
    token changes (per-request response headers are added by `with_response_headers`)."""
    ok = ext_authz.OkHttpResponse(
        headers=[_header(k, v) for k, v in outcome.upstream_headers.items()],
        headers_to_remove=outcome.remove_headers,
    )
    return ext_authz.CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=ok)


@lru_cache(maxsize=4096)
def _repeated_header(name: str, value: str) -> HeaderValueOption:
    """Per-request headers whose values repeat (`ratelimit-limit`, `-reset`): built once.
    Adding a message to a response copies it, so sharing these is safe."""
    return _header(name, value)


def with_response_headers(cached: ext_authz.CheckResponse, headers: Mapping[str, str]) -> ext_authz.CheckResponse:
    response = ext_authz.CheckResponse()
    response.CopyFrom(cached)
    response.ok_response.response_headers_to_add.extend(_repeated_header(k, v) for k, v in headers.items())
    return response


@lru_cache(maxsize=1024)
def _denied(reason: str, message: str, permission: str) -> ext_authz.CheckResponse:
    """Denials are few and fixed: built once each (callers must not mutate them).
    Code, status, body `error` and challenge all come from the reason's row."""
    row = reasons.REASONS[reason]
    headers = [_header("content-type", "application/json")]
    challenge = row.www_authenticate(permission)
    if challenge:
        headers.append(_header("www-authenticate", challenge))
    if row.http_status == 503:
        headers.append(_header("retry-after", "1"))
    return ext_authz.CheckResponse(
        status=status_pb2.Status(code=code_pb2.Code.Value(row.grpc_code), message=row.body_error),
        denied_response=ext_authz.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=row.http_status),
            headers=headers,
            body=json.dumps({"error": row.body_error, "message": message}),
        ),
    )


def denied_response(outcome: CheckOutcome) -> ext_authz.CheckResponse:
    d = outcome.decision
    # Only the insufficient_scope challenge names the permission: keep the cache key small.
    scoped = reasons.REASONS[d.reason].challenge == reasons.BEARER_INSUFFICIENT_SCOPE
    permission = d.permission if scoped else ""
    response = _denied(d.reason, d.message, permission)
    if not outcome.response_headers:
        return response
    extended = ext_authz.CheckResponse()
    extended.CopyFrom(response)
    extended.denied_response.headers.extend(_header(k, v) for k, v in outcome.response_headers.items())
    return extended


ERROR_RESPONSE = _denied(decision.UNAVAILABLE, UNAVAILABLE_MESSAGE, "")


class AuthorizationServicer(ObservedCheck[ext_authz.CheckResponse], ext_authz_grpc.AuthorizationServicer):  # type: ignore[misc]
    error_response = ERROR_RESPONSE

    def __init__(self, gatekeeper: Gatekeeper, max_cached: int = 50_000) -> None:
        super().__init__(gatekeeper)
        # Building an allowed CheckResponse costs more than the whole decision; the same
        # identity token means the same facts and audience, hence the same response.
        # A reused decision keeps its response in its memo; this cache serves the rest.
        self._allowed: TTLCache[tuple[str, tuple[str, ...]], ext_authz.CheckResponse] = TTLCache(max_cached)

    def Check(self, request: ext_authz.CheckRequest, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            check = context_of(request)
            traceparent = request.attributes.request.http.headers.get("traceparent", "")
        except Exception:  # never raise into gRPC
            return self.fail_closed(started)
        return self.answer(check, traceparent, started)

    def denied(self, outcome: CheckOutcome) -> ext_authz.CheckResponse:
        return denied_response(outcome)

    def allowed(self, outcome: CheckOutcome) -> ext_authz.CheckResponse:
        memo = outcome.memo
        response = memo.get(_MEMO) if memo is not None else None
        if response is None:
            key = (outcome.upstream_headers[upstream.IDENTITY], outcome.remove_headers)
            response = self._allowed.get(key)
            if response is None:
                response = allowed_response(outcome)
                self._allowed.put(key, response, time.time() + self._gatekeeper.identity_ttl)
            if memo is not None:
                memo[_MEMO] = response
        if outcome.response_headers:  # per request (rate limits): a copy, 3x cheaper than a rebuild
            return with_response_headers(cast(ext_authz.CheckResponse, response), outcome.response_headers)
        return cast(ext_authz.CheckResponse, response)


_MEMO = "grpc"
