"""Standard Webhooks (https://www.standardwebhooks.com): secrets, signatures, retries.

A message is signed as HMAC-SHA256(key, f"{id}.{timestamp}.{body}") with the key
base64-decoded from the `whsec_` secret, sent as `webhook-signature: v1,<base64>`;
during a secret rotation several space-separated signatures are sent, one per
active secret, and receivers accept any of them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import random
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from tahoe_auth.domain.errors import InvalidArgument

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
TOLERANCE_SECONDS = 300


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidArgument("secret", "webhook secrets start with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        raise InvalidArgument("secret", "webhook secret is not base64 after whsec_") from None
    if not 24 <= len(key) <= 64:
        raise InvalidArgument("secret", "webhook secret must carry 24 to 64 bytes")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets_in_use: Iterable[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    signatures = " ".join(sign(s, message_id, timestamp, body) for s in secrets_in_use)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }


def verify(secret: str, received: Mapping[str, str], body: bytes, now: int) -> bool:
    """For receivers (and the replay tool): any valid v1 signature within tolerance."""
    message_id, timestamp = received.get("webhook-id", ""), received.get("webhook-timestamp", "")
    if not message_id or not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    expected = sign(secret, message_id, int(timestamp), body)
    return any(hmac.compare_digest(expected, candidate) for candidate in received.get("webhook-signature", "").split())


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; gives up (dead letter) once `horizon` has passed."""

    first_delay: float = 5.0
    factor: float = 3.0
    max_delay: float = 24 * 3600.0
    jitter: float = 0.2
    horizon: float = 3 * 24 * 3600.0

    def delay(self, failed_attempts: int, rng: random.Random | None = None) -> float:
        base = min(self.max_delay, self.first_delay * self.factor ** max(0, failed_attempts - 1))
        spread = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return base * spread

    def next_attempt_in(
        self, failed_attempts: int, elapsed: float, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds until the next attempt, or None to dead-letter. A receiver's
        Retry-After is honoured when it asks for longer than our own schedule."""
        wait = self.delay(failed_attempts, rng)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        if elapsed + wait > self.horizon:
            return None
        return wait


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class DeliveryFilter:
    endpoint_id: str = ""
    event_id: str = ""
    status: str = ""
