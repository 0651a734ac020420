"""One ordered interceptor chain for every RPC:

    RequestId -> AccessLog -> ClientAddress -> HashAdmission -> Validate -> CsrfHeader
        -> RateLimit -> Authenticate -> Authorize -> (servicer)

with exceptions turned into statuses in one place (api/errors.py) at the outer edge.
Each step is a small callable `step(call, proceed)`; the chain runs inside a single
grpc.ServerInterceptor so that the hot path pays for one wrapper, not four.

The chain also owns request parsing: grpc's own answer to bytes that do not parse (or
carry invalid UTF-8) is INTERNAL with a logged traceback. Every method's deserializer
is wrapped so that such a request reaches the chain as `Undecodable` and is answered
INVALID_ARGUMENT with an ErrorInfo, like any other bad input.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from tahoe_auth.api import boundary
from tahoe_auth.api.errors import code_for, to_status
from tahoe_auth.api.forwarded import TrustedProxies, peer_address
from tahoe_auth.authz.access import bearer_credential
from tahoe_auth.authz.authenticator import Authenticator
from tahoe_auth.domain import decision as decisions
from tahoe_auth.domain import errors, mfa, passwords
from tahoe_auth.domain.principal import USER, Principal
from tahoe_auth.kernel import logs
from tahoe_auth.kernel.metrics import RPC_DURATION
from tahoe_auth.services.context import CallContext

log = logging.getLogger("tahoe_auth.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/=+-]{1,128}\Z")
# W3C trace context: version-traceid-parentid-flags (all-zero ids are invalid).
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}\Z")


def valid_traceparent(value: str) -> str:
    """The header if it is well-formed W3C trace context, else "" (never a made-up one)."""
    value = value.strip().lower()
    return value if _TRACEPARENT.match(value) and not value.startswith("ff") else ""


_call_var: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("call", default=None)


def current_call() -> CallContext:
    """The CallContext of the RPC being served (for servicers)."""
    return _call_var.get() or CallContext()


@dataclass(frozen=True)
class MethodPolicy:
    """What a method needs: nothing (`public`), a valid credential (the default), a
    `permission` in the tenant the request names, or a platform administrator."""

    public: bool = False
    permission: str = ""
    platform_only: bool = False
    log_calls: bool = True
    # False: the chain hands the method its handler untouched (no steps, no error
    # mapping). Only for methods that own their error handling: ext_authz Check.
    intercept: bool = True
    # The method may hash a password (argon2): admitted by HashAdmission.
    hashes_password: bool = False
    # A browser session method (cookie-borne credential): requires the CSRF header.
    browser: bool = False
    # Enrolling a second factor: the one thing a restricted enrollment token may do.
    enrollment: bool = False
    # Sensitive: a user who has (or must have) a second factor needs a session that
    # passed it within the tenant's step-up window (MFA_REQUIRED otherwise).
    step_up: bool = False


@dataclass
class Call:
    method: str
    context: grpc.ServicerContext
    metadata: Mapping[str, str]
    policy: MethodPolicy
    request_id: str = ""
    principal: Principal | None = None
    extras: dict[str, str] = field(default_factory=dict)
    # The request message (for steps that limit by its fields, such as Login's account).
    request: Any = None
    # Set by the ClientAddress step; until then (or without it) the peer's.
    client_address: str = ""

    def address(self) -> str:
        return self.client_address or peer_address(self.context.peer())

    def as_context(self) -> CallContext:
        return CallContext(
            principal=self.principal,
            client_address=self.address(),
            user_agent=self.metadata.get("user-agent", ""),
            request_id=self.request_id,
        )


class Step(Protocol):
    def __call__(self, call: Call, proceed: Callable[[], Any]) -> Any: ...


class ClientAddress:
    """Decides once, before anything limits or records by it, which address the call
    comes from: the peer's, or the one a trusted proxy forwarded (api/forwarded.py)."""

    def __init__(self, proxies: TrustedProxies) -> None:
        self._proxies = proxies

    def __call__(self, call: Call, proceed: Callable[[], Any]) -> Any:
        call.client_address = self._proxies.client_address(call.context.peer(), call.metadata)
        return proceed()


class CsrfHeader:
    """Browser session methods (`MethodPolicy.browser`) authenticate by a cookie, which a
    browser attaches to cross-site requests too: they also need a header that no
    cross-site form can send, and no cross-origin script without a CORS preflight."""

    def __call__(self, call: Call, proceed: Callable[[], Any]) -> Any:
        if call.policy.browser and not csrf_header_present(call.metadata):
            raise errors.CsrfHeaderMissing(CSRF_HEADER)
        return proceed()


CSRF_HEADER = "x-csrf-protection"


def csrf_header_present(metadata: Mapping[str, str]) -> bool:
    """Any non-empty value counts (send `1`): its presence is what a forged request lacks."""
    return bool(metadata.get(CSRF_HEADER, "").strip())


