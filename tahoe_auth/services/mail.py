"""The mail channel: messages queued in the transaction of their change, sent by a
worker with retries and backoff, dead-lettered when the horizon passes or the server
refuses them for good.

`MailQueue.queue` writes the row (its variables sealed: a link in them carries a
token); `MailWorker` claims due rows (a lease, as for webhooks: a crashed worker's
claim lapses and the message is sent again), renders the tenant's locale's template
and sends it through the configured transport (SMTP, or files under var/mail/). Runs as
a thread of `serve` and `tahoe-auth worker`, next to the webhook worker.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from functools import lru_cache
from pathlib import Path

from tahoe_auth.domain import audit, crypto, mail
from tahoe_auth.domain.webhooks import RetryPolicy
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.kernel.metrics import MAIL_ATTEMPTS, MAIL_DUE, STORE_FAILURES
from tahoe_auth.mail.transport import MailFailure, Transport
from tahoe_auth.services.audit import Actor, AuditLog
from tahoe_auth.store import models as m
from tahoe_auth.store.db import SYSTEM, Database, UnitOfWork
from tahoe_auth.store.mail_repository import ClaimedMail

log = logging.getLogger(__name__)

SEAL_PURPOSE = "mail-variables"
TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "data" / "mail"
WORKER_ACTOR = Actor("mail-worker", audit.SYSTEM_ACTOR)


@lru_cache(maxsize=64)
def template_text(locale: str, name: str) -> mail.TemplateText:
    """The template's files for `locale`, else English's."""
    for candidate in dict.fromkeys((locale, locale.split("-", maxsplit=1)[0], mail.DEFAULT_LOCALE)):
        directory = TEMPLATE_DIR / candidate
        if (directory / f"{name}.txt").is_file():
            return mail.TemplateText(
                (directory / f"{name}.txt").read_text(encoding="utf-8"),
                (directory / f"{name}.html").read_text(encoding="utf-8"),
            )
    raise mail.TemplateError(f"no mail template {name!r}")


def _context(row: m.MailMessage) -> str:
    return f"mail:{row.tenant_id}:{row.id}"


class MailQueue:
    def __init__(self, master_key: bytes, clock: Clock) -> None:
        self._key = crypto.derive_key(master_key, SEAL_PURPOSE)
        self._clock = clock

    def queue(
        self, uow: UnitOfWork, tenant: m.Tenant, template: str, to: str, variables: Mapping[str, str]
    ) -> m.MailMessage:
        """In the caller's transaction: the mail exists exactly when the change committed."""
        mail.check_variables(template, variables)
        template_text(mail.locale_of(tenant.settings), template)  # a missing template fails now, not later
        row = uow.mail.add(
            m.MailMessage(
                tenant_id=tenant.id,
                template=template,
                locale=mail.locale_of(tenant.settings),
                to_address=to,
                sender_name=mail.sender_name(tenant.settings, tenant.display_name),
                next_attempt_at=self._clock.now(),
            )
        )
        row.variables_sealed = crypto.seal(self._key, json.dumps(dict(variables)).encode(), _context(row))
        return row

    def variables(self, row: m.MailMessage) -> dict[str, str]:
        loaded: dict[str, str] = json.loads(crypto.unseal(self._key, row.variables_sealed, _context(row)))
        return loaded


@dataclass(frozen=True)
class MailWorkerConfig:
    batch: int = 50
    lease: float = 60.0
    idle_wait: float = 0.2
    gauge_interval: float = 5.0
    retry: RetryPolicy = mail.RETRY
    max_attempts: int = mail.MAX_ATTEMPTS


