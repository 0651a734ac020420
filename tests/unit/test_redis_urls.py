"""TAHOE_REDIS_URL: the forms accepted (redis://, rediss://, unix://, redis+sentinel://),
what a Sentinel URL says, the refusals, and the clients built from them. No Redis:
building a client connects to nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

from tahoe_auth.config import ClusterUrl, ConfigError, SentinelUrl, Settings, parse_cluster_url, parse_sentinel_url
from tahoe_auth.store.redis_store import (
    FailoverAwareConnection,
    RedisStore,
    channel_for,
    close_client,
    failover_signal,
    redis_client,
    uses_sentinel,
)


def settings_with(url: str, tmp_path: Path) -> Settings:
    return Settings.from_env({"TAHOE_VAR_DIR": str(tmp_path), "TAHOE_REDIS_URL": url})


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://:secret@redis.internal:6380/3",
        "rediss://user:secret@redis.internal:6380/0",
        "unix:///run/redis.sock?db=2",
        "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/tahoe/1",
        "redis+sentinel://sentinel/tahoe",
    ],
)
def test_settings_accept_every_form(url: str, tmp_path: Path) -> None:
    assert settings_with(url, tmp_path).redis_url == url


@pytest.mark.parametrize("url", ["http://x", "sentinel://h/tahoe", "redis-sentinel://h/tahoe", "127.0.0.1:6379"])
def test_settings_refuse_other_schemes(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TAHOE_REDIS_URL must start with .*redis\+sentinel://"):
        settings_with(url, tmp_path)


def test_a_full_sentinel_url() -> None:
    url = "redis+sentinel://:s%40cret@10.0.0.1:26379,sentinel-b:26380,[::1]:26381/tahoe-main/3?sentinel_password=p%26q"
    assert parse_sentinel_url(url) == SentinelUrl(
        sentinels=(("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381)),
        service="tahoe-main",
        db=3,
        username=None,
        password="s@cret",
        sentinel_password="p&q",
    )


def test_sentinel_url_defaults() -> None:
    parsed = parse_sentinel_url("redis+sentinel://a,b:26390,[fe80::1]/tahoe")
    assert parsed.sentinels == (("a", 26379), ("b", 26390), ("fe80::1", 26379))
    assert (parsed.service, parsed.db, parsed.username, parsed.password) == ("tahoe", 0, None, None)
    assert (parsed.sentinel_username, parsed.sentinel_password) == (None, None)


def test_sentinel_url_with_acl_users() -> None:
    parsed = parse_sentinel_url("redis+sentinel://app:pw@h:1/m?sentinel_username=watch&sentinel_password=pw2")
    assert (parsed.username, parsed.password) == ("app", "pw")
    assert (parsed.sentinel_username, parsed.sentinel_password) == ("watch", "pw2")


def test_the_passwords_stay_out_of_the_repr() -> None:
    parsed = parse_sentinel_url("redis+sentinel://:hunter2@h/m?sentinel_password=hunter3")
    assert "hunter2" not in repr(parsed) and "hunter3" not in repr(parsed)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://", "every sentinel is host"),
        ("redis+sentinel:///tahoe", "every sentinel is host"),
        ("redis+sentinel://a,,b/tahoe", "every sentinel is host"),
        ("redis+sentinel://a:notaport/tahoe", "every sentinel is host"),
        ("redis+sentinel://a:0/tahoe", "every sentinel is host"),
        ("redis+sentinel://a:65536/tahoe", "every sentinel is host"),
        ("redis+sentinel://a:1:2/tahoe", "every sentinel is host"),
        ("redis+sentinel://::1/tahoe", "every sentinel is host"),
        ("redis+sentinel://[::1/tahoe", "a sentinel address is"),
        ("redis+sentinel://[::1]x/tahoe", "a sentinel address is"),
        ("redis+sentinel://a:26379", "ends in /<master name>"),
        ("redis+sentinel://a:26379/", "ends in /<master name>"),
        ("redis+sentinel://a/tahoe/1/2", "ends in /<master name>"),
        ("redis+sentinel://a//1", "ends in /<master name>"),
        ("redis+sentinel://a/tahoe/one", "database .* is a number"),
        ("redis+sentinel://a/tahoe/-1", "database .* is a number"),
        ("redis+sentinel://a/tahoe/\u00b2", "database .* is a number"),
        ("redis+sentinel://a/tahoe?socket_timeout=1", "unknown parameter 'socket_timeout'"),
        ("redis+sentinel://a/tahoe?sentinel_password", "name=value pairs"),
        ("redis+sentinel://a/tahoe?sentinel_password=a&sentinel_password=b", "given twice"),
        ("redis+sentinel://a/tahoe#x", "no #fragment"),
    ],
)
def test_malformed_sentinel_urls_are_refused_at_start(url: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        settings_with(url, tmp_path)
    assert str(refused.value).startswith("TAHOE_REDIS_URL")


def test_a_refusal_never_echoes_the_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        settings_with("redis+sentinel://:hunter2@a:bad/tahoe", tmp_path)
    assert "hunter2" not in str(refused.value)


def test_the_channel_is_named_after_the_database() -> None:
    assert channel_for("redis://127.0.0.1:6379/4") == "tahoe:{events}:4"
    assert channel_for("redis+sentinel://a,b/tahoe/4") == "tahoe:{events}:4"
    assert channel_for("redis+sentinel://a/tahoe") == "tahoe:{events}:0"


def test_a_sentinel_client_gets_the_plain_clients_timeouts_and_no_retries() -> None:
    plain = redis_client("redis://127.0.0.1:6379/2", timeout=0.3)
    client = redis_client("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2/tahoe/2?sentinel_password=spw", timeout=0.3)
    try:
        assert not uses_sentinel(plain) and uses_sentinel(client)
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.service_name == "tahoe" and pool.is_master
        assert pool.connection_class is FailoverAwareConnection
        kwargs, plain_kwargs = pool.connection_kwargs, plain.connection_pool.connection_kwargs
        for name in ("socket_timeout", "socket_connect_timeout", "decode_responses", "health_check_interval", "db"):
            assert kwargs[name] == plain_kwargs[name], name
        assert kwargs["password"] == "pw"
        manager = pool.sentinel_manager
        addresses = [s.connection_pool.connection_kwargs for s in manager.sentinels]
        assert [(a["host"], a["port"]) for a in addresses] == [("10.0.0.1", 26379), ("10.0.0.2", 26379)]
        for sentinel_kwargs in addresses:
            assert sentinel_kwargs["socket_timeout"] == sentinel_kwargs["socket_connect_timeout"] == 0.3
            assert sentinel_kwargs["password"] == "spw"
            assert sentinel_kwargs["retry"].get_retries() == 0  # not redis-py's 10 with backoff
        # A connection made outside the pool (the rate limiter's) is Sentinel-managed too.
        assert isinstance(pool.connection_class(**kwargs), FailoverAwareConnection)
    finally:
        close_client(plain)
        close_client(client)


def test_an_unconnected_sentinel_connection_goes_to_the_named_master_not_localhost() -> None:
    """redis-py connects an unconnected connection in send_command at its default
    address (localhost:6379); ours asks the sentinels. Here they name a closed port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    client = redis_client("redis+sentinel://127.0.0.1:1/tahoe", timeout=0.3)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    pool.sentinel_manager.discover_master = lambda _service: ("127.0.0.1", closed)
    connection = pool.connection_class(**pool.connection_kwargs)
    try:
        with pytest.raises(redis.ConnectionError, match=str(closed)):
            connection.send_command("PING")
    finally:
        connection.disconnect()
        close_client(client)


