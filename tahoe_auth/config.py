"""Configuration from the environment (`TAHOE_` prefix).

Bad configuration raises ConfigError with one line that names the variable, so that
`tahoe-auth serve` can fail at start with a message an operator can act on.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.domain.ratelimit import DEFAULT_LIMITS, LimitSet, parse_limits


class ConfigError(Exception):
    """A configuration value is missing or malformed."""


@dataclass(frozen=True)
class PasswordParams:
    memory_kib: int = 19 * 1024
    time_cost: int = 2
    parallelism: int = 1


@dataclass(frozen=True)
class Settings:
    grpc_addr: str = "127.0.0.1:9200"
    http_addr: str = "127.0.0.1:9201"
    # Envoy's HTTP ext_authz (http_service) transport of Check (api/ext_authz_http.py).
    authz_http_addr: str = "127.0.0.1:9202"
    # Processes answering it (check_workers.py): this one and authz_workers - 1 more,
    # each sharing the port (SO_REUSEPORT). More than one needs Redis (shared limits).
    authz_workers: int = 1
    database_url: str = "sqlite:///var/tahoe.db"
    database_role: str | None = None
    redis_url: str | None = None
    # Seconds a Redis call may take before it counts as failed (bench/redis_latency.py).
    redis_timeout: float = 0.25
    issuer: str = "tahoe-auth"
    audience: str = "tahoe"
    master_key: bytes = field(default=b"", repr=False)
    log_format: str = "text"
    log_level: str = "INFO"
    grpc_reflection: bool = True
    grpc_workers: int = 8
    # Seconds `serve` keeps answering after SIGTERM while it reports NOT_SERVING, so that
    # Envoy's health checks move traffic away before the listener closes. The default
    # exceeds the committed Envoy config's detection time (interval 1 s x unhealthy
    # threshold 2 + timeout 1 s = 3 s; tests/unit/test_drain.py keeps them in step).
    drain_seconds: float = 5.0
    var_dir: Path = Path("var")
    access_token_ttl: int = 15 * 60
    # Staged key rotation: a new key is published this long before it signs; verifiers
    # are told (Cache-Control max-age on the JWKS) to cache it for less than that.
    signing_key_publish_delay: int = 900
    jwks_max_age: int = 300
    signing_key_refresh_interval: int = 2
    # How often each instance reads the change log (revocations that pub/sub may have
    # lost): at most a second, so that a committed revocation holds everywhere within one.
    change_poll_interval_ms: int = 250
    session_idle_ttl: int = 7 * 24 * 3600
    session_absolute_ttl: int = 30 * 24 * 3600
    refresh_reuse_leeway: int = 0
    password: PasswordParams = PasswordParams()
    # Password hashing (domain.passwords.BoundedHasher): worker processes, hashes that
    # may wait for one, and the workers' nice value (Check gets the CPU first).
    hash_concurrency: int = 1
    hash_queue: int = 4
    hash_nice: int = 10
    # Rate limits: deployment defaults (same schema as a tenant's settings.rate_limits),
    # and how many instances share them (the in-memory fallback divides by this times
    # authz_workers: every Check process keeps a fallback of its own).
    rate_limit_enabled: bool = True
    rate_limits: LimitSet = DEFAULT_LIMITS
    instance_count: int = 1
    # Webhooks: the delivery worker inside `serve`, and where deliveries may go.
    webhook_worker: bool = True
    webhook_allowed_networks: tuple[str, ...] = ()
    webhook_allow_http: bool = False
    webhook_timeout: int = 10
    webhook_concurrency: int = 16
    webhook_lease: int = 60
    # Peers (CIDRs) whose `x-tahoe-client-address` metadata names the real client: the
    # Envoy in front of the JSON API sets it. Nobody by default: a header is never
    # believed from a peer that could be the client itself.
    trusted_proxies: tuple[str, ...] = ()
    # The browser session cookie's Secure flag: `auto` sets it unless the request's
    # host is loopback (local development over plain HTTP).
    cookie_secure: str = "auto"
    # WebAuthn (passkeys): the relying party's ID (a domain: browsers refuse IP
    # addresses), the name authenticators show, and the origins whose ceremonies count.
    webauthn_rp_id: str = "localhost"
    webauthn_rp_name: str = "Tahoe Auth"
    webauthn_origins: tuple[str, ...] = ("http://localhost:8080",)
    # Mail: where it goes (tahoe_auth/mail/transport.py; empty: files under var/mail/),
    # the From address, the base URL of the links in it, and the worker inside `serve`.
    smtp_url: str = ""
    mail_from: str = "no-reply@localhost"
    public_url: str = "http://localhost:8080"
    mail_worker: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        reader = _Reader(env)
        var_dir = Path(reader.text("TAHOE_VAR_DIR", "var"))
        database_url = reader.text("TAHOE_DATABASE_URL", f"sqlite:///{var_dir / 'tahoe.db'}")
        if not database_url.startswith(("sqlite", "postgresql")):
            raise ConfigError("TAHOE_DATABASE_URL must be a sqlite:/// or postgresql+psycopg:// URL")
        if database_url.startswith("postgresql://"):
            database_url = "postgresql+psycopg://" + database_url.removeprefix("postgresql://")
        cpus = os.cpu_count() or 2
        rp_id = _rp_id(reader.text("TAHOE_WEBAUTHN_RP_ID", cls.webauthn_rp_id))
        settings = cls(
            grpc_addr=reader.address("TAHOE_GRPC_ADDR", cls.grpc_addr),
            http_addr=reader.address("TAHOE_HTTP_ADDR", cls.http_addr),
            authz_http_addr=reader.address("TAHOE_AUTHZ_HTTP_ADDR", cls.authz_http_addr),
            authz_workers=reader.integer("TAHOE_AUTHZ_WORKERS", cls.authz_workers, 1, 64),
            database_url=database_url,
            database_role=env.get("TAHOE_DATABASE_ROLE") or None,
            redis_url=_redis_url(env.get("TAHOE_REDIS_URL")),
            redis_timeout=reader.number("TAHOE_REDIS_TIMEOUT", cls.redis_timeout, 0.005, 10.0),
            issuer=reader.text("TAHOE_ISSUER", cls.issuer),
            audience=reader.text("TAHOE_AUDIENCE", cls.audience),
            master_key=_master_key(env.get("TAHOE_MASTER_KEY"), database_url, var_dir),
            log_format=reader.choice("TAHOE_LOG_FORMAT", "text", ("text", "json")),
            log_level=reader.choice("TAHOE_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            grpc_reflection=reader.boolean("TAHOE_GRPC_REFLECTION", True),
            grpc_workers=reader.integer("TAHOE_GRPC_WORKERS", cls.grpc_workers, 2, 256),
            drain_seconds=reader.number("TAHOE_DRAIN_SECONDS", cls.drain_seconds, 0, 600),
            var_dir=var_dir,
            access_token_ttl=reader.integer("TAHOE_ACCESS_TOKEN_TTL", cls.access_token_ttl, 30, 24 * 3600),
            signing_key_publish_delay=reader.integer(
                "TAHOE_SIGNING_KEY_PUBLISH_DELAY", cls.signing_key_publish_delay, 1, 7 * 86400
            ),
            jwks_max_age=reader.integer("TAHOE_JWKS_MAX_AGE", cls.jwks_max_age, 0, 86400),
            signing_key_refresh_interval=reader.integer(
                "TAHOE_SIGNING_KEY_REFRESH_INTERVAL", cls.signing_key_refresh_interval, 1, 60
            ),
            change_poll_interval_ms=reader.integer(
                "TAHOE_CHANGE_POLL_INTERVAL_MS", cls.change_poll_interval_ms, 20, 1000
            ),
            session_idle_ttl=reader.integer("TAHOE_SESSION_IDLE_TTL", cls.session_idle_ttl, 60, 365 * 86400),
            session_absolute_ttl=reader.integer(
                "TAHOE_SESSION_ABSOLUTE_TTL", cls.session_absolute_ttl, 60, 3 * 365 * 86400
            ),
            refresh_reuse_leeway=reader.integer("TAHOE_REFRESH_REUSE_LEEWAY", 0, 0, 60),
            password=PasswordParams(
                memory_kib=reader.integer("TAHOE_ARGON2_MEMORY_KIB", PasswordParams.memory_kib, 19 * 1024, 4 << 20),
                time_cost=reader.integer("TAHOE_ARGON2_TIME_COST", PasswordParams.time_cost, 2, 100),
                parallelism=reader.integer("TAHOE_ARGON2_PARALLELISM", PasswordParams.parallelism, 1, 64),
            ),
            # One core fewer than the machine has: a burst of logins leaves one to Check.
            hash_concurrency=reader.integer("TAHOE_HASH_CONCURRENCY", max(1, cpus - 1), 1, 256),
            hash_queue=reader.integer("TAHOE_HASH_QUEUE", 2 * cpus, 0, 4096),
            hash_nice=reader.integer("TAHOE_HASH_NICE", cls.hash_nice, 0, 19),
            rate_limit_enabled=reader.boolean("TAHOE_RATE_LIMIT_ENABLED", True),
            rate_limits=_rate_limits(env.get("TAHOE_RATE_LIMITS")),
            instance_count=reader.integer("TAHOE_INSTANCE_COUNT", 1, 1, 10_000),
            webhook_worker=reader.boolean("TAHOE_WEBHOOK_WORKER", True),
            webhook_allowed_networks=_networks(env.get("TAHOE_WEBHOOK_ALLOWED_NETWORKS", "")),
            webhook_allow_http=reader.boolean("TAHOE_WEBHOOK_ALLOW_HTTP", False),
            webhook_timeout=reader.integer("TAHOE_WEBHOOK_TIMEOUT", cls.webhook_timeout, 1, 60),
            webhook_concurrency=reader.integer("TAHOE_WEBHOOK_CONCURRENCY", cls.webhook_concurrency, 1, 256),
            webhook_lease=reader.integer("TAHOE_WEBHOOK_LEASE", cls.webhook_lease, 2, 3600),
            trusted_proxies=_trusted_proxies(env.get("TAHOE_TRUSTED_PROXIES", "")),
            cookie_secure=reader.choice("TAHOE_COOKIE_SECURE", "auto", ("auto", "true", "false")),
            webauthn_rp_id=rp_id,
            webauthn_rp_name=reader.text("TAHOE_WEBAUTHN_RP_NAME", cls.webauthn_rp_name),
            webauthn_origins=_webauthn_origins(env.get("TAHOE_WEBAUTHN_ORIGINS", ""), rp_id),
            smtp_url=reader.text("TAHOE_SMTP_URL", ""),
            mail_from=_mail_from(reader.text("TAHOE_MAIL_FROM", cls.mail_from)),
            public_url=_public_url(reader.text("TAHOE_PUBLIC_URL", cls.public_url)),
            mail_worker=reader.boolean("TAHOE_MAIL_WORKER", True),
        )
        if settings.authz_workers > 1 and not settings.redis_url:
            raise ConfigError(
                f"TAHOE_AUTHZ_WORKERS={settings.authz_workers} needs TAHOE_REDIS_URL: Check processes share"
                " rate limits and revocations through Redis (the embedded store is one process's memory)"
            )
        if settings.webhook_lease <= settings.webhook_timeout:
            raise ConfigError("TAHOE_WEBHOOK_LEASE must be longer than TAHOE_WEBHOOK_TIMEOUT")
        if settings.jwks_max_age >= settings.signing_key_publish_delay:
            raise ConfigError(
                "TAHOE_JWKS_MAX_AGE must be shorter than TAHOE_SIGNING_KEY_PUBLISH_DELAY"
                " (verifiers must refetch the JWKS before a published key starts signing)"
            )
        if settings.session_absolute_ttl < settings.session_idle_ttl:
            raise ConfigError("TAHOE_SESSION_ABSOLUTE_TTL must not be shorter than TAHOE_SESSION_IDLE_TTL")
        return settings


def _mail_from(value: str) -> str:
    if "@" not in value or any(c in value for c in ' <>\r\n"') or len(value) > 254:
        raise ConfigError("TAHOE_MAIL_FROM must be a bare address like no-reply@example.com")
    return value


def _public_url(value: str) -> str:
    if not value.startswith(("https://", "http://")) or any(c in value for c in " #?\r\n"):
        raise ConfigError(
            "TAHOE_PUBLIC_URL must be an http(s) URL without query or fragment, like https://auth.example.com"
        )
    return value.rstrip("/")


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        value = self._env.get(name, "").strip()
        return value or default

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default)
        matched = {a.lower(): a for a in allowed}.get(value.lower())
        if matched is None:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        return matched

    def boolean(self, name: str, default: bool) -> bool:
        value = self._env.get(name, "").strip().lower()
        if not value:
            return default
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={value!r} is not a boolean (true/false)")

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}={value} is outside {low}..{high}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if not low <= value <= high:  # also refuses nan
            raise ConfigError(f"{name}={value:g} is outside {low:g}..{high:g}")
        return value

    def address(self, name: str, default: str) -> str:
        value = self.text(name, default)
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"{name}={value!r} is not host:port")
        return value


SENTINEL_SCHEME = "redis+sentinel://"
DEFAULT_SENTINEL_PORT = 26379
_SENTINEL_PARAMS = frozenset({"sentinel_username", "sentinel_password"})


@dataclass(frozen=True)
class SentinelUrl:
    """TAHOE_REDIS_URL in its Sentinel form, parsed:
    `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/<master name>[/<db>]`
    with optional `?sentinel_username=..&sentinel_password=..`.

    The user and password are the master's (its `requirepass` or ACL user), as in a
    redis:// URL; the sentinels' own credentials, when they have any, are the query
    parameters. Ports default to 26379. Timeouts are TAHOE_REDIS_TIMEOUT's, for the
    sentinels and the master alike."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Raises ConfigError naming what is wrong (never echoing the URL: it may hold a password)."""
    if not is_sentinel_url(url):
        raise ConfigError(f"TAHOE_REDIS_URL: a Sentinel URL starts with {SENTINEL_SCHEME}")
    rest = url[len(SENTINEL_SCHEME) :]
    if "#" in rest:
        raise ConfigError("TAHOE_REDIS_URL: a Sentinel URL has no #fragment")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    username, password, hosts = _credentials_and_hosts(netloc)
    sentinels = tuple(_sentinel_address(item) for item in hosts.split(","))
    segments = path.split("/") if slash else []
    if not segments or not segments[0] or len(segments) > 2:
        raise ConfigError("TAHOE_REDIS_URL: a Sentinel URL ends in /<master name> or /<master name>/<db>")
    db = 0
    if len(segments) == 2:
        if not _digits(segments[1]):
            raise ConfigError("TAHOE_REDIS_URL: the database (after the master name) is a number")
        db = int(segments[1])
    params = _sentinel_params(query)
    return SentinelUrl(
        sentinels,
        unquote(segments[0]),
        db,
        username,
        password,
        params.get("sentinel_username"),
        params.get("sentinel_password"),
    )


