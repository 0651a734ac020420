"""SSRF refusals and a real delivery to a local receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tahoe_auth.webhooks.sender import DeliveryRefused, EgressPolicy, post

PUBLIC_ONLY = EgressPolicy(allow_http=True)


def fixed(*addresses: str):  # type: ignore[no-untyped-def]
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "fc00::1",
        "224.0.0.1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    with pytest.raises(DeliveryRefused):
        post("https://hooks.example.com/x", b"{}", {}, EgressPolicy(), resolver=fixed(address))


def test_literal_ip_urls_are_checked_too() -> None:
    with pytest.raises(DeliveryRefused):
        post("https://169.254.169.254/latest/meta-data", b"{}", {}, EgressPolicy())


def test_one_bad_address_among_good_ones_is_refused() -> None:
    with pytest.raises(DeliveryRefused):
        post("https://hooks.example.com/", b"{}", {}, EgressPolicy(), resolver=fixed("93.184.216.34", "10.0.0.1"))


@pytest.mark.parametrize("url", ["ftp://x.example/", "file:///etc/passwd", "https://user:pw@x.example/", "/relative"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(DeliveryRefused):
        post(url, b"{}", {}, EgressPolicy(allow_http=True), resolver=fixed("93.184.216.34"))


def test_plain_http_needs_permission() -> None:
    with pytest.raises(DeliveryRefused, match="https"):
        post("http://hooks.example.com/", b"{}", {}, EgressPolicy(), resolver=fixed("93.184.216.34"))


class Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_delivery_to_an_explicitly_allowed_network(receiver: int) -> None:
    url = f"http://localhost:{receiver}/hooks?x=1"
    with pytest.raises(DeliveryRefused):
        post(url, b'{"a":1}', {"webhook-id": "m1"}, PUBLIC_ONLY)
    allowed = EgressPolicy.parse(["127.0.0.0/8", "::1/128"], allow_http=True)
    response = post(url, b'{"a":1}', {"webhook-id": "m1"}, allowed)
    assert response.status == 204
    headers, body = Receiver.received[-1]
    assert body == b'{"a":1}' and headers["webhook-id"] == "m1" and headers["host"] == f"localhost:{receiver}"


def test_unreachable_receiver_is_a_retryable_error() -> None:
    allowed = EgressPolicy.parse(["127.0.0.0/8"], allow_http=True)
    with pytest.raises(OSError):
        post("http://127.0.0.1:9/", b"{}", {}, allowed, timeout=1)
