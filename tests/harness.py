"""Reusable Envoy + wrk benchmark harness.

Typical use::

    from tests import harness

    with harness.workdir() as tmp, harness.managed_process(argv, tmp / "srv.log", ready_port=p):
        config = harness.envoy_config(listen, ext_authz_ports=[p])
        with harness.run_envoy(config, tmp) as envoy:
            result = harness.run_wrk(envoy.url("/"), connections=32, duration_s=10)
            print(result.rps, result.p99_ms, harness.envoy_stats(envoy.admin_port, "ext_authz"))

By default the route ends in a ``direct_response`` so the upstream is never the
bottleneck; pass ``upstream_port`` to route to a real HTTP/1.1 upstream instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import http.server
import itertools
import json
import os
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

LOCALHOST = "127.0.0.1"
COMMITTED_ENVOY_CONFIG = Path(__file__).resolve().parents[1] / "envoy" / "envoy.yaml"  # Check over HTTP
COMMITTED_GRPC_ENVOY_CONFIG = COMMITTED_ENVOY_CONFIG.with_name("envoy.grpc.yaml")
EXT_AUTHZ_CLUSTER = "ext_authz"
EXT_AUTHZ_HTTP_CLUSTER = "ext_authz_http"
ROUTE_REQUIREMENTS = "tahoe.route_requirements"
UPSTREAM_CLUSTER = "upstream"

_WRK_DONE_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "non_2xx": %d, '
    .. '"socket_errors": %d, "p50_us": %.0f, "p90_us": %.0f, '
    .. '"p99_us": %.0f, "max_us": %.0f}\\n',
    summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""


# --- ports and processes -------------------------------------------------------


_port_cursor = itertools.count(secrets.randbelow(1 << 16))  # a different start per run


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """Return a TCP port that was free a moment ago on localhost.

    Ports come from below the kernel's ephemeral range (where bind(0) and outgoing
    connections take theirs), so that between this call and the server's bind no
    client socket can take the port, and a probe of a port nobody listens on yet
    cannot connect to itself. ``TAHOE_TEST_PORTS=LOW-HIGH`` confines them to a range
    (for machines shared by several runs). They are handed out in turn, so that two
    asked for in a row differ even before either is bound."""
    bounds = os.environ.get("TAHOE_TEST_PORTS", "").strip()
    if bounds:
        low, _, high = bounds.partition("-")
    else:  # 27xxx: the fixed ports of the Sentinel and Cluster tests
        low, high = "10000", str(min(26999, _ephemeral_low() - 1))
    span = int(high) - int(low) + 1
    for _ in range(span):
        port = int(low) + next(_port_cursor) % span
        with socket.socket() as sock:
            try:
                sock.bind((LOCALHOST, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {low}-{high}")


def use_port_range(first: int, last: int) -> None:
    """Make free_port hand out ports from first..last only (as TAHOE_TEST_PORTS does)."""
    os.environ["TAHOE_TEST_PORTS"] = f"{first}-{last}"


def wait_for_port(port: int, timeout_s: float = 15.0, host: str = LOCALHOST) -> None:
    """Block until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5) as sock:
                # A connection to a port nobody listens on can, rarely, be the
                # socket's own (TCP simultaneous open): not a listener.
                if sock.getsockname() != sock.getpeername():
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on {host}:{port}") from None
        time.sleep(0.05)


