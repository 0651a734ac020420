"""Failed-login throttling while Redis is gone (killed) or hung (SIGSTOP): the growing
delays go on in the instance's memory, exactly as with Redis, through the real gRPC
server; and they are shared through Redis again once it returns."""

from __future__ import annotations

import grpc
import pytest
import redis

from tahoe_auth.v1 import auth_pb2
from tests.servers import RedisProcess
from tests.support import RunningServer, Tenant, call_error, error_reason, retry_delay, running_server, wait_until

FREE_FAILURES = 5  # domain/throttle.py ACCOUNT_POLICY


def assert_throttled_after_free_failures(running: RunningServer, tenant: Tenant) -> None:
    bad = auth_pb2.LoginRequest(tenant=tenant.slug, email=tenant.owner_email, password="wrong password")
    good = auth_pb2.LoginRequest(tenant=tenant.slug, email=tenant.owner_email, password=tenant.owner_password)
    for _ in range(FREE_FAILURES):
        assert error_reason(call_error(running.auth.Login, bad, timeout=30)) == "INVALID_CREDENTIALS"
    throttled = call_error(running.auth.Login, bad, timeout=30)
    assert throttled.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, throttled
    assert error_reason(throttled) == "LOGIN_THROTTLED"
    assert retry_delay(throttled) >= 1
    # The right password waits too (a delay, not a lockout), and works once it is over.
    early = call_error(running.auth.Login, good, timeout=30)
    assert error_reason(early) == "LOGIN_THROTTLED"
    assert retry_delay(early) >= 1

    def logs_in() -> bool:
        try:
            return bool(running.auth.Login(good, timeout=30).tokens.access_token)
        except grpc.RpcError as error:
            assert error_reason(error) == "LOGIN_THROTTLED", error
            return False

    wait_until(logs_in, limit=retry_delay(early) + 10, step=0.2)


@pytest.mark.parametrize("outage", ["killed", "paused"])
def test_login_throttling_holds_without_redis(
    own_redis_env: dict[str, str], own_redis: RedisProcess, outage: str
) -> None:
    # Rate limits off: they would refuse these repeated logins first (RATE_LIMITED), and
    # the throttle is what is under test.
    with running_server(own_redis_env, rate_limit_enabled=False) as running:
        tenant = running.create_tenant()
        assert_throttled_after_free_failures(running, tenant)  # with Redis, for comparison

        if outage == "killed":
            own_redis.stop()
        else:
            own_redis.pause()
        try:
            assert_throttled_after_free_failures(running, running.create_tenant())
        finally:
            if outage == "killed":
                own_redis.start()
            else:
                own_redis.resume()

        # Redis is back: once the throttle has noticed, the counts and locks are shared again.
        throttle = running.app.sessions._throttle
        other = running.create_tenant()

        def recovered() -> bool:
            running.login(other)  # a success: asks Redis when a probe is due
            return not throttle.degraded

        wait_until(recovered, limit=15, step=0.2)
        tenant = running.create_tenant()
        assert_throttled_after_free_failures(running, tenant)
        client = redis.Redis.from_url(own_redis.url)
        bad = auth_pb2.LoginRequest(tenant=tenant.slug, email=tenant.owner_email, password="wrong password")
        for _ in range(FREE_FAILURES + 1):
            call_error(running.auth.Login, bad, timeout=30)
        locks = [k for k in client.scan_iter("thr:*:lock") if client.pttl(k) > 0]
        assert locks, "the lock is not in Redis after it returned"
        client.close()
