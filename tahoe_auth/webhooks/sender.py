"""POST a webhook without being turned against our own network (SSRF).

The host is resolved once, every address is checked (private, loopback, link-local,
multicast, reserved and unspecified ranges are refused unless explicitly allowed), and
the connection goes to the checked address, so a DNS answer that changes between the
check and the connection (rebinding) cannot redirect it. Redirects are not followed.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]


class DeliveryRefused(Exception):
    """The URL is not allowed (scheme, address); retrying will not help."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True)
class EgressPolicy:
    """Which destinations webhooks may reach. By default: public addresses only."""

    allowed_networks: tuple[Network, ...] = ()
    allow_http: bool = False

    @classmethod
    def parse(cls, networks: Iterable[str], allow_http: bool) -> EgressPolicy:
        return cls(tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks if n.strip()), allow_http)

    def permits(self, address: Address) -> bool:
        return is_public(address) or any(address in network for network in self.allowed_networks)


def check_url(url: str, policy: EgressPolicy) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise DeliveryRefused("webhook URLs must be absolute http(s) URLs")
    if parts.scheme == "http" and not policy.allow_http:
        raise DeliveryRefused("webhook URLs must use https")
    if parts.username or parts.password:
        raise DeliveryRefused("webhook URLs must not carry credentials")
    return parts


def resolve_permitted(host: str, port: int, policy: EgressPolicy, resolver: Resolver) -> str:
    try:
        candidates = (
            [ipaddress.ip_address(host)] if _is_ip(host) else [ipaddress.ip_address(a) for a in resolver(host, port)]
        )
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"cannot resolve {host}: {exc}") from None
    if not candidates:
        raise ConnectionError(f"{host} has no addresses")
    refused = [str(a) for a in candidates if not policy.permits(a)]
    if refused:
        raise DeliveryRefused(f"{host} resolves to a non-public address ({', '.join(refused)})")
    return str(candidates[0])


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    policy: EgressPolicy,
    timeout: float = 10.0,
    resolver: Resolver = system_resolver,
) -> Response:
    """One POST. Raises DeliveryRefused (do not retry) or OSError/ConnectionError (retry)."""
    parts = check_url(url, policy)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = resolve_permitted(host, port, policy, resolver)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = _PinnedHTTPS(host, address, port, timeout)
    else:
        connection = http.client.HTTPConnection(address, port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request(
            "POST", path, body=body, headers={**headers, "host": parts.netloc, "user-agent": "tahoe-auth-webhooks/1"}
        )
        response = connection.getresponse()
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read(64 * 1024))
    finally:
        connection.close()


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a checked address, with SNI and certificate checks for the real name."""

    def __init__(self, hostname: str, address: str, port: int, timeout: float) -> None:
        super().__init__(address, port, timeout=timeout, context=ssl.create_default_context())
        self._hostname = hostname

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._hostname)  # type: ignore[attr-defined]
