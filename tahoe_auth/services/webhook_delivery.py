"""The webhook delivery worker: outbox -> deliveries -> signed POSTs, at least once.

Each round, in its own short transactions:
1. dispatch: claim undispatched outbox events and create one delivery per matching
   active endpoint of the event's tenant;
2. claim: take a batch of due deliveries, counting the attempt and pushing
   `next_attempt_at` out by the lease (a crashed worker's claim lapses: the delivery is
   sent again, with the same `webhook-id` = event id, so receivers can deduplicate);
3. send: POST the batch concurrently (Standard Webhooks headers, one signature per
   secret in force, SSRF-checked, with a timeout);
4. record: 2xx -> succeeded; 410 -> dead and the endpoint disabled; refused URL or
   address -> dead; anything else -> retried with exponential backoff and jitter
   (Retry-After honoured) until the ~3-day horizon, then dead. An outcome is recorded
   only if the row is still at the claimed attempt.
Runs as `tahoe-auth worker` (several may run against PostgreSQL) or as a thread of
`serve` (TAHOE_WEBHOOK_WORKER, on by default).
"""

from __future__ import annotations

import datetime as dt
import http.client
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tahoe_auth.domain import audit, events
from tahoe_auth.domain import webhooks as standard
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.kernel.metrics import (
    OUTBOX_DEPTH,
    STORE_FAILURES,
    WEBHOOK_ATTEMPT_DURATION,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_DUE,
    WEBHOOK_EVENTS_DISPATCHED,
    WEBHOOK_LAG,
)
from tahoe_auth.services.audit import Actor, AuditLog
from tahoe_auth.services.webhooks import SecretBox, add_deliveries_for
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database
from tahoe_auth.store.webhook_repository import Claimed
from tahoe_auth.webhooks import sender
from tahoe_auth.webhooks.sender import EgressPolicy, Resolver

log = logging.getLogger(__name__)

GONE_REASON = "the receiver answered 410 Gone"
WORKER_ACTOR = Actor("webhook-worker", audit.SYSTEM_ACTOR)


@dataclass(frozen=True)
class WorkerConfig:
    batch: int = 200
    concurrency: int = 16
    timeout: float = 10.0
    lease: float = 60.0
    idle_wait: float = 0.2
    gauge_interval: float = 5.0
    retry: standard.RetryPolicy = field(default_factory=standard.RetryPolicy)


@dataclass(frozen=True)
class Job:
    claimed: Claimed
    url: str
    secrets: tuple[str, ...]
    body: bytes
    event_created: dt.datetime


@dataclass(frozen=True)
class Result:
    job: Job
    status: int = 0
    retry_after: float | None = None
    error: str = ""
    refused: bool = False
    duration: float = 0.0


Post = Callable[..., sender.Response]


