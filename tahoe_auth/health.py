"""The standard gRPC health service, fed by whether the database answers."""

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
    """NOT_SERVING while the database is unreachable, checked every few seconds."""

    def __init__(self, app: App, servicer: health.HealthServicer, service_names: Sequence[str] = ()) -> None:
        self._app = app
        self._servicer = servicer
        self._names = ["", *service_names]
        self._stop = threading.Event()
        self.ready = False

    def check_once(self) -> bool:
        ready = self._app.db.ping()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self._names:
            self._servicer.set(name, status)
        if ready != self.ready:
            log.log(
                logging.INFO if ready else logging.ERROR, "health: %s", "serving" if ready else "database unreachable"
            )
        self.ready = ready
        return ready

    def run(self) -> None:
        while not self._stop.wait(HEALTH_INTERVAL):
            self.check_once()

    def start(self) -> None:
        self.check_once()
        threading.Thread(target=self.run, name="health", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        for name in self._names:
            self._servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
