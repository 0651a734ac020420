"""Login throttling with growing delays, per account and per client address
(the policies and why they differ: domain/throttle.py).

After its free failures an account (or address) must wait before the next attempt,
the wait growing up to a cap. The count forgets itself `window` seconds after the
first failure, and a success clears the account's count, so an attacker can slow a
victim's logins down but never lock them out for good.

The counts live in the shared store (Redis). If it is unreachable, throttling does not
stop: it goes on in this process's memory (`fallback`), like the rate limiter's
fallback, so that whoever can make Redis unreachable does not escape the delays. A
failed call is first repeated once at once (one slow answer is not an outage). The
switch logs one warning; while degraded, at most one call a second tries Redis again,
and the first success switches back (logged). Counts taken in memory are this
instance's only (with N instances an account gets up to N times the free failures) and
are not copied to Redis; locks set in memory keep holding after Redis returns, until
they expire.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from operator import methodcaller
from typing import TypeVar

from tahoe_auth.domain.crypto import sha256_hex
from tahoe_auth.domain.errors import LoginThrottled
from tahoe_auth.domain.throttle import ACCOUNT_POLICY, ADDRESS_POLICY, MFA_POLICY, ThrottlePolicy
from tahoe_auth.kernel.metrics import STORE_FAILURES
from tahoe_auth.store.kv import KeyValueStore, MemoryStore, StoreUnavailable

log = logging.getLogger(__name__)

PROBE_INTERVAL = 1.0

T = TypeVar("T")


class LoginThrottle:
    def __init__(
        self,
        store: KeyValueStore,
        fallback: KeyValueStore | None = None,
        *,
        probe_interval: float = PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        # Never None: without a fallback an unreachable store would mean no throttling.
        self._fallback: KeyValueStore = fallback if fallback is not None else MemoryStore()
        self._probe_interval = probe_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._degraded = False
        self._next_probe = 0.0

    @property
    def degraded(self) -> bool:
        return self._degraded

    @staticmethod
    def _keys(tenant: str, email: str, address: str) -> list[tuple[str, ThrottlePolicy]]:
        account = f"thr:{{{tenant}}}:acct:{sha256_hex(email)[:32]}"
        keys = [(account, ACCOUNT_POLICY)]
        if address:
            keys.append((f"thr:{{global}}:addr:{address}", ADDRESS_POLICY))
        return keys

    def check(self, tenant: str, email: str, address: str) -> None:
        self._check(self._keys(tenant, email, address))

    @staticmethod
    def _mfa_keys(tenant: str, user_id: str) -> list[tuple[str, ThrottlePolicy]]:
        return [(f"thr:{{{tenant}}}:mfa:{user_id}", MFA_POLICY)]

    def check_mfa(self, tenant: str, user_id: str) -> None:
        """Second-factor answers of one user (LoginThrottled while they must wait)."""
        self._check(self._mfa_keys(tenant, user_id))

    def mfa_failed(self, tenant: str, user_id: str) -> None:
        self._count(self._mfa_keys(tenant, user_id))

    def mfa_succeeded(self, tenant: str, user_id: str) -> None:
        self._clear(self._mfa_keys(tenant, user_id)[0][0])

    def _check(self, keys: list[tuple[str, ThrottlePolicy]]) -> None:
        for key, _ in keys:
            lock = f"{key}:lock"
            # The fallback too: a lock taken there during an outage outlives the outage.
            wait = max(self._on_store(methodcaller("ttl", lock)) or 0.0, self._fallback.ttl(lock) or 0.0)
            if wait:
                raise LoginThrottled(retry_after=wait)

    def failed(self, tenant: str, email: str, address: str) -> None:
        self._count(self._keys(tenant, email, address))

    def _count(self, keys: list[tuple[str, ThrottlePolicy]]) -> None:
        def count(store: KeyValueStore) -> None:
            for key, policy in keys:
                delay = policy.delay_after(store.incr(f"{key}:count", policy.window))
                if delay:
                    store.set(f"{key}:lock", "1", delay)

        self._on_store(count)

    def succeeded(self, tenant: str, email: str) -> None:
        self._clear(self._keys(tenant, email, "")[0][0])

    def _clear(self, account: str) -> None:
        keys = (f"{account}:count", f"{account}:lock")
        self._fallback.delete(*keys)
        self._on_store(lambda s: s.delete(*keys))

    def _on_store(self, operation: Callable[[KeyValueStore], T]) -> T:
        """`operation` on the shared store, or on the fallback while that is unreachable."""
        if not self._may_try_store():
            return operation(self._fallback)
        # One slow answer on a busy host is not an outage, and must not hide the shared
        # locks for a second: a failure is repeated once, at once (every operation here
        # may be: a failure counted twice errs on the strict side). An outage fails both
        # tries; while degraded, a probe tries once.
        tries = 1 if self._degraded else 2
        while True:
            tries -= 1
            try:
                result = operation(self._store)
            except StoreUnavailable as exc:
                if tries:
                    continue
                self._on_failure(exc)
                return operation(self._fallback)
            if self._degraded:
                self._on_recovery()
            return result

    def _may_try_store(self) -> bool:
        if not self._degraded:
            return True
        with self._lock:
            if self._clock() < self._next_probe:
                return False
            self._next_probe = self._clock() + self._probe_interval
            return True

    def _on_failure(self, exc: StoreUnavailable) -> None:
        STORE_FAILURES.labels("login_throttle", "fallback").inc()
        with self._lock:
            self._next_probe = self._clock() + self._probe_interval
            if self._degraded:
                return
            self._degraded = True
        log.warning("login throttle: store unavailable (%s); throttling in this instance's memory", exc)

    def _on_recovery(self) -> None:
        with self._lock:
            if not self._degraded:
                return
            self._degraded = False
        log.warning("login throttle: store is back; shared counts restored")
