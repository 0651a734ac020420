"""Webhook delivery throughput and end-to-end lag on this machine.

    .venv/bin/python bench/webhook_bench.py [--events 20000] [--rate 1000] [--workers 1]

Runs a real `tahoe-auth worker` process (PostgreSQL database `tahoe_bench_webhooks`)
delivering to a local receiver in its own process (asyncio, keep-alive aware, checks
one signature in 50 with the spec's reference library and counts duplicates). Prints:
  - drain: `--events` events already in the outbox when the worker starts: delivered
    events/s (target: at least 1,000/s);
  - steady: events committed at `--rate` events/s (in transactions of 10) while the
    worker runs: lag from commit to the receiver, p50/p99 (target p99 under 2 s), and
    the throughput it kept up with;
and for both, failures (non-2xx, missing or duplicated deliveries; target: none).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_bench_webhooks"


# -- the receiver (its own process) ------------------------------------------------------------


def run_receiver(port_arg: str, out_file: str, secret: str) -> None:
    """Serve on the port after the colon of `port_arg`; write the file before it when ready."""
    port_file, _, port = port_arg.rpartition(":")
    import standardwebhooks

    verifier = standardwebhooks.Webhook(secret)
    received: dict[str, int] = {}
    lags: list[float] = []
    first_last = [0.0, 0.0]
    bad_signatures = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode().split("\r\n")[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                now = time.time()
                event_id = headers["webhook-id"]
                received[event_id] = received.get(event_id, 0) + 1
                stamp = json.loads(body)["timestamp"]
                lags.append(now - dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
                first_last[0] = first_last[0] or now
                first_last[1] = now
                if len(lags) % 50 == 1:
                    try:
                        verifier.verify(body, headers)
                    except Exception:
                        bad_signatures[0] += 1
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", int(port), backlog=1024, reuse_address=True)
        Path(port_file).write_text(port)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()
        stats = {
            "received": sum(received.values()),
            "distinct": len(received),
            "duplicates": sum(v - 1 for v in received.values()),
            "lags": lags,
            "first": first_last[0],
            "last": first_last[1],
            "bad_signatures": bad_signatures[0],
        }
        Path(out_file).write_text(json.dumps(stats))

    asyncio.run(serve())


# -- the benchmark -----------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Stage:
    def __init__(self, tmp: Path, workers: int, concurrency: int) -> None:
        from tahoe_auth.app import build_app
        from tahoe_auth.config import Settings
        from tests import support

        support.create_database(PG_URL)
        support.reset_schema(PG_URL)
        self.tmp = tmp
        self.workers = workers
        self.concurrency = concurrency
        self.env = {
            **os.environ,
            "TAHOE_DATABASE_URL": PG_URL,
            "TAHOE_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "TAHOE_VAR_DIR": str(tmp / "var"),
            "TAHOE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "TAHOE_WEBHOOK_ALLOW_HTTP": "true",
            "TAHOE_WEBHOOK_CONCURRENCY": str(concurrency),
            "TAHOE_LOG_LEVEL": "WARNING",
        }
        self.app = build_app(Settings.from_env(self.env))
        tenant, _ = self.app.tenants.create_tenant_with_owner(
            f"bench{secrets.token_hex(3)}", "Bench", "o@bench.test", "correct horse battery staple"
        )
        self.tenant_id = tenant.id
        self.processes: list[subprocess.Popen[bytes]] = []

    def endpoint(self, url: str) -> str:
        from tahoe_auth.domain.principal import PLATFORM, Principal
        from tahoe_auth.services.context import CallContext
        from tahoe_auth.services.webhooks import EndpointSpec

        ctx = CallContext(
            principal=Principal(tenant_id="", subject="bench", subject_type=PLATFORM, platform_admin=True)
        )
        _, secret = self.app.webhooks.create(ctx, self.tenant_id, EndpointSpec(url, event_types=("bench.*",)))
        return secret

    def emit(self, count: int) -> None:
        from tahoe_auth.store import models as m

        with self.app.db.unit_of_work(self.tenant_id) as uow:
            for i in range(count):
                uow.session.add(
                    m.OutboxEvent(tenant_id=self.tenant_id, type="bench.tick", payload={"n": i, "pad": "x" * 200})
                )
            uow.commit()

    def start_workers(self) -> None:
        for index in range(self.workers):
            log = open(self.tmp / f"worker{index}.log", "wb")  # noqa: SIM115 (closed with the process)
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tahoe_auth", "worker"], env=self.env, stdout=log, stderr=log, cwd=self.tmp
                )
            )

    def stop_workers(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            process.wait(30)
        self.processes.clear()

    def delivered(self) -> tuple[int, int]:
        from sqlalchemy import func, select

        from tahoe_auth.store import models as m
        from tahoe_auth.store.db import SYSTEM

        with self.app.db.unit_of_work(SYSTEM) as uow:
            rows = dict(
                uow.session.execute(
                    select(m.WebhookDelivery.status, func.count()).group_by(m.WebhookDelivery.status)
                ).all()
            )
        return int(rows.get("succeeded", 0)), int(sum(v for k, v in rows.items() if k != "succeeded"))

    def wait_delivered(self, expected: int, limit: float) -> None:
        deadline = time.monotonic() + limit
        while self.delivered()[0] < expected and time.monotonic() < deadline:
            time.sleep(0.2)


def collect(process: subprocess.Popen[bytes], out_file: Path) -> dict[str, Any]:
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    stats: dict[str, Any] = json.loads(out_file.read_text())
    return stats


def drain_backlog(stage: Stage, events: int) -> float:
    """Seconds to deliver `events` that wait in the outbox when the workers start."""
    for _ in range(events // 1000):
        stage.emit(1000)
    started = time.monotonic()
    stage.start_workers()
    stage.wait_delivered(events, limit=300)
    drained = time.monotonic() - started
    stage.stop_workers()
    return drained


def steady_rate(stage: Stage, rate: int, events: int, already: int) -> float:
    """Commit `events` at `rate` per second (10 per transaction) while the workers run;
    returns the rate actually offered."""
    stage.start_workers()
    time.sleep(1.0)
    per_tick, interval = 10, 10 / rate
    begin = time.monotonic()
    for tick in range(events // per_tick):
        stage.emit(per_tick)
        delay = begin + (tick + 1) * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    offered = events / (time.monotonic() - begin)
    stage.wait_delivered(already + events, limit=120)
    time.sleep(0.5)
    stage.stop_workers()
    return offered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--receiver", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        run_receiver(*args.receiver)
        return
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    stage = Stage(tmp, args.workers, args.concurrency)
    # The endpoint needs the receiver's port and the receiver the endpoint's secret.
    port = _free_port()
    secret = stage.endpoint(f"http://127.0.0.1:{port}/hooks")
    receiver, out_file = _receiver(stage, port, secret)
    try:
        print(
            f"webhook delivery: {args.workers} worker process(es), concurrency {args.concurrency}, "
            f"receiver in its own process, PostgreSQL"
        )
        drained = drain_backlog(stage, args.events)
        ok, other = stage.delivered()
        print(
            f"  drain:  {ok} events in {drained:.1f} s = {ok / drained:,.0f} events/s "
            f"(worker start included); not succeeded: {other}"
        )
        # 2. steady rate: lag from commit to receipt
        stats_before = collect(receiver, out_file)
        receiver, out_file = _receiver(stage, port, secret, name="steady")
        steady_events = args.rate * 15
        offered = steady_rate(stage, args.rate, steady_events, already=args.events)
        stats = collect(receiver, out_file)
        lags = stats["lags"]
        _, other_total = stage.delivered()
        span = stats["last"] - stats["first"]
        print(
            f"  steady: offered {offered:,.0f} events/s for {steady_events} events; delivered "
            f"{stats['distinct']} at {stats['distinct'] / span:,.0f} events/s"
        )
        print(
            f"          lag commit->receiver p50 {percentile(lags, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(lags, 0.99) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms"
        )
        failures = (
            other_total
            + stats_before["duplicates"]
            + stats["duplicates"]
            + stats_before["bad_signatures"]
            + stats["bad_signatures"]
            + (args.events - stats_before["distinct"])
            + (steady_events - stats["distinct"])
        )
        print(
            f"  failures: {failures} (not succeeded {other_total}, duplicates "
            f"{stats_before['duplicates'] + stats['duplicates']}, bad signatures "
            f"{stats_before['bad_signatures'] + stats['bad_signatures']}, missing "
            f"{args.events - stats_before['distinct'] + steady_events - stats['distinct']})"
        )
    finally:
        stage.stop_workers()
        if receiver.poll() is None:
            receiver.kill()
        stage.app.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _receiver(stage: Stage, port: int, secret: str, name: str = "drain") -> tuple[subprocess.Popen[bytes], Path]:
    out_file = stage.tmp / f"{name}.json"
    port_file = stage.tmp / f"{name}.port"
    process = subprocess.Popen(
        [sys.executable, __file__, "--receiver", f"{port_file}:{port}", str(out_file), secret], env=stage.env
    )
    deadline = time.monotonic() + 10
    while not port_file.exists():
        assert time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.05)
    return process, out_file


if __name__ == "__main__":
    main()
