"""Account rules: what a login, a password and a complete mainland China address are.

Plain rules and pydantic models only (no I/O), so the order API can validate a shipping address with
the same `CompleteAddress` the address book uses.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, JsonValue
from pydantic_core import PydanticCustomError

from shared.contracts import ShippingAddress

PASSWORD_MIN_CHARS = 10
PASSWORD_MAX_CHARS = 128
MAX_ADDRESSES = 20
LABEL_MAX_CHARS = 32
EMAIL_MAX_CHARS = 254  # RFC 5321's limit on a forward path

# 11 digits from 13x to 19x; the separators people type (spaces, hyphens) and the country code in
# its usual spellings (+86, 0086, 86) are dropped before the check.
_MOBILE = re.compile(r"(?:\+86|0086|86)?(1[3-9][0-9]{9})")
_SEPARATORS = re.compile(r"[\s\-()]")
_POSTAL_CODE = re.compile(r"[0-9]{6}")
_EMAIL_LOCAL = re.compile(r"[^@\s]{1,64}")
_EMAIL_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9\-]{0,61}[a-z0-9]")

MOBILE_RULE = "a mainland China mobile number: 11 digits starting with 13 to 19, optionally after +86"
POSTAL_CODE_RULE = "a mainland China postal code: 6 digits"
PASSWORD_RULE = f"a password has {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters"


class LoginKind(StrEnum):
    PHONE = "phone"
    EMAIL = "email"


@dataclass(frozen=True)
class Login:
    """A normalised login: the same person's phone or e-mail always gives the same `value`."""

    kind: LoginKind
    value: str


class LoginTaken(ValueError):
    """An account with this login exists already."""


class AddressBookFull(ValueError):
    """The customer has MAX_ADDRESSES saved addresses already."""


def mainland_mobile(text: str) -> str:
    """`text` as the 11-digit mainland China mobile number it spells; ValueError if it is not one."""
    match = _MOBILE.fullmatch(_SEPARATORS.sub("", text))
    if match is None:
        raise ValueError(f"not {MOBILE_RULE}")
    return match.group(1)


def email_address(text: str) -> str:
    """`text` as a lower-case e-mail address (an internationalised domain in its ASCII form)."""
    candidate = text.strip().lower()
    local, at, domain = candidate.rpartition("@")
    if not at:
        raise ValueError("not an e-mail address: it has no @")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("not an e-mail address: the domain is not a valid host name") from None
    normalised = f"{local}@{domain}"
    if (
        len(normalised) > EMAIL_MAX_CHARS
        or _EMAIL_LOCAL.fullmatch(local) is None
        or _EMAIL_DOMAIN.fullmatch(domain) is None
    ):
        raise ValueError("not an e-mail address like name@example.com")
    return normalised


def parse_login(text: str) -> Login:
    """A login is an e-mail address (it has an @) or a mainland China mobile number."""
    if "@" in text:
        return Login(LoginKind.EMAIL, email_address(text))
    try:
        return Login(LoginKind.PHONE, mainland_mobile(text))
    except ValueError:
        raise ValueError(f"neither an e-mail address nor {MOBILE_RULE}") from None


def check_password(text: str) -> str:
    """The password unchanged if its length is allowed (it is never trimmed or normalised)."""
    if not PASSWORD_MIN_CHARS <= len(text) <= PASSWORD_MAX_CHARS:
        raise ValueError(PASSWORD_RULE)
    return text


def new_customer_id() -> str:
    return f"cust-{uuid.uuid4().hex}"


def new_address_id() -> str:
    return f"addr-{uuid.uuid4().hex}"


# --- pydantic types: the same rules where requests are validated --------------------------------


def _mobile_field(text: str) -> str:
    try:
        return mainland_mobile(text)
    except ValueError as error:
        # A custom error keeps the message free of pydantic's "Value error, " prefix in the 422.
        raise PydanticCustomError("mainland_mobile", str(error)) from None


def _postal_code_field(text: str) -> str:
    if _POSTAL_CODE.fullmatch(text) is None:
        raise PydanticCustomError("postal_code", f"not {POSTAL_CODE_RULE}")
    return text


MainlandMobile = Annotated[
    str,
    Field(max_length=32, description=f"{MOBILE_RULE[0].upper()}{MOBILE_RULE[1:]}; stored as 11 digits."),
    AfterValidator(_mobile_field),
]
PostalCode = Annotated[
    str, Field(max_length=16, description="Six digits, e.g. 310000."), AfterValidator(_postal_code_field)
]


# The address the OpenAPI documents show wherever one is asked for or answered.
ADDRESS_EXAMPLE: dict[str, JsonValue] = {
    "name": "李雷",
    "phone": "13800138000",
    "province": "浙江省",
    "city": "杭州市",
    "district": "西湖区",
    "line1": "文三路 18 号",
    "postal_code": "310000",
}


class CompleteAddress(ShippingAddress):
    """A shipping address a courier in mainland China can deliver to: every part present, a mobile
    number to call on arrival (normalised to 11 digits) and a 6-digit postal code."""

    model_config = ConfigDict(json_schema_extra={"examples": [ADDRESS_EXAMPLE]})

    phone: MainlandMobile
    postal_code: PostalCode


# --- the account's records ----------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    customer_id: str
    login: Login
    password_hash: str  # argon2's encoded hash: algorithm, parameters, salt and digest
    created_at: datetime


@dataclass(frozen=True)
class SavedAddress:
    address_id: str
    customer_id: str
    address: CompleteAddress
    label: str | None
    created_at: datetime
