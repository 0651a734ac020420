"""Where rate-limit state lives: Redis (shared, one Lua call per request) or this
process (the embedded default, and the fallback while Redis is unreachable).

Both evaluate every policy of a request atomically and answer exactly what
`tahoe_auth.domain.ratelimit.step` answers for the same state and time (the contract
suite in tests/contract/test_limiter_backends.py runs every strategy on both, and on a
Redis Cluster).

State per key (a Redis hash, or a tuple here): fields a, b, c =
fixed_window (window, count), sliding_window (window, count, previous), gcra (tat).

Redis Cluster: a request's keys may sit in two hash tags (`{<tenant>}` and `{global}`
for the per-address limit), so in two slots, perhaps on two nodes. On one server (alone,
with replicas, with Sentinel) every check of a request is one call, atomic as a whole.
On a cluster the checks are split by slot, one EVALSHA per slot, all sent before any
reply is read (one round trip in time, one command per slot). Atomicity then holds per
slot: each call counts its own checks only if all of them allow, and the request is
allowed only if every call allowed. A request refused by one slot's policies may so
still have been counted by the other slot's: the error is on the strict side (a busy
address refused by its tenant's limit spends some of its per-address budget), never
more than a limit allowed. A MOVED reply (a resharding) means that call ran nowhere:
it is sent once more to the node named, and the slot map is updated. An ASK reply (the
slot is being migrated and the call's keys have left) is answered the same way, for
that call only, after ASKING. Any other error (TRYAGAIN while a call's keys are split
between the two nodes of a migration, a dead node) fails the request's call, and the
RateLimiter decides as for any Redis failure; calls to other slots may have counted.

With Sentinel a call that meets a failover (a dropped connection, READONLY from the
demoted master) is retried once on the new master; the new master has not loaded the
script (script caches are not replicated): NOSCRIPT loads it, as after a restart.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import redis
from redis.cluster import RedisCluster
from redis.connection import Connection
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, NoScriptError

from tahoe_auth.domain.ratelimit import (
    STRATEGY_CODES,
    US,
    Outcome,
    PolicyCheck,
    State,
    Strategy,
    overall_allowed,
    step,
)
from tahoe_auth.kernel.metrics import STORE_FAILURES
from tahoe_auth.store.kv import StoreUnavailable
from tahoe_auth.store.redis_store import RedisClient, failover_signal, uses_sentinel


class LimiterBackend(Protocol):
    def evaluate(self, checks: Sequence[PolicyCheck], now_us: int | None, cost: int = 1) -> list[Outcome]:
        """Evaluate all checks at once and count the request if every enforced check
        allows it. `now_us` None: the backend's own clock (Redis: the server's)."""
        ...

    def close(self) -> None:
        """Let go of connections; the instance is not used afterwards."""
        ...


class MemoryLimiterBackend:
    """Per-process state: exact for this process, shares nothing with others."""

    def __init__(self, clock: Callable[[], float] = time.time, max_keys: int = 200_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._states: OrderedDict[str, tuple[State, int]] = OrderedDict()
        self._lock = threading.Lock()

    def evaluate(self, checks: Sequence[PolicyCheck], now_us: int | None, cost: int = 1) -> list[Outcome]:
        now = int(self._clock() * US) if now_us is None else now_us
        with self._lock:
            steps = [step(c.policy, self._get(c.key, now), now, cost) for c in checks]
            outcomes = [s[0] for s in steps]
            if overall_allowed(checks, outcomes):
                for check, (outcome, state, ttl) in zip(checks, steps, strict=True):
                    if outcome.allowed:
                        self._put(check.key, state, now + ttl)
        return outcomes

    def _get(self, key: str, now: int) -> State | None:
        entry = self._states.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._states[key]
            return None
        return entry[0]

    def _put(self, key: str, state: State, expires_at: int) -> None:
        self._states[key] = (state, expires_at)
        self._states.move_to_end(key)
        while len(self._states) > self._max_keys:
            self._states.popitem(last=False)

    def __len__(self) -> int:
        return len(self._states)

    def close(self) -> None:
        pass  # nothing held outside this process


# Mirrors domain.ratelimit.step line by line. ARGV: now (µs, or -1 for the server
# clock), cost, then per key: strategy code, limit, period µs (gcra: emission interval),
# gcra tolerance µs (else 0), shadow (0/1). Returns {allowed, then per key: allowed,
# remaining, reset µs, retry µs}.
CHECK_SCRIPT = """
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cost = tonumber(ARGV[2])
local out = {1}
local writes = {}
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 5
  local kind = tonumber(ARGV[a + 1])
  local limit = tonumber(ARGV[a + 2])
  local period = tonumber(ARGV[a + 3])
  local tolerance = tonumber(ARGV[a + 4])
  local shadow = tonumber(ARGV[a + 5])
  local f = redis.call('HMGET', KEYS[i], 'a', 'b', 'c')
  local s1, s2, s3 = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
  local ok, remaining, reset, retry, ttl, n1, n2, n3
  if kind == 1 then
    local window = math.floor(now / period)
    local count = 0
    if s1 == window and s2 then count = s2 end
    reset = (window + 1) * period - now
    ttl = period
    if count + cost <= limit then
      ok, remaining, retry, n1, n2 = 1, limit - count - cost, 0, window, count + cost
    else
      ok, remaining, retry = 0, math.max(0, limit - count), reset
    end
  elseif kind == 2 then
    local window = math.floor(now / period)
    local elapsed = now - window * period
    local current, previous = 0, 0
    if s1 and s2 then
      if s1 == window then
        current = s2
        previous = s3 or 0
      elseif s1 == window - 1 then
        previous = s2
      end
    end
    local estimate = previous * (period - elapsed) / period + current
    ttl = 2 * period - elapsed
    if current > 0 then reset = ttl elseif previous > 0 then reset = period - elapsed else reset = 0 end
    if estimate + cost <= limit then
      ok, remaining, retry = 1, math.max(0, math.floor(limit - estimate - cost)), 0
      n1, n2, n3 = window, current + cost, previous
    else
      ok, remaining = 0, math.max(0, math.floor(limit - estimate))
      if previous > 0 and current + cost <= limit then
        local at = period * (1 - (limit - current - cost) / previous)
        retry = math.max(1, math.ceil(at - elapsed))
      else
        local later = 0
        if cost > limit then
          later = period
        elseif current + cost > limit then
          later = period * (1 - (limit - cost) / current)
        end
        retry = math.max(1, math.ceil(period - elapsed + later))
      end
    end
  else
    local tat = now
    if s1 and s1 > now then tat = s1 end
    local new_tat = tat + period * cost
    local allow_at = new_tat - tolerance
    if now >= allow_at then
      ok, remaining, reset, retry = 1, math.floor((now - allow_at) / period), new_tat - now, 0
      ttl, n1 = math.max(new_tat - now, tolerance), new_tat
    else
      ok, remaining, reset, retry = 0, 0, tat - now, allow_at - now
      ttl = math.max(tat - now, tolerance)
    end
  end
  if ok == 0 and shadow == 0 then out[1] = 0 end
  local o = #out
  out[o + 1], out[o + 2], out[o + 3], out[o + 4] = ok, remaining, reset, retry
  if ok == 1 then writes[#writes + 1] = {KEYS[i], ttl, n1, n2, n3} end
end
if out[1] == 1 then
  for _, w in ipairs(writes) do
    if w[4] == nil then
      redis.call('HSET', w[1], 'a', string.format('%.0f', w[3]))
    elseif w[5] == nil then
      redis.call('HSET', w[1], 'a', string.format('%.0f', w[3]), 'b', string.format('%.0f', w[4]))
    else
      redis.call('HSET', w[1], 'a', string.format('%.0f', w[3]), 'b', string.format('%.0f', w[4]),
        'c', string.format('%.0f', w[5]))
    end
    redis.call('PEXPIRE', w[1], math.max(1, math.ceil(w[2] / 1000)))
  end
end
return out
"""


class RedisLimiterBackend:
    """Shared state in Redis: one EVALSHA per request whatever the number of policies.
    Raises StoreUnavailable on any Redis error; the RateLimiter decides what then.

    Each thread keeps its own connection rather than borrowing from redis-py's pool:
    measured with the server's 8 threads, the pool's locking doubled the CPU of a
    round trip (80 µs against 27 µs per call), on the path every Check takes. On a
    cluster it keeps one per node, and sends one call per slot (the module's docstring).
    Being outside the pool, they are closed here: a thread's when the next one is made
    after that thread ended, all of them by `close`."""

    def __init__(self, client: RedisClient) -> None:
        self._sha = hashlib.sha1(CHECK_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1
        self._local = threading.local()
        self._opened: list[tuple[threading.Thread, Connection]] = []
        self._opened_lock = threading.Lock()
        self._policy_args: dict[Any, tuple[int, ...]] = {}
        self._cluster: RedisCluster | None = None
        self._sentinel = False
        if isinstance(client, RedisCluster):
            self._cluster = client
            return
        pool = client.connection_pool
        # With Sentinel these are Sentinel-managed too: each connect asks for the master.
        self._new_connection: Callable[[], Connection] = lambda: pool.connection_class(**pool.connection_kwargs)
        self._pool = pool
        self._sentinel = uses_sentinel(client)

    def _connection(self) -> Connection:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._opening(self._new_connection())
            self._local.connection = connection
        elif self._sentinel:
            # Outside the pool, so not closed when the sentinels name a new master (the
            # store asks them every second): on another master, reconnect now rather
            # than write to the old one until it is demoted.
            master = self._pool.master_address  # type: ignore[attr-defined]
            if master is not None and (connection.host, connection.port) != master:
                connection.disconnect()  # type: ignore[no-untyped-call]
        return connection

    def _args(self, check: PolicyCheck) -> tuple[int, ...]:
        policy = check.policy
        cached = self._policy_args.get(policy)
        if cached is None:
            gcra = policy.strategy is Strategy.GCRA
            interval = policy.emission_us if gcra else policy.period_us
            tolerance = policy.emission_us * policy.capacity if gcra else 0
            cached = (STRATEGY_CODES[policy.strategy], policy.limit, interval, tolerance, int(policy.shadow))
            self._policy_args[policy] = cached
        return cached

    def _command(self, checks: Sequence[PolicyCheck], now_us: int | None, cost: int) -> list[Any]:
        command: list[Any] = ["EVALSHA", self._sha, len(checks)]
        command += [c.key for c in checks]
        command += [-1 if now_us is None else now_us, cost]
        for check in checks:
            command += self._args(check)
        return command

    def evaluate(self, checks: Sequence[PolicyCheck], now_us: int | None, cost: int = 1) -> list[Outcome]:
        if not checks:
            return []
        if self._cluster is not None:
            return self._evaluate_cluster(self._cluster, checks, now_us, cost)
        command = self._command(checks, now_us, cost)
        connection = self._connection()
        try:
            reply = self._run(connection, command)
        except redis.RedisError as exc:
            connection.disconnect()  # type: ignore[no-untyped-call]
            if not (self._sentinel and failover_signal(exc)):
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            # A Sentinel failover: once more, at once, on a connection to the master the
            # sentinels now name (READONLY: the script wrote nothing; a dropped reply
            # may count this request twice).
            STORE_FAILURES.labels("redis_failover", "retry").inc()
            try:
                reply = self._run(connection, command)
            except redis.RedisError as again:
                connection.disconnect()  # type: ignore[no-untyped-call]
                raise StoreUnavailable(f"{type(again).__name__}: {again}") from again
        return _outcomes(reply)

    def _evaluate_cluster(
        self, cluster: RedisCluster, checks: Sequence[PolicyCheck], now_us: int | None, cost: int
    ) -> list[Outcome]:
        slots: dict[int, list[int]] = {}
        for index, check in enumerate(checks):
            slots.setdefault(key_slot(check.key.encode()), []).append(index)
        sent: list[tuple[list[int], list[Any], Connection]] = []
        outcomes: list[Outcome | None] = [None] * len(checks)
        try:
            for slot, indices in slots.items():
                command = self._command([checks[i] for i in indices], now_us, cost)
                node = cluster.nodes_manager.get_node_from_slot(slot)
                connection = self._node_connection(cluster, node.host, node.port)
                connection.send_command(*command)  # type: ignore[no-untyped-call]
                sent.append((indices, command, connection))
            # Every reply read, even after an error reply, so that a connection carrying
            # two calls (two slots on one node) stays in step.
            redo: list[tuple[list[int], list[Any], Connection, bool]] = []
            for indices, command, connection in sent:
                try:
                    reply = connection.read_response()
                except NoScriptError:  # this node has not loaded it (new, restarted, flushed)
                    connection.send_command("SCRIPT", "LOAD", CHECK_SCRIPT)  # type: ignore[no-untyped-call]
                    connection.read_response()
                    redo.append((indices, command, connection, False))
                    continue
                except MovedError as moved:  # resharded: ran nowhere, send it where named
                    cluster.nodes_manager.move_slot(moved)
                    redo.append((indices, command, self._node_connection(cluster, moved.host, moved.port), False))
                    continue
                except AskError as ask:  # the slot is migrating and its keys have left: this once, there
                    redo.append((indices, command, self._node_connection(cluster, ask.host, ask.port), True))
                    continue
                for i, outcome in zip(indices, _outcomes(reply), strict=True):
                    outcomes[i] = outcome
            for indices, command, connection, asking in redo:
                sent.append((indices, command, connection))
                reply = self._run(connection, command, asking)
                for i, outcome in zip(indices, _outcomes(reply), strict=True):
                    outcomes[i] = outcome
        except redis.RedisError as exc:
            for _, _, connection in sent:  # some replies may be unread: out of step
                connection.disconnect()  # type: ignore[no-untyped-call]
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return [o for o in outcomes if o is not None]

    def _node_connection(self, cluster: RedisCluster, host: str, port: int) -> Connection:
        """This thread's connection to the node at host:port (made like the cluster's)."""
        connections: dict[tuple[str, int], Connection] | None = getattr(self._local, "nodes", None)
        if connections is None:
            connections = self._local.nodes = {}
        connection = connections.get((host, port))
        if connection is None:
            node = cluster.get_node(host=host, port=port)  # type: ignore[no-untyped-call]
            if node is None:  # not in the slot map yet (named by a MOVED)
                cluster.nodes_manager.initialize()
                node = cluster.get_node(host=host, port=port)  # type: ignore[no-untyped-call]
            if node is None:
                raise redis.ConnectionError(f"no cluster node at {host}:{port}")
            pool = cluster.get_redis_connection(node).connection_pool
            connection = connections[(host, port)] = self._opening(pool.connection_class(**pool.connection_kwargs))
        return connection

    def _opening(self, connection: Connection) -> Connection:
        """Registers a new connection of this thread; closes those of ended threads."""
        with self._opened_lock:
            ended = [c for thread, c in self._opened if not thread.is_alive()]
            self._opened = [(t, c) for t, c in self._opened if t.is_alive()]
            self._opened.append((threading.current_thread(), connection))
        for old in ended:
            old.disconnect()  # type: ignore[no-untyped-call]
        return connection

    def close(self) -> None:
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for _, connection in opened:
            connection.disconnect()  # type: ignore[no-untyped-call]

    @staticmethod
    def _run(connection: Connection, command: list[Any], asking: bool = False) -> Any:
        """`command`'s reply; `asking`: on a cluster node importing the slot, which
        answers the next command only (so ASKING goes again with a resent command)."""

        def send() -> Any:
            if asking:
                connection.send_command("ASKING")  # type: ignore[no-untyped-call]
                connection.read_response()
            connection.send_command(*command)  # type: ignore[no-untyped-call]
            return connection.read_response()

        try:
            return send()
        except NoScriptError:  # a restarted or flushed Redis: load the script once, again
            connection.send_command("SCRIPT", "LOAD", CHECK_SCRIPT)  # type: ignore[no-untyped-call]
            connection.read_response()
            return send()


def _outcomes(reply: Any) -> list[Outcome]:
    return [
        Outcome(bool(reply[i]), int(reply[i + 1]), int(reply[i + 2]), int(reply[i + 3]))
        for i in range(1, len(reply), 4)
    ]


@dataclass(slots=True)
class _Pace:
    served: int = 0  # requests since the last reservation
    since: float = 0.0  # when that reservation was made
    exact_until: float = 0.0  # near a limit: no reservations ahead until then


@dataclass(slots=True)
class _Lease:
    tokens: int  # units reserved in Redis and not used yet
    expires: float  # monotonic seconds
    remaining: int  # Redis's remaining after the reservation
    reset_us: int  # Redis's reset at the reservation
    taken: float  # monotonic seconds
    pace: _Pace  # the key's pace, counted as units are spent


class LeasingBackend:
    """Reserves a few units per Redis round trip and spends them here, for subjects
    that send many requests: the same limits, a fraction of the round trips.

    A lease is a small batch reserved with one call (`cost` = the batch size): every
    policy of the request counts the whole batch at once, and the units are spent
    locally over the next `ttl` seconds. The batch follows the subject's recent pace
    (pace x ttl) and never exceeds `max_lease` nor 1% of a policy's limit, so:
      - a subject sending under about 1/ttl requests a second, and any policy with a
        limit under 100 per period, is decided exactly, one round trip per request;
      - a limit is never exceeded: reserved units were counted in Redis before use.
        Reserved units that go unused (the subject slows down, the lease expires) were
        counted anyway, so a busy subject may be limited up to one batch early per
        instance: at most 1% of the limit each.
    When a batch does not fit (close to a limit), the request is decided exactly with a
    second call, and the keys get no batches for a second: denials stay exact.
    """

    def __init__(
        self,
        inner: LimiterBackend,
        *,
        ttl: float = 0.1,
        max_lease: int = 64,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._inner = inner
        self._ttl = ttl
        self._max_lease = max_lease
        self._clock = clock
        self._max_keys = max_keys
        self._leases: dict[str, _Lease] = {}
        self._paces: OrderedDict[str, _Pace] = OrderedDict()
        self._lock = threading.Lock()
        self.round_trips = 0

    def close(self) -> None:
        self._inner.close()

    def evaluate(self, checks: Sequence[PolicyCheck], now_us: int | None, cost: int = 1) -> list[Outcome]:
        now = self._clock()
        with self._lock:
            spent = self._spend(checks, now, cost)
            if spent is not None:
                return spent
            size = self._batch(checks, now, cost)
        self.round_trips += 1
        outcomes = self._inner.evaluate(checks, now_us, size)
        if size > cost and not all(o.allowed for o in outcomes):
            with self._lock:  # a batch does not fit: close to a limit, go exact
                for check in checks:
                    self._pace(check.key, now).exact_until = now + 1.0
            self.round_trips += 1
            return self._inner.evaluate(checks, now_us, cost)
        if size > cost and overall_allowed(checks, outcomes):
            with self._lock:
                self._lease(checks, outcomes, now, size - cost)
        return [replace(o, remaining=o.remaining + size - cost) if o.allowed and size > cost else o for o in outcomes]

    def _spend(self, checks: Sequence[PolicyCheck], now: float, cost: int) -> list[Outcome] | None:
        """Every check from its lease, or None (nothing spent) if one has too few units.
        The path of most Checks of a busy subject: no clock or lock of its own."""
        known = self._leases
        leases = []
        for check in checks:
            lease = known.get(check.key)
            if lease is None or lease.expires <= now or lease.tokens < cost:
                return None
            leases.append(lease)
        outcomes = []
        for lease in leases:
            lease.tokens -= cost
            lease.pace.served += 1
            reset_us = lease.reset_us - int((now - lease.taken) * US)
            outcomes.append(Outcome(True, lease.remaining + lease.tokens, reset_us if reset_us > 0 else 0, 0))
        return outcomes

    def _batch(self, checks: Sequence[PolicyCheck], now: float, cost: int) -> int:
        size = self._max_lease
        for check in checks:
            pace = self._pace(check.key, now)
            elapsed = now - pace.since
            rate = pace.served / elapsed if pace.served and elapsed > 0 else 0.0
            if now < pace.exact_until:
                rate = 0.0
            size = min(size, check.policy.limit // 100, int(rate * self._ttl))
            pace.served, pace.since = 1, now
        return max(cost, size + cost)

    def _lease(self, checks: Sequence[PolicyCheck], outcomes: Sequence[Outcome], now: float, spare: int) -> None:
        for check, outcome in zip(checks, outcomes, strict=True):
            old = self._leases.get(check.key)
            left = old.tokens if old is not None and old.expires > now else 0
            pace = self._pace(check.key, now)
            self._leases[check.key] = _Lease(
                left + spare, now + self._ttl, outcome.remaining, outcome.reset_us, now, pace
            )
        if len(self._leases) > self._max_keys:
            self._leases = {k: v for k, v in self._leases.items() if v.expires > now}

    def _pace(self, key: str, now: float) -> _Pace:
        pace = self._paces.get(key)
        if pace is None:
            pace = self._paces[key] = _Pace(0, now)
            if len(self._paces) > self._max_keys:
                self._paces.popitem(last=False)
        return pace
