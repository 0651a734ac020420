"""Secret formats: `tahoe_<kind>_<32 base62 chars><6 base62 chars of CRC32>`.

The fixed prefix lets secret scanners recognise leaked keys; the checksum rejects a
typo or a truncated key without touching any store. 32 base62 characters carry about
190 random bits. Secrets are stored as HMAC-SHA256 under a server key, never in clear.
"""

from __future__ import annotations

import re
import secrets
import zlib
from dataclasses import dataclass

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY_LENGTH = 32
CHECKSUM_LENGTH = 6
PREFIX_BODY_CHARS = 6

API_KEY = "sk"
PLATFORM_KEY = "pa"
SERVICE_SECRET = "sa"
KINDS = (API_KEY, PLATFORM_KEY, SERVICE_SECRET)
# API keys and platform keys are stored as HMAC-SHA256 under a key derived from the
# master key for this purpose (crypto.derive_key).
HMAC_PURPOSE = "api-key-hmac"

_FORMAT = re.compile(rf"^tahoe_({'|'.join(KINDS)})_([0-9A-Za-z]{{{BODY_LENGTH + CHECKSUM_LENGTH}}})\Z")


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def _checksum(head: str) -> str:
    return _base62(zlib.crc32(head.encode()), CHECKSUM_LENGTH)


def generate(kind: str) -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    head = f"tahoe_{kind}_{body}"
    return head + _checksum(head)


@dataclass(frozen=True)
class ParsedSecret:
    kind: str
    secret: str

    @property
    def prefix(self) -> str:
        """Safe to show and log: identifies the key without revealing it."""
        return self.secret[: len("tahoe__") + len(self.kind) + PREFIX_BODY_CHARS]


def parse(secret: str) -> ParsedSecret | None:
    """The secret's kind if it is well formed and its checksum matches, else None."""
    match = _FORMAT.match(secret)
    if match is None:
        return None
    head, checksum = secret[:-CHECKSUM_LENGTH], secret[-CHECKSUM_LENGTH:]
    if not secrets.compare_digest(_checksum(head), checksum):
        return None
    return ParsedSecret(kind=match.group(1), secret=secret)


def looks_like_secret(credential: str) -> bool:
    return credential.startswith("tahoe_")
