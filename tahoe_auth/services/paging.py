"""Page tokens for list methods: keyset pagination by (created_at, id)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from tahoe_auth.domain.errors import InvalidArgument

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_TOKEN_LENGTH = 512


def next_token(rows: list[Any], limit: int) -> str:
    """The token after `rows[limit - 1]` when one row more than a page was fetched."""
    if len(rows) <= limit:
        return ""
    last = rows[limit - 1]
    return encode_page_token(last.created_at, last.id)


def page_size_or_default(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument("page_size", "page_size must not be negative")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(created_at: dt.datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[dt.datetime, str] | None:
    if not token:
        return None
    try:
        created, row_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return dt.datetime.fromisoformat(created), str(row_id)
    except (ValueError, TypeError):
        raise InvalidArgument("page_token", "page_token is malformed") from None
