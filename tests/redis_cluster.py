"""A private Redis Cluster for tests: three primaries, no replicas, each its own
redis-server in a temporary directory on fixed ports that nothing else uses (never the
shared Redis). Started with `redis-cli --cluster create`; ready when every node says
cluster_state:ok. Waits are for conditions, with generous limits (small shared hosts)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.harness import managed_process
from tests.redis_sentinel import wait_for

HOST = "127.0.0.1"
PORTS = (27701, 27702, 27703)


def node(port: int) -> redis.Redis:
    # No retries (redis-py's default backs off about 3 s on a refused connection): the
    # callers poll for a condition, or check that a port is free.
    return redis.Redis(HOST, port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True, retry=None)


class ClusterDeployment:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._stack = contextlib.ExitStack()

    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in PORTS) + "/"

    def start(self, limit: float = 60.0) -> None:
        for port in PORTS:
            with contextlib.closing(node(port)) as client, contextlib.suppress(redis.ConnectionError):
                client.ping()
                raise RuntimeError(f"port {port} is taken: another Cluster test running? not touching it")
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        for port in PORTS:
            argv = [server, "--port", str(port), "--bind", HOST, "--cluster-enabled", "yes"]
            argv += ["--cluster-config-file", f"nodes-{port}.conf", "--save", "", "--appendonly", "no"]
            argv += ["--dir", str(self.workdir), "--dbfilename", f"dump-{port}.rdb"]
            log = self.workdir / f"redis-{port}.log"
            self.processes[port] = self._stack.enter_context(managed_process(argv, log, ready_port=port))
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        create = [cli, "--cluster", "create", *(f"{HOST}:{port}" for port in PORTS)]
        subprocess.run(
            [*create, "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=limit
        )
        wait_for(self._ok, limit, "every cluster node saying cluster_state:ok")

    def _ok(self) -> bool:
        for port in PORTS:
            with contextlib.closing(node(port)) as client:
                if "cluster_state:ok" not in str(client.execute_command("CLUSTER", "INFO")):
                    return False
        return True

    def stop(self) -> None:
        self._stack.close()
        self.processes.clear()

    def commands(self) -> dict[str, int]:
        """INFO commandstats summed over the nodes: command name -> calls."""
        totals: dict[str, int] = {}
        for port in PORTS:
            with contextlib.closing(node(port)) as client:
                for name, stats in client.info("commandstats").items():
                    command = name.removeprefix("cmdstat_")
                    totals[command] = totals.get(command, 0) + int(stats["calls"])
        return totals

    def reset_stats(self) -> None:
        for port in PORTS:
            with contextlib.closing(node(port)) as client:
                client.config_resetstat()


@contextlib.contextmanager
def cluster_deployment(workdir: Path) -> Iterator[ClusterDeployment]:
    deployment = ClusterDeployment(workdir)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()