class WebhookWorker:
    def __init__(
        self,
        db: Database,
        box: SecretBox,
        policy: EgressPolicy,
        audit_log: AuditLog,
        clock: Clock,
        config: WorkerConfig = WorkerConfig(),
        resolver: Resolver = sender.system_resolver,
        post: Post = sender.post,
    ) -> None:
        if config.lease <= config.timeout:
            raise ValueError("the lease must be longer than the request timeout")
        self._db = db
        self._box = box
        self._policy = policy
        self._audit = audit_log
        self._clock = clock
        self.config = config
        self._resolver = resolver
        self._post = post
        self._pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="webhook-send")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_gauges = 0.0

    # -- one round ---------------------------------------------------------------------------

    def dispatch(self) -> int:
        now = self._clock.now()
        with self._db.unit_of_work(SYSTEM) as uow:
            claimed = uow.outbox.claim_undispatched(now, self.config.batch * 2)
            created = add_deliveries_for(uow, claimed, now)
            uow.commit()
        WEBHOOK_EVENTS_DISPATCHED.inc(len(claimed))
        return len(claimed) + created

    def deliver(self) -> int:
        jobs = self._claim()
        if not jobs:
            return 0
        results = list(self._pool.map(self._send, jobs))
        self._record(results)
        return len(results)

    def run_once(self) -> int:
        """Dispatch, then deliver one batch: how much work was found."""
        work = self.dispatch()
        work += self.deliver()
        if time.monotonic() - self._last_gauges >= self.config.gauge_interval:
            self.update_gauges()
        return work

    def drain(self, limit: float = 10.0) -> None:
        """Run rounds until there is nothing due (for tests and the CLI's --once)."""
        deadline = time.monotonic() + limit
        while self.run_once() and time.monotonic() < deadline:
            pass

    def update_gauges(self) -> None:
        self._last_gauges = time.monotonic()
        with self._db.unit_of_work(SYSTEM) as uow:
            OUTBOX_DEPTH.set(uow.outbox.undispatched_count())
            WEBHOOK_DUE.set(uow.webhooks.due_count(self._clock.now()))

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        log.info("webhook worker started (batch %d, concurrency %d)", self.config.batch, self.config.concurrency)
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception as exc:  # the database may be down: keep going, slower
                STORE_FAILURES.labels("webhook_worker", "retry").inc()
                log.warning("webhook worker round failed (%s: %s); retrying in 1 s", type(exc).__name__, exc)
                self._stop.wait(1.0)
                continue
            if not busy:
                self._stop.wait(self.config.idle_wait)
        log.info("webhook worker stopped")

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="webhook-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.timeout + 5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- steps -------------------------------------------------------------------------------

    def _claim(self) -> list[Job]:
        now = self._clock.now()
        lease_until = now + dt.timedelta(seconds=self.config.lease)
        with self._db.unit_of_work(SYSTEM) as uow:
            claimed = uow.webhooks.claim_due(now, lease_until, self.config.batch)
            if not claimed:
                uow.commit()
                return []
            event_rows = uow.outbox.by_ids(c.event_id for c in claimed)
            endpoints = uow.webhooks.endpoints_by_ids(c.endpoint_id for c in claimed)
            uow.commit()
        bodies: dict[str, bytes] = {}
        secrets: dict[str, tuple[str, ...]] = {}
        jobs = []
        for c in claimed:
            event = event_rows[c.event_id]
            if c.event_id not in bodies:
                bodies[c.event_id] = events.webhook_body(_event(event))
            if c.endpoint_id not in secrets:
                secrets[c.endpoint_id] = tuple(self._box.signing_secrets(endpoints[c.endpoint_id], now))
            jobs.append(
                Job(c, endpoints[c.endpoint_id].url, secrets[c.endpoint_id], bodies[c.event_id], event.created_at)
            )
        return jobs

    def _send(self, job: Job) -> Result:
        started = time.perf_counter()
        try:
            headers = standard.headers(job.secrets, job.claimed.event_id, int(self._clock.timestamp()), job.body)
            response = self._post(
                job.url, job.body, headers, self._policy, timeout=self.config.timeout, resolver=self._resolver
            )
            retry_after = standard.parse_retry_after(response.headers.get("retry-after"))
            return Result(job, response.status, retry_after, duration=time.perf_counter() - started)
        except sender.DeliveryRefused as exc:
            return Result(job, error=f"refused: {exc}", refused=True, duration=time.perf_counter() - started)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return Result(job, error=f"{type(exc).__name__}: {exc}", duration=time.perf_counter() - started)

    def _record(self, results: list[Result]) -> None:
        now = self._clock.now()
        outcomes: list[dict[str, Any]] = []
        gone: dict[str, str] = {}
        for result in results:
            outcome, status, next_at = self._judge(result, now)
            WEBHOOK_ATTEMPTS.labels(outcome).inc()
            WEBHOOK_ATTEMPT_DURATION.observe(result.duration)
            if outcome == "gone":
                gone[result.job.claimed.endpoint_id] = GONE_REASON
            if status == events.SUCCEEDED:
                WEBHOOK_LAG.observe(max(0.0, (now - result.job.event_created).total_seconds()))
            error = result.error or ("" if 200 <= result.status < 300 else f"HTTP {result.status}")
            outcomes.append(
                {
                    "b_id": result.job.claimed.id,
                    "b_attempts": result.job.claimed.attempts,
                    "b_status": status,
                    "b_next": next_at,
                    "b_code": result.status,
                    "b_error": error[:500],
                    "b_duration": round(result.duration * 1000, 3),
                    "b_finished": now if status in (events.SUCCEEDED, events.DEAD) else None,
                }
            )
        with self._db.unit_of_work(SYSTEM) as uow:
            uow.webhooks.record_outcomes(outcomes)
            if gone:
                uow.webhooks.disable_endpoints(gone, now)
                tenants = {r.job.claimed.endpoint_id: r.job.claimed.tenant_id for r in results}
                for endpoint_id in sorted(gone):
                    self._audit.record(
                        uow,
                        None,
                        tenants[endpoint_id],
                        "webhook.endpoint_disable",
                        f"webhook_endpoint:{endpoint_id}",
                        details={"reason": GONE_REASON},
                        actor=WORKER_ACTOR,
                    )
            uow.commit()
        for endpoint_id in gone:
            log.warning("webhook endpoint %s disabled: %s", endpoint_id, GONE_REASON)

    def _judge(self, result: Result, now: dt.datetime) -> tuple[str, str, dt.datetime]:
        """(metric outcome, delivery status, next attempt time)."""
        if 200 <= result.status < 300:
            return "succeeded", events.SUCCEEDED, now
        if result.status == 410:
            return "gone", events.DEAD, now
        if result.refused:
            log.warning("webhook delivery %s refused: %s", result.job.claimed.id, result.error)
            return "refused", events.DEAD, now
        elapsed = (now - result.job.claimed.window_start).total_seconds()
        wait = self.config.retry.next_attempt_in(result.job.claimed.attempts, elapsed, result.retry_after)
        if wait is None:
            return "dead", events.DEAD, now
        return "retrying", events.RETRYING, now + dt.timedelta(seconds=wait)


def _event(row: m.OutboxEvent) -> events.Event:
    return events.Event(
        id=row.id,
        tenant_id=row.tenant_id,
        type=row.type,
        created_at=row.created_at,
        data=row.payload,
        request_id=row.request_id,
        traceparent=row.traceparent,
    )
