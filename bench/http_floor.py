"""A do-nothing HTTP ext_authz server: the Python floor of Envoy's ``http_service``.

    .venv/bin/python bench/http_floor.py --port 19400

The same loop and parser as tahoe_auth/api/ext_authz_http.py (uvloop + httptools, one
asyncio loop, keep-alive, TCP_NODELAY), answering every request 200 with one upstream
header and nothing else: what any Python HTTP ext_authz costs before it decides.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import cast

import httptools
import uvloop

ALLOW = b"HTTP/1.1 200 OK\r\nx-tahoe-subject: bench-user\r\ncontent-length: 0\r\n\r\n"


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except Exception:
            if self._transport is not None:
                self._transport.close()

    # httptools callbacks: headers are read (as a real server would) and ignored
    def on_header(self, name: bytes, value: bytes) -> None:
        pass

    def on_message_complete(self) -> None:
        if self._transport is not None:
            self._transport.write(ALLOW)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(loop.create_server(_Connection, "127.0.0.1", args.port, backlog=1024))
    loop.run_forever()


if __name__ == "__main__":
    main()
