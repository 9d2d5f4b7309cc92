"""Telling a card number from a provider token, so card data is refused at the gateway."""

from __future__ import annotations

import pytest

from shared.contracts.common import looks_like_card_number

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111111",  # Visa test number, 16 digits
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "6250941006528599",  # UnionPay test number
        "378282246310005",  # Amex, 15 digits
        "30569309025904",  # Diners, 14 digits
        "501800000009",  # 12 digits, the shortest PAN
        "6011000990139424009",  # 19 digits, the longest PAN (Luhn-valid)
    ],
)
def test_luhn_valid_card_numbers_of_12_to_19_digits_are_recognised(text: str) -> None:
    assert looks_like_card_number(text)


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # one digit off: fails Luhn
        "41111111112",  # 11 digits: too short even though Luhn-valid
        "00000000000000000000",  # 20 digits: too long even though Luhn-valid
        "tok_approve",
        "tok_4111111111111111",  # a provider token that merely contains digits
        "4111.1111.1111.1111",  # dots are not a card number's separators
        "４１１１１１１１１１１１１１１１",  # full-width digits are not ASCII digits
        "",
        " - ",
    ],
)
def test_anything_else_is_not_a_card_number(text: str) -> None:
    assert not looks_like_card_number(text)
