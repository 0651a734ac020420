"""KeyValueStore on Redis, shared by every instance.

Timeouts are short (TAHOE_REDIS_TIMEOUT, 250 ms by default: well above what calls take
on a loaded host, see bench/redis_latency.py) because callers sit on the request path; a
RedisError becomes StoreUnavailable and each caller decides to fail open or closed
(and whether one immediate retry is safe: reads are, most writes are not).
Notifications use one pub/sub channel read by a background thread that reconnects on
its own. A hung or partitioned Redis leaves a subscription that looks healthy but
hears nothing, so the thread also publishes a heartbeat on the channel: silence for
longer than `silence` seconds counts as down. After a reconnect, or when the channel
is heard again after such a silence, listeners get ("", ""): changes may have been
missed (the change feed decides whether its poll already covered them).

Sentinel (a `redis+sentinel://` URL, config.SentinelUrl): the client asks the sentinels
for the master's address whenever it opens a connection, with the same timeouts. At a
failover the old master's connections are dropped (the sentinels kill them) or answer
READONLY (it is a replica now); either is a failover signal, and the call is retried
once at once, on a connection to the master the sentinels now name. That retry is for
Sentinel only (with one plain Redis there is nowhere else to go) and not after a
timeout (a hung master: callers decide, as above). A write whose reply was lost with
the connection may so count twice (one increment, at a failover); READONLY means
nothing was written. A demoted master keeps its clients until the sentinels
reconfigure it (seconds), so a thread also asks the sentinels for the master every
MASTER_CHECK_INTERVAL: on a new one the pool drops its idle connections, the rate
limiter's connections reconnect, and the pub/sub thread resubscribes. That thread
subscribes through a Sentinel-managed client of its own, so each (re)subscription goes
to the master named then, and the ("", "") it sends has the change feed cover what was
missed. Every client made from the URL comes from `redis_client`.

Redis Cluster (a `redis+cluster://` URL, config.ClusterUrl): a redis-py RedisCluster,
started from the nodes listed (any one that answers names the others), with the same
timeouts for every node and redis-py's retries off; it still follows MOVED and ASK
redirects. Every key carries a hash tag (`{<tenant>}` or `{global}`) so that keys used
together share a slot; the throttle's keys of one subject share one, and a multi-key
DELETE is split by slot by redis-py. Pub/sub uses RedisCluster.pubsub(): the thread
subscribes on the node serving the channel's slot, and a classic PUBLISH (from any
node) reaches subscribers on every node. A cluster has database 0 only, so the channel
is `tahoe:{events}:0`. Unlike the other forms, building a cluster client connects (it
reads the slot map), so a cluster must answer when the server starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import Connection
from redis.exceptions import ReadOnlyError
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool, SentinelManagedConnection

from tahoe_auth.config import is_cluster_url, is_sentinel_url, parse_cluster_url, parse_sentinel_url
from tahoe_auth.kernel.changes import Listener
from tahoe_auth.kernel.metrics import REDIS_ERRORS, STORE_FAILURES
from tahoe_auth.store.kv import StoreUnavailable

log = logging.getLogger(__name__)

RECONNECT = ("", "")
HEARTBEAT = "~heartbeat"
MASTER_CHECK_INTERVAL = 1.0  # Sentinel: seconds between asking for the master's address

T = TypeVar("T")

# What `redis_client` makes: one server (plain or found through Sentinel) or a cluster.
RedisClient: TypeAlias = redis.Redis | RedisCluster


def channel_for(url: str) -> str:
    """Pub/sub ignores database numbers; name the channel after the database so that
    deployments (and test runs) sharing one Redis server do not hear each other."""
    if is_sentinel_url(url):
        return f"tahoe:{{events}}:{parse_sentinel_url(url).db}"
    if is_cluster_url(url):
        return f"tahoe:{{events}}:{parse_cluster_url(url).db}"
    db = redis.connection.parse_url(url).get("db", 0)  # type: ignore[no-untyped-call]
    return f"tahoe:{{events}}:{db}"


class MasterDemoted(redis.ConnectionError):
    """The master this connection reached answered READONLY: it is a replica now."""


class FailoverAwareConnection(SentinelManagedConnection):
    """A connection to the master the sentinels name, opened (and after a drop, opened
    again) at the address they give at that moment. A READONLY answer closes it and
    raises MasterDemoted, so that the next use asks the sentinels again."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # redis-py connects an unconnected connection here without connect(), at its
        # default host and port (localhost:6379), not at the master: connections used
        # outside the pool (the rate limiter's) would reach some other Redis.
        if not self._sock:
            self.connect()  # type: ignore[no-untyped-call]
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return Connection.read_response(self, *args, **kwargs)
        except ReadOnlyError as exc:
            self.disconnect()  # type: ignore[no-untyped-call]
            raise MasterDemoted(f"the master became a replica (a failover): {exc}") from exc


