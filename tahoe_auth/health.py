"""The standard gRPC health service and /readyz, fed by whether the database answers
and by whether the server is shutting down.

Readiness is logged when it changes, not each time it is checked: during an outage
orchestrators probe every few seconds, and one line saying the database went away (and
why) plus one saying it came back is what an operator needs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from grpc_health.v1 import health, health_pb2

if TYPE_CHECKING:
    from tahoe_auth.app import App

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 2.0


class HealthReporter:
    """NOT_SERVING while the database is unreachable, checked every few seconds and on
    every /readyz probe, and for good once `stop` is called (the server is draining:
    callers must go elsewhere)."""

    def __init__(self, app: App, servicer: health.HealthServicer, service_names: Sequence[str] = ()) -> None:
        self._app = app
        self._servicer = servicer
        self._names = ["", *service_names]
        self._stop = threading.Event()
        # Concurrent probes log a change once; a check that started before `stop` must
        # not report SERVING after it.
        self._lock = threading.Lock()
        self._logged: bool | None = None  # the readiness last logged; None before the first check
        self.ready = False

    @property
    def draining(self) -> bool:
        return self._stop.is_set()

    def check_once(self) -> bool:
        db = self._app.db
        ready = db.ping()
        reason = "" if ready else db.ping_error
        with self._lock:
            if self._stop.is_set():
                return False
            self._publish(ready)
            if ready != self._logged:
                if ready:
                    log.info("health: serving")
                else:
                    log.error("health: not serving, database unreachable (%s)", reason or "no answer")
                self._logged = ready
            self.ready = ready
        return ready

    def _publish(self, ready: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self._names:
            self._servicer.set(name, status)

    def run(self) -> None:
        while not self._stop.wait(HEALTH_INTERVAL):
            self.check_once()

    def start(self) -> None:
        self.check_once()
        threading.Thread(target=self.run, name="health", daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            self.ready = False
            self._publish(False)