@contextlib.contextmanager
def workdir(prefix: str = "tahoe-bench-") -> Iterator[Path]:
    """A temporary directory for configs and logs, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)


@contextlib.contextmanager
def managed_process(
    argv: Sequence[str],
    log_path: Path,
    ready_port: int | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 15.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with stdout/stderr in ``log_path``; stop it on exit.

    If ``ready_port`` is given, wait until the port accepts connections
    (failing early, with the log tail, if the process dies first).
    """
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else {**os.environ, **env},
            start_new_session=True,
        )
    try:
        if ready_port is not None:
            _wait_ready(proc, ready_port, log_path, ready_timeout_s)
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """Terminate ``proc``, killing it if it ignores SIGTERM for ``grace_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited early:\n{_tail(log_path)}")
        try:
            wait_for_port(port, timeout_s=0.2)
            return
        except TimeoutError:
            continue
    raise TimeoutError(f"{proc.args!r} not listening on {port}:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def cpu_seconds(pids: Sequence[int]) -> float:
    """User+system CPU time consumed so far by the given (Linux) processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole (Linux) machine so far, summed over all cores."""
    with Path("/proc/stat").open() as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def find_binary(name: str) -> str:
    """Find ``name`` in ``<sys.prefix>/bin`` (the venv) first, then on PATH."""
    candidate = Path(sys.prefix) / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found in {sys.prefix}/bin or on PATH")
    return found


# --- Envoy configuration --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JwtProvider:
    """A jwt_authn provider verified by Envoy against an inline JWKS document."""

    issuer: str
    jwks_json: str
    audiences: tuple[str, ...] = ()
    payload_header: str = "x-jwt-payload"
    name: str = "tahoe"


def envoy_config(
    listener_port: int,
    ext_authz_ports: Sequence[int] | None = None,
    jwt_provider: JwtProvider | None = None,
    timeout_ms: int = 1000,
    admin_port: int | None = None,
    upstream_port: int | None = None,
    response_body: str = "ok",
    context_extensions: Mapping[str, str] | None = None,
    http_authz_ports: Sequence[int] | None = None,
    route_headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build an Envoy bootstrap config (as a dict, dumped to YAML/JSON by run_envoy).

    ``ext_authz_ports``: one endpoint per auth server process (round-robin over
    HTTP/2); None disables ext_authz. ``upstream_port``: route to a real upstream
    instead of a 200 ``direct_response``. ``admin_port`` defaults to a free port.
    ``context_extensions``: the route's ext_authz context extensions (for Tahoe's
    Check: ``required_permission``, ``upstream``).
    ``http_authz_ports``: Envoy's HTTP ext_authz (``http_service``, HTTP/1.1) instead,
    behind a header_mutation that drops client-sent x-tahoe-* and a second one
    (ROUTE_REQUIREMENTS) whose per-route config adds ``route_headers`` (e.g.
    ``x-tahoe-route-permission``), as envoy/envoy.yaml does.
    """
    filters: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []
    if jwt_provider is not None:
        filters.append(_jwt_authn_filter(jwt_provider))
    if ext_authz_ports:
        filters.append(_ext_authz_filter(timeout_ms))
        outliers = committed_auth_resilience(COMMITTED_GRPC_ENVOY_CONFIG).outlier_detection
        clusters.append(_cluster(EXT_AUTHZ_CLUSTER, ext_authz_ports, http2=True, outlier_detection=outliers))
    if http_authz_ports:
        filters += _http_authz_filters(timeout_ms)
        outliers = committed_auth_resilience(COMMITTED_ENVOY_CONFIG).outlier_detection
        clusters.append(_cluster(EXT_AUTHZ_HTTP_CLUSTER, http_authz_ports, outlier_detection=outliers))
    if upstream_port is not None:
        clusters.append(_cluster(UPSTREAM_CLUSTER, [upstream_port]))
    filters.append(_typed("envoy.filters.http.router", "extensions.filters.http.router.v3.Router"))
    route = _route(upstream_port, response_body)
    if context_extensions:
        route["typed_per_filter_config"] = {
            "envoy.filters.http.ext_authz": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
                "check_settings": {"context_extensions": dict(context_extensions)},
            }
        }
    if http_authz_ports and route_headers:
        append = [
            {"append": {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}
            for k, v in route_headers.items()
        ]
        route.setdefault("typed_per_filter_config", {})[ROUTE_REQUIREMENTS] = {
            "@type": f"type.googleapis.com/{_HEADER_MUTATION}PerRoute",
            "mutations": {"request_mutations": append},
        }
    return {
        "admin": {"address": _address(admin_port or free_port())},
        "static_resources": {
            "listeners": [_listener(listener_port, filters, route)],
            "clusters": clusters,
        },
    }


def _typed(name: str, type_suffix: str, **config: Any) -> dict[str, Any]:
    return {
        "name": name,
        "typed_config": {"@type": f"type.googleapis.com/envoy.{type_suffix}", **config},
    }


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": LOCALHOST, "port_value": port}}


def _listener(port: int, filters: list[dict[str, Any]], route: dict[str, Any]) -> dict[str, Any]:
    hcm = _typed(
        "envoy.filters.network.http_connection_manager",
        "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="ingress",
        route_config={
            "name": "local",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}],
        },
        http_filters=filters,
    )
    return {
        "name": "ingress",
        "address": _address(port),
        "filter_chains": [{"filters": [hcm]}],
    }


