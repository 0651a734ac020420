"""The console's files as the side port serves them: only files that exist, with a
strict Content-Security-Policy; revalidation by ETag; and the vendored libraries
unchanged from the digests in their README."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tahoe_auth.console import ASSETS, CONTENT_SECURITY_POLICY, Console

VENDOR = ASSETS / "vendor"


def test_index_is_served_at_the_prefix_with_the_security_headers() -> None:
    answer = Console().answer("/console/")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/html")
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert answer.headers["x-frame-options"] == "DENY" and answer.headers["referrer-policy"] == "no-referrer"
    assert b'<script type="module" src="js/main.js">' in answer.body


def test_the_policy_allows_no_inline_script_eval_or_framing() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["connect-src"] == "'self'"


def test_the_bare_prefix_redirects_and_unknown_or_escaping_paths_are_404() -> None:
    console = Console()
    redirect = console.answer("/console")
    assert redirect.status == 308 and redirect.headers["location"] == "/console/"
    for path in ("/console/nope.js", "/console/../http_side.py", "/console/js/../../console.py", "/console/%2e%2e/x"):
        answer = console.answer(path)
        assert answer.status == 404 and answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path


def test_modules_are_javascript_and_an_unchanged_file_is_304() -> None:
    console = Console()
    first = console.answer("/console/js/main.js")
    assert first.status == 200 and first.headers["content-type"] == "text/javascript; charset=utf-8"
    assert first.headers["cache-control"] == "no-cache"
    again = console.answer("/console/js/main.js", if_none_match=first.headers["etag"])
    assert again.status == 304 and again.body == b""
    assert console.answer("/console/js/main.js", if_none_match='"other"').status == 200


def test_head_answers_the_headers_without_the_body() -> None:
    answer = Console().answer("/console/console.css", head=True)
    assert answer.status == 200 and answer.body == b""


def test_every_file_the_scripts_import_exists() -> None:
    served = {p.relative_to(ASSETS).as_posix() for p in ASSETS.rglob("*") if p.is_file()}
    for module in (ASSETS / "js").rglob("*.js"):
        for target in re.findall(r'^import .*? from "(\.[^"]+)";', module.read_text(), flags=re.M | re.S):
            resolved = (module.parent / target).resolve().relative_to(ASSETS.resolve()).as_posix()
            assert resolved in served, f"{module.name} imports missing {target}"


def test_no_script_reads_or_writes_web_storage() -> None:
    for module in (ASSETS / "js").rglob("*.js"):
        code = re.sub(r"^\s*//.*$", "", module.read_text(), flags=re.M)  # comments may say why not
        assert not re.search(r"(localStorage|sessionStorage|indexedDB)\b", code), module.name


def test_vendored_files_match_their_recorded_digests() -> None:
    table = (VENDOR / "README.md").read_text()
    rows = re.findall(r"^\| (\S+) \|.*\| ([0-9a-f]{64}) \|$", table, flags=re.M)
    assert {name for name, _ in rows} == {"preact-htm.js", "uplot.js", "uplot.css", "uqr.js"}
    for name, digest in rows:
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, f"{name} changed"
    for licence in ("LICENSE.htm", "LICENSE.preact", "LICENSE.uplot", "LICENSE.uqr"):
        assert Path(VENDOR / licence).read_text().strip()
