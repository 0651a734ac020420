"""The gRPC server (all services on one port) and its lifecycle.

Sync `grpc.server` with a small thread pool: measured on this 2-core machine it gave
higher throughput and a much shorter tail than grpc.aio for the Check hot path (see
bench/server_model.py and the README). Slow work (argon2) runs in niced worker processes;
the calls that wait for it run on their own few threads, and only a bounded number of
them may wait (HashAdmission).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
import time
import uuid
from concurrent import futures
from types import FrameType

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tahoe_auth import tracing
from tahoe_auth.api import ext_authz
from tahoe_auth.api.account_servicer import AccountServicer
from tahoe_auth.api.audit_servicer import AuditServicer
from tahoe_auth.api.auth_servicer import AuthServicer
from tahoe_auth.api.browser_servicer import BrowserSessionServicer
from tahoe_auth.api.dashboard_servicer import DashboardServicer
from tahoe_auth.api.decision_servicer import DecisionServicer
from tahoe_auth.api.envoy_ratelimit import EnvoyRateLimitServicer
from tahoe_auth.api.ext_authz_http import HttpAuthzServer, HttpCheck
from tahoe_auth.api.forwarded import TrustedProxies
from tahoe_auth.api.interceptors import (
    AccessLog,
    Authenticate,
    Authorize,
    Chain,
    ClientAddress,
    CsrfHeader,
    HashAdmission,
    MethodPolicy,
    RequestId,
    Step,
    Validate,
)
from tahoe_auth.api.key_servicer import KeyServicer
from tahoe_auth.api.mfa_servicer import MfaServicer
from tahoe_auth.api.rate_limit import RateLimit
from tahoe_auth.api.tenant_servicer import TenantServicer, TenantUseCases
from tahoe_auth.api.usage_servicer import UsageServicer
from tahoe_auth.api.webhook_servicer import WebhookServicer
from tahoe_auth.app import App
from tahoe_auth.authz.authenticator import InvalidCredential
from tahoe_auth.check_workers import CheckWorkers
from tahoe_auth.domain import tokens
from tahoe_auth.domain.principal import USER
from tahoe_auth.health import HealthReporter
from tahoe_auth.http_side import SideServer
from tahoe_auth.v1 import (
    account_pb2,
    account_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    dashboard_pb2,
    dashboard_pb2_grpc,
    decision_pb2,
    decision_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    mfa_pb2,
    mfa_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)

log = logging.getLogger(__name__)

WARM_UP_CALLS = 8
GRACE_SECONDS = 10.0
"""After the drain (settings.drain_seconds), how long in-flight calls may still finish."""
HASHING_SPARE_THREADS = 2

AUTH = "/tahoe_auth.v1.AuthService/"
DECISION = "/tahoe_auth.v1.DecisionService/"
TENANT = "/tahoe_auth.v1.TenantService/"
USAGE = "/tahoe_auth.v1.UsageService/"
AUDIT = "/tahoe_auth.v1.AuditService/"
WEBHOOKS = "/tahoe_auth.v1.WebhookService/"
KEYS = "/tahoe_auth.v1.KeyService/"
BROWSER = "/tahoe_auth.v1.BrowserSessionService/"
DASHBOARD = "/tahoe_auth.v1.DashboardService/"
MFA = "/tahoe_auth.v1.MfaService/"
ACCOUNT = "/tahoe_auth.v1.AccountService/"
PUBLIC = MethodPolicy(public=True)
# Methods that may hash a password: on their own threads, admitted by HashAdmission.
PUBLIC_HASHING = MethodPolicy(public=True, hashes_password=True)
# A valid credential; the method acts on the caller itself, and the use case requires
# the permission named in the comment when the caller acts on someone else.
SELF_SERVICE = MethodPolicy()
PLATFORM_ONLY = MethodPolicy(platform_only=True)
USAGE_WRITE = MethodPolicy(permission="usage:write")
USAGE_READ = MethodPolicy(permission="usage:read")
AUDIT_READ = MethodPolicy(permission="audit:read")
WEBHOOKS_READ = MethodPolicy(permission="webhooks:read")
WEBHOOKS_WRITE = MethodPolicy(permission="webhooks:write")


# Enrolling a second factor: also for the restricted token of a login that must enroll.
ENROLLMENT = MethodPolicy(enrollment=True)


def needs(permission: str, hashes_password: bool = False, step_up: bool = False) -> MethodPolicy:
    return MethodPolicy(permission=permission, hashes_password=hashes_password, step_up=step_up)


def sensitive(permission: str) -> MethodPolicy:
    """Creates credentials or changes who may do what: a user with a second factor (or
    whom the tenant requires to have one) needs a recent MFA verification (step-up)."""
    return needs(permission, step_up=True)


# Every method of the governed services declares what it needs, here and only here
# (`check_policies` refuses to start otherwise). Authorize enforces it with
# domain.decision.decide, the function ext_authz's Check uses.
POLICIES: dict[str, MethodPolicy] = {
    # Envoy's call carries no bearer metadata (the credential is inside the request),
    # and Check is the hot path: no chain, no access log line; it handles its own errors.
    f"/{ext_authz.SERVICE_NAME}/Check": MethodPolicy(public=True, log_calls=False, intercept=False),
    DECISION + "ExplainDecision": MethodPolicy(),  # own credential; others': audit:read (the use case)
    AUTH + "Login": PUBLIC_HASHING,
    AUTH + "VerifyMfa": PUBLIC,  # the challenge is in the body
    AUTH + "BeginPasskeySignIn": PUBLIC,
    AUTH + "Refresh": PUBLIC,
    AUTH + "ValidateToken": PUBLIC,
    AUTH + "IssueServiceToken": PUBLIC,  # the client credentials are in the body
    AUTH + "Logout": SELF_SERVICE,
    # Their credential is the password or the refresh-token cookie; the CSRF header is required.
    BROWSER + "BrowserLogin": MethodPolicy(public=True, hashes_password=True, browser=True),
    BROWSER + "BrowserVerifyMfa": MethodPolicy(public=True, browser=True),
    BROWSER + "BrowserRefresh": MethodPolicy(public=True, browser=True),
    BROWSER + "BrowserLogout": MethodPolicy(public=True, browser=True),
    AUTH + "LogoutAll": SELF_SERVICE,  # others: sessions:revoke
    AUTH + "ListSessions": SELF_SERVICE,  # others: sessions:read
    AUTH + "RevokeSession": SELF_SERVICE,  # others: sessions:revoke
    AUTH + "CreateApiKey": sensitive("apikeys:create"),  # for another user: apikeys:manage
    AUTH + "GetApiKey": needs("apikeys:read"),  # another user's: apikeys:manage
    AUTH + "ListApiKeys": needs("apikeys:read"),  # every user's: apikeys:manage
    AUTH + "RevokeApiKey": needs("apikeys:revoke"),  # another user's: apikeys:manage
    AUTH + "RotateApiKey": sensitive("apikeys:rotate"),  # another user's: apikeys:manage
    TENANT + "CreateTenant": PLATFORM_ONLY,
    TENANT + "GetTenant": needs("tenant:read"),
    TENANT + "ListTenants": PLATFORM_ONLY,
    TENANT + "UpdateTenant": sensitive("tenant:write"),  # slug, plan, limits: platform only
    TENANT + "SuspendTenant": PLATFORM_ONLY,
    TENANT + "ReactivateTenant": PLATFORM_ONLY,
    TENANT + "CreateUser": needs("users:create", hashes_password=True),  # with a password
    TENANT + "GetUser": needs("users:read"),
    TENANT + "ListUsers": needs("users:read"),
    TENANT + "UpdateUser": needs("users:update"),
    TENANT + "DisableUser": needs("users:disable"),
    TENANT + "EnableUser": needs("users:disable"),
    TENANT + "DeleteUser": sensitive("users:delete"),
    TENANT + "ChangePassword": MethodPolicy(hashes_password=True),  # the caller's own
    TENANT + "ResetPassword": needs("users:reset_password", hashes_password=True),
    TENANT + "ListRoles": needs("roles:read"),
    TENANT + "GetRole": needs("roles:read"),
    TENANT + "CreateRole": sensitive("roles:create"),
    TENANT + "UpdateRole": sensitive("roles:update"),
    TENANT + "DeleteRole": sensitive("roles:delete"),
    TENANT + "AssignRole": sensitive("roles:assign"),
    TENANT + "RemoveRole": sensitive("roles:assign"),
    TENANT + "GetEffectivePermissions": SELF_SERVICE,  # others: roles:read
    TENANT + "CreateInvitation": needs("invitations:create"),
    TENANT + "ListInvitations": needs("invitations:read"),
    TENANT + "ResendInvitation": needs("invitations:create"),
    TENANT + "RevokeInvitation": needs("invitations:revoke"),
    TENANT + "AcceptInvitation": PUBLIC_HASHING,  # the invitation token is in the body
    TENANT + "CreateServiceAccount": sensitive("service_accounts:create"),
    TENANT + "GetServiceAccount": needs("service_accounts:read"),
    TENANT + "ListServiceAccounts": needs("service_accounts:read"),
    TENANT + "UpdateServiceAccount": needs("service_accounts:update"),
    TENANT + "DeleteServiceAccount": needs("service_accounts:delete"),
    TENANT + "RotateServiceAccountSecret": sensitive("service_accounts:rotate"),
    TENANT + "RevokeServiceAccountSecret": needs("service_accounts:revoke"),
    "/grpc.health.v1.Health/Check": MethodPolicy(public=True, log_calls=False),
    "/grpc.health.v1.Health/Watch": MethodPolicy(public=True, log_calls=False),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": PUBLIC,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": PUBLIC,
    # Envoy's rate-limit filter calls this for every request (like ext_authz Check).
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit": MethodPolicy(public=True, log_calls=False),
    USAGE + "RecordUsage": USAGE_WRITE,
    USAGE + "RecordUsageBatch": USAGE_WRITE,
    USAGE + "GetUsage": USAGE_READ,
    USAGE + "GetUsageSummary": USAGE_READ,
    USAGE + "WatchUsage": USAGE_READ,
    USAGE + "ExportUsage": USAGE_READ,
    USAGE + "GetQuotaStatus": USAGE_READ,
    USAGE + "ListPlans": USAGE_READ,
    # Platform administrators only; no tenant role suffices (the use case checks too).
    USAGE + "UpsertPlan": MethodPolicy(permission="plans:manage", platform_only=True),
    USAGE + "AssignPlan": MethodPolicy(permission="plans:manage", platform_only=True),
    AUDIT + "ListAuditEvents": AUDIT_READ,
    AUDIT + "ExportAuditEvents": AUDIT_READ,
    AUDIT + "VerifyAuditChain": AUDIT_READ,
    WEBHOOKS + "CreateWebhookEndpoint": WEBHOOKS_WRITE,
    WEBHOOKS + "GetWebhookEndpoint": WEBHOOKS_READ,
    WEBHOOKS + "ListWebhookEndpoints": WEBHOOKS_READ,
    WEBHOOKS + "UpdateWebhookEndpoint": WEBHOOKS_WRITE,
    WEBHOOKS + "DeleteWebhookEndpoint": WEBHOOKS_WRITE,
    WEBHOOKS + "RotateWebhookSecret": WEBHOOKS_WRITE,
    WEBHOOKS + "ListWebhookDeliveries": WEBHOOKS_READ,
    WEBHOOKS + "ReplayWebhookDeliveries": WEBHOOKS_WRITE,
    WEBHOOKS + "SendTestWebhookEvent": WEBHOOKS_WRITE,
    WEBHOOKS + "ListWebhookEventTypes": WEBHOOKS_READ,
    # Platform administrators only (the servicer checks too).
    KEYS + "RotateSigningKey": MethodPolicy(platform_only=True, step_up=True),
    KEYS + "ListSigningKeys": PLATFORM_ONLY,
    KEYS + "RevokeSigningKey": MethodPolicy(platform_only=True, step_up=True),
    # The caller's own factors; another user's: users:read to list, users:reset_mfa to
    # remove (the use case checks).
    MFA + "ListMfaFactors": ENROLLMENT,
    MFA + "BeginTotpEnrollment": ENROLLMENT,
    MFA + "ConfirmTotpEnrollment": ENROLLMENT,
    MFA + "BeginPasskeyRegistration": ENROLLMENT,
    MFA + "FinishPasskeyRegistration": ENROLLMENT,
    MFA + "DeleteMfaFactor": SELF_SERVICE,  # own: a fresh code or step-up (the use case)
    MFA + "RegenerateRecoveryCodes": SELF_SERVICE,
    MFA + "CreateStepUpChallenge": SELF_SERVICE,
    # Mailed links: the token (or, for a reset request, nothing secret) is in the body.
    ACCOUNT + "RequestPasswordReset": PUBLIC,
    ACCOUNT + "ResetPasswordWithToken": PUBLIC_HASHING,
    ACCOUNT + "VerifyEmail": PUBLIC,
    ACCOUNT + "SendVerificationEmail": SELF_SERVICE,  # another user's: users:update (the use case)
    # Denials and failed logins are audit data; the breakdown is usage.
    DASHBOARD + "GetTenantOverview": AUDIT_READ,
    DASHBOARD + "GetUsageBreakdown": USAGE_READ,
    DASHBOARD + "GetLoginAnalytics": AUDIT_READ,
    DASHBOARD + "GetPlatformOverview": PLATFORM_ONLY,  # the use case checks too
}
DEFAULT_POLICY = MethodPolicy()

GOVERNED_SERVICES = [
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    session_pb2.DESCRIPTOR.services_by_name["BrowserSessionService"],
    tenant_pb2.DESCRIPTOR.services_by_name["TenantService"],
    usage_pb2.DESCRIPTOR.services_by_name["UsageService"],
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
    webhooks_pb2.DESCRIPTOR.services_by_name["WebhookService"],
    keys_pb2.DESCRIPTOR.services_by_name["KeyService"],
    decision_pb2.DESCRIPTOR.services_by_name["DecisionService"],
    dashboard_pb2.DESCRIPTOR.services_by_name["DashboardService"],
    mfa_pb2.DESCRIPTOR.services_by_name["MfaService"],
    account_pb2.DESCRIPTOR.services_by_name["AccountService"],
]
# Reported to health checks (Envoy checks the ext_authz service by name) and reflection.
RATE_LIMIT_SERVICE = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
SERVICE_NAMES = [service.full_name for service in GOVERNED_SERVICES] + [ext_authz.SERVICE_NAME, RATE_LIMIT_SERVICE]


def method_names(services: list[ServiceDescriptor]) -> list[str]:
    return [f"/{service.full_name}/{method.name}" for service in services for method in service.methods]


def check_policies(policies: dict[str, MethodPolicy] = POLICIES) -> None:
    """Every governed method must declare its policy: fail at start, not in production."""
    missing = [name for name in method_names(GOVERNED_SERVICES) if name not in policies]
    if missing:
        raise RuntimeError(f"methods without a policy in server.POLICIES: {', '.join(missing)}")


def create_server(app: App, address: str) -> tuple[grpc.Server, int, HealthReporter]:
    """Build the server with every service; bind `address` (port 0 picks one)."""
    check_policies()
    steps: list[Step] = [
        RequestId(),
        AccessLog(),
        ClientAddress(TrustedProxies(app.settings.trusted_proxies)),
        HashAdmission(app.hasher),
        Validate(),
        CsrfHeader(),
        RateLimit(app.limiter),
        Authenticate(app.authenticator),
        Authorize(),
    ]
    tracer = tracing.configure()
    if tracer is not None:
        steps.insert(1, tracing.Trace(tracer))
    # Calls that hash a password run on their own threads: as many as may wait for a
    # hash (HashAdmission), and a few more that refuse the excess at once.
    hashing_pool = futures.ThreadPoolExecutor(
        max_workers=app.hasher.callers + HASHING_SPARE_THREADS, thread_name_prefix="grpc-hashing"
    )
    chain = Chain(steps, POLICIES, DEFAULT_POLICY, hashing_pool)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=app.settings.grpc_workers, thread_name_prefix="grpc"),
        interceptors=[chain],
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 1 << 20)],
    )
    auth_pb2_grpc.add_AuthServiceServicer_to_server(
        AuthServicer(app.sessions, app.authenticator, app.clock, app.api_keys, app.service_accounts), server
    )
    session_pb2_grpc.add_BrowserSessionServiceServicer_to_server(
        BrowserSessionServicer(app.sessions, app.clock, app.settings.cookie_secure), server
    )
    tenant_use_cases = TenantUseCases(
        app.tenants, app.users, app.roles, app.invitations, app.service_accounts, app.clock
    )
    tenant_pb2_grpc.add_TenantServiceServicer_to_server(TenantServicer(tenant_use_cases), server)
    decision_pb2_grpc.add_DecisionServiceServicer_to_server(DecisionServicer(app.explainer), server)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(ext_authz.AuthorizationServicer(app.gatekeeper), server)
    usage_pb2_grpc.add_UsageServiceServicer_to_server(UsageServicer(app.usage, app.clock), server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(app.audit_reader, app.audit_verifier), server)
    webhooks_pb2_grpc.add_WebhookServiceServicer_to_server(WebhookServicer(app.webhooks, app.clock), server)
    keys_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(app.keys, app.clock), server)
    dashboard_pb2_grpc.add_DashboardServiceServicer_to_server(DashboardServicer(app.dashboards), server)
    mfa_pb2_grpc.add_MfaServiceServicer_to_server(MfaServicer(app.second_factors), server)
    account_pb2_grpc.add_AccountServiceServicer_to_server(AccountServicer(app.self_service), server)
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(EnvoyRateLimitServicer(app.limiter), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if app.settings.grpc_reflection:
        reflection.enable_server_reflection([*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port, HealthReporter(app, health_servicer, SERVICE_NAMES)


def freeze_startup_heap() -> None:
    """Move everything allocated so far (modules, SQLAlchemy and protobuf metadata,
    caches' structures) out of the garbage collector's view. Measured under ext_authz
    load: full collections over that heap paused the server for 60-90 ms, which was
    the whole p99; frozen, they scan only what serving allocates."""
    gc.collect()
    gc.freeze()


def warm_up(app: App) -> float:
    """Pay a new process's one-time costs of the Check path (signature code, compiled
    SQL, the first pooled connections) before it reports SERVING: on a busy machine a
    new instance's first Checks otherwise took longer than Envoy's 0.5 s timeout, and
    the callers Envoy sent to it got 503. A throwaway token for a principal that does
    not exist goes through verification and the session and subject lookups; it is
    refused there, and nothing is logged, counted, metered or audited. Seconds taken."""
    started = time.monotonic()
    unknown = uuid.uuid4().hex
    token, _ = tokens.issue_access_token(
        app.keys.ring(),
        issuer=app.settings.issuer,
        audience=app.settings.audience,
        subject=unknown,
        tenant_id=unknown,
        subject_type=USER,
        session_id=unknown,
        now=int(time.time()),
        ttl=60,
    )
    with contextlib.suppress(InvalidCredential):  # the expected outcome: no such session
        app.authenticator.authenticate(token)
    app.authenticator.subject_facts(unknown, USER, unknown)
    return time.monotonic() - started


def warm_up_transport(port: int) -> float:
    """The same for the gRPC side of the first calls (a new process's first call was
    about 150 ms slower than its second): a few concurrent calls to its own health
    service, which has no side effects. Seconds taken."""
    started = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        calls = [stub.Check.future(health_pb2.HealthCheckRequest(), timeout=5) for _ in range(WARM_UP_CALLS)]
        for call in calls:
            # NOT_FOUND before the health reporter starts: the call was served all the same.
            with contextlib.suppress(grpc.RpcError):
                call.result()
    return time.monotonic() - started


def serve(app: App) -> None:
    app.keys.ensure_active_key()
    app.start_background()
    server, port, health_reporter = create_server(app, app.settings.grpc_addr)
    side = SideServer(app, health_reporter, app.settings.http_addr)
    try:
        warmed = warm_up(app)
    except Exception:  # a warm-up must never keep the server from starting
        log.warning("warm-up failed; the first Checks pay for it", exc_info=True)
        warmed = 0.0
    freeze_startup_heap()
    server.start()
    authz_http = HttpAuthzServer(
        HttpCheck(app.gatekeeper), app.settings.authz_http_addr, reuse_port=app.settings.authz_workers > 1
    )
    authz_http.start()
    warmed += warm_up_transport(port)
    log.info("warmed up in %.0f ms", 1000 * warmed)
    check_workers = CheckWorkers(app.settings, authz_http.address)
    check_workers.start()
    health_reporter.start()
    side.start()
    host = app.settings.grpc_addr.rpartition(":")[0]
    log.info(
        "gRPC listening on %s:%d, HTTP on %s and ext_authz over HTTP on %s",
        host,
        port,
        side.address,
        authz_http.address,
    )
    shutdown = Shutdown()
    signal.signal(signal.SIGTERM, shutdown.on_signal)
    signal.signal(signal.SIGINT, shutdown.on_signal)
    shutdown.requested.wait()
    drain = app.settings.drain_seconds
    log.info(
        "draining: NOT_SERVING, still answering for %g s (a second signal ends that),"
        " then up to %g s for in-flight calls",
        drain,
        GRACE_SECONDS,
    )
    health_reporter.stop()
    if shutdown.hurried.wait(drain):
        log.info("drain cut short")
    authz_http.stop()
    check_workers.stop()
    server.stop(GRACE_SECONDS).wait()
    side.stop()
    app.close()
    log.info("stopped")


class Shutdown:
    """The first SIGTERM/SIGINT starts the drain; a second one ends it early (an
    operator who means "now"), leaving only the grace for in-flight calls."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.hurried = threading.Event()

    def on_signal(self, signum: int, _: FrameType | None = None) -> None:
        name = signal.Signals(signum).name
        if not self.requested.is_set():
            log.info("received %s", name)
            self.requested.set()
        else:
            log.info("received %s again: ending the drain", name)
            self.hurried.set()
