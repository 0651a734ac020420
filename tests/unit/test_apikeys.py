from __future__ import annotations

import math

import pytest

from tahoe_auth.domain import apikeys


@pytest.mark.parametrize("kind", apikeys.KINDS)
def test_generated_secrets_parse_with_their_kind(kind: str) -> None:
    secret = apikeys.generate(kind)
    parsed = apikeys.parse(secret)
    assert parsed is not None and parsed.kind == kind
    assert secret.startswith(f"tahoe_{kind}_")
    assert parsed.prefix == secret[: len(f"tahoe_{kind}_") + 6]


def test_entropy_is_at_least_160_bits() -> None:
    assert apikeys.BODY_LENGTH * math.log2(62) >= 160


def test_every_single_character_typo_is_rejected() -> None:
    secret = apikeys.generate(apikeys.API_KEY)
    start = len("tahoe_sk_")
    for position in range(start, len(secret)):
        replacement = "A" if secret[position] != "A" else "B"
        typo = secret[:position] + replacement + secret[position + 1 :]
        assert apikeys.parse(typo) is None, position


@pytest.mark.parametrize(
    "bad",
    ["", "tahoe_sk_", "tahoe_xx_" + "a" * 38, "tahoe_sk_" + "a" * 37, "tahoe_sk_" + "!" * 38, "Bearer tahoe_sk_x"],
)
def test_malformed_secrets_are_rejected(bad: str) -> None:
    assert apikeys.parse(bad) is None


def test_secrets_are_unique() -> None:
    assert len({apikeys.generate(apikeys.API_KEY) for _ in range(1000)}) == 1000
