"""Page tokens for list methods: keyset pagination by (created_at, id)."""

from __future__ import annotations

from typing import Any

from tahoe_auth.services.sessions import decode_page_token, encode_page_token, page_size_or_default

__all__ = ["decode_page_token", "next_token", "page_size_or_default"]


def next_token(rows: list[Any], limit: int) -> str:
    """The token after `rows[limit - 1]` when one row more than a page was fetched."""
    if len(rows) <= limit:
        return ""
    last = rows[limit - 1]
    return encode_page_token(last.created_at, last.id)