class RequestId:
    """Honours a well-formed incoming `x-request-id`, else makes one."""

    def __call__(self, call: Call, proceed: Callable[[], Any]) -> Any:
        incoming = call.metadata.get("x-request-id", "")
        call.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        logs.request_id_var.set(call.request_id)
        logs.traceparent_var.set(valid_traceparent(call.metadata.get("traceparent", "")))
        logs.tenant_var.set("")
        logs.subject_var.set("")
        if call.policy.log_calls:
            call.context.set_trailing_metadata((("x-request-id", call.request_id),))
        return proceed()


class AccessLog:
    """One log line per call (unless the method opts out) and the latency histogram by
    method and gRPC code (for every method). A streaming call is timed until its
    handler returns the stream."""

    def __call__(self, call: Call, proceed: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        reason, code, field = "OK", "OK", ""
        try:
            return proceed()
        except errors.InvalidArgument as exc:
            reason, code, field = exc.reason, code_for(exc).name, exc.field
            raise
        except errors.TahoeError as exc:
            reason, code = exc.reason, code_for(exc).name
            raise
        except Exception as exc:
            reason = code = "INTERNAL"
            if _is_abort(exc):
                reason = code = "ABORTED_BY_HANDLER"
            raise
        finally:
            elapsed = time.perf_counter() - started
            RPC_DURATION.labels(call.method, code).observe(elapsed)
            timing = {"duration_ms": round(elapsed * 1000, 2)}
            if field:
                # Bad input is the caller's mistake or a probe: worth a look, never a traceback.
                log.warning("rpc %s %s field=%s", call.method, reason, field, extra=timing)
            elif call.policy.log_calls:
                log.info("rpc %s %s", call.method, reason, extra=timing)


class HashAdmission:
    """A method that hashes a password holds its thread (the Chain's hashing pool) while
    it waits for the argon2 workers: only as many as the hasher admits may wait
    (`BoundedHasher.admit`). The others are refused here, UNAVAILABLE with RetryInfo,
    before any other work (a database read, a Redis round trip), so that their thread
    is free again at once: a burst of logins is answered in microseconds per call."""

    def __init__(self, hasher: passwords.BoundedHasher) -> None:
        self._hasher = hasher

    def __call__(self, call: Call, proceed: Callable[[], Any]) -> Any:
        if not call.policy.hashes_password:
            return proceed()
        with self._hasher.admit():
            return proceed()


class Validate:
    """The boundary rule (api/boundary.py) on every request, before anything reads it."""

    def __call__(self, call: Call, proceed: Callable[[], Any]) -> Any:
        if isinstance(call.request, Undecodable):
            raise errors.InvalidArgument("request", f"the request is not a valid {call.request.message_name} message")
        if call.request is not None:
            boundary.check_request(call.request)
        return proceed()


class Authenticate:
    """Resolves the `authorization: Bearer …` credential. Public methods ignore it."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    def __call__(self, call: Call, proceed: Callable[[], Any]) -> Any:
        if call.policy.public:
            return proceed()
        credential = bearer_credential(call.metadata.get("authorization", ""))
        if not credential:
            raise errors.Unauthenticated("send `authorization: Bearer <token>`")
        call.principal = self._authenticator.authenticate(credential)
        logs.tenant_var.set(call.principal.tenant_id)
        logs.subject_var.set(f"{call.principal.subject_type}:{call.principal.subject}")
        return proceed()


class Authorize:
    """Applies the method's declared policy with the shared decision function. A
    request's `tenant_id` names the tenant it is about: another tenant's id gets
    NOT_FOUND (no existence oracle) unless the caller is platform-scoped."""

    def __call__(self, call: Call, proceed: Callable[[], Any]) -> Any:
        principal = call.principal
        if principal is not None:
            outcome = decisions.decide(
                principal,
                call.policy.permission,
                requested_tenant(call.request),
                platform_only=call.policy.platform_only,
                allowed_restriction=mfa.ENROLLMENT_RESTRICTION if call.policy.enrollment else "",
            )
            if not outcome.allowed:
                raise denial_error(outcome)
            if call.policy.step_up and principal.subject_type == USER:
                mfa.require_fresh(principal.mfa, time.time())
        return proceed()


def requested_tenant(request: Any) -> str:
    tenant_id = getattr(request, "tenant_id", "")
    return tenant_id if isinstance(tenant_id, str) else ""


def denial_error(outcome: decisions.Decision) -> errors.TahoeError:
    return decisions.denial(outcome)


@dataclass(frozen=True)
class Undecodable:
    """What a request whose bytes did not parse as `message_name` becomes."""

    message_name: str


def tolerant(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any] | None:
    """`deserializer`, answering `Undecodable` instead of raising (grpc would log a
    traceback and answer INTERNAL)."""
    if deserializer is None:
        return None
    message_class = getattr(deserializer, "__self__", None)
    name = getattr(getattr(message_class, "DESCRIPTOR", None), "full_name", method)
    undecodable = Undecodable(name)

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, or invalid UTF-8 in a string field
            return undecodable

    return deserialize


class Chain(grpc.ServerInterceptor):  # type: ignore[misc]
    """`hashing_pool`: the threads that run methods with `hashes_password` (grpc's
    per-handler `experimental_thread_pool`), so that they never take, or queue
    Envoy's Check behind them for, the server's own threads."""

    def __init__(
        self,
        steps: list[Step],
        policies: Mapping[str, MethodPolicy],
        default: MethodPolicy,
        hashing_pool: futures.ThreadPoolExecutor | None = None,
    ) -> None:
        self._steps = steps
        self._policies = policies
        self._default = default
        self._hashing_pool = hashing_pool
        # Wrapped handlers by method: grpc asks on every call, and the lookup plus the
        # wrapping cost more than a warm Check's own logic. The handlers registered
        # before the server starts are all there are; unknown methods are not kept.
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            handler = continuation(details)
            if handler is None:
                return None
            wrapped = self._handlers[method] = self._wrap_handler(method, handler)
        return wrapped

    def _wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        policy = self._policies.get(method, self._default)
        deserialize = tolerant(handler.request_deserializer, method)
        serialize = handler.response_serializer
        if handler.unary_unary is not None:
            unary = handler.unary_unary
            if policy.intercept:
                unary = self._wrap_unary(method, policy, unary)
                if policy.hashes_password and self._hashing_pool is not None:
                    unary.experimental_thread_pool = self._hashing_pool  # type: ignore[attr-defined]
            else:
                unary = _refusing_undecodable(method, unary)
            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=deserialize, response_serializer=serialize
            )
        if handler.unary_stream is not None:
            stream = handler.unary_stream
            if policy.intercept:
                stream = self._wrap_stream(method, policy, stream)
            else:
                stream = _refusing_undecodable(method, stream)
            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=deserialize, response_serializer=serialize
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _refusing_undecodable_stream(method, handler.stream_unary),
                request_deserializer=deserialize,
                response_serializer=serialize,
            )
        return grpc.stream_stream_rpc_method_handler(
            _refusing_undecodable_stream(method, handler.stream_stream),
            request_deserializer=deserialize,
            response_serializer=serialize,
        )

    def _run(self, call: Call, innermost: Callable[[], Any]) -> Any:
        def proceed_from(index: int) -> Any:
            if index == len(self._steps):
                _call_var.set(call.as_context())
                return innermost()
            return self._steps[index](call, lambda: proceed_from(index + 1))

        return proceed_from(0)

    def _wrap_unary(
        self, method: str, policy: MethodPolicy, behavior: Callable[[Any, grpc.ServicerContext], Any]
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            call = Call(method, context, dict(context.invocation_metadata()), policy, request=request)
            try:
                return self._run(call, lambda: behavior(request, context))
            except Exception as exc:
                _abort(context, exc, call.request_id)

        return wrapped

    def _wrap_stream(
        self, method: str, policy: MethodPolicy, behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]]
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = Call(method, context, dict(context.invocation_metadata()), policy, request=request)
            try:
                stream = self._run(call, lambda: behavior(request, context))
                yield from stream
            except Exception as exc:
                _abort(context, exc, call.request_id)

        return wrapped


def _abort(context: grpc.ServicerContext, exc: Exception, request_id: str) -> None:
    if _is_abort(exc):
        raise exc
    context.abort_with_status(to_status(exc, request_id))


def _is_abort(exc: Exception) -> bool:
    # grpc raises a bare Exception from context.abort(); let it through untouched.
    return type(exc) is Exception


def _refuse(context: grpc.ServicerContext, method: str, request: Undecodable) -> None:
    log.warning("rpc %s INVALID_ARGUMENT field=request (does not parse as %s)", method, request.message_name)
    error = errors.InvalidArgument("request", f"the request is not a valid {request.message_name} message")
    context.abort_with_status(to_status(error, ""))


def _refusing_undecodable(method: str, behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Any:
    """For handlers outside the chain (Check); in the chain, the Validate step refuses
    undecodable requests, with the request id and the access log line."""

    def checked(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            _refuse(context, method, request)
        return behavior(request, context)

    return checked


def _refusing_undecodable_stream(method: str, behavior: Callable[[Iterator[Any], grpc.ServicerContext], Any]) -> Any:
    def checked(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        def parsed() -> Iterator[Any]:
            for request in requests:
                if isinstance(request, Undecodable):
                    _refuse(context, method, request)
                yield request

        return behavior(parsed(), context)

    return checked
