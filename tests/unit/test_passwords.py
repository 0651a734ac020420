from __future__ import annotations

import threading
import time

import pytest

from tahoe_auth.domain import passwords
from tahoe_auth.domain.errors import InvalidArgument, Unavailable

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


@pytest.mark.parametrize("length", [8, 64, 1024])
def test_policy_accepts_8_to_1024(length: int) -> None:
    passwords.check_policy("x" * length)


@pytest.mark.parametrize("length", [0, 7, 1025])
def test_policy_rejects_outside_8_to_1024(length: int) -> None:
    with pytest.raises(InvalidArgument):
        passwords.check_policy("x" * length)


def test_long_passwords_are_not_truncated() -> None:
    encoded = OWASP.hash("p" * 1023 + "a")
    assert not OWASP.verify(encoded, "p" * 1023 + "b").ok
    assert not OWASP.verify(encoded, "p" * 1023).ok


def test_bounded_hasher_caps_concurrency_and_sheds_load() -> None:
    bounded = passwords.BoundedHasher(OWASP, concurrency=1, queue=1)
    gate = threading.Event()
    running = []

    def slow() -> None:
        running.append(1)
        gate.wait(5)

    first = bounded.submit(slow)
    second = bounded.submit(slow)  # queued behind the first
    with pytest.raises(Unavailable):
        bounded.submit(slow)
    time.sleep(0.05)
    assert len(running) == 1  # only one ran at a time
    gate.set()
    first.result(5)
    second.result(5)
    bounded.submit(lambda: None).result(5)  # capacity came back
    bounded.shutdown()