def redis_client(url: str, timeout: float, connect_timeout: float | None = None) -> RedisClient:
    """The one way to a client from TAHOE_REDIS_URL: redis://, rediss://, unix://,
    redis+sentinel:// or redis+cluster://. Every call gives up after `timeout` seconds,
    a connect after `connect_timeout` (default: `timeout`); redis-py's own retries are
    off (callers decide). Responses are decoded. With Sentinel the same timeouts apply
    to each sentinel asked for the master's address; with a cluster, to every node."""
    connect_timeout = timeout if connect_timeout is None else connect_timeout
    if is_cluster_url(url):
        return _cluster_client(url, timeout, connect_timeout)
    if not is_sentinel_url(url):
        return redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=connect_timeout,
            decode_responses=True,
            health_check_interval=0,
        )
    target = parse_sentinel_url(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": connect_timeout,
            "username": target.sentinel_username,
            "password": target.sentinel_password,
            # Redis() retries 10 times with backoff by default: seconds per dead sentinel.
            "retry": Retry(NoBackoff(), 0),
        },
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.service,
        connection_class=FailoverAwareConnection,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        db=target.db,
        username=target.username,
        password=target.password,
        decode_responses=True,
        health_check_interval=0,
    )
    return client


def _cluster_client(url: str, timeout: float, connect_timeout: float) -> RedisCluster:
    target = parse_cluster_url(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],  # type: ignore[no-untyped-call]
        username=target.username,
        password=target.password,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        decode_responses=True,
        health_check_interval=0,
        # Off, as for one server: a timeout is the caller's to judge. Redirects (MOVED,
        # ASK) are followed all the same; they are not retries.
        retry=Retry(NoBackoff(), 0),
    )


def close_client(client: RedisClient) -> None:
    """Close `client`'s connections, and with Sentinel its connections to the sentinels."""
    if isinstance(client, RedisCluster):
        client.close()
        return
    pool = client.connection_pool
    client.close()
    if isinstance(pool, SentinelConnectionPool):
        pool.sentinel_manager.close()


def uses_sentinel(client: RedisClient) -> bool:
    return isinstance(client, redis.Redis) and isinstance(client.connection_pool, SentinelConnectionPool)


def uses_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)


def failover_signal(exc: redis.RedisError) -> bool:
    """A dropped connection or a READONLY answer: on Sentinel, worth one retry at once
    (the retry's connection goes to the master the sentinels now name). Not a timeout
    (a hung master still answers nothing), nor sentinels that know no healthy master."""
    return isinstance(exc, redis.ConnectionError | ReadOnlyError) and not isinstance(exc, MasterNotFoundError)


