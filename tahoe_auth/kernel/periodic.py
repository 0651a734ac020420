"""A flush that runs every few seconds on its own daemon thread, started by the first
call that has something to flush: in-memory tallies (aggregated denials, throttled
logins) cost no thread until they see traffic.

    self._ticker = PeriodicFlush("audit-denials", 5.0, self.flush)
    self._ticker.ensure_started()      # after recording something
    self._ticker.stop(lambda: self.flush(everything=True))
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class PeriodicFlush:
    def __init__(self, name: str, interval: float, flush: Callable[[], object]) -> None:
        self._name = name
        self._interval = interval
        self._flush = flush
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._flush()

    def stop(self, final: Callable[[], object] | None = None) -> None:
        """End the thread (if it ever started), then flush once more: `final`, or the
        periodic flush."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        (final or self._flush)()
