"""Redis commands per Check on a Redis Cluster.

    PYTHONPATH=. .venv/bin/python bench/cluster_commands.py [--n 2000] [--pace 0.005]

Starts a private three-primary cluster (tests/redis_cluster.py, ports 27701-27703, never
the shared Redis) and one auth instance on it (SQLite for the database), logs in, and
sends `--n` Checks over gRPC, one every `--pace` seconds (0: as fast as it answers),
from 64 client addresses in turn, to a tenant whose tag `{<tenant>}` is served by another node
than `{global}` (the per-address key's). Prints the `INFO commandstats` deltas summed
over the three nodes (the heartbeat's PUBLISH counted apart), commands per Check, and
the rate limiter's round trips (LeasingBackend: each is one EVALSHA per slot, sent
together). Run it once with `--pace 0.05` for a subject too slow for leases."""

from __future__ import annotations

import argparse
import base64
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from redis.crc import key_slot

from tahoe_auth import migrate
from tests.integration.test_ext_authz import check, check_request
from tests.redis_cluster import cluster_deployment
from tests.support import running_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between Checks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, cluster_deployment(Path(tmp)) as cluster:
        database = f"sqlite:///{Path(tmp) / 'tahoe.db'}"
        migrate.upgrade(database)
        env = {
            "TAHOE_DATABASE_URL": database,
            "TAHOE_REDIS_URL": cluster.url(),
            "TAHOE_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "TAHOE_VAR_DIR": str(Path(tmp) / "var"),
        }
        with running_server(env) as server:
            slots = server.app.store.client.nodes_manager.slots_cache  # type: ignore[attr-defined]
            global_node = slots[key_slot(b"global")][0].name
            while True:  # a tenant on another node than {global}: two nodes per Check
                tenant = server.create_tenant()
                if slots[key_slot(tenant.id.encode())][0].name != global_node:
                    break
            with server.app.db.unit_of_work(tenant.id) as uow:  # the tenant's limit out of reach
                uow.tenants.get(tenant.id).settings = {"rate_limits": {"per_tenant": {"limit": 10**6, "period": 60}}}
                server.app.notifier.tenant_changed(uow, tenant.id)
                uow.commit()
            token = server.login(tenant).tokens.access_token
            requests = []
            for i in range(64):  # 64 addresses: the default per-address limit (100 a minute) out of reach
                request = check_request(f"Bearer {token}")
                request.attributes.source.address.socket_address.address = f"198.51.100.{i}"
                requests.append(request)
            for request in requests:  # warm: caches filled, the script loaded on each node
                check(server, request)
            time.sleep(0.5)  # what the warm-up left behind (metering) flushed
            limiter = server.app.limiter._primary  # type: ignore[attr-defined]
            trips_before = limiter.round_trips
            before = cluster.commands()
            started = time.monotonic()
            for i in range(args.n):
                assert check(server, requests[i % len(requests)]).status.code == 0
                if args.pace:
                    time.sleep(args.pace)
            elapsed = time.monotonic() - started
            after = cluster.commands()
            trips = limiter.round_trips - trips_before
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    delta = {name: count for name, count in sorted(delta.items()) if count > 0}
    heartbeats = delta.pop("publish", 0)
    total = sum(delta.values())
    print(f"{args.n} Checks in {elapsed:.1f} s (pace {args.pace} s), tenant and {{global}} on two nodes")
    print(f"commands on the cluster (without {heartbeats} heartbeat PUBLISHes):")
    for name, count in delta.items():
        print(f"  {name:20} {count:7}  {count / args.n:.3f} per Check")
    print(f"total {total}: {total / args.n:.3f} commands per Check")
    print(f"limiter round trips {trips}: {trips / args.n:.3f} per Check (each one EVALSHA per slot, sent together)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
