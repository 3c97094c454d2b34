"""Vault tokens: shaped as documented, never repeated, every symbol possible everywhere."""

from __future__ import annotations

import pytest

from domain.vaulted import TOKEN_PREFIX, is_token, new_token

pytestmark = pytest.mark.unit

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def test_new_tokens_are_well_formed_and_distinct() -> None:
    tokens = [new_token() for _ in range(5000)]
    assert all(is_token(token) for token in tokens)
    assert len(set(tokens)) == len(tokens)


def test_every_symbol_occurs_at_every_position() -> None:
    # 5000 uniform draws miss a given symbol at a given position with probability
    # (35/36)^5000, about 1e-61: a symbol missing means a biased or truncated draw (a
    # base-36 encoding of too small a number leaves the leading positions at "0").
    tokens = [new_token()[len(TOKEN_PREFIX) :] for _ in range(5000)]
    for position in range(24):
        assert {token[position] for token in tokens} == set(_ALPHABET), position
