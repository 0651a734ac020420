"""A rolling restart drops nothing: two real instances (one PostgreSQL, a private Redis)
behind Envoy with a committed config (Check over HTTP, envoy.yaml, and over gRPC,
envoy.grpc.yaml), steady valid traffic through it, and
each instance in turn gets SIGTERM (the first one comes back on its own endpoint
before the second goes). Every request must be answered 200, every instance must exit
cleanly, and the one that comes back must take traffic again."""

from __future__ import annotations

import itertools
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tahoe_auth.config import Settings
from tahoe_auth.server import GRACE_SECONDS
from tests.e2e import rolling
from tests.servers import RedisProcess, redis_server

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

# The shipped default drain: the test is about what ships, so it sets none.
EXIT_WITHIN = Settings().drain_seconds + GRACE_SECONDS + 15
SERVED = 100  # answers through Envoy that each step waits for


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    with redis_server(tmp_path) as server:
        yield server


def test_a_rolling_restart_answers_every_request(
    module_env: dict[str, str], private_redis: RedisProcess, tmp_path: Path, transport: str
) -> None:
    env = {
        **module_env,
        "TAHOE_REDIS_URL": private_redis.url,
        # One tenant sends everything: its limits are not what this test is about.
        "TAHOE_RATE_LIMITS": json.dumps(
            {n: {"limit": 10_000_000, "period": 60} for n in ("per_address", "per_tenant")}
        ),
    }
    env.pop("TAHOE_DRAIN_SECONDS", None)
    with rolling.deployment(env, tmp_path, transport=transport) as fleet, fleet.load() as load:
        first, second = fleet.instances
        steps: list[tuple[str, int]] = []  # (what happened, requests answered before it)

        def step(what: str) -> None:
            steps.append((what, load.total))

        def served(count: int, what: str) -> None:
            mark = load.total
            rolling.wait_for(lambda: load.ok_since(mark) >= count, 60, what)

        def restart_drains(instance: rolling.Instance) -> None:
            step(f"SIGTERM {instance.name}")
            instance.signal(signal.SIGTERM)
            assert instance.wait_exit(EXIT_WITHIN) == 0, instance.log()
            assert instance.log().rstrip().endswith("stopped"), instance.log()
            step(f"{instance.name} exited")
            served(SERVED, f"traffic after {instance.name} exited")

        rolling.wait_for(
            lambda: all(fleet.host(i).rq_success >= 20 for i in fleet.instances), 60, "traffic on both instances"
        )
        restart_drains(first)
        step(f"{first.name} starts again")
        first.start()
        rolling.wait_for(lambda: fleet.host(first).healthy, 30, "the new instance healthy in Envoy")
        step(f"{first.name} healthy in Envoy")
        taken = fleet.host(first).rq_success
        rolling.wait_for(lambda: fleet.host(first).rq_success >= taken + SERVED, 60, "the new instance's share")
        restart_drains(second)
        step("end")
        load.stop()
        assert load.total >= 4 * SERVED
        by_step = [(what, load.summary(since, until)) for (what, since), (_, until) in itertools.pairwise(steps)]
        envoy_saw = {k: v for k, v in fleet.stats().items() if v and ("timeout" in k or "fail" in k or "retry" in k)}
        assert load.errors() == 0, f"{load.errors()} of {load.total} failed: {by_step} {load.failures[:5]} {envoy_saw}"
