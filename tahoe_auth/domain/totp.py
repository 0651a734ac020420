"""Time-based one-time passwords (RFC 6238 over RFC 4226): what authenticator apps show.

SHA-1, six digits, 30-second steps: the parameters every authenticator app supports
(others are ignored by several of them). A code is accepted for the current step and
one step either side (clock drift); the caller keeps the last accepted step per factor
and refuses any step not after it, so that each code works once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct

DIGITS = 6
PERIOD = 30
DRIFT_STEPS = 1
SECRET_BYTES = 20  # 160 bits, RFC 4226's recommendation for SHA-1


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def to_base32(secret: bytes) -> str:
    """The form apps accept for manual entry: base32 without padding."""
    return base64.b32encode(secret).decode().rstrip("=")


def step_at(unix_time: float) -> int:
    return int(unix_time // PERIOD)


def code_at_step(secret: bytes, step: int) -> str:
    digest = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**DIGITS).zfill(DIGITS)


def normalize_code(code: str) -> str:
    """What people type: spaces and dashes between the digits are fine."""
    return code.replace(" ", "").replace("-", "").strip()


def matching_step(secret: bytes, code: str, unix_time: float, after_step: int) -> int | None:
    """The step within drift whose code `code` is and that comes after `after_step`
    (the last one accepted), or None. Every candidate is compared in constant time."""
    code = normalize_code(code)
    if len(code) != DIGITS or not code.isdigit():
        return None
    now = step_at(unix_time)
    found = None
    for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
        if hmac.compare_digest(code_at_step(secret, step), code) and step > after_step and found is None:
            found = step
    return found