class MailWorker:
    def __init__(
        self,
        db: Database,
        queue: MailQueue,
        transport: Transport,
        from_address: str,
        audit_log: AuditLog,
        clock: Clock,
        config: MailWorkerConfig = MailWorkerConfig(),
        before_round: Sequence[Callable[[], int]] = (),
    ) -> None:
        self._db = db
        self._queue = queue
        self.transport = transport
        self._from = from_address
        self._audit = audit_log
        self._clock = clock
        self.config = config
        # Work that makes mail (the "forgot password" requests): run at the start of each round.
        self._before_round = list(before_round)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_gauges = 0.0

    def add_before_round(self, step: Callable[[], int]) -> None:
        self._before_round.append(step)

    def run_once(self) -> int:
        work = sum(step() for step in self._before_round)
        work += self.deliver()
        if time.monotonic() - self._last_gauges >= self.config.gauge_interval:
            self._last_gauges = time.monotonic()
            with self._db.unit_of_work(SYSTEM) as uow:
                MAIL_DUE.set(uow.mail.due_count(self._clock.now()))
        return work

    def drain(self, limit: float = 10.0) -> None:
        """Rounds until nothing is due (tests, and the CLI's --once)."""
        deadline = time.monotonic() + limit
        while self.run_once() and time.monotonic() < deadline:
            pass

    def deliver(self) -> int:
        now = self._clock.now()
        with self._db.unit_of_work(SYSTEM) as uow:
            claimed = uow.mail.claim_due(now, now + dt.timedelta(seconds=self.config.lease), self.config.batch)
            rows = uow.mail.by_ids([c.id for c in claimed])
            uow.commit()
        for one in claimed:
            self._send(one, rows[one.id])
        return len(claimed)

    def _message(self, row: m.MailMessage) -> EmailMessage:
        rendered = mail.render(row.template, template_text(row.locale, row.template), self._queue.variables(row))
        message = EmailMessage()
        message["From"] = formataddr((row.sender_name, self._from))
        message["To"] = row.to_address
        message["Subject"] = rendered.subject
        domain = self._from.rpartition("@")[2] or "localhost"
        message["Message-ID"] = make_msgid(idstring=row.id.replace("-", ""), domain=domain)
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: out-of-office replies stay away
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
        return message

    def _send(self, claimed: ClaimedMail, row: m.MailMessage) -> None:
        error, wait = "", 0.0
        try:
            self.transport.send(self._message(row))
            status = mail.SENT
        except MailFailure as exc:
            error = str(exc)
            status, wait = (mail.DEAD, 0.0) if exc.permanent else self._retry(claimed)
        except (mail.TemplateError, ValueError, KeyError) as exc:  # a message that can never render
            error, status = f"cannot render: {exc}", mail.DEAD
        now = self._clock.now()
        MAIL_ATTEMPTS.labels(status).inc()
        with self._db.unit_of_work(claimed.tenant_id) as uow:
            recorded = uow.mail.record(claimed, status, now + dt.timedelta(seconds=wait), error, now)
            if recorded and status == mail.DEAD:
                self._audit.record(
                    uow,
                    None,
                    claimed.tenant_id,
                    "mail.dead",
                    f"mail:{claimed.id}",
                    audit.FAILURE,
                    {"template": row.template, "attempts": claimed.attempts, "error": error[:300]},
                    actor=WORKER_ACTOR,
                )
            uow.commit()
        if status != mail.SENT:
            # Which message, not what it says: the content may hold a link's token.
            log.warning("mail %s (%s) not sent, %s: %s", claimed.id, row.template, status, error)

    def _retry(self, claimed: ClaimedMail) -> tuple[str, float]:
        """(retrying, seconds to wait), or (dead, 0) once the attempts or the horizon run out."""
        if claimed.attempts >= self.config.max_attempts:
            return mail.DEAD, 0.0
        elapsed = (self._clock.now() - claimed.created_at).total_seconds()
        wait = self.config.retry.next_attempt_in(claimed.attempts, elapsed)
        return (mail.DEAD, 0.0) if wait is None else (mail.RETRYING, wait)

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        log.info("mail worker started: %s", self.transport.describe())
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception as exc:  # the database may be down: keep going, slower
                STORE_FAILURES.labels("mail_worker", "retry").inc()
                log.warning("mail worker round failed (%s: %s); retrying in 1 s", type(exc).__name__, exc)
                self._stop.wait(1.0)
                continue
            if not busy:
                self._stop.wait(self.config.idle_wait)
        log.info("mail worker stopped")

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="mail-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
