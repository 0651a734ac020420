"""The client's address: the gRPC peer's, or, when that peer is a trusted proxy (the
Envoy in front of the JSON API), the address the proxy says it saw.

Behind Envoy's transcoder every call comes from Envoy's own address, so limits and
sessions by address would put every browser in one bucket. Envoy writes the downstream
address into `x-tahoe-client-address` (after removing any copy a client sent), and the
server believes that header only from the peers of TAHOE_TRUSTED_PROXIES: from anyone
else a client could name any address it likes. A value that is not an IP address is
ignored (the peer's address stands), never passed on into keys and logs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

CLIENT_ADDRESS_HEADER = "x-tahoe-client-address"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def peer_address(peer: str) -> str:
    """`ipv4:1.2.3.4:5678` or `ipv6:[::1]:5678` -> the address without the port."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return rest


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    # An IPv4-mapped IPv6 peer (`::ffff:127.0.0.1`, a dual-stack listener) is that IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    def __init__(self, networks: Iterable[str] = ()) -> None:
        self._networks: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def trusts(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip.version == n.version and ip in n for n in self._networks)

    def client_address(self, peer: str, metadata: Mapping[str, str]) -> str:
        address = peer_address(peer)
        if not self._networks or not self.trusts(address):
            return address
        forwarded = _ip(metadata.get(CLIENT_ADDRESS_HEADER, ""))
        return str(forwarded) if forwarded is not None else address
