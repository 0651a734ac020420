"""The one place that builds clients and services from Settings (nothing connects at
import time). Servers, the CLI and tests all start from `build_app`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from tahoe_auth.authz.access import AccessEvaluator
from tahoe_auth.authz.admission import AdmissionControl
from tahoe_auth.authz.apikeys import ApiKeyResolver, PlatformKeyResolver
from tahoe_auth.authz.authenticator import Authenticator
from tahoe_auth.authz.check import Gatekeeper
from tahoe_auth.authz.explain import DecisionExplainer
from tahoe_auth.authz.ratelimit import RateLimiter
from tahoe_auth.authz.upstream import IdentityTokens
from tahoe_auth.config import ConfigError, Settings
from tahoe_auth.domain import apikeys, crypto, passwords
from tahoe_auth.domain.principal import SERVICE
from tahoe_auth.kernel.changes import ChangeListener, ChangeNotifier
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.kernel.metrics import CACHES, CACHES_TRUSTED
from tahoe_auth.mail.transport import MailUrlError, Transport, transport_from_url
from tahoe_auth.services.account_mail import AccountMail, Links
from tahoe_auth.services.api_keys import ApiKeys
from tahoe_auth.services.audit import AuditLog, AuditReader, AuditVerifier
from tahoe_auth.services.change_feed import ChangeFeed
from tahoe_auth.services.dashboards import Dashboards
from tahoe_auth.services.denials import DenialAuditor
from tahoe_auth.services.invitations import Invitations
from tahoe_auth.services.keys import KeyManager
from tahoe_auth.services.last_used import LastUsedRecorder
from tahoe_auth.services.login_stats import LoginStats
from tahoe_auth.services.mail import MailQueue, MailWorker
from tahoe_auth.services.mfa import SecondFactors
from tahoe_auth.services.passkeys import Passkeys
from tahoe_auth.services.platform import PlatformCredentials
from tahoe_auth.services.quotas import Quotas
from tahoe_auth.services.roles import Roles
from tahoe_auth.services.self_service import SelfService
from tahoe_auth.services.service_accounts import ServiceAccounts
from tahoe_auth.services.sessions import SessionService
from tahoe_auth.services.tenant_config import TenantConfigCache, database_loader
from tahoe_auth.services.tenants import TenantAdmin
from tahoe_auth.services.throttle import LoginThrottle
from tahoe_auth.services.usage import UsageService
from tahoe_auth.services.usage_ledger import UsageLedger, UsageTotals
from tahoe_auth.services.usage_pipeline import UsagePipeline
from tahoe_auth.services.usage_recorder import UsageRecorder
from tahoe_auth.services.usage_watch import UsageWatch
from tahoe_auth.services.users import Users
from tahoe_auth.services.webhook_delivery import WebhookWorker, WorkerConfig
from tahoe_auth.services.webhooks import WebhookAdmin
from tahoe_auth.store.db import Database
from tahoe_auth.store.directory import Directory
from tahoe_auth.store.kv import KeyValueStore, MemoryStore
from tahoe_auth.store.limiter_backends import LeasingBackend, MemoryLimiterBackend, RedisLimiterBackend
from tahoe_auth.store.live_counters import LiveCounters, MemoryLiveCounters, RedisLiveCounters
from tahoe_auth.store.redis_store import RedisStore
from tahoe_auth.webhooks.sender import EgressPolicy

log = logging.getLogger(__name__)

IDENTITY_TOKEN_TTL = 60


@dataclass
class App:
    settings: Settings
    clock: Clock
    db: Database
    store: KeyValueStore
    notifier: ChangeNotifier
    changes: ChangeFeed
    keys: KeyManager
    hasher: passwords.BoundedHasher
    authenticator: Authenticator
    api_key_resolver: ApiKeyResolver
    sessions: SessionService
    second_factors: SecondFactors
    tenants: TenantAdmin
    platform: PlatformCredentials
    users: Users
    roles: Roles
    invitations: Invitations
    api_keys: ApiKeys
    service_accounts: ServiceAccounts
    last_used: LastUsedRecorder
    gatekeeper: Gatekeeper
    explainer: DecisionExplainer
    tenant_config: TenantConfigCache
    limiter: RateLimiter
    usage: UsageService
    usage_ledger: UsageLedger
    usage_totals: UsageTotals
    usage_pipeline: UsagePipeline
    usage_recorder: UsageRecorder
    usage_watch: UsageWatch
    quotas: Quotas
    admission: AdmissionControl
    audit: AuditLog
    audit_reader: AuditReader
    audit_verifier: AuditVerifier
    denials: DenialAuditor
    webhooks: WebhookAdmin
    webhook_worker: WebhookWorker
    self_service: SelfService
    mail_worker: MailWorker
    login_stats: LoginStats
    dashboards: Dashboards
    change_listeners: tuple[ChangeListener, ...]

    def start_background(self) -> None:
        """Threads a serving instance runs (the recorder and quotas start on first use)."""
        self.changes.start()
        self.keys.start_refresh()
        self.hasher.start()
        self.usage_pipeline.start()
        if self.settings.webhook_worker:
            self.webhook_worker.start()
        if self.settings.mail_worker:
            self.mail_worker.start()

    def close(self) -> None:
        self.changes.stop()
        self.keys.stop()
        self.webhook_worker.stop()
        self.mail_worker.stop()
        self.denials.stop()
        self.login_stats.stop()
        self.usage_watch.stop()
        self.usage_recorder.stop()
        self.usage_pipeline.stop()
        self.quotas.stop()
        self.hasher.shutdown()
        self.last_used.close()
        self.limiter.close()
        self.store.close()
        self.db.dispose()


def build_store(settings: Settings) -> KeyValueStore:
    if settings.redis_url:
        return RedisStore(settings.redis_url, timeout=settings.redis_timeout)
    log.info("TAHOE_REDIS_URL is unset: using the in-process store (single instance only)")
    return MemoryStore()


def build_limiter(settings: Settings, store: KeyValueStore, tenant_config: TenantConfigCache) -> RateLimiter:
    """Redis-backed with a per-instance fallback, or in-process only without Redis."""
    if isinstance(store, RedisStore):
        return RateLimiter(
            LeasingBackend(RedisLimiterBackend(store.client)),
            tenant_config,
            fallback=MemoryLimiterBackend(),
            instance_count=settings.instance_count * settings.authz_workers,
            enabled=settings.rate_limit_enabled,
        )
    return RateLimiter(MemoryLimiterBackend(), tenant_config, enabled=settings.rate_limit_enabled)


def build_live_counters(store: KeyValueStore) -> LiveCounters:
    return RedisLiveCounters(store.client) if isinstance(store, RedisStore) else MemoryLiveCounters()


def wire_changes(
    store: KeyValueStore, notifier: ChangeNotifier, feed: ChangeFeed, listeners: Sequence[ChangeListener]
) -> None:
    """Every cache hears every change through the feed, here and nowhere else: this
    instance's own at once (the notifier delivers them before publishing), other
    instances' through the store's pub/sub and the change log, and ("", "") when
    changes may have been missed beyond recovery."""
    notifier.deliver_locally(feed)
    store.subscribe(feed.on_published)
    for listener in listeners:
        feed.add_listener(listener.apply_change)


def register_caches(authenticator: Authenticator, platform_keys: PlatformKeyResolver) -> None:
    """For the cache metrics."""
    for name, cache in (
        ("tokens", authenticator.tokens),
        ("sessions", authenticator.sessions),
        ("subjects", authenticator.subjects),
        ("platform_keys", platform_keys.cache),
    ):
        CACHES.register(name, cache)


# The one composition root: a long list of wiring reads better whole than split.
def build_app(settings: Settings, *, clock: Clock | None = None, store: KeyValueStore | None = None) -> App:  # noqa: PLR0915
    clock = clock or Clock()
    db = Database(settings.database_url, settings.database_role)
    store = store or build_store(settings)
    notifier = ChangeNotifier(store)
    feed = ChangeFeed(db, store, poll_interval=settings.change_poll_interval_ms / 1000)
    CACHES_TRUSTED.set_function(lambda: float(feed.caches_trusted()))
    max_token_ttl = max(settings.access_token_ttl, IDENTITY_TOKEN_TTL)
    audit_log = AuditLog(db, clock)
    keys = KeyManager(
        db,
        settings.master_key,
        notifier,
        clock,
        max_token_ttl,
        audit_log,
        publish_delay=settings.signing_key_publish_delay,
        refresh_interval=settings.signing_key_refresh_interval,
    )
    p = settings.password
    hasher = passwords.BoundedHasher(
        passwords.PasswordHasher(p.memory_kib, p.time_cost, p.parallelism),
        settings.hash_concurrency,
        settings.hash_queue,
        niceness=settings.hash_nice,
    )
    directory = Directory(db)
    authenticator = Authenticator(keys, directory, feed, clock, issuer=settings.issuer, audience=settings.audience)
    authenticator.register_subject_type(SERVICE, directory.service_facts)
    platform = PlatformCredentials(db, settings.master_key)
    platform_keys = PlatformKeyResolver(db, platform.hmac_key)
    authenticator.register_secret(apikeys.PLATFORM_KEY, platform_keys.resolve)
    last_used = LastUsedRecorder(db)
    api_key_hmac = crypto.derive_key(settings.master_key, apikeys.HMAC_PURPOSE)
    api_key_resolver = ApiKeyResolver(db, api_key_hmac, authenticator, feed, last_used)
    authenticator.register_secret(apikeys.API_KEY, api_key_resolver.resolve)
    throttle = LoginThrottle(store, fallback=MemoryStore())  # never fails open (services/throttle.py)
    login_stats = LoginStats(db, clock)
    second_factors = SecondFactors(
        db, keys, throttle, notifier, settings, clock, audit_log, Passkeys.from_settings(settings)
    )
    sessions = SessionService(
        db, keys, hasher, throttle, notifier, settings, clock, audit_log, login_stats, second_factors
    )
    account_mail = AccountMail(MailQueue(settings.master_key, clock), Links(settings.public_url), clock)
    invitations = Invitations(db, hasher, sessions, notifier, clock, audit_log, account_mail)
    self_service = SelfService(db, hasher, sessions, account_mail, notifier, clock, audit_log)
    mail_worker = MailWorker(
        db,
        account_mail.queue,
        mail_transport(settings),
        settings.mail_from,
        audit_log,
        clock,
        before_round=[self_service.process_reset_requests],
    )
    register_caches(authenticator, platform_keys)
    policy = egress_policy(settings)
    webhooks = WebhookAdmin(db, settings.master_key, policy, audit_log, clock)
    access = AccessEvaluator(authenticator)
    identity = IdentityTokens(keys, settings.issuer, IDENTITY_TOKEN_TTL)
    denials = DenialAuditor(audit_log, clock.timestamp)
    tenant_config = TenantConfigCache(database_loader(db), settings.rate_limits)
    live = build_live_counters(store)
    ledger = UsageLedger(db, live, clock)
    totals = UsageTotals(db, live, clock)
    watch = UsageWatch(totals, clock, max_streams=max(1, settings.grpc_workers // 2))
    limiter = build_limiter(settings, store, tenant_config)
    quotas = Quotas(db, tenant_config, totals, clock)
    recorder = UsageRecorder(ledger)
    admission = AdmissionControl(limiter, quotas, recorder)
    # Check: decide, then admit (quota, rate limits, metering) in the same hop.
    gatekeeper = Gatekeeper(access, identity, feed, hooks=[admission.check_hook], denials=denials)
    listeners = (authenticator, api_key_resolver, tenant_config, quotas, gatekeeper)
    wire_changes(store, notifier, feed, listeners)
    CACHES.register("check_decisions", gatekeeper.decisions)
    CACHES.register("identity_tokens", identity.cache)

    def drop_what_revoked_keys_signed(_: frozenset[str]) -> None:
        # Cached verifications, identity tokens and allowed decisions may carry a
        # revoked key's signature: drop them all (revocation is rare).
        authenticator.tokens.clear()
        identity.clear()
        gatekeeper.decisions.clear()

    keys.on_revoked(drop_what_revoked_keys_signed)
    return App(
        settings=settings,
        clock=clock,
        db=db,
        store=store,
        notifier=notifier,
        changes=feed,
        keys=keys,
        hasher=hasher,
        authenticator=authenticator,
        api_key_resolver=api_key_resolver,
        sessions=sessions,
        second_factors=second_factors,
        tenants=TenantAdmin(db, hasher, clock, notifier, invitations, audit_log),
        platform=platform,
        users=Users(db, hasher, sessions, notifier, clock, audit_log, account_mail),
        roles=Roles(db, notifier, audit_log),
        invitations=invitations,
        api_keys=ApiKeys(db, api_key_hmac, last_used, notifier, clock, audit_log),
        service_accounts=ServiceAccounts(db, keys, notifier, settings, clock, audit_log),
        last_used=last_used,
        gatekeeper=gatekeeper,
        explainer=DecisionExplainer(access),
        tenant_config=tenant_config,
        limiter=limiter,
        usage=UsageService(db, ledger, watch, notifier, clock, audit_log),
        usage_ledger=ledger,
        usage_totals=totals,
        usage_pipeline=UsagePipeline(db, ledger, totals, clock),
        usage_recorder=recorder,
        usage_watch=watch,
        quotas=quotas,
        admission=admission,
        audit=audit_log,
        audit_reader=AuditReader(db, audit_log),
        audit_verifier=AuditVerifier(db),
        denials=denials,
        webhooks=webhooks,
        webhook_worker=WebhookWorker(db, webhooks.box, policy, audit_log, clock, worker_config(settings)),
        self_service=self_service,
        mail_worker=mail_worker,
        login_stats=login_stats,
        dashboards=Dashboards(db, clock),
        change_listeners=listeners,
    )


def mail_transport(settings: Settings) -> Transport:
    try:
        return transport_from_url(settings.smtp_url, settings.var_dir)
    except MailUrlError as exc:
        raise ConfigError(str(exc)) from None


def egress_policy(settings: Settings) -> EgressPolicy:
    return EgressPolicy.parse(settings.webhook_allowed_networks, settings.webhook_allow_http)


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        concurrency=settings.webhook_concurrency,
        timeout=float(settings.webhook_timeout),
        lease=float(settings.webhook_lease),
    )
