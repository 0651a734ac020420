"""Login throttling with growing delays, per account and per client address
(the policies and why they differ: domain/throttle.py).

After its free failures an account (or address) must wait before the next attempt,
the wait growing up to a cap. The count forgets itself `window` seconds after the
first failure, and a success clears the account's count, so an attacker can slow a
victim's logins down but never lock them out for good. If the store is unreachable,
throttling fails open (logged): logins must not stop with Redis.
"""

from __future__ import annotations

import logging

from tahoe_auth.domain.crypto import sha256_hex
from tahoe_auth.domain.errors import LoginThrottled
from tahoe_auth.domain.throttle import ACCOUNT_POLICY, ADDRESS_POLICY, ThrottlePolicy
from tahoe_auth.store.kv import KeyValueStore, StoreUnavailable

log = logging.getLogger(__name__)


class LoginThrottle:
    def __init__(self, store: KeyValueStore) -> None:
        self._store = store

    @staticmethod
    def _keys(tenant: str, email: str, address: str) -> list[tuple[str, ThrottlePolicy]]:
        account = f"thr:{{{tenant}}}:acct:{sha256_hex(email)[:32]}"
        keys = [(account, ACCOUNT_POLICY)]
        if address:
            keys.append((f"thr:{{global}}:addr:{address}", ADDRESS_POLICY))
        return keys

    def check(self, tenant: str, email: str, address: str) -> None:
        try:
            for key, _ in self._keys(tenant, email, address):
                wait = self._store.ttl(f"{key}:lock")
                if wait:
                    raise LoginThrottled(retry_after=wait)
        except StoreUnavailable as exc:
            log.warning("login throttle unavailable, failing open: %s", exc)

    def failed(self, tenant: str, email: str, address: str) -> None:
        try:
            for key, policy in self._keys(tenant, email, address):
                failures = self._store.incr(f"{key}:count", policy.window)
                delay = policy.delay_after(failures)
                if delay:
                    self._store.set(f"{key}:lock", "1", delay)
        except StoreUnavailable as exc:
            log.warning("login throttle unavailable, failure not counted: %s", exc)

    def succeeded(self, tenant: str, email: str) -> None:
        account, _ = self._keys(tenant, email, "")[0]
        try:
            self._store.delete(f"{account}:count", f"{account}:lock")
        except StoreUnavailable as exc:
            log.warning("login throttle unavailable, success not recorded: %s", exc)
