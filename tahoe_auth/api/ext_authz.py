"""Envoy's ext_authz `Check` (envoy.service.auth.v3.Authorization): CheckRequest ->
authz.check.Gatekeeper -> CheckResponse.

Every request through Envoy comes here. The answer is always OK at the RPC level,
with the decision in `CheckResponse.status` and, when denied, a `denied_response`
with a small JSON body `{"error": ..., "message": ...}`:

    allowed                    upstream gets x-tahoe-* (overwrite); `authorization` and
                               other client-sent x-tahoe-* headers are removed
    no credential              401, www-authenticate: Bearer realm="tahoe"
    invalid/expired/revoked    401, www-authenticate: Bearer ... error="invalid_token"
    lacks the route permission 403, www-authenticate: Bearer ... error="insufficient_scope"
    suspended tenant, disabled
    subject, tenant-less key   403
    another tenant's resource  404 (not there, for the caller)
    cannot decide              503 + retry-after (database/Redis unreachable for a cold
                               credential, or an unexpected error): fail closed

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
import logging
import time
from functools import lru_cache
from typing import Any

import grpc
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3 import external_auth_pb2 as ext_authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_authz_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from tahoe_auth.authz import upstream
from tahoe_auth.authz.access import AccessRequest, bearer_credential
from tahoe_auth.authz.check import CheckContext, CheckOutcome, Gatekeeper, resource_tenant
from tahoe_auth.domain import decision
from tahoe_auth.kernel import logs, metrics
from tahoe_auth.kernel.cache import TTLCache

log = logging.getLogger("tahoe_auth.ext_authz")

SERVICE_NAME = "envoy.service.auth.v3.Authorization"
OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

_RPC_CODES = {401: code_pb2.UNAUTHENTICATED, 429: code_pb2.RESOURCE_EXHAUSTED, 503: code_pb2.UNAVAILABLE}
# The `error` of denial bodies: OAuth's `invalid_token` for bad credentials, else the reason.
_ERRORS = {decision.INVALID_CREDENTIAL: "invalid_token", decision.WRONG_TENANT: "not_found"}
UNAVAILABLE_MESSAGE = "authorization is temporarily unavailable; retry shortly"


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


def with_response_headers(cached: ext_authz.CheckResponse, headers: dict[str, str]) -> ext_authz.CheckResponse:
    response = ext_authz.CheckResponse()
    response.CopyFrom(cached)
    response.ok_response.response_headers_to_add.extend(_repeated_header(k, v) for k, v in headers.items())
    return response


def www_authenticate(reason: str, permission: str) -> str | None:
    """RFC 6750: no error code when no credential was sent; `invalid_token` for a bad
    one; `insufficient_scope` when the credential lacks the route's permission."""
    if reason == decision.NO_CREDENTIAL:
        return 'Bearer realm="tahoe"'
    if reason == decision.INVALID_CREDENTIAL:
        return 'Bearer realm="tahoe", error="invalid_token"'
    if reason == decision.PERMISSION_DENIED:
        return f'Bearer realm="tahoe", error="insufficient_scope", scope="{permission}"'
    return None


@lru_cache(maxsize=1024)
def _denied(http_status: int, error: str, message: str, challenge: str | None) -> ext_authz.CheckResponse:
    """Denials are few and fixed: built once each (callers must not mutate them)."""
    headers = [_header("content-type", "application/json")]
    if challenge:
        headers.append(_header("www-authenticate", challenge))
    if http_status == 503:
        headers.append(_header("retry-after", "1"))
    return ext_authz.CheckResponse(
        status=status_pb2.Status(code=_RPC_CODES.get(http_status, code_pb2.PERMISSION_DENIED), message=error),
        denied_response=ext_authz.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status),
            headers=headers,
            body=json.dumps({"error": error, "message": message}),
        ),
    )


def denied_response(outcome: CheckOutcome) -> ext_authz.CheckResponse:
    d = outcome.decision
    error = _ERRORS.get(d.reason, d.reason)
    response = _denied(outcome.http_status, error, d.message, www_authenticate(d.reason, d.permission))
    if not outcome.response_headers:
        return response
    extended = ext_authz.CheckResponse()
    extended.CopyFrom(response)
    extended.denied_response.headers.extend(_header(k, v) for k, v in outcome.response_headers.items())
    return extended


ERROR_RESPONSE = _denied(503, decision.UNAVAILABLE, UNAVAILABLE_MESSAGE, None)


class AuthorizationServicer(ext_authz_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, gatekeeper: Gatekeeper, max_cached: int = 50_000) -> None:
        self._gatekeeper = gatekeeper
        # Building an allowed CheckResponse costs more than the whole decision; the same
        # identity token means the same facts and audience, hence the same response.
        self._allowed: TTLCache[tuple[str, tuple[str, ...]], ext_authz.CheckResponse] = TTLCache(max_cached)

    def Check(self, request: ext_authz.CheckRequest, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            check = context_of(request)
            logs.request_id_var.set(check.request_id)
            logs.traceparent_var.set(request.attributes.request.http.headers.get("traceparent", ""))
            outcome = self._gatekeeper.check(check)
            if not outcome.allowed:
                _observe("denied", outcome.decision.reason, started)
                return denied_response(outcome)
            _observe("allowed", decision.ALLOW, started)
            key = (outcome.upstream_headers[upstream.IDENTITY], outcome.remove_headers)
            response = self._allowed.get(key)
            if response is None:
                response = allowed_response(outcome)
                self._allowed.put(key, response, time.time() + self._gatekeeper.identity_ttl)
            if outcome.response_headers:  # per request (rate limits): a copy, 3x cheaper than a rebuild
                response = with_response_headers(response, outcome.response_headers)
            return response
        except Exception:  # never raise into gRPC: deny (fail closed), and say why in the log
            log.exception("Check failed unexpectedly: denying with 503")
            _observe("error", "internal_error", started)
            return ERROR_RESPONSE


@lru_cache(maxsize=256)
def _metrics(outcome: str, reason: str) -> tuple[Any, Any]:
    """The labelled children, resolved once (labels() per call costs more than Check's logic)."""
    return metrics.CHECK_DECISIONS.labels(outcome, reason), metrics.CHECK_DURATION.labels(outcome)


def _observe(outcome: str, reason: str, started: float) -> None:
    counter, histogram = _metrics(outcome, reason)
    counter.inc()
    histogram.observe(time.perf_counter() - started)