def test_failover_signals() -> None:
    from redis.sentinel import MasterNotFoundError

    from tahoe_auth.store.redis_store import MasterDemoted

    assert failover_signal(redis.ConnectionError("Connection closed by server."))
    assert failover_signal(MasterDemoted("the master became a replica"))
    assert failover_signal(redis.ReadOnlyError("READONLY You can't write against a read only replica."))
    assert not failover_signal(redis.TimeoutError("Timeout reading from socket"))  # a hung master: no retry
    assert not failover_signal(MasterNotFoundError("No master found for 'tahoe'"))
    assert not failover_signal(redis.ResponseError("WRONGTYPE"))


def test_a_plain_store_starts_no_sentinel_watch() -> None:
    store = RedisStore("redis://127.0.0.1:1/0")
    try:
        assert store._watch is None
    finally:
        store.close()


def test_cluster_urls_parse_and_name_database_zero(tmp_path: Path) -> None:
    url = "redis+cluster://app:p%40ss@10.0.0.1:7001,10.0.0.2,[fe80::1]:7003/"
    assert settings_with(url, tmp_path).redis_url == url
    assert parse_cluster_url(url) == ClusterUrl(
        (("10.0.0.1", 7001), ("10.0.0.2", 6379), ("fe80::1", 7003)), "app", "p@ss"
    )
    assert parse_cluster_url("redis+cluster://h:7001/0").nodes == (("h", 7001),)
    assert channel_for("redis+cluster://h:7001") == "tahoe:{events}:0"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis+cluster://h:7001/1", "database 0 only"),
        ("redis+cluster://h:7001/?x=1", r"no \?query"),
        ("redis+cluster://h:0/", "port 1..65535"),
        ("redis+cluster://:pw@/", "host"),
    ],
)
def test_cluster_urls_refused_without_echoing_them(url: str, words: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=words) as refused:
        settings_with(url, tmp_path)
    assert "pw" not in str(refused.value)
