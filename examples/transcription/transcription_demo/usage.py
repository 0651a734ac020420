"""Usage reporting: one `transcription.seconds` event per job, sent to Tahoe Auth's
UsageService with a service-account credential. Reporting must never slow a request
down or lose an event silently: events go to a bounded queue drained by a thread that
retries with backoff, and a full queue is logged."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

METRIC = "transcription.seconds"


@dataclass(frozen=True)
class UsageEvent:
    tenant_id: str
    metric: str
    quantity: float
    # The job id: the usage service counts an idempotency key once, so retries are safe.
    idempotency_key: str
    request_id: str = ""


Send = Callable[[UsageEvent], None]


class UsageReporter:
    def __init__(self, send: Send | None, max_queue: int = 10_000, max_attempts: int = 5) -> None:
        self._send = send
        self._queue: queue.Queue[UsageEvent] = queue.Queue(max_queue)
        self._max_attempts = max_attempts
        self._thread: threading.Thread | None = None
        if send is not None:
            self._thread = threading.Thread(target=self._drain, name="usage", daemon=True)
            self._thread.start()

    def job_done(self, tenant_id: str, job_id: str, audio_seconds: float, request_id: str) -> None:
        if self._send is None:
            log.debug("usage not reported (no usage service configured): %s %s s", tenant_id, audio_seconds)
            return
        try:
            self._queue.put_nowait(UsageEvent(tenant_id, METRIC, audio_seconds, job_id, request_id))
        except queue.Full:
            log.error("usage queue full: job %s of tenant %s not reported", job_id, tenant_id)

    def flush(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _drain(self) -> None:
        assert self._send is not None
        while True:
            event = self._queue.get()
            for attempt in range(1, self._max_attempts + 1):
                try:
                    self._send(event)
                    break
                except Exception as exc:  # any failure: retry, then log and drop
                    if attempt == self._max_attempts:
                        log.error(
                            "usage event for job %s dropped after %d attempts: %s", event.idempotency_key, attempt, exc
                        )
                    else:
                        time.sleep(min(5.0, 0.1 * 2**attempt))
            self._queue.task_done()