class RedisStore:
    def __init__(
        self,
        url: str,
        timeout: float = 0.25,
        channel: str | None = None,
        *,
        heartbeat_interval: float = 0.25,
        silence: float = 0.75,
    ) -> None:
        self.client = redis_client(url, timeout)
        self._sentinel = uses_sentinel(self.client)
        self._url = url
        self._channel = channel or channel_for(url)
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.subscribed = threading.Event()
        self._heartbeat_interval = heartbeat_interval
        self._silence = silence
        self._last_heard = 0.0
        self.master: tuple[str, int] | None = None  # Sentinel: the master they named last
        self._watch: threading.Thread | None = None
        if self._sentinel:
            self._watch = threading.Thread(target=self._watch_master, name="redis-sentinel-watch", daemon=True)
            self._watch.start()

    def get(self, key: str) -> str | None:
        return self._call(lambda: self.client.get(key))  # type: ignore[return-value]

    def get_many(self, keys: list[str]) -> list[str | None]:
        if not keys:
            return []
        if isinstance(self.client, RedisCluster):  # keys of several slots: one MGET per slot
            cluster = self.client
            return self._call(lambda: cluster.mget_nonatomic(keys))
        return self._call(lambda: self.client.mget(keys))  # type: ignore[arg-type,return-value]

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        if ttl is None:
            self._call(lambda: self.client.set(key, value))
        else:
            self._call(lambda: self.client.set(key, value, px=max(1, int(ttl * 1000))))

    def delete(self, *keys: str) -> None:
        if not keys:
            return
        self._call(lambda: self.client.delete(*keys))

    def incr(self, key: str, ttl: float) -> int:
        def run() -> int:
            pipe = self.client.pipeline(transaction=True)
            pipe.incr(key)
            pipe.pexpire(key, max(1, int(ttl * 1000)), nx=True)
            value, _ = pipe.execute()
            return int(value)

        return self._call(run)

    def ttl(self, key: str) -> float | None:
        millis = int(self._call(lambda: self.client.pttl(key)))
        return None if millis < 0 else millis / 1000

    def publish(self, channel: str, message: str) -> None:
        self._call(lambda: self.client.publish(self._channel, f"{channel}\n{message}"))

    def _call(self, operation: Callable[[], T]) -> T:
        """`operation`, retried once at once after a failover signal (Sentinel only);
        any other Redis error, or a second failure, is StoreUnavailable."""
        try:
            return operation()
        except redis.RedisError as exc:
            if not (self._sentinel and failover_signal(exc)):
                raise _unavailable(exc) from exc
            REDIS_ERRORS.labels(type(exc).__name__).inc()
            STORE_FAILURES.labels("redis_failover", "retry").inc()
            log.debug("redis %s (%s); retrying once on the master the sentinels name", type(exc).__name__, exc)
        try:
            return operation()
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)
        if self._thread is None:
            self._thread = threading.Thread(target=self._listen_forever, name="redis-pubsub", daemon=True)
            self._thread.start()

    def notifications_live(self) -> bool:
        """Subscribed, and the channel heard (a message or a heartbeat) within `silence`."""
        return self.subscribed.is_set() and time.monotonic() - self._last_heard < self._silence

    def ping(self) -> bool:
        try:
            return bool(self._call(self.client.ping))
        except StoreUnavailable:
            return False

    def close(self) -> None:
        self._stop.set()
        for thread in (self._thread, self._watch):
            if thread is not None:
                thread.join(timeout=2)
        close_client(self.client)

    def _dispatch(self, channel: str, message: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(channel, message)
            except Exception:  # one bad listener must not stop notifications
                log.exception("pub/sub listener failed")

    def _listen_forever(self) -> None:
        # Its own connection with a longer read timeout: it mostly waits for messages.
        # With Sentinel each (re)connect goes to the master the sentinels name then.
        client = redis_client(self._url, timeout=1.0)
        first = True
        while not self._stop.is_set():
            pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            named = self.master
            try:
                pubsub.subscribe(self._channel)
                if not first:
                    log.warning("redis pub/sub reconnected; changes may have been missed")
                self._last_heard = time.monotonic()
                self._dispatch(*RECONNECT)
                self.subscribed.set()
                first = False
                self._hear(pubsub, named)
            except redis.RedisError as exc:
                if self.subscribed.is_set():  # once per outage, not once per failed attempt
                    log.warning("redis pub/sub lost (%s); reconnecting", exc)
                    self.subscribed.clear()
                    self._dispatch(*RECONNECT)
                self._stop.wait(0.2)
            finally:
                pubsub.close()
        close_client(client)

    def _watch_master(self) -> None:
        """Sentinel: ask for the master's address every MASTER_CHECK_INTERVAL. redis-py
        asks only when it opens a connection, and a demoted master keeps its clients
        (and takes their writes) until the sentinels reconfigure it, which can take
        seconds. On a new address the pool closes its idle connections; the rate
        limiter's and the pub/sub thread's follow (they compare with `master`)."""
        assert isinstance(self.client, redis.Redis)
        pool = self.client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        while not self._stop.wait(MASTER_CHECK_INTERVAL):
            try:
                address = pool.get_master_address()  # type: ignore[no-untyped-call]
            except redis.RedisError:  # none known right now: calls fail, callers fall back
                continue
            master = (str(address[0]), int(address[1]))
            if self.master is not None and master != self.master:
                log.warning("redis sentinels name a new master, %s:%d; following it", *master)
            self.master = master

    def _left_behind(self, pubsub: redis.client.PubSub, named: tuple[str, int] | None) -> bool:
        """Sentinel: the sentinels have named another master since `pubsub` subscribed
        (when they named `named`), and it is not the one `pubsub` is on."""
        master, connection = self.master, cast(Connection | None, pubsub.connection)
        if master is None or master == named or connection is None:
            return False
        return (connection.host, connection.port) != master

    def _hear(self, pubsub: redis.client.PubSub, named: tuple[str, int] | None = None) -> None:
        next_beat = 0.0
        while not self._stop.is_set():
            if self._sentinel and self._left_behind(pubsub, named):
                raise redis.ConnectionError("subscribed on a master the sentinels no longer name")
            now = time.monotonic()
            if now >= next_beat:
                self._beat()
                next_beat = now + self._heartbeat_interval
            item = pubsub.get_message(timeout=min(0.1, self._heartbeat_interval))
            if item is None:
                continue
            heard = time.monotonic()
            silent_for = heard - self._last_heard
            self._last_heard = heard
            if silent_for >= self._silence:
                log.warning("redis pub/sub heard again after %.1f s of silence", silent_for)
                self._dispatch(*RECONNECT)
            if item.get("type") != "message":
                continue
            channel, _, message = str(item["data"]).partition("\n")
            if channel != HEARTBEAT:
                self._dispatch(channel, message)

    def _beat(self) -> None:
        try:
            self.client.publish(self._channel, f"{HEARTBEAT}\n")
        except redis.RedisError:  # the silence that follows is the signal
            REDIS_ERRORS.labels("heartbeat").inc()


def _unavailable(exc: redis.RedisError) -> StoreUnavailable:
    REDIS_ERRORS.labels(type(exc).__name__).inc()
    return StoreUnavailable(str(exc))