def _credentials_and_hosts(netloc: str) -> tuple[str | None, str | None, str]:
    """`[[user]:password@]hosts`: the (percent-decoded) user and password, and the hosts."""
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return None, None, hosts
    user, colon, secret = userinfo.partition(":")
    return unquote(user) or None, (unquote(secret) if colon else None) or None, hosts


def _sentinel_address(item: str) -> tuple[str, int]:
    return _node_address(item, DEFAULT_SENTINEL_PORT, "sentinel")


def _node_address(item: str, default_port: int, what: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:port
        host, bracket, port = item[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ConfigError(f"TAHOE_REDIS_URL: a {what} address is host:port or [IPv6]:port")
        port = port[1:]
    else:
        host, _, port = item.partition(":")
    if not host or (port and not (_digits(port) and 0 < int(port) <= 65535)):
        raise ConfigError(f"TAHOE_REDIS_URL: every {what} is host[:port], comma-separated, port 1..65535")
    return host, int(port) if port else default_port


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _sentinel_params(query: str) -> dict[str, str]:
    if not query:
        return {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ConfigError("TAHOE_REDIS_URL: the query is name=value pairs joined by &") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in _SENTINEL_PARAMS:
            known = ", ".join(sorted(_SENTINEL_PARAMS))
            raise ConfigError(f"TAHOE_REDIS_URL: unknown parameter {name!r} (a Sentinel URL takes {known})")
        if name in params:
            raise ConfigError(f"TAHOE_REDIS_URL: parameter {name!r} given twice")
        params[name] = value
    return params


CLUSTER_SCHEME = "redis+cluster://"
DEFAULT_CLUSTER_PORT = 6379


@dataclass(frozen=True)
class ClusterUrl:
    """TAHOE_REDIS_URL in its Redis Cluster form, parsed:
    `redis+cluster://[[user]:password@]host[:port][,host[:port]...][/0]`.

    The nodes are where to start: any reachable one names the others (and which slots
    each serves). The user and password are every node's, as in a redis:// URL. Ports
    default to 6379. A cluster has database 0 only, so the path is empty or /0. Timeouts
    are TAHOE_REDIS_TIMEOUT's, for every node."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def db(self) -> int:
        return 0


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME)


def parse_cluster_url(url: str) -> ClusterUrl:
    """Raises ConfigError naming what is wrong (never echoing the URL: it may hold a password)."""
    if not is_cluster_url(url):
        raise ConfigError(f"TAHOE_REDIS_URL: a Cluster URL starts with {CLUSTER_SCHEME}")
    rest = url[len(CLUSTER_SCHEME) :]
    if "#" in rest or "?" in rest:
        raise ConfigError("TAHOE_REDIS_URL: a Cluster URL has no ?query nor #fragment")
    netloc, slash, path = rest.partition("/")
    if slash and path not in ("", "0"):
        raise ConfigError("TAHOE_REDIS_URL: a Redis Cluster has database 0 only (end the URL in / or /0)")
    username, password, hosts = _credentials_and_hosts(netloc)
    nodes = tuple(_node_address(item, DEFAULT_CLUSTER_PORT, "cluster node") for item in hosts.split(","))
    return ClusterUrl(nodes, username, password)


def _redis_url(value: str | None) -> str | None:
    if not value:
        return None
    if is_sentinel_url(value):
        parse_sentinel_url(value)  # malformed: refused at start, not at the first call
        return value
    if is_cluster_url(value):
        parse_cluster_url(value)
        return value
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            "TAHOE_REDIS_URL must start with redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://"
        )
    return value


def _networks(value: str) -> tuple[str, ...]:
    """Comma-separated CIDRs that webhooks may reach besides public addresses."""
    networks = []
    for item in value.split(","):
        if item.strip():
            try:
                networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ConfigError(f"TAHOE_WEBHOOK_ALLOWED_NETWORKS: {item.strip()!r} is not a network") from None
    return tuple(networks)


def _trusted_proxies(value: str) -> tuple[str, ...]:
    """Comma-separated IPs or CIDRs (a bare IP is its own /32 or /128)."""
    networks = []
    for item in value.split(","):
        if item.strip():
            try:
                networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ConfigError(
                    f"TAHOE_TRUSTED_PROXIES: {item.strip()!r} is not an IP address or network (CIDR)"
                ) from None
    return tuple(networks)


# A DNS label: letters, digits and inner hyphens, at most 63 characters.
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _rp_id(value: str) -> str:
    rp_id = value.lower()
    try:
        ipaddress.ip_address(rp_id.strip("[]"))
    except ValueError:
        pass
    else:
        raise ConfigError(f"TAHOE_WEBAUTHN_RP_ID={value!r} is an IP address: browsers accept only a domain name")
    labels = rp_id.split(".")
    if len(rp_id) > 253 or not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ConfigError(f"TAHOE_WEBAUTHN_RP_ID={value!r} is not a domain name (e.g. auth.example.com)")
    return rp_id


def _webauthn_origins(value: str, rp_id: str) -> tuple[str, ...]:
    """Comma-separated origins, each serialized as browsers put it in clientDataJSON."""
    items = [part.strip() for part in value.split(",") if part.strip()]
    if not items:
        return tuple(
            _webauthn_origin(item, rp_id, " (the default: set TAHOE_WEBAUTHN_ORIGINS)")
            for item in Settings.webauthn_origins
        )
    return tuple(_webauthn_origin(item, rp_id) for item in items)


def _webauthn_origin(item: str, rp_id: str, note: str = "") -> str:
    def bad(why: str) -> ConfigError:
        return ConfigError(f"TAHOE_WEBAUTHN_ORIGINS: {item!r} {why}{note}")

    try:
        parts = urlsplit(item)
        port = parts.port
    except ValueError:
        raise bad("is not an origin (scheme://host[:port])") from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise bad("is not an http(s) origin (scheme://host[:port])")
    if parts.path or parts.query or parts.fragment or parts.username is not None or item.endswith(("?", "#")):
        raise bad("must be an origin alone: no path, query or user (browsers send scheme://host[:port])")
    loopback_name = host == "localhost" or host.endswith(".localhost")
    if parts.scheme == "http" and not loopback_name:
        raise bad("uses http: WebAuthn needs https except on localhost")
    # The browser refuses a ceremony whose RP ID is not the origin's host or a parent
    # domain of it, so such an origin could never succeed: say so at start instead.
    if host != rp_id and not host.endswith("." + rp_id):
        raise bad(f"is not on TAHOE_WEBAUTHN_RP_ID={rp_id!r} or a subdomain of it")
    default_port = 443 if parts.scheme == "https" else 80
    suffix = f":{port}" if port is not None and port != default_port else ""
    return f"{parts.scheme}://{host}{suffix}"


def _rate_limits(value: str | None) -> LimitSet:
    if not value or not value.strip():
        return DEFAULT_LIMITS
    try:
        parsed = parse_limits(json.loads(value), DEFAULT_LIMITS, "TAHOE_RATE_LIMITS")
        return LimitSet(parsed.policies, parsed.shadow)  # deployment-wide: nothing is tenant-scoped
    except json.JSONDecodeError:
        raise ConfigError("TAHOE_RATE_LIMITS is not JSON (schema: docs/usage.md)") from None
    except InvalidArgument as exc:
        raise ConfigError(exc.message) from None


def _master_key(value: str | None, database_url: str, var_dir: Path) -> bytes:
    if value:
        return decode_master_key(value, "TAHOE_MASTER_KEY")
    if not database_url.startswith("sqlite"):
        raise ConfigError(
            "TAHOE_MASTER_KEY is required with PostgreSQL (32 random bytes, base64): "
            'python -c "import secrets,base64;print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"'
        )
    return _embedded_master_key(var_dir / "master.key")


def decode_master_key(value: str, source: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(value.strip() + "=" * (-len(value.strip()) % 4))
    except ValueError:
        raise ConfigError(f"{source} is not base64") from None
    if len(key) != 32:
        raise ConfigError(f"{source} must decode to 32 bytes, got {len(key)}")
    return key


def _embedded_master_key(path: Path) -> bytes:
    """The embedded default keeps its key beside its SQLite file, created once."""
    if path.exists():
        return decode_master_key(path.read_text(), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return decode_master_key(path.read_text(), str(path))
    with os.fdopen(fd, "w") as handle:
        handle.write(encoded + "\n")
    return decode_master_key(encoded, str(path))
