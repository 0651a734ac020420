"""Password hashing with argon2id (the rules a new password must pass: password_policy.py).

Hashing is deliberately slow (about 19 ms of one core at OWASP parameters), so callers
run it through `BoundedHasher`: niced worker processes, a cap on how many hashes run at
once (memory is memory_kib x concurrency) and on how many may wait, and a cap on the
callers that may wait at all, shedding load beyond that instead of letting a login
flood starve the rest of the server.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tahoe_auth.domain.errors import Unavailable

MIN_LENGTH = 8
MAX_LENGTH = 1024
BUSY = "the server is busy hashing passwords; retry shortly"
RETRY_AFTER = 1.0

T = TypeVar("T")


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
    """Hashes in `concurrency` worker processes at a lower OS priority (`niceness`), with
    at most `queue` hashes waiting; beyond that, Unavailable at once.

    Processes, not threads: argon2 releases the GIL, so hashing threads would take every
    core at the server's own priority, and Check (Envoy's 0.5 s timeout) would queue
    behind them. Niced workers get the CPU that serving leaves.

    `admit()` bounds the callers that may wait for a hash at all (`callers`, by default
    concurrency + queue): a gRPC method that hashes holds a thread while it waits, so
    only that many may, and the rest are refused before they do any other work.
    """

    def __init__(
        self,
        hasher: PasswordHasher,
        concurrency: int,
        queue: int,
        *,
        callers: int | None = None,
        niceness: int = 0,
    ) -> None:
        self.hasher = hasher
        self._concurrency = concurrency
        self._niceness = niceness
        self._capacity = concurrency + queue
        self._callers_capacity = self._capacity if callers is None else callers
        self._in_flight = 0
        self._callers = 0
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Holds one of the `callers` places for the block; Unavailable when none is free."""
        with self._lock:
            if self._callers >= self._callers_capacity:
                raise Unavailable(BUSY, retry_after=RETRY_AFTER)
            self._callers += 1
        try:
            yield
        finally:
            with self._lock:
                self._callers -= 1

    @property
    def callers(self) -> int:
        return self._callers_capacity

    def hash(self, password: str) -> str:
        return self._run(_hash_in_worker, password)

    def verify(self, encoded: str | None, password: str) -> Verification:
        return self._run(_verify_in_worker, encoded, password)

    def start(self) -> None:
        """Starts every worker now (a serving instance), not on the first logins."""
        with self._lock:
            pool = self._pool_locked()
        for started in [pool.submit(_ready) for _ in range(self._concurrency)]:
            started.result()

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._in_flight >= self._capacity:
                raise Unavailable(BUSY, retry_after=RETRY_AFTER)
            pool = self._pool_locked()
            self._in_flight += 1
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            # A worker died (killed, out of memory): the next call gets a new pool.
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise Unavailable("password hashing failed; retry shortly", retry_after=RETRY_AFTER) from None
        except (CancelledError, RuntimeError):  # shut down meanwhile
            raise Unavailable("the server is stopping", retry_after=RETRY_AFTER) from None
        finally:
            with self._lock:
                self._in_flight -= 1

    def _pool_locked(self) -> ProcessPoolExecutor:
        if self._closed:
            raise Unavailable("the server is stopping", retry_after=RETRY_AFTER)
        if self._pool is None:
            # spawn: a fork of this multi-threaded process (gRPC, SQLAlchemy, Redis
            # threads) could inherit a lock held by another thread.
            self._pool = ProcessPoolExecutor(
                max_workers=self._concurrency,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.hasher, self._niceness),
            )
        return self._pool

    def shutdown(self) -> None:
        """Stops the workers and waits for them (each finishes its current hash)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


# In a worker process: the hasher it was started with.
_worker_state: dict[str, PasswordHasher] = {}


def _start_worker(hasher: PasswordHasher, niceness: int) -> None:
    # Ctrl-C reaches the whole process group: the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if niceness:
        os.nice(niceness)
    _worker_state["hasher"] = hasher
    parent = os.getppid()
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    """A SIGKILLed parent cannot stop its workers: each leaves once it is orphaned."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _worker() -> PasswordHasher:
    hasher = _worker_state.get("hasher")
    if hasher is None:
        raise RuntimeError("not a hashing worker")
    return hasher


def _hash_in_worker(password: str) -> str:
    return _worker().hash(password)


def _verify_in_worker(encoded: str | None, password: str) -> Verification:
    return _worker().verify(encoded, password)


def _ready() -> None:
    _worker()
