from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from tahoe_auth.domain import passwords
from tahoe_auth.domain.errors import Unavailable

OWASP = passwords.PasswordHasher(memory_kib=19 * 1024, time_cost=2, parallelism=1)


def test_hash_is_argon2id_with_owasp_parameters() -> None:
    encoded = OWASP.hash("a fine password")
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert OWASP.verify(encoded, "a fine password") == passwords.Verification(ok=True, needs_rehash=False)
    assert not OWASP.verify(encoded, "a fine passwore").ok


def test_rehash_is_requested_when_parameters_change() -> None:
    weaker = passwords.PasswordHasher(memory_kib=19 * 1024, time_cost=1, parallelism=1)
    result = OWASP.verify(weaker.hash("a fine password"), "a fine password")
    assert result.ok and result.needs_rehash


def test_unknown_user_verifies_against_a_dummy_and_fails() -> None:
    started = time.perf_counter()
    assert not OWASP.verify(None, "anything at all").ok
    assert time.perf_counter() - started > 0.005  # real argon2 work was done


def test_corrupt_hash_is_a_failed_verification_not_an_error() -> None:
    assert not OWASP.verify("$argon2id$garbage", "password123").ok


def test_long_passwords_are_not_truncated() -> None:
    encoded = OWASP.hash("p" * 1023 + "a")
    assert not OWASP.verify(encoded, "p" * 1023 + "b").ok
    assert not OWASP.verify(encoded, "p" * 1023).ok


def test_bounded_hasher_hashes_in_niced_worker_processes_and_stops_them() -> None:
    bounded = passwords.BoundedHasher(OWASP, concurrency=1, queue=1, niceness=5)
    try:
        encoded = bounded.hash("a fine password")
        assert bounded.verify(encoded, "a fine password").ok
        assert not bounded.verify(encoded, "a fine passwore").ok
        workers = multiprocessing.active_children()
        assert len(workers) == 1 and workers[0].pid is not None
        assert os.getpriority(os.PRIO_PROCESS, workers[0].pid) == os.getpriority(os.PRIO_PROCESS, 0) + 5
    finally:
        bounded.shutdown()
    assert not workers[0].is_alive()  # joined, not left behind
    with pytest.raises(Unavailable):
        bounded.hash("a fine password")


def test_unknown_users_cost_a_real_verification_in_the_workers_too() -> None:
    bounded = passwords.BoundedHasher(OWASP, concurrency=1, queue=0)
    try:
        bounded.start()
        started = time.perf_counter()
        assert not bounded.verify(None, "anything at all").ok
        assert time.perf_counter() - started > 0.005  # the dummy hash was verified
    finally:
        bounded.shutdown()


def test_admission_caps_the_callers_and_refuses_the_rest_with_retry_advice() -> None:
    bounded = passwords.BoundedHasher(OWASP, concurrency=1, queue=4, callers=2)
    with bounded.admit(), bounded.admit():
        with pytest.raises(Unavailable) as refused, bounded.admit():
            pass  # pragma: no cover
        assert refused.value.retry_after >= 1
    with bounded.admit():  # the places came back
        pass
    bounded.shutdown()
