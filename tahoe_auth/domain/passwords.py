"""Password policy and argon2id hashing.

Hashing is deliberately slow (about 17 ms of one core at OWASP parameters), so callers
run it through `BoundedHasher`, which caps how many hashes run at once (memory is
memory_kib x concurrency) and how many may wait, shedding load beyond that instead of
letting a login flood starve the rest of the server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tahoe_auth.domain.errors import InvalidArgument, Unavailable

MIN_LENGTH = 8
MAX_LENGTH = 1024

T = TypeVar("T")


def check_policy(password: str, field: str = "password") -> None:
    if len(password) < MIN_LENGTH:
        raise InvalidArgument(field, f"password must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise InvalidArgument(field, f"password must be at most {MAX_LENGTH} characters")


@dataclass(frozen=True)
class Verification:
    ok: bool
    needs_rehash: bool = False


class PasswordHasher:
    def __init__(self, memory_kib: int, time_cost: int, parallelism: int) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        # Unknown users are verified against this so that their answer takes as long.
        self._dummy_hash = self._hasher.hash("tahoe-dummy-password-for-timing")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, encoded: str | None, password: str) -> Verification:
        target = encoded or self._dummy_hash
        try:
            self._hasher.verify(target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return Verification(ok=False)
        if encoded is None:
            return Verification(ok=False)
        return Verification(ok=True, needs_rehash=self._hasher.check_needs_rehash(encoded))


class BoundedHasher:
    """Runs hashing on its own threads: at most `concurrency` at once, `queue` waiting."""

    def __init__(self, hasher: PasswordHasher, concurrency: int, queue: int) -> None:
        self.hasher = hasher
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="argon2")
        self._capacity = concurrency + queue
        self._in_flight = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        with self._lock:
            if self._in_flight >= self._capacity:
                raise Unavailable("server is busy hashing passwords; retry shortly")
            self._in_flight += 1
        future = self._pool.submit(fn)
        future.add_done_callback(self._release)
        return future

    def _release(self, _: Future[Any]) -> None:
        with self._lock:
            self._in_flight -= 1

    def hash(self, password: str) -> str:
        return self.submit(lambda: self.hasher.hash(password)).result()

    def verify(self, encoded: str | None, password: str) -> Verification:
        return self.submit(lambda: self.hasher.verify(encoded, password)).result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
