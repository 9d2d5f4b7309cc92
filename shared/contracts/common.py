"""Value types that several contracts share."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

CURRENCY = "CNY"
# Primary account numbers (ISO/IEC 7812) run from 12 to 19 digits.
_PAN_LENGTHS = range(12, 20)

Fen = Annotated[int, Field(ge=0, description="Money in integer minor units (fen).")]


class PaymentMethod(StrEnum):
    BANK_CARD = "bank_card"
    WECHAT_PAY = "wechat_pay"
    ALIPAY = "alipay"


class ProductKind(StrEnum):
    """What a unit of a product is: goods to ship, a code delivered at once, or a booked time slot."""

    PHYSICAL = "physical"
    # Gift cards, licence keys, top-up codes: assigned to the order when it is paid.
    VIRTUAL = "virtual"
    # A lesson, a repair visit: each order line books one of the product's time slots.
    SERVICE = "service"


class OrderLine(BaseModel):
    """One priced line of an order, as the order service fixed it when the order was placed."""

    model_config = ConfigDict(frozen=True)

    sku: str
    name: str
    merchant_id: str
    kind: ProductKind = ProductKind.PHYSICAL
    quantity: int = Field(gt=0)
    unit_price_fen: Fen
    slot_id: str | None = Field(
        default=None, description="The booked time slot of a `service` product; None for other kinds."
    )

    @property
    def line_total_fen(self) -> int:
        return self.quantity * self.unit_price_fen


class StockLine(BaseModel):
    """A quantity of one SKU (of one slot, for a service): what inventory reserved, released or
    committed."""

    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int = Field(gt=0)
    slot_id: str | None = Field(default=None, description="The time slot, for a `service` product.")


class CouponApplied(BaseModel):
    """A merchant's coupon on an order, as the order service priced it: `discount_fen` comes off the
    merchant's lines, and one of the coupon's uses is held with the order's stock."""

    model_config = ConfigDict(frozen=True)

    code: str
    merchant_id: str
    discount_fen: Fen


class ShippingAddress(BaseModel):
    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    phone: str = Field(min_length=5, max_length=32, pattern=r"^\+?[0-9 \-]+$")
    province: str = Field(min_length=1, max_length=64)
    city: str = Field(min_length=1, max_length=64)
    district: str = Field(min_length=1, max_length=64)
    line1: str = Field(min_length=1, max_length=200)
    postal_code: str = Field(min_length=3, max_length=16, pattern=r"^[0-9A-Za-z \-]+$")


def looks_like_card_number(text: str) -> bool:
    """True when `text` is a card number: 12 to 19 digits once spaces and dashes are removed, and
    Luhn-valid. A client that sends this where a provider token belongs is sending card data."""
    digits = text.replace(" ", "").replace("-", "")
    if not digits.isascii() or not digits.isdigit() or len(digits) not in _PAN_LENGTHS:
        return False
    # Luhn: from the right, every second digit is doubled (less 9 past 9); the sum ends in 0.
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0
