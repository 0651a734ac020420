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
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from tahoe_auth.kernel.changes import Listener
from tahoe_auth.kernel.metrics import REDIS_ERRORS
from tahoe_auth.store.kv import StoreUnavailable

log = logging.getLogger(__name__)

RECONNECT = ("", "")
HEARTBEAT = "~heartbeat"


def channel_for(url: str) -> str:
    """Pub/sub ignores database numbers; name the channel after the database so that
    deployments (and test runs) sharing one Redis server do not hear each other."""
    db = redis.connection.parse_url(url).get("db", 0)  # type: ignore[no-untyped-call]
    return f"tahoe:{{events}}:{db}"


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
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            health_check_interval=0,
        )
        self._url = url
        self._channel = channel or channel_for(url)
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.subscribed = threading.Event()
        self._heartbeat_interval = heartbeat_interval
        self._silence = silence
        self._last_heard = 0.0

    def get(self, key: str) -> str | None:
        try:
            return self.client.get(key)  # type: ignore[return-value]
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def get_many(self, keys: list[str]) -> list[str | None]:
        if not keys:
            return []
        try:
            return self.client.mget(keys)  # type: ignore[return-value]
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        try:
            if ttl is None:
                self.client.set(key, value)
            else:
                self.client.set(key, value, px=max(1, int(ttl * 1000)))
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def delete(self, *keys: str) -> None:
        if not keys:
            return
        try:
            self.client.delete(*keys)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def incr(self, key: str, ttl: float) -> int:
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.incr(key)
            pipe.pexpire(key, max(1, int(ttl * 1000)), nx=True)
            value, _ = pipe.execute()
            return int(value)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def ttl(self, key: str) -> float | None:
        try:
            millis = int(self.client.pttl(key))
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        return None if millis < 0 else millis / 1000

    def publish(self, channel: str, message: str) -> None:
        try:
            self.client.publish(self._channel, f"{channel}\n{message}")
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
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.client.close()

    def _dispatch(self, channel: str, message: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(channel, message)
            except Exception:  # one bad listener must not stop notifications
                log.exception("pub/sub listener failed")

    def _listen_forever(self) -> None:
        # Its own connection with a longer read timeout: it mostly waits for messages.
        client = redis.Redis.from_url(self._url, socket_connect_timeout=1, socket_timeout=1, decode_responses=True)
        first = True
        while not self._stop.is_set():
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(self._channel)
                if not first:
                    log.warning("redis pub/sub reconnected; changes may have been missed")
                self._last_heard = time.monotonic()
                self._dispatch(*RECONNECT)
                self.subscribed.set()
                first = False
                self._hear(pubsub)
            except redis.RedisError as exc:
                if self.subscribed.is_set():  # once per outage, not once per failed attempt
                    log.warning("redis pub/sub lost (%s); reconnecting", exc)
                    self.subscribed.clear()
                    self._dispatch(*RECONNECT)
                self._stop.wait(0.2)
        client.close()

    def _hear(self, pubsub: redis.client.PubSub) -> None:
        next_beat = 0.0
        while not self._stop.is_set():
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
