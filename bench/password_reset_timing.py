"""Does "forgot password" tell, by its answer or its time, whether an account exists?

    .venv/bin/python bench/password_reset_timing.py [--calls 300]

A real server (PostgreSQL, Redis, row-level security) with one tenant. RequestPasswordReset
is called `--calls` times for each of: an account that exists, an unknown email in the
tenant, and an unknown tenant, interleaved (one of each per round, so that the machine's
noise falls on all three alike), each call from a client address of its own and, for
the unknown cases, a new email each time. The per-account rate limit is off for the run
(the account that exists would be refused after 3; the limit answers alike anyway).

Prints per case the answers seen (status and body: they must be one and the same) and
p50/p90 latency, the ratio of each median to the existing account's, and then how long
the mail worker took to turn the requests into mail (after the answers, off the clock
a caller can see).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tahoe_auth.v1 import account_pb2, account_pb2_grpc
from tests import support
from tests.conftest import APP_ROLE

PG_URL = os.environ.get("TAHOE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_reset_bench")
REDIS_URL = os.environ.get("TAHOE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    support.create_database(PG_URL)
    support.reset_schema(PG_URL)
    env = {
        "TAHOE_DATABASE_URL": PG_URL,
        "TAHOE_DATABASE_ROLE": APP_ROLE,
        "TAHOE_REDIS_URL": REDIS_URL,
        "TAHOE_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "TAHOE_VAR_DIR": tempfile.mkdtemp(prefix="reset-bench-"),
        "TAHOE_LOG_LEVEL": "WARNING",
        "TAHOE_TRUSTED_PROXIES": "127.0.0.1/32",
        "TAHOE_RATE_LIMIT_ENABLED": "false",
    }
    with support.running_server(env) as server:
        tenant = server.create_tenant()
        stub = account_pb2_grpc.AccountServiceStub(server.channel)
        cases = {
            "existing account": lambda i: (tenant.slug, tenant.owner_email),
            "unknown email": lambda i: (tenant.slug, f"nobody{i}@{tenant.slug}.test"),
            "unknown tenant": lambda i: (f"no-such-tenant-{i}", tenant.owner_email),
        }
        answers: dict[str, set[tuple[object, ...]]] = {name: set() for name in cases}
        samples: dict[str, list[float]] = {name: [] for name in cases}
        n = 0
        for i in range(args.calls + 20):
            for name, make in cases.items():
                n += 1
                slug, email = make(i)
                client = (("x-tahoe-client-address", f"10.{n // 65000}.{n // 250 % 250}.{n % 250 + 1}"),)
                started = time.perf_counter()
                try:
                    reply = stub.RequestPasswordReset(
                        account_pb2.RequestPasswordResetRequest(tenant=slug, email=email), metadata=client
                    )
                    answer: tuple[object, ...] = ("OK", reply.SerializeToString())
                except grpc.RpcError as exc:
                    answer = (exc.code().name, exc.details())
                elapsed = time.perf_counter() - started
                if i >= 20:  # the first rounds warm connections and statements
                    samples[name].append(elapsed)
                    answers[name].add(answer)
        base = statistics.median(samples["existing account"])
        print(f"RequestPasswordReset, {args.calls} calls per case, interleaved")
        for name, values in samples.items():
            ordered = sorted(values)
            p50, p90 = statistics.median(ordered), ordered[int(len(ordered) * 0.9)]
            print(
                f"  {name:17s} answers {sorted(answers[name])}  p50 {p50 * 1000:6.2f} ms  p90 {p90 * 1000:6.2f} ms"
                f"  median / existing {p50 / base:4.2f}"
            )
        same = len({frozenset(a) for a in answers.values()}) == 1
        print(f"  identical answers: {'yes' if same else 'NO'}")
        started = time.perf_counter()
        server.app.mail_worker.drain(limit=300)
        print(
            f"mail worker: {args.calls * 3 + 60} requests looked up, mail made and written in "
            f"{time.perf_counter() - started:.2f} s (after the answers)"
        )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