def _route(upstream_port: int | None, body: str) -> dict[str, Any]:
    if upstream_port is not None:
        return {"match": {"prefix": "/"}, "route": {"cluster": UPSTREAM_CLUSTER}}
    return {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": body}},
    }


@dataclasses.dataclass(frozen=True)
class AuthResilience:
    """What a committed Envoy config does when an auth instance fails or stops: the
    ext_authz retry policy and the auth cluster's outlier detection. Generated
    configs take them from there, so that benchmarks and tests run what ships."""

    retry_policy: dict[str, Any]
    outlier_detection: dict[str, Any]


def _committed_http_filters(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import yaml

    config: dict[str, Any] = yaml.safe_load(path.read_text())
    (listener,) = config["static_resources"]["listeners"]
    filters: list[dict[str, Any]] = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    return config, filters


def committed_auth_resilience(path: Path = COMMITTED_ENVOY_CONFIG) -> AuthResilience:
    """Of envoy/envoy.yaml (Check over HTTP) or envoy/envoy.grpc.yaml."""
    config, filters = _committed_http_filters(path)
    (authz,) = [f["typed_config"] for f in filters if f["name"] == "envoy.filters.http.ext_authz"]
    if "grpc_service" in authz:
        service, cluster_name = authz["grpc_service"], authz["grpc_service"]["envoy_grpc"]["cluster_name"]
    else:
        service, cluster_name = authz["http_service"], authz["http_service"]["server_uri"]["cluster"]
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == cluster_name]
    return AuthResilience(service["retry_policy"], cluster["outlier_detection"])


def _ext_authz_filter(timeout_ms: int) -> dict[str, Any]:
    return _typed(
        "envoy.filters.http.ext_authz",
        "extensions.filters.http.ext_authz.v3.ExtAuthz",
        grpc_service={
            "envoy_grpc": {"cluster_name": EXT_AUTHZ_CLUSTER},
            "timeout": f"{timeout_ms / 1000:.3f}s",
            "retry_policy": committed_auth_resilience(COMMITTED_GRPC_ENVOY_CONFIG).retry_policy,
        },
        transport_api_version="V3",
        failure_mode_allow=False,
        status_on_error={"code": 503},
    )


_HEADER_MUTATION = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"


def _http_authz_filters(timeout_ms: int) -> list[dict[str, Any]]:
    """envoy/envoy.yaml's filters up to ext_authz, as committed: strip client
    x-tahoe-*, add the route's requirements (per route), then ext_authz over HTTP,
    pointed at EXT_AUTHZ_HTTP_CLUSTER with this timeout."""
    _, filters = _committed_http_filters(COMMITTED_ENVOY_CONFIG)
    names = [f["name"] for f in filters]
    at = names.index("envoy.filters.http.ext_authz")
    assert names[:at] == ["envoy.filters.http.header_mutation", ROUTE_REQUIREMENTS], names
    service = filters[at]["typed_config"]["http_service"]
    timeout = f"{timeout_ms / 1000:.3f}s"
    service["server_uri"] |= {"cluster": EXT_AUTHZ_HTTP_CLUSTER, "timeout": timeout}
    back_off = service["retry_policy"]["retry_back_off"]
    if float(back_off["max_interval"].removesuffix("s")) < timeout_ms / 1000:
        back_off["max_interval"] = timeout  # Envoy takes it as each try's timeout too
    return filters[: at + 1]


def _jwt_authn_filter(provider: JwtProvider) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "issuer": provider.issuer,
        "local_jwks": {"inline_string": provider.jwks_json},
        "forward": True,
        "forward_payload_header": provider.payload_header,
    }
    if provider.audiences:
        spec["audiences"] = list(provider.audiences)
    return _typed(
        "envoy.filters.http.jwt_authn",
        "extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        providers={provider.name: spec},
        rules=[{"match": {"prefix": "/"}, "requires": {"provider_name": provider.name}}],
    )


