"""kernel.periodic.PeriodicFlush: no thread until first use, a flush per interval, and
one last flush at stop."""

from __future__ import annotations

import threading

from tahoe_auth.kernel.periodic import PeriodicFlush
from tests.support import wait_until


def test_no_thread_until_first_use_then_flushes_until_stopped() -> None:
    flushed = threading.Event()
    calls: list[str] = []

    def flush() -> None:
        calls.append("periodic")
        flushed.set()

    ticker = PeriodicFlush("test-periodic", 0.01, flush)
    assert not [t for t in threading.enumerate() if t.name == "test-periodic"]
    ticker.ensure_started()
    ticker.ensure_started()  # once only
    assert len([t for t in threading.enumerate() if t.name == "test-periodic"]) == 1
    wait_until(flushed.is_set)
    ticker.stop(lambda: calls.append("final"))
    assert calls[-1] == "final" and "periodic" in calls
    assert not [t for t in threading.enumerate() if t.name == "test-periodic"]


def test_stop_without_a_start_still_flushes_once() -> None:
    calls: list[int] = []
    PeriodicFlush("never-started", 60, lambda: calls.append(1)).stop()
    assert calls == [1]
