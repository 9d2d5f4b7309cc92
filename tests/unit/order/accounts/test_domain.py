"""The account rules: logins, passwords and complete mainland China addresses."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from services.order.accounts.domain import (
    PASSWORD_MAX_CHARS,
    PASSWORD_MIN_CHARS,
    CompleteAddress,
    Login,
    LoginKind,
    check_password,
    email_address,
    mainland_mobile,
    new_address_id,
    new_customer_id,
    parse_login,
)
from shared.contracts import ShippingAddress
from tests.unit.samples import ADDRESS

pytestmark = pytest.mark.unit

ADDRESS_FIELDS = {
    "name": "李雷",
    "phone": "+86 138 0013 8000",
    "province": "浙江省",
    "city": "杭州市",
    "district": "西湖区",
    "line1": "龙井路 1 号",
    "postal_code": "310000",
}


@pytest.mark.parametrize(
    "typed",
    [
        "13800138000",
        "138 0013 8000",
        "138-0013-8000",
        "+8613800138000",
        "+86 138 0013 8000",
        "(+86) 138-0013-8000",
        "008613800138000",
        "8613800138000",
        " 13800138000 ",
    ],
)
def test_a_mobile_number_in_any_usual_spelling_is_normalised_to_eleven_digits(typed: str) -> None:
    assert mainland_mobile(typed) == "13800138000"


@pytest.mark.parametrize("prefix", ["13", "14", "15", "16", "17", "18", "19"])
def test_every_mobile_prefix_from_13_to_19_is_accepted(prefix: str) -> None:
    assert mainland_mobile(f"{prefix}012345678") == f"{prefix}012345678"


@pytest.mark.parametrize(
    "typed",
    [
        "12800138000",  # no mobile network starts with 12
        "10800138000",
        "1380013800",  # ten digits
        "138001380001",  # twelve
        "+852 9123 4567",  # Hong Kong
        "+1 415 555 0100",
        "010-62345678",  # a Beijing landline
        "1380013800O",  # a letter O
        "",
    ],
)
def test_anything_else_is_not_a_mainland_mobile_number(typed: str) -> None:
    with pytest.raises(ValueError, match="not a mainland China mobile number"):
        mainland_mobile(typed)


def test_an_email_address_is_lower_cased_and_trimmed() -> None:
    assert email_address("  Li.Lei+Shop@Example.COM ") == "li.lei+shop@example.com"


def test_an_internationalised_domain_is_kept_in_its_ascii_form() -> None:
    assert email_address("li@例子.中国") == "li@xn--fsqu00a.xn--fiqs8s"


@pytest.mark.parametrize(
    "typed",
    ["li.lei", "li.lei@", "@example.com", "li lei@example.com", "li@localhost", "a@b@example.com"],
)
def test_a_malformed_email_address_is_refused(typed: str) -> None:
    with pytest.raises(ValueError, match="not an e-mail address"):
        email_address(typed)


def test_an_email_address_over_254_characters_is_refused() -> None:
    local, labels = "a" * 64, ["b" * 63, "c" * 63, "d" * 63, "com"]
    assert email_address(f"{local}@{'.'.join(labels[1:])}")  # 196 characters, every part in bounds

    with pytest.raises(ValueError, match="not an e-mail address"):
        email_address(f"{local}@{'.'.join(labels)}")  # 260


def test_a_login_with_an_at_sign_is_an_email_and_any_other_a_phone() -> None:
    assert parse_login("Li.Lei@Example.com") == Login(LoginKind.EMAIL, "li.lei@example.com")
    assert parse_login("+86 139 0013 9000") == Login(LoginKind.PHONE, "13900139000")


def test_a_login_that_is_neither_says_both_what_it_could_have_been() -> None:
    with pytest.raises(ValueError, match="neither an e-mail address nor a mainland China mobile number"):
        parse_login("li.lei")


def test_the_same_person_spelling_their_login_differently_gets_the_same_login() -> None:
    assert parse_login("138-0013-8000") == parse_login("+8613800138000")
    assert parse_login("LI.LEI@example.com") == parse_login("li.lei@EXAMPLE.com")


@pytest.mark.parametrize("length", [PASSWORD_MIN_CHARS, PASSWORD_MAX_CHARS])
def test_passwords_at_the_bounds_are_accepted(length: int) -> None:
    assert check_password("p" * length) == "p" * length


@pytest.mark.parametrize("length", [0, PASSWORD_MIN_CHARS - 1, PASSWORD_MAX_CHARS + 1])
def test_passwords_outside_the_bounds_are_refused(length: int) -> None:
    with pytest.raises(ValueError, match="10 to 128 characters"):
        check_password("p" * length)


def test_a_password_is_kept_exactly_as_typed() -> None:
    assert check_password("  口令 with spaces  ") == "  口令 with spaces  "


def test_a_complete_address_normalises_its_phone_and_is_a_shipping_address() -> None:
    address = CompleteAddress.model_validate(ADDRESS_FIELDS)

    assert address.phone == "13800138000"
    assert isinstance(address, ShippingAddress)


def test_the_shared_sample_address_is_complete() -> None:
    assert CompleteAddress.model_validate(ADDRESS.model_dump()).phone == "13800000000"


def test_an_incomplete_address_names_every_wrong_field_at_once() -> None:
    fields = {**ADDRESS_FIELDS, "phone": "12345", "district": "  ", "postal_code": "31000"}

    with pytest.raises(ValidationError) as raised:
        CompleteAddress.model_validate(fields)

    problems = {error["loc"][0]: error["msg"] for error in raised.value.errors()}
    assert set(problems) == {"phone", "district", "postal_code"}
    assert problems["phone"].startswith("not a mainland China mobile number")
    assert problems["postal_code"] == "not a mainland China postal code: 6 digits"


@pytest.mark.parametrize("postal_code", ["3100000", "31000A", "SW1A 1AA", "31-0000"])
def test_a_postal_code_is_six_digits(postal_code: str) -> None:
    with pytest.raises(ValidationError, match="6 digits"):
        CompleteAddress.model_validate({**ADDRESS_FIELDS, "postal_code": postal_code})


def test_new_ids_are_prefixed_random_hex() -> None:
    assert re.fullmatch(r"cust-[0-9a-f]{32}", new_customer_id())
    assert re.fullmatch(r"addr-[0-9a-f]{32}", new_address_id())
    assert new_customer_id() != new_customer_id()
