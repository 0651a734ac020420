"""The one place that builds clients and services from Settings (nothing connects at
import time). Servers, the CLI and tests all start from `build_app`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tahoe_auth.authz.apikeys import HMAC_PURPOSE as API_KEY_HMAC_PURPOSE
from tahoe_auth.authz.apikeys import ApiKeyResolver
from tahoe_auth.authz.authenticator import Authenticator
from tahoe_auth.authz.directory import Directory
from tahoe_auth.authz.last_used import LastUsedRecorder
from tahoe_auth.clock import Clock
from tahoe_auth.config import Settings
from tahoe_auth.domain import apikeys, crypto, passwords
from tahoe_auth.domain.principal import SERVICE
from tahoe_auth.services.api_keys import ApiKeys
from tahoe_auth.services.changes import ChangeNotifier
from tahoe_auth.services.invitations import Invitations
from tahoe_auth.services.keys import KeyManager
from tahoe_auth.services.platform import PlatformCredentials
from tahoe_auth.services.roles import Roles
from tahoe_auth.services.service_accounts import ServiceAccounts
from tahoe_auth.services.sessions import SessionService
from tahoe_auth.services.tenants import TenantAdmin
from tahoe_auth.services.throttle import LoginThrottle
from tahoe_auth.services.users import Users
from tahoe_auth.store.db import Database
from tahoe_auth.store.kv import KeyValueStore, MemoryStore
from tahoe_auth.store.redis_store import RedisStore

log = logging.getLogger(__name__)

IDENTITY_TOKEN_TTL = 60


@dataclass
class App:
    settings: Settings
    clock: Clock
    db: Database
    store: KeyValueStore
    notifier: ChangeNotifier
    keys: KeyManager
    hasher: passwords.BoundedHasher
    authenticator: Authenticator
    sessions: SessionService
    tenants: TenantAdmin
    platform: PlatformCredentials
    users: Users
    roles: Roles
    invitations: Invitations
    api_keys: ApiKeys
    service_accounts: ServiceAccounts
    last_used: LastUsedRecorder

    def close(self) -> None:
        self.hasher.shutdown()
        self.last_used.close()
        self.store.close()
        self.db.dispose()


def build_store(settings: Settings) -> KeyValueStore:
    if settings.redis_url:
        return RedisStore(settings.redis_url)
    log.info("TAHOE_REDIS_URL is unset: using the in-process store (single instance only)")
    return MemoryStore()


def build_app(settings: Settings, *, clock: Clock | None = None, store: KeyValueStore | None = None) -> App:
    clock = clock or Clock()
    db = Database(settings.database_url, settings.database_role)
    store = store or build_store(settings)
    notifier = ChangeNotifier(store)
    max_token_ttl = max(settings.access_token_ttl, IDENTITY_TOKEN_TTL)
    keys = KeyManager(db, settings.master_key, notifier, clock, max_token_ttl)
    p = settings.password
    hasher = passwords.BoundedHasher(
        passwords.PasswordHasher(p.memory_kib, p.time_cost, p.parallelism),
        settings.hash_concurrency,
        settings.hash_queue,
    )
    directory = Directory(db)
    authenticator = Authenticator(keys, directory, store, clock, issuer=settings.issuer, audience=settings.audience)
    authenticator.register_subject_type(SERVICE, directory.service_facts)
    platform = PlatformCredentials(db, settings.master_key)
    authenticator.register_secret(apikeys.PLATFORM_KEY, platform.resolve)
    last_used = LastUsedRecorder(db)
    api_key_resolver = ApiKeyResolver(
        db, crypto.derive_key(settings.master_key, API_KEY_HMAC_PURPOSE), authenticator, store, last_used
    )
    authenticator.register_secret(apikeys.API_KEY, api_key_resolver.resolve)
    notifier.apply_locally(authenticator.apply_change)
    notifier.apply_locally(api_key_resolver.apply_change)
    sessions = SessionService(db, keys, hasher, LoginThrottle(store), notifier, settings, clock)
    invitations = Invitations(db, hasher, sessions, notifier, clock)
    return App(
        settings=settings,
        clock=clock,
        db=db,
        store=store,
        notifier=notifier,
        keys=keys,
        hasher=hasher,
        authenticator=authenticator,
        sessions=sessions,
        tenants=TenantAdmin(db, hasher, clock, notifier, invitations),
        platform=platform,
        users=Users(db, hasher, sessions, notifier, clock),
        roles=Roles(db, notifier),
        invitations=invitations,
        api_keys=ApiKeys(db, api_key_resolver, last_used, notifier, clock),
        service_accounts=ServiceAccounts(db, keys, notifier, settings, clock),
        last_used=last_used,
    )
