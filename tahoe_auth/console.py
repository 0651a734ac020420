"""The web console's files (tahoe_auth/console_assets), served under /console/ by the
side port; Envoy routes /console/ there on the same listener as the JSON API, so the
console's calls to /auth/v1/ are same-origin.

Every file is read once, at start, into a table: a request names a key of that table
or gets 404, so no path a client writes reaches the file system. Every answer carries
a Content-Security-Policy that allows scripts, styles and connections from this origin
only (no inline script, no eval), and forbids framing.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "console_assets"
PREFIX = "/console/"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".md": "text/markdown; charset=utf-8",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Console:
    def __init__(self, root: Path = ASSETS) -> None:
        self._assets: dict[str, Asset] = {}
        for path in sorted(root.rglob("*")):
            if path.is_file():
                body = path.read_bytes()
                content_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "text/plain"
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                self._assets[path.relative_to(root).as_posix()] = Asset(body, content_type, etag)

    def answer(self, path: str, if_none_match: str | None = None, head: bool = False) -> Answer:
        """`path` starts with /console (the query string already removed)."""
        if path == PREFIX.rstrip("/"):
            return Answer(308, {"location": PREFIX, **SECURITY_HEADERS}, b"")
        name = path[len(PREFIX) :] or "index.html"
        asset = self._assets.get(name)
        if asset is None:
            body = b"no such console file\n"
            return Answer(404, {"content-type": "text/plain; charset=utf-8", **SECURITY_HEADERS}, body)
        # Revalidated on every load (the files change with a release, not their names);
        # an unchanged file costs a 304.
        headers = {"content-type": asset.content_type, "cache-control": "no-cache", "etag": asset.etag}
        headers.update(SECURITY_HEADERS)
        if if_none_match is not None and asset.etag in {tag.strip() for tag in if_none_match.split(",")}:
            return Answer(304, headers, b"")
        return Answer(200, headers, b"" if head else asset.body)
