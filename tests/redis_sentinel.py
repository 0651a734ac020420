"""A private Redis Sentinel deployment for fault tests: one master, one replica and
three sentinels (quorum 2), each its own redis-server in a temporary directory, on
fixed ports that nothing else uses. Never the shared Redis.

Everything waits for conditions (the replica in sync, every sentinel knowing the other
two and the replica), with generous limits: the test machines are small and shared."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from tests.harness import managed_process

SERVICE = "tahoe"
MASTER_PORT = 27501
REPLICA_PORT = 27502
SENTINEL_PORTS = (27511, 27512, 27513)
HOST = "127.0.0.1"
# Sentinels declare a master down after this silence; a failover gives up after the
# timeout (then another sentinel may try).
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def _binary() -> str:
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def _client(port: int) -> redis.Redis:
    # No retries (redis-py's default backs off about 3 s on a refused connection): the
    # callers poll for a condition, or check that a port is free.
    return redis.Redis(HOST, port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True, retry=None)


def wait_for(predicate: Callable[[], bool], limit: float, what: str) -> float:
    """Seconds until `predicate()` holds (RedisErrors count as not yet); fails after `limit`."""
    started = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - started
        except redis.RedisError:
            pass
        if time.monotonic() - started > limit:
            raise AssertionError(f"{what}: not reached in {limit:.0f} s")
        time.sleep(0.05)


class SentinelDeployment:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._stack = contextlib.ExitStack()

    # -- addresses ------------------------------------------------------------------

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"{HOST}:{port}" for port in SENTINEL_PORTS)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def master_port(self) -> int:
        """The master's port as every sentinel reports it (fails while they disagree)."""
        ports = self.reported_masters()
        assert len(ports) == 1, f"the sentinels disagree on the master: {ports}"
        return ports.pop()

    def reported_masters(self) -> set[int]:
        return {self._reported_master(port) for port in SENTINEL_PORTS}

    def _reported_master(self, sentinel_port: int) -> int:
        with contextlib.closing(_client(sentinel_port)) as sentinel:
            _host, port = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def role(self, port: int) -> str:
        with contextlib.closing(_client(port)) as client:
            return str(client.info("replication")["role"])

    # -- lifecycle ------------------------------------------------------------------

    def start(self, limit: float = 60.0) -> None:
        for port in (MASTER_PORT, REPLICA_PORT, *SENTINEL_PORTS):
            with contextlib.closing(_client(port)) as client, contextlib.suppress(redis.ConnectionError):
                client.ping()
                raise RuntimeError(f"port {port} is taken: another Sentinel test running? not touching it")
        self._server(MASTER_PORT)
        self._server(REPLICA_PORT, "--replicaof", HOST, str(MASTER_PORT))
        wait_for(self._replica_in_sync, limit, "the replica in sync with the master")
        for port in SENTINEL_PORTS:
            self._sentinel(port)
        wait_for(self._sentinels_ready, limit, "every sentinel knowing the master, the replica and two peers")

    def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)  # a paused one must be able to exit
        self._stack.close()
        self.processes.clear()

    def _server(self, port: int, *extra: str) -> None:
        argv = [_binary(), "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.workdir), "--dbfilename", f"dump-{port}.rdb", "--repl-diskless-sync-delay", "0"]
        argv += extra
        self._run(port, argv)

    def _sentinel(self, port: int) -> None:
        conf = self.workdir / f"sentinel-{port}.conf"  # sentinels rewrite their own file
        conf.write_text(
            "\n".join(
                [
                    f"port {port}",
                    f"bind {HOST}",
                    f"dir {self.workdir}",
                    f"sentinel monitor {SERVICE} {HOST} {MASTER_PORT} 2",
                    f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {SERVICE} 1",
                    "",
                ]
            )
        )
        self._run(port, [_binary(), str(conf), "--sentinel", "--save", "", "--appendonly", "no"])

    def _run(self, port: int, argv: list[str]) -> None:
        log = self.workdir / f"redis-{port}.log"
        self.processes[port] = self._stack.enter_context(managed_process(argv, log, ready_port=port))

    def _replica_in_sync(self) -> bool:
        with contextlib.closing(_client(REPLICA_PORT)) as replica:
            return replica.info("replication").get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        for port in SENTINEL_PORTS:
            with contextlib.closing(_client(port)) as sentinel:
                state = sentinel.sentinel_master(SERVICE)
            if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                return False
            replicas = sentinel_replicas(port)
            if not any(not r["is_sdown"] and r.get("master-link-status") == "ok" for r in replicas):
                return False
        return True

    # -- faults ---------------------------------------------------------------------

    def failover(self, limit: float = 60.0) -> int:
        """`SENTINEL FAILOVER`: the replica is promoted and the old master demoted (it
        stays up, a replica now). Returns the new master's port once every sentinel
        reports it and it says it is a master."""
        old = self.master_port()
        with contextlib.closing(_client(SENTINEL_PORTS[0])) as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
        return self.wait_for_new_master(old, limit)

    def kill_master(self, limit: float = 60.0) -> int:
        """SIGKILL the master: the sentinels notice (DOWN_AFTER_MS), agree and promote
        the replica. Returns the new master's port once every sentinel reports it."""
        old = self.master_port()
        process = self.processes.pop(old)
        process.kill()
        process.wait(timeout=10)
        return self.wait_for_new_master(old, limit)

    def wait_for_new_master(self, old: int, limit: float = 60.0) -> int:
        def switched() -> bool:
            ports = self.reported_masters()
            return len(ports) == 1 and old not in ports and self.role(ports.pop()) == "master"

        wait_for(switched, limit, f"the sentinels reporting a master other than {old}")
        return self.master_port()


def sentinel_replicas(sentinel_port: int) -> list[dict[str, object]]:
    with contextlib.closing(_client(sentinel_port)) as sentinel:
        replicas: list[dict[str, object]] = sentinel.sentinel_slaves(SERVICE)
    return replicas


@contextlib.contextmanager
def sentinel_deployment(workdir: Path) -> Iterator[SentinelDeployment]:
    deployment = SentinelDeployment(workdir)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()
