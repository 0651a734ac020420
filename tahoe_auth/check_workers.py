"""More processes answering Envoy's HTTP ext_authz Check (TAHOE_AUTHZ_WORKERS).

One Python process answers Checks on about one core (the interpreter lock), so `serve`
can start `authz_workers - 1` more. Each builds its own App from the same Settings and
runs only what a Check needs: the change feed (revocations), the signing-key refresh and
an HttpAuthzServer on the same address. All of them bind it with SO_REUSEPORT, so the
kernel spreads Envoy's connections over the processes. The parent alone keeps the gRPC
API, the side port, the usage rollup and the webhook worker.

Workers are started with `spawn` (the parent has threads, and forking those is unsafe).
Each talks to the parent over a pipe: it says when it serves and reports its decision
counts every second (the parent's /metrics shows them, a worker serves no port but the
Check's); the parent says when to stop. A worker stops, after answering what it has in
flight, when told to, on SIGTERM, when the pipe closes or when its parent is gone (a
SIGKILLed parent cannot tell it). A worker that dies is started again, after a delay
that grows while it keeps dying young.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

from tahoe_auth.api.ext_authz_http import HttpAuthzServer, HttpCheck
from tahoe_auth.app import build_app
from tahoe_auth.config import Settings
from tahoe_auth.kernel import logs, metrics

log = logging.getLogger(__name__)

REPORT_INTERVAL = 1.0
PARENT_POLL = 0.5
STOP_TIMEOUT = 10.0
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
# A worker that dies sooner than this after its start counts as failing to start.
YOUNG = 10.0
STOP = "stop"


@dataclass
class _Worker:
    slot: int
    process: BaseProcess
    conn: Connection
    started: float
    pid: int
    serving: bool = False
    open: bool = True
    reported: dict[str, float] = field(default_factory=dict)


class CheckWorkers:
    """The extra Check processes of one `serve`; `start` and `stop` from its main thread."""

    def __init__(self, settings: Settings, address: str, count: int | None = None) -> None:
        self._settings = settings
        self._address = address  # the bound one (a configured port 0 is resolved by now)
        self._count = settings.authz_workers - 1 if count is None else count
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._due: dict[int, float] = {}  # slot -> when to start it again
        self._failures: dict[int, int] = {}  # young deaths in a row, by slot
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._count < 1:
            return
        for slot in range(1, self._count + 1):
            self._spawn(slot)
        self._thread = threading.Thread(target=self._watch, name="check-workers", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Tell every worker to stop, wait for their answers in flight, kill stragglers."""
        self._stopping.set()
        self._tell_stop()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self._tell_stop()  # and any it started meanwhile
        deadline = time.monotonic() + timeout
        for worker in self._workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                log.warning(
                    "Check worker %d (pid %d) did not stop in %.0f s: killing it", worker.slot, worker.pid, timeout
                )
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers.clear()
        metrics.CHECK_WORKERS_SERVING.set(0)

    def _tell_stop(self) -> None:
        for worker in list(self._workers.values()):
            with contextlib.suppress(OSError):  # gone already
                worker.conn.send(STOP)

    def _spawn(self, slot: int) -> None:
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=run_worker,
            args=(self._settings, self._address, slot, os.getpid(), child_end),
            name=f"tahoe-check-{slot}",
            daemon=True,
        )
        process.start()
        child_end.close()
        pid = process.pid or 0
        self._workers[slot] = _Worker(slot, process, parent_end, time.monotonic(), pid)
        log.info("Check worker %d started (pid %d)", slot, pid)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            workers = list(self._workers.values())
            handles: list[Connection | int] = [worker.conn for worker in workers if worker.open]
            handles += [worker.process.sentinel for worker in workers]
            ready = set(wait(handles, timeout=0.2)) if handles else set()
            for worker in workers:
                if worker.conn in ready:
                    self._receive(worker)
                if worker.process.sentinel in ready:
                    self._bury(worker)
            now = time.monotonic()
            for slot, due in list(self._due.items()):
                if due <= now and not self._stopping.is_set():
                    del self._due[slot]
                    self._spawn(slot)

    def _receive(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            worker.open = False  # dying: its sentinel says when it is gone
            return
        kind, value = message
        if kind == "serving":
            worker.serving = True
            log.info("Check worker %d (pid %d) serving HTTP ext_authz on %s", worker.slot, worker.pid, self._address)
            self._failures[worker.slot] = 0
        elif kind == "decisions":
            for outcome, total in value.items():
                delta = total - worker.reported.get(outcome, 0.0)
                if delta > 0:
                    metrics.CHECK_WORKER_DECISIONS.labels(str(worker.slot), outcome).inc(delta)
                worker.reported[outcome] = total
        self._count_serving()

    def _bury(self, worker: _Worker) -> None:
        while worker.open:  # its last counts
            if not worker.conn.poll(0):
                break
            self._receive(worker)
        worker.process.join()
        worker.conn.close()
        del self._workers[worker.slot]
        self._count_serving()
        if self._stopping.is_set():
            return
        failures = self._failures.get(worker.slot, 0)
        if time.monotonic() - worker.started < YOUNG:
            failures += 1
        self._failures[worker.slot] = failures
        delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** max(0, failures - 1))
        log.warning(
            "Check worker %d (pid %d) exited with code %s: starting it again in %.1f s",
            worker.slot,
            worker.pid,
            worker.process.exitcode,
            delay,
        )
        metrics.CHECK_WORKER_RESTARTS.labels(str(worker.slot)).inc()
        self._due[worker.slot] = time.monotonic() + delay

    def _count_serving(self) -> None:
        metrics.CHECK_WORKERS_SERVING.set(sum(worker.serving for worker in self._workers.values()))


def run_worker(settings: Settings, address: str, slot: int, parent_pid: int, conn: Connection) -> None:
    """A worker process's main: serve Checks on `address` until told or left to stop."""
    stop = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    logs.configure(settings.log_format, settings.log_level)
    threading.Thread(target=_follow_parent, args=(conn, parent_pid, stop), name="parent", daemon=True).start()
    app = build_app(settings)
    try:
        app.changes.start()
        app.keys.start_refresh()
        server = HttpAuthzServer(HttpCheck(app.gatekeeper), address, reuse_port=True)
        server.start()
        gc.collect()  # as server.freeze_startup_heap: keep full collections off the startup heap
        gc.freeze()
        _send(conn, ("serving", os.getpid()))
        while not stop.wait(REPORT_INTERVAL):
            _send(conn, ("decisions", _decisions()))
        server.stop()
        _send(conn, ("decisions", _decisions()))
    finally:
        app.close()
    log.info("Check worker %d stopped", slot)


def _follow_parent(conn: Connection, parent_pid: int, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            if conn.poll(PARENT_POLL):
                if conn.recv() == STOP:
                    break
            elif os.getppid() != parent_pid:
                log.warning("the parent process is gone: stopping")
                break
    except (EOFError, OSError):
        pass  # the parent closed the pipe or died
    stop.set()


def _send(conn: Connection, message: tuple[str, object]) -> None:
    with contextlib.suppress(OSError):  # the parent is gone; _follow_parent stops us
        conn.send(message)


def _decisions() -> dict[str, float]:
    totals: dict[str, float] = {}
    for family in metrics.CHECK_DECISIONS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                outcome = sample.labels["outcome"]
                totals[outcome] = totals.get(outcome, 0.0) + sample.value
    return totals