def _cluster(
    name: str, ports: Sequence[int], http2: bool = False, outlier_detection: dict[str, Any] | None = None
) -> dict[str, Any]:
    unlimited = 1_000_000
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": unlimited,
                    "max_pending_requests": unlimited,
                    "max_requests": unlimited,
                }
            ]
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(p)}} for p in ports]}],
        },
    }
    if outlier_detection is not None:
        cluster["outlier_detection"] = outlier_detection
    if http2:
        options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        cluster["typed_extension_protocol_options"] = {
            options: {
                "@type": f"type.googleapis.com/{options}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


# --- running Envoy ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Envoy:
    """A running Envoy started by ``run_envoy``."""

    process: subprocess.Popen[bytes]
    listener_port: int
    admin_port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str = "/") -> str:
        return f"http://{LOCALHOST}:{self.listener_port}{path}"


@contextlib.contextmanager
def run_envoy(
    config: dict[str, Any],
    directory: Path,
    concurrency: int = 1,
    log_level: str = "warn",
) -> Iterator[Envoy]:
    """Write ``config`` into ``directory`` and run Envoy until the block exits."""
    admin_port = config["admin"]["address"]["socket_address"]["port_value"]
    listener = config["static_resources"]["listeners"][0]
    listener_port = listener["address"]["socket_address"]["port_value"]
    config_path = directory / f"envoy-{listener_port}.yaml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
    log_path = config_path.with_suffix(".log")
    argv = [
        find_binary("envoy"),
        *("-c", str(config_path)),
        *("--concurrency", str(concurrency)),
        *("--log-level", log_level),
        "--disable-hot-restart",
    ]
    with managed_process(argv, log_path) as proc:
        wait_for_envoy_live(proc, admin_port, log_path)
        _wait_ready(proc, listener_port, log_path, timeout_s=5.0)
        yield Envoy(proc, listener_port, admin_port, log_path)


def wait_for_envoy_live(
    proc: subprocess.Popen[bytes], admin_port: int, log_path: Path, timeout_s: float = 15.0
) -> None:
    """Block until Envoy's admin ``/ready`` answers 200 (server state LIVE).

    An open listener port is not enough: Envoy binds and listens on it while the
    cluster manager is still initialising (first health-check round included) and
    before its workers run. LIVE means the clusters are initialised and the
    listeners are active on the workers. The probe goes to the admin port, so it
    passes no HTTP filter (no ext_authz call, nothing counted by a rate limit).
    """
    deadline = time.monotonic() + timeout_s
    state = "not answering"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited early:\n{_tail(log_path)}")
        conn = http.client.HTTPConnection(LOCALHOST, admin_port, timeout=1.0)
        try:
            conn.request("GET", "/ready")
            response = conn.getresponse()
            state = response.read().decode(errors="replace").strip() or str(response.status)
            if response.status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass  # the admin listener is not up yet
        finally:
            conn.close()
        time.sleep(0.02)
    raise TimeoutError(f"Envoy not LIVE after {timeout_s:g}s (last state: {state}):\n{_tail(log_path)}")


def envoy_stats(admin_port: int, name_regex: str = "") -> dict[str, int]:
    """Counters and gauges from Envoy's admin ``/stats`` whose names match the regex."""
    query = urllib.parse.urlencode({"filter": name_regex})
    with urllib.request.urlopen(f"http://{LOCALHOST}:{admin_port}/stats?{query}") as resp:
        lines = resp.read().decode().splitlines()
    stats: dict[str, int] = {}
    for line in lines:
        name, _, value = line.partition(": ")
        if value.isdigit():
            stats[name] = int(value)
    return stats


# --- a real (slow) upstream for functional checks ---------------------------------


class _OkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        return


class _QuietHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # peers reset at shutdown
            super().handle_error(request, client_address)


@contextlib.contextmanager
def http_upstream(port: int | None = None) -> Iterator[int]:
    """In-process threaded HTTP upstream answering 200 "ok"; yields its port.

    Only for functional checks (a few thousand req/s at most); benchmarks should
    use the default ``direct_response`` route.
    """
    server = _QuietHTTPServer((LOCALHOST, port or 0), _OkHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


# --- wrk ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WrkResult:
    """Summary of one wrk run; latencies in milliseconds."""

    requests: int
    duration_s: float
    non_2xx: int  # HTTP status >= 400, as counted by wrk
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu_s: float = 0.0  # CPU time used by wrk itself

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def run_wrk(
    url: str,
    connections: int,
    duration_s: int,
    headers: Mapping[str, str] | None = None,
    threads: int = 1,
    timeout_s: float = 5.0,
) -> WrkResult:
    """Run wrk against ``url`` and parse its summary (via a Lua ``done`` hook)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_DONE_SCRIPT)
    try:
        argv = [
            find_binary("wrk"),
            *("-c", str(connections)),
            *("-t", str(min(threads, connections))),
            *("-d", f"{duration_s}s"),
            *("--timeout", f"{timeout_s:g}s"),
            *("-s", script.name),
        ]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        cpu_before = _children_cpu_seconds()
        done = subprocess.run(
            [*argv, url],
            check=False,
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
        )
    finally:
        os.unlink(script.name)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return dataclasses.replace(parse_wrk_output(done.stdout), cpu_s=_children_cpu_seconds() - cpu_before)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_wrk_output(output: str) -> WrkResult:
    """Parse the ``WRK_JSON`` line printed by the harness's Lua ``done`` hook."""
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            raw = json.loads(line.removeprefix("WRK_JSON "))
            return WrkResult(
                requests=raw["requests"],
                duration_s=raw["duration_us"] / 1e6,
                non_2xx=raw["non_2xx"],
                socket_errors=raw["socket_errors"],
                p50_ms=raw["p50_us"] / 1000,
                p90_ms=raw["p90_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
            )
    raise ValueError(f"no WRK_JSON line in wrk output:\n{output}")


# --- `tahoe-auth serve` for benchmarks and tests ------------------------------------


TAHOE_CLI = (sys.executable, "-m", "tahoe_auth")
_REPO = Path(__file__).resolve().parents[1]


# The addresses `serve` listens on: gRPC, the side HTTP port, HTTP ext_authz.
LISTEN_ADDRESSES = ("TAHOE_GRPC_ADDR", "TAHOE_HTTP_ADDR", "TAHOE_AUTHZ_HTTP_ADDR")


def listen_env() -> dict[str, str]:
    """LISTEN_ADDRESSES, each on a free port: what one more instance on the same
    environment needs."""
    return {name: f"{LOCALHOST}:{free_port()}" for name in LISTEN_ADDRESSES}


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def listen_ports(env: Mapping[str, str]) -> tuple[int, int, int]:
    """The ports of `env`'s LISTEN_ADDRESSES, in that order."""
    grpc_port, http_port, authz_port = (port_of(env[name]) for name in LISTEN_ADDRESSES)
    return grpc_port, http_port, authz_port


def serve_env(tmp: Path, database_url: str | None = None, redis_url: str | None = None) -> dict[str, str]:
    """The environment for a `serve` started by a benchmark: os.environ, a var dir in
    `tmp` and listen_env. With `database_url` it runs there, on an emptied and migrated
    schema and a new master key (else on the embedded SQLite default); with `redis_url`
    on that Redis, flushed first. Callers add their own settings with `|`."""
    env = {**os.environ, "TAHOE_VAR_DIR": str(tmp / "var"), **listen_env()}
    if database_url is not None:
        import base64
        import secrets

        from tests import support

        support.create_database(database_url)
        support.reset_schema(database_url)
        env |= {
            "TAHOE_DATABASE_URL": database_url,
            "TAHOE_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        }
    if redis_url is not None:
        import redis

        redis.Redis.from_url(redis_url).flushdb()
        env["TAHOE_REDIS_URL"] = redis_url
    return env


def bootstrap(env: Mapping[str, str], tenant: str, email: str, password: str, migrate: bool = True) -> None:
    """`tahoe-auth migrate` (unless told not to) and `bootstrap` of `tenant` with its
    owner, as an operator would, on the database `env` names."""
    env = {**os.environ, **env}
    if migrate:
        subprocess.run([*TAHOE_CLI, "migrate"], env=env, check=True, capture_output=True, cwd=_REPO)
    subprocess.run(
        [*TAHOE_CLI, "bootstrap", "--tenant", tenant, "--owner-email", email, "--password-stdin"],
        env=env,
        input=password + "\n",
        text=True,
        check=True,
        capture_output=True,
        cwd=_REPO,
    )


@contextlib.contextmanager
def serve(env: Mapping[str, str], log_path: Path, ready_timeout_s: float = 60.0) -> Iterator[subprocess.Popen[bytes]]:
    """`tahoe-auth serve` on `env` (listen_env's addresses among it) until the block
    exits; ready once its gRPC port accepts. The default wait allows for a busy
    2-core machine starting several Python processes at once."""
    argv = [*TAHOE_CLI, "serve"]
    ready_port = port_of(env["TAHOE_GRPC_ADDR"])
    with managed_process(argv, log_path, ready_port=ready_port, env=env, ready_timeout_s=ready_timeout_s) as proc:
        yield proc
