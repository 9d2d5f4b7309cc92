"""The catalog API: merchants, products (price and sellable stock) and merchants' coupons.

Product reads are public; writes need the token of the merchant concerned or an admin's. A merchant
and its vetting are seen by that merchant and admins only; only an admin decides on it. A coupon and
its uses are seen and written by its merchant and admins only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from fractions import Fraction
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, field_validator

from services.inventory.domain import (
    COUPON_CODE_PATTERN,
    DEFAULT_RECOMMENDATIONS,
    MAX_ATTRIBUTES,
    MAX_COUPON_USES,
    MAX_DESCRIPTION,
    MAX_PRICE_FEN,
    MAX_PRICE_TIERS,
    MAX_RECOMMENDATIONS,
    MAX_SLOT_CAPACITY,
    MAX_STOCK,
    MAX_WEBHOOK_URL,
    Coupon,
    CouponTerms,
    CouponUsesConflict,
    DuplicateCodes,
    InvalidCatalogFields,
    InvalidCodes,
    InvalidCoupon,
    InvalidPriceTiers,
    InvalidSlot,
    InvalidWebhookUrl,
    Merchant,
    MerchantAction,
    MerchantStatusConflict,
    NotAService,
    NotVirtual,
    Product,
    ProductDetails,
    QualityCounts,
    QualityRules,
    ReasonRequired,
    RecommendationSource,
    Slot,
    SlotConflict,
    SlotPlan,
    StatusChange,
    StockOutOfRange,
    upcoming,
)
from services.inventory.handlers import (
    CouponTaken,
    Inventory,
    KindChangeRefused,
    MerchantConflict,
    MerchantEdit,
    NotPermitted,
    PaymentMethodsNotAccepted,
    ProductInStock,
    ProductMoveRefused,
    PutCoupon,
    PutProduct,
    QualityView,
    Recommended,
    Registration,
    RegistrationIncomplete,
    StockIsInSlots,
    UnknownMerchant,
    UnknownProduct,
    UnknownSlot,
    add_codes,
    add_stock,
    also_bought,
    coupon_for,
    coupons_of,
    decide_merchant,
    merchant_quality,
    merchants_quality,
    put_slot,
    recommendations_for,
    register_merchant,
    remove_slot,
    subscribe_back_in_stock,
    unsubscribe_back_in_stock,
    upsert_coupon,
    upsert_merchant,
    upsert_product,
)
from shared.auth import AdminCaller, Caller, Principal
from shared.contracts import (
    MAX_UNITS_PER_ORDER,
    CouponDiscount,
    MerchantStatus,
    PaymentMethod,
    PriceTier,
    ProductKind,
)
from shared.http import Problem, problem_responses

ID_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
# Strict: a JSON `true` or `"12"` is a mistake, not 1 or 12.
PriceFen = Annotated[
    int, Field(strict=True, ge=0, le=MAX_PRICE_FEN, description="Unit price in fen (CNY 0.01).")
]
StockUnits = Annotated[int, Field(strict=True, ge=0, le=MAX_STOCK)]
MaxPerOrder = Annotated[
    int,
    Field(
        strict=True,
        ge=1,
        le=MAX_UNITS_PER_ORDER,
        description="The most units of this product one order may hold.",
    ),
]
CorrelationId = Annotated[str | None, Header(max_length=128)]

WECHAT_AND_ALIPAY: list[JsonValue] = [PaymentMethod.WECHAT_PAY.value, PaymentMethod.ALIPAY.value]
EVERY_METHOD: list[JsonValue] = [method.value for method in PaymentMethod]


def _each_once(methods: list[PaymentMethod]) -> list[PaymentMethod]:
    repeated = sorted({method.value for method in methods if methods.count(method) > 1})
    if repeated:
        raise ValueError(f"each payment method may be listed once; repeated: {', '.join(repeated)}")
    return methods


PaymentMethods = Annotated[
    list[PaymentMethod],
    Field(
        min_length=1,
        description="The payment methods the merchant accepts: at least one, each once.",
    ),
    AfterValidator(_each_once),
]


# A phone number (digits, optionally with a leading + and spaces or dashes) or an e-mail address.
_PHONE = re.compile(r"\+?[0-9][0-9 \-]{5,23}[0-9]")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}\.[A-Za-z]{2,63}")


def _phone_or_email(contact: str) -> str:
    # The message never repeats the value: it is personal data.
    if _PHONE.fullmatch(contact) is None and _EMAIL.fullmatch(contact) is None:
        raise ValueError("contact must be a phone number or an e-mail address")
    return contact


Contact = Annotated[
    str,
    Field(min_length=1, max_length=254, description="A phone number or an e-mail address (personal data)."),
    AfterValidator(_phone_or_email),
]
LicenceNumber = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9\-]+$",
        description="The business licence number (unified social credit code).",
    ),
]
WebhookUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_WEBHOOK_URL,
        description="Where the merchant's notifications are sent: https (plain http outside prod only).",
    ),
]
Reason = Annotated[str, Field(max_length=500, description="Why, in words the merchant is shown.")]

_MERCHANT_EXAMPLE: dict[str, JsonValue] = {
    "merchant_id": "m-westlake-tea",
    "name": "West Lake Tea House",
    "payment_methods": WECHAT_AND_ALIPAY,
    "licence_number": "91330106MA2B3C4D5E",
    "contact": "tea@westlake.example",
    "webhook_url": "https://westlake.example/hooks/orders",
}


class MerchantIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, json_schema_extra={"examples": [_MERCHANT_EXAMPLE]}
    )

    merchant_id: Identifier
    name: Name
    payment_methods: PaymentMethods = Field(default_factory=lambda: list(PaymentMethod))
    licence_number: LicenceNumber | None = Field(
        default=None, description="Required when a merchant registers itself."
    )
    contact: Contact | None = Field(default=None, description="Required when a merchant registers itself.")
    webhook_url: WebhookUrl | None = None

    def registration(self) -> Registration:
        return Registration(
            merchant_id=self.merchant_id,
            name=self.name,
            payment_methods=frozenset(self.payment_methods),
            licence_number=self.licence_number,
            contact=self.contact,
            webhook_url=self.webhook_url,
        )


class MerchantChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [{"name": "West Lake Tea House", "payment_methods": WECHAT_AND_ALIPAY}]
        },
    )

    name: Name
    payment_methods: PaymentMethods = Field(default_factory=lambda: list(PaymentMethod))
    webhook_url: WebhookUrl | None = Field(
        default=None, description="Left out, the merchant keeps its webhook URL; null removes it."
    )

    def edit(self, merchant_id: str) -> MerchantEdit:
        return MerchantEdit(
            merchant_id=merchant_id,
            name=self.name,
            payment_methods=frozenset(self.payment_methods),
            webhook_url=self.webhook_url,
            replaces_webhook="webhook_url" in self.model_fields_set,
        )


class Decision(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"reason": "licence checked"}]},
    )

    reason: Reason = ""


class ReasonedDecision(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"reason": "three complaints of counterfeit goods this week"}]},
    )

    reason: Annotated[Reason, Field(min_length=1)]


class StatusChangeOut(BaseModel):
    action: MerchantAction
    status: MerchantStatus
    at: datetime
    by: str = Field(description="Who decided: the subject of the caller's token.")
    reason: str

    @classmethod
    def of(cls, entry: StatusChange) -> StatusChangeOut:
        return cls(action=entry.action, status=entry.status, at=entry.at, by=entry.by, reason=entry.reason)


class MerchantOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_MERCHANT_EXAMPLE,
                    "status": "SUSPENDED",
                    "reason": "three complaints of counterfeit goods this week",
                    "history": [
                        {
                            "action": "register",
                            "status": "PENDING",
                            "at": "2026-11-20T08:00:00Z",
                            "by": "m-westlake-tea",
                            "reason": "",
                        },
                        {
                            "action": "approve",
                            "status": "APPROVED",
                            "at": "2026-11-20T09:30:00Z",
                            "by": "admin-1",
                            "reason": "licence checked",
                        },
                        {
                            "action": "suspend",
                            "status": "SUSPENDED",
                            "at": "2026-11-26T03:10:00Z",
                            "by": "admin-1",
                            "reason": "three complaints of counterfeit goods this week",
                        },
                    ],
                }
            ]
        }
    )

    merchant_id: str
    name: str
    payment_methods: list[PaymentMethod]
    status: MerchantStatus = Field(description="Only an APPROVED merchant's products can be ordered.")
    reason: str = Field(description="Why it was rejected or suspended; empty otherwise.")
    licence_number: str | None
    contact: str | None
    webhook_url: str | None
    history: list[StatusChangeOut] = Field(description="Every status change: who, when and why.")

    @classmethod
    def of(cls, merchant: Merchant) -> MerchantOut:
        return cls(
            merchant_id=merchant.merchant_id,
            name=merchant.name,
            payment_methods=merchant.accepted_methods,
            status=merchant.status,
            reason=merchant.reason,
            licence_number=merchant.licence_number,
            contact=merchant.contact,
            webhook_url=merchant.webhook_url,
            history=[StatusChangeOut.of(entry) for entry in merchant.history],
        )


class MerchantList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            **_MERCHANT_EXAMPLE,
                            "status": "PENDING",
                            "reason": "",
                            "history": [
                                {
                                    "action": "register",
                                    "status": "PENDING",
                                    "at": "2026-11-20T08:00:00Z",
                                    "by": "m-westlake-tea",
                                    "reason": "",
                                }
                            ],
                        }
                    ]
                }
            ]
        }
    )

    items: list[MerchantOut]


_PRODUCT_EXAMPLE: dict[str, JsonValue] = {
    "name": "Longjing green tea 250g",
    "merchant_id": "m-westlake-tea",
    "price_fen": 16800,
    "kind": "physical",
    "active": True,
    "max_per_order": 10,
    "price_tiers": [
        {"min_quantity": 3, "unit_price_fen": 15800},
        {"min_quantity": 6, "unit_price_fen": 14800},
    ],
    "description": "Picked before Qingming on the West Lake hills; a sweet, chestnut finish.",
    "category": "tea/green",
    "attributes": {"origin": "Hangzhou", "weight": "250g"},
    "payment_methods": WECHAT_AND_ALIPAY,
    "low_stock_threshold": 10,
}


class PriceTierIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_quantity: int = Field(
        strict=True,
        ge=2,
        le=MAX_UNITS_PER_ORDER,
        description="From this many units of the product in one order, each costs `unit_price_fen`.",
    )
    unit_price_fen: PriceFen

    def tier(self) -> PriceTier:
        return PriceTier(min_quantity=self.min_quantity, unit_price_fen=self.unit_price_fen)


class ProductIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{**_PRODUCT_EXAMPLE, "available": 120}]},
    )

    name: Name
    merchant_id: Identifier
    price_fen: PriceFen
    kind: ProductKind = ProductKind.PHYSICAL
    available: StockUnits | None = Field(
        default=None,
        description="Sellable units a new product starts with (default 0). Ignored when the product "
        "exists: an edit never changes stock; use POST /v1/products/{sku}/stock. A new service product "
        "takes none (422): its stock is its slots' capacity, set with "
        "PUT /v1/products/{sku}/slots/{slot_id}.",
    )
    active: bool = True
    max_per_order: MaxPerOrder = MAX_UNITS_PER_ORDER
    price_tiers: list[PriceTierIn] = Field(
        default_factory=list,
        max_length=MAX_PRICE_TIERS,
        description="Wholesale prices, by strictly rising `min_quantity` (at most `max_per_order`) and "
        "strictly falling `unit_price_fen`, each below `price_fen`: the highest tier an order line "
        "reaches sets its unit price. Omitted on an edit: the product has none any more.",
    )

    description: str = Field(default="", max_length=MAX_DESCRIPTION)
    category: str = Field(
        default="",
        description="A slash path of lower-case levels (`tea/green`): substitutes for this product "
        "when it is out of stock come from its category. Empty: from its merchant's other products.",
    )
    attributes: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_ATTRIBUTES,
        description="Colour, size, origin...: short names to short values.",
    )
    payment_methods: list[PaymentMethod] = Field(
        default_factory=list,
        description="The methods this product may be paid with, each once, all accepted by its "
        "merchant. Empty: every method its merchant accepts.",
    )
    low_stock_threshold: StockUnits | None = Field(
        default=None,
        description="The merchant is told (LowStock) once each time sellable stock falls to or below "
        "it. Null: never.",
    )

    @field_validator("payment_methods")
    @classmethod
    def _methods_once(cls, methods: list[PaymentMethod]) -> list[PaymentMethod]:
        return _each_once(methods)

    def details(self) -> ProductDetails:
        """The details to put; InvalidPriceTiers when the tiers do not make a price list,
        InvalidCatalogFields when the category or attributes are not fit to browse by."""
        return ProductDetails(
            name=self.name,
            merchant_id=self.merchant_id,
            price_fen=self.price_fen,
            kind=self.kind,
            active=self.active,
            max_per_order=self.max_per_order,
            price_tiers=tuple(tier.tier() for tier in self.price_tiers),
            description=self.description,
            category=self.category,
            attributes=self.attributes,
            payment_methods=frozenset(self.payment_methods),
            low_stock_threshold=self.low_stock_threshold,
        )


class StockChange(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"add": 50}, {"add": -3}]})

    add: int = Field(
        strict=True,
        ge=-MAX_STOCK,
        le=MAX_STOCK,
        description="Units to add to the sellable stock (a restock), or to take away when negative "
        "(a correction, which cannot take away units orders hold). Not zero.",
    )

    @field_validator("add")
    @classmethod
    def _not_zero(cls, add: int) -> int:
        if add == 0:
            raise ValueError("add must not be zero: a stock change adds or takes away at least one unit")
        return add


class ProductOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_PRODUCT_EXAMPLE,
                    "sku": "SKU-TEA-LONGJING",
                    "currency": "CNY",
                    "available": 117,
                    "reserved": 3,
                }
            ]
        }
    )

    sku: str
    name: str
    price_fen: int
    currency: str
    available: int = Field(
        description="Units that can still be ordered (those held by orders excluded); for a service, "
        "the free seats of its upcoming slots together."
    )
    reserved: int = Field(
        description="Units held by orders that are not settled yet; for a service, in its upcoming slots."
    )
    merchant_id: str
    kind: ProductKind
    active: bool
    max_per_order: int
    price_tiers: list[PriceTier]
    description: str
    category: str
    attributes: dict[str, str]
    payment_methods: list[PaymentMethod] = Field(description="Empty: every method its merchant accepts.")
    low_stock_threshold: int | None

    @classmethod
    def of(cls, product: Product, upcoming_slots: Sequence[Slot] = ()) -> ProductOut:
        """A service product's stock is its upcoming slots' seats, summed here on every read so
        that the slots stay its one record of them."""
        available, reserved = product.available, product.reserved
        if product.kind is ProductKind.SERVICE:
            available = sum(max(slot.available, 0) for slot in upcoming_slots)
            reserved = sum(slot.reserved for slot in upcoming_slots)
        return cls(
            sku=product.sku,
            name=product.name,
            price_fen=product.price_fen,
            currency=product.currency,
            available=available,
            reserved=reserved,
            merchant_id=product.merchant_id,
            kind=product.kind,
            active=product.active,
            max_per_order=product.max_per_order,
            price_tiers=list(product.price_tiers),
            description=product.description,
            category=product.category,
            attributes=dict(product.attributes),
            payment_methods=[m for m in PaymentMethod if m in product.payment_methods],
            low_stock_threshold=product.low_stock_threshold,
        )


class ProductList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            **_PRODUCT_EXAMPLE,
                            "sku": "SKU-TEA-LONGJING",
                            "currency": "CNY",
                            "available": 117,
                            "reserved": 3,
                        }
                    ]
                }
            ]
        }
    )

    items: list[ProductOut]


_COUPON_EXAMPLE: dict[str, JsonValue] = {
    "merchant_id": "m-westlake-tea",
    "discount": "percent",
    "value": 10,
    "min_spend_fen": 10000,
    "valid_from": "2026-11-01T00:00:00Z",
    "valid_until": "2027-01-01T00:00:00Z",
    "total_uses": 500,
    "once_per_customer": True,
    "active": True,
}


class CouponIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, json_schema_extra={"examples": [_COUPON_EXAMPLE]}
    )

    merchant_id: Identifier
    discount: CouponDiscount = Field(description="percent: `value` per cent off; amount: `value` fen off.")
    value: int = Field(
        strict=True,
        ge=1,
        le=MAX_PRICE_FEN,
        description="percent: 1-100; amount: fen off, at most the merchant's lines' total.",
    )
    min_spend_fen: PriceFen = Field(default=0, description="The merchant's lines must total at least this.")
    valid_from: datetime = Field(description="With a time zone.")
    valid_until: datetime = Field(description="After valid_from, with a time zone.")
    total_uses: int = Field(strict=True, ge=1, le=MAX_COUPON_USES, description="Uses in all, by every order.")
    once_per_customer: bool = True
    active: bool = True

    @field_validator("valid_from", "valid_until")
    @classmethod
    def _with_time_zone(cls, when: datetime) -> datetime:
        if when.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-11-26T00:00:00+08:00")
        return when

    def terms(self) -> CouponTerms:
        """The terms to put; InvalidCoupon when they make no coupon."""
        return CouponTerms(
            merchant_id=self.merchant_id,
            discount=self.discount,
            value=self.value,
            min_spend_fen=self.min_spend_fen,
            valid_from=self.valid_from,
            valid_until=self.valid_until,
            total_uses=self.total_uses,
            once_per_customer=self.once_per_customer,
            active=self.active,
        )


class CouponOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_COUPON_EXAMPLE, "code": "WESTLAKE10", "left": 480, "held": 5, "used": 15}]
        }
    )

    code: str
    merchant_id: str
    discount: CouponDiscount
    value: int
    min_spend_fen: int
    valid_from: datetime
    valid_until: datetime
    total_uses: int
    once_per_customer: bool
    active: bool
    left: int = Field(description="Uses still to be had.")
    held: int = Field(description="Uses held by orders waiting for payment; given back if they fail.")
    used: int = Field(description="Uses by paid orders.")

    @classmethod
    def of(cls, coupon: Coupon) -> CouponOut:
        terms = coupon.terms
        return cls(
            code=coupon.code,
            merchant_id=terms.merchant_id,
            discount=terms.discount,
            value=terms.value,
            min_spend_fen=terms.min_spend_fen,
            valid_from=terms.valid_from,
            valid_until=terms.valid_until,
            total_uses=terms.total_uses,
            once_per_customer=terms.once_per_customer,
            active=terms.active,
            left=coupon.left,
            held=coupon.held,
            used=coupon.used,
        )


class CouponList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"items": [{**_COUPON_EXAMPLE, "code": "WESTLAKE10", "left": 480, "held": 5, "used": 15}]}
            ]
        }
    )

    items: list[CouponOut]


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"sku": "SKU-SOLDOUT-1", "customer_id": "cust-1"}]}
    )

    sku: str
    customer_id: str = Field(description="The subscribed customer: the caller.")


_SLOT_EXAMPLE: dict[str, JsonValue] = {
    "starts_at": "2026-12-05T10:00:00+08:00",
    "ends_at": "2026-12-05T11:00:00+08:00",
    "capacity": 3,
}


class SlotIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_SLOT_EXAMPLE]})

    starts_at: AwareDatetime = Field(description="When it starts, with a time zone; in the future.")
    ends_at: AwareDatetime = Field(description="When it ends: after it starts, at most 7 days later.")
    capacity: int = Field(
        strict=True,
        ge=0,
        le=MAX_SLOT_CAPACITY,
        description="How many bookings it takes. Never below the seats taken; 0 (or the seats taken) "
        "closes it to new bookings.",
    )

    def plan(self, slot_id: str) -> SlotPlan:
        return SlotPlan(slot_id, self.starts_at, self.ends_at, self.capacity)


class SlotOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_SLOT_EXAMPLE, "slot_id": "2026-12-05-1000", "available": 1, "reserved": 1}]
        }
    )

    slot_id: str
    starts_at: datetime
    ends_at: datetime
    capacity: int
    available: int = Field(description="Seats that can still be booked.")
    reserved: int = Field(description="Seats held by orders not paid yet.")

    @classmethod
    def of(cls, slot: Slot) -> SlotOut:
        return cls(
            slot_id=slot.slot_id,
            starts_at=slot.starts_at,
            ends_at=slot.ends_at,
            capacity=slot.capacity,
            available=max(slot.available, 0),
            reserved=slot.reserved,
        )


class SlotList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"items": [{**_SLOT_EXAMPLE, "slot_id": "2026-12-05-1000", "available": 1, "reserved": 1}]}
            ]
        }
    )

    items: list[SlotOut] = Field(description="The slots still to start, earliest first.")


Sku = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
CouponCode = Annotated[
    str,
    Path(
        pattern=COUPON_CODE_PATTERN,
        description="3 to 32 capital letters, digits, '-' or '_', starting with a letter or digit.",
    ),
]
SlotId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
MerchantId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]


def _forbidden(error: NotPermitted) -> Problem:
    return Problem(403, "Forbidden", str(error), code="forbidden")


def _unknown_merchant(error: UnknownMerchant) -> Problem:
    return Problem(
        422,
        "Unknown merchant",
        str(error),
        code="unknown-merchant",
        errors=[{"field": "merchant_id", "message": str(error), "location": "body"}],
    )


def _invalid_fields(detail: str, fields: list[str]) -> Problem:
    return Problem(
        422,
        "Invalid request",
        detail,
        code="invalid-request",
        errors=[{"field": field, "message": detail, "location": "body"} for field in fields],
    )


def _merchant_not_found(merchant_id: str) -> Problem:
    return Problem(404, "Merchant not found", f"no merchant {merchant_id}", code="merchant-not-found")


def _product_not_found(sku: str) -> Problem:
    return Problem(404, "Product not found", f"no product {sku}", code="product-not-found")


class CodesAddedOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"sku": "SKU-GIFT-100", "added": 3, "available": 42}]}
    )

    sku: str
    added: int = Field(description="Codes added to the pool: each one more unit to sell.")
    available: int = Field(description="The product's sellable units after the upload.")


TEXT_PLAIN = "text/plain"
CODES_EXAMPLE = "GIFT-7K2M-9QXA\nGIFT-3PLW-8RTE\n"


async def _codes_text(request: Request) -> str:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != TEXT_PLAIN:
        raise Problem(
            415,
            "Unsupported media type",
            f"send the codes as {TEXT_PLAIN}, one code per line (got {media_type or 'no content type'})",
            code="unsupported-media-type",
        )
    try:
        return (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid_fields("the codes must be UTF-8 text", ["body"]) from None


def _invalid_codes(error: InvalidCodes) -> Problem:
    # The lines are named, never the codes: they are secrets.
    if isinstance(error, DuplicateCodes):
        return Problem(409, "Duplicate codes", str(error), code="duplicate-codes", lines=error.lines)
    return Problem(
        422,
        "Invalid codes",
        str(error),
        code="invalid-codes",
        lines=error.lines,
        errors=[{"field": "body", "message": str(error), "location": "body"}],
    )


def _not_a_service(error: NotAService) -> Problem:
    return Problem(409, "Not a service", str(error), code="not-a-service")


def build_router(service: Inventory) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["inventory"])

    @router.get("/products", responses=problem_responses(422))
    async def list_products(
        merchant_id: Annotated[str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)] = None,
    ) -> ProductList:
        """The catalog with sellable stock, optionally one merchant's. Public."""
        products = await service.store.list_products(merchant_id)
        slots = await upcoming_slots_of(products)
        return ProductList(items=[ProductOut.of(p, slots.get(p.sku, [])) for p in products])

    @router.get("/products/{sku}", responses=problem_responses(404, 422))
    async def get_product(sku: Sku) -> ProductOut:
        """One product. Public."""
        product = await service.store.get_product(sku)
        if product is None:
            raise _product_not_found(sku)
        slots = await upcoming_slots_of([product])
        return ProductOut.of(product, slots.get(sku, []))

    async def upcoming_slots_of(products: Sequence[Product]) -> dict[str, list[Slot]]:
        services = [p.sku for p in products if p.kind is ProductKind.SERVICE]
        found: dict[str, list[Slot]] = {}
        if services:
            for slot in upcoming(await service.store.list_slots(services), service.clock()):
                found.setdefault(slot.sku, []).append(slot)
        return found

    @router.put(
        "/products/{sku}",
        responses={
            201: {"model": ProductOut, "description": "Created"},
            **problem_responses(401, 403, 409, 422),
        },
    )
    async def put_product(
        sku: Sku,
        body: ProductIn,
        caller: Caller,
        response: Response,
        x_correlation_id: CorrelationId = None,
    ) -> ProductOut:
        """Create a product (201), or change an existing one's details (200), and announce it
        (ProductUpserted).

        A new product starts with `available` sellable units (default 0). On an existing product
        `available` is ignored and its stock stays as it is, so an edit made from an earlier read
        cannot undo the sales made since: change stock with `POST /v1/products/{sku}/stock`.

        Needs the token of the product's merchant (for a new product, the merchant named in the
        body) or an admin's. Moving a product to another merchant is for an admin only (409)."""
        try:
            details = body.details()
        except (InvalidPriceTiers, InvalidCatalogFields) as error:
            raise _invalid_fields(str(error), [error.field]) from None
        command = PutProduct(sku=sku, details=details, available=body.available or 0)
        try:
            put = await upsert_product(service, caller, command, x_correlation_id)
        except NotPermitted as error:
            raise _forbidden(error) from None
        except ProductMoveRefused as error:
            raise Problem(409, "Product move refused", str(error), code="product-move-refused") from None
        except KindChangeRefused as error:
            raise Problem(409, "Kind change refused", str(error), code="kind-change-refused") from None
        except StockIsInSlots as error:
            raise _invalid_fields(str(error), ["available"]) from None
        except UnknownMerchant as error:
            raise _unknown_merchant(error) from None
        except NotVirtual as error:
            raise _invalid_fields(str(error), ["available"]) from None
        except PaymentMethodsNotAccepted as error:
            raise _invalid_fields(str(error), ["payment_methods"]) from None
        if put.created:
            response.status_code = status.HTTP_201_CREATED
        return ProductOut.of(put.product)

    @router.post("/products/{sku}/stock", responses=problem_responses(401, 403, 404, 409, 422))
    async def change_stock(sku: Sku, body: StockChange, caller: Caller) -> ProductOut:
        """Add sellable units (`{"add": 50}`, a restock) or take some away (`{"add": -3}`, a
        correction); answers the product as it is after the change.

        Units held by orders cannot be taken away: a correction that would leave fewer than zero
        sellable units is refused (409) and changes nothing. Needs the token of the product's
        merchant or an admin's."""
        try:
            product = await add_stock(service, caller, sku, body.add)
        except UnknownProduct:
            raise _product_not_found(sku) from None
        except NotPermitted as error:
            raise _forbidden(error) from None
        except StockOutOfRange as error:
            raise Problem(409, "Stock out of range", str(error), code="stock-out-of-range") from None
        except NotVirtual as error:
            raise Problem(409, "Stock is codes", str(error), code="stock-is-codes") from None
        except StockIsInSlots as error:
            raise Problem(409, "Stock is in slots", str(error), code="stock-is-in-slots") from None
        return ProductOut.of(product)

    @router.get("/products/{sku}/slots", responses=problem_responses(404, 409, 422))
    async def list_slots(sku: Sku) -> SlotList:
        """The slots of a service product still to start, earliest first, with the seats each has
        left. Public; 409 for a product that is not a service."""
        product = await service.store.get_product(sku)
        if product is None:
            raise _product_not_found(sku)
        if product.kind is not ProductKind.SERVICE:
            raise _not_a_service(NotAService(f"{sku} is a {product.kind} product: only a service has slots"))
        slots = upcoming(await service.store.list_slots([sku]), service.clock())
        return SlotList(items=[SlotOut.of(slot) for slot in slots])

    @router.put(
        "/products/{sku}/slots/{slot_id}",
        responses={
            201: {"model": SlotOut, "description": "Created"},
            **problem_responses(401, 403, 404, 409, 422),
        },
    )
    async def put_service_slot(
        sku: Sku,
        slot_id: SlotId,
        body: SlotIn,
        caller: Caller,
        response: Response,
        x_correlation_id: CorrelationId = None,
    ) -> SlotOut:
        """Offer a slot of a service product (201) or change its times and capacity (200); the
        product is announced again with its upcoming slots (ProductUpserted).

        A slot starts in the future and ends after it starts (422 otherwise). Its capacity never
        goes below the seats taken (409): set it to them, or to 0 when none are, to close the slot
        to new bookings. A slot with seats taken keeps its times, and one that has started no longer
        changes (409). A product that is not a service has no slots (409). Needs the token of the
        product's merchant or an admin's."""
        try:
            put = await put_slot(service, caller, sku, body.plan(slot_id), x_correlation_id)
        except UnknownProduct:
            raise _product_not_found(sku) from None
        except NotPermitted as error:
            raise _forbidden(error) from None
        except NotAService as error:
            raise _not_a_service(error) from None
        except InvalidSlot as error:
            raise _invalid_fields(str(error), [error.field]) from None
        except SlotConflict as error:
            raise Problem(409, "Slot conflict", str(error), code="slot-conflict") from None
        if put.created:
            response.status_code = status.HTTP_201_CREATED
        return SlotOut.of(put.slot)

    @router.delete(
        "/products/{sku}/slots/{slot_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=problem_responses(401, 403, 404, 409, 422),
    )
    async def delete_service_slot(
        sku: Sku, slot_id: SlotId, caller: Caller, x_correlation_id: CorrelationId = None
    ) -> None:
        """Withdraw a slot nobody booked (204) and announce the product without it. A slot with
        seats taken stays (409): set its capacity to the seats taken to close it instead. Needs the
        token of the product's merchant or an admin's."""
        try:
            await remove_slot(service, caller, sku, slot_id, x_correlation_id)
        except UnknownProduct:
            raise _product_not_found(sku) from None
        except UnknownSlot as error:
            raise Problem(404, "Slot not found", str(error), code="slot-not-found") from None
        except NotPermitted as error:
            raise _forbidden(error) from None
        except NotAService as error:
            raise _not_a_service(error) from None
        except SlotConflict as error:
            raise Problem(409, "Slot conflict", str(error), code="slot-conflict") from None

    @router.post(
        "/products/{sku}/codes",
        responses=problem_responses(401, 403, 404, 409, 413, 422),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {TEXT_PLAIN: {"schema": {"type": "string"}, "example": CODES_EXAMPLE}},
            }
        },
    )
    async def upload_codes(sku: Sku, request: Request, caller: Caller) -> CodesAddedOut:
        """Add codes (gift cards, licence keys, top-up codes) to a virtual product's pool: the body
        is `text/plain`, one code per line, whitespace around a code trimmed and blank lines
        skipped. Each code is one more sellable unit; a paid order is given one code per unit,
        never a code another order has. Answers how many were added and the stock after; the codes
        are never answered or shown again, except to the buyer of the order they go to.

        All or nothing: a code given twice in the upload or already in the product's pool refuses
        the whole upload (409 naming the `lines`); more than 1000 codes, a code over 200 characters
        or none at all is a 422, another content type a 415, a product that is not virtual a 409.
        Needs the token of the product's merchant or an admin's."""
        text = await _codes_text(request)
        try:
            added = await add_codes(service, caller, sku, text)
        except InvalidCodes as error:
            raise _invalid_codes(error) from None
        except UnknownProduct:
            raise _product_not_found(sku) from None
        except NotPermitted as error:
            raise _forbidden(error) from None
        except NotVirtual as error:
            raise Problem(409, "Not a virtual product", str(error), code="not-virtual") from None
        return CodesAddedOut(sku=sku, added=added.added, available=added.product.available)

    @router.post(
        "/products/{sku}/subscriptions",
        status_code=status.HTTP_201_CREATED,
        responses={
            200: {"model": SubscriptionOut, "description": "The customer was subscribed already"},
            **problem_responses(401, 403, 404, 409, 422),
        },
    )
    async def subscribe(sku: Sku, caller: Caller, response: Response) -> SubscriptionOut:
        """Ask to be told once when an out-of-stock product is back (201; 200 when subscribed
        already). The restock that makes it sellable again tells every subscriber (a customer
        notification `customer.back_in_stock`) and ends their subscriptions.

        A customer's token only, subscribing that customer. A product that can be ordered now is
        refused (409 `product-in-stock`): order it instead."""
        try:
            created = await subscribe_back_in_stock(service, caller, sku)
        except NotPermitted as error:
            raise _forbidden(error) from None
        except UnknownProduct:
            raise _product_not_found(sku) from None
        except ProductInStock as error:
            raise Problem(409, "Product in stock", str(error), code="product-in-stock") from None
        if not created:
            response.status_code = status.HTTP_200_OK
        return SubscriptionOut(sku=sku, customer_id=caller.subject)

    @router.delete(
        "/products/{sku}/subscriptions",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=problem_responses(401, 403, 422),
    )
    async def unsubscribe(sku: Sku, caller: Caller) -> None:
        """Stop waiting for the product: the customer's subscription is removed (204 whether or not
        there was one). A customer's token only."""
        try:
            await unsubscribe_back_in_stock(service, caller, sku)
        except NotPermitted as error:
            raise _forbidden(error) from None

    @router.post(
        "/merchants",
        status_code=status.HTTP_201_CREATED,
        responses={
            200: {"model": MerchantOut, "description": "The very same registration was already there"},
            **problem_responses(401, 403, 409, 422),
        },
    )
    async def create_merchant(
        body: MerchantIn, caller: Caller, response: Response, x_correlation_id: CorrelationId = None
    ) -> MerchantOut:
        """Register a merchant (201; 200 with the merchant as it stands when the very same
        registration is already there, 409 when the id is taken with other details) and announce it
        (MerchantUpserted).

        A registration starts `PENDING`: its products can be neither ordered nor reserved until an
        admin approves it. A merchant registering itself gives its licence number and contact.
        An admin may register a merchant the same way (with a licence number: `PENDING`), or create
        one without a licence number, vouching for it: that merchant starts `APPROVED` and its
        history says so (action `create_approved`).

        Needs an admin's token, or the token of the merchant being registered."""
        try:
            put = await register_merchant(service, caller, body.registration(), x_correlation_id)
        except NotPermitted as error:
            raise _forbidden(error) from None
        except RegistrationIncomplete as error:
            raise _invalid_fields(str(error), error.missing) from None
        except InvalidWebhookUrl as error:
            raise _invalid_fields(str(error), ["webhook_url"]) from None
        except MerchantConflict as error:
            raise Problem(409, "Merchant exists", str(error), code="merchant-exists") from None
        if not put.created:
            response.status_code = status.HTTP_200_OK
        return MerchantOut.of(put.merchant)

    @router.put(
        "/merchants/{merchant_id}",
        responses={
            201: {"model": MerchantOut, "description": "Created, approved"},
            **problem_responses(401, 403, 422),
        },
    )
    async def put_merchant(
        merchant_id: MerchantId,
        body: MerchantChange,
        caller: Caller,
        response: Response,
        x_correlation_id: CorrelationId = None,
    ) -> MerchantOut:
        """Change (200) a merchant's name, the payment methods it accepts and its webhook URL; its
        status stays as it is. Announced every time (MerchantUpserted). Needs the merchant's own
        token or an admin's.

        An admin may also create (201) a merchant this way: it starts `APPROVED`, vouched for by
        that admin (history action `create_approved`). A merchant registers itself with
        `POST /v1/merchants` instead."""
        try:
            put = await upsert_merchant(service, caller, body.edit(merchant_id), x_correlation_id)
        except NotPermitted as error:
            raise _forbidden(error) from None
        except InvalidWebhookUrl as error:
            raise _invalid_fields(str(error), ["webhook_url"]) from None
        if put.created:
            response.status_code = status.HTTP_201_CREATED
        return MerchantOut.of(put.merchant)

    async def decide(
        caller: Principal, merchant_id: str, action: MerchantAction, reason: str, correlation_id: str | None
    ) -> MerchantOut:
        try:
            merchant = await decide_merchant(service, caller, merchant_id, action, reason, correlation_id)
        except NotPermitted as error:
            raise _forbidden(error) from None
        except UnknownMerchant:
            raise _merchant_not_found(merchant_id) from None
        except ReasonRequired as error:
            raise _invalid_fields(str(error), ["reason"]) from None
        except MerchantStatusConflict as error:
            raise Problem(
                409,
                "Merchant status conflict",
                str(error),
                code="merchant-status-conflict",
                current_status=error.current.value,
            ) from None
        return MerchantOut.of(merchant)

    decision_responses = problem_responses(401, 403, 404, 409, 422)

    @router.post("/merchants/{merchant_id}/approve", responses=decision_responses)
    async def approve_merchant(
        merchant_id: MerchantId, body: Decision, caller: Caller, x_correlation_id: CorrelationId = None
    ) -> MerchantOut:
        """PENDING → APPROVED: its products become orderable and are listed. Admin only; 409 naming
        the current status from any other status."""
        return await decide(caller, merchant_id, MerchantAction.APPROVE, body.reason, x_correlation_id)

    @router.post("/merchants/{merchant_id}/reject", responses=decision_responses)
    async def reject_merchant(
        merchant_id: MerchantId,
        body: ReasonedDecision,
        caller: Caller,
        x_correlation_id: CorrelationId = None,
    ) -> MerchantOut:
        """PENDING → REJECTED, with the reason the merchant is told. Admin only; 409 naming the
        current status from any other status."""
        return await decide(caller, merchant_id, MerchantAction.REJECT, body.reason, x_correlation_id)

    @router.post("/merchants/{merchant_id}/suspend", responses=decision_responses)
    async def suspend_merchant(
        merchant_id: MerchantId,
        body: ReasonedDecision,
        caller: Caller,
        x_correlation_id: CorrelationId = None,
    ) -> MerchantOut:
        """APPROVED → SUSPENDED, with the reason the merchant is told: its products are delisted at
        once (ProductUpserted with `active` false) and new orders for them are refused. Admin only;
        409 naming the current status from any other status."""
        return await decide(caller, merchant_id, MerchantAction.SUSPEND, body.reason, x_correlation_id)

    @router.post("/merchants/{merchant_id}/reinstate", responses=decision_responses)
    async def reinstate_merchant(
        merchant_id: MerchantId, body: Decision, caller: Caller, x_correlation_id: CorrelationId = None
    ) -> MerchantOut:
        """SUSPENDED → APPROVED: the products its suspension delisted are listed again (not those
        the merchant had deactivated itself). Admin only; 409 naming the current status from any
        other status."""
        return await decide(caller, merchant_id, MerchantAction.REINSTATE, body.reason, x_correlation_id)

    @router.get("/merchants/{merchant_id}", responses=problem_responses(401, 403, 404, 422))
    async def get_merchant(merchant_id: MerchantId, caller: Caller) -> MerchantOut:
        """One merchant: its status and history, its vetting details and contact. For that merchant
        and admins only."""
        if not caller.acts_for_merchant(merchant_id):
            raise Problem(
                403, "Forbidden", f"only merchant {merchant_id} or an admin may see it", code="forbidden"
            )
        merchant = await service.store.get_merchant(merchant_id)
        if merchant is None:
            raise _merchant_not_found(merchant_id)
        return MerchantOut.of(merchant)

    @router.get("/merchants", responses=problem_responses(401, 403, 422))
    async def list_merchants(
        _admin: AdminCaller, with_status: Annotated[MerchantStatus | None, Query(alias="status")] = None
    ) -> MerchantList:
        """Every merchant, or those with `status` (`?status=PENDING` is the vetting queue). Admin only."""
        merchants = await service.store.list_merchants(with_status)
        return MerchantList(items=[MerchantOut.of(m) for m in merchants])

    @router.put(
        "/coupons/{code}",
        responses={
            201: {"model": CouponOut, "description": "Created"},
            **problem_responses(401, 403, 409, 422),
        },
        tags=["coupons"],
    )
    async def put_coupon(
        code: CouponCode,
        body: CouponIn,
        caller: Caller,
        response: Response,
        x_correlation_id: CorrelationId = None,
    ) -> CouponOut:
        """Create a coupon (201) with all its `total_uses` left, or change an existing one's terms
        (200); announce it either way (CouponUpserted), so the gateway prices orders with it.

        Shoppers give the code when they order; inventory holds one use with the order's stock and
        gives it back if the order fails. Lowering `total_uses` below the uses used and held by
        orders is refused (409), as is a code another merchant's coupon has (409). Switch a coupon
        off with `active` false. Needs the token of the merchant in the body or an admin's."""
        try:
            terms = body.terms()
        except InvalidCoupon as error:
            raise _invalid_fields(str(error), [error.field]) from None
        try:
            put = await upsert_coupon(service, caller, PutCoupon(code, terms), x_correlation_id)
        except NotPermitted as error:
            raise _forbidden(error) from None
        except UnknownMerchant as error:
            raise _unknown_merchant(error) from None
        except CouponTaken as error:
            raise Problem(409, "Coupon code taken", str(error), code="coupon-code-taken") from None
        except CouponUsesConflict as error:
            raise Problem(409, "Coupon uses conflict", str(error), code="coupon-uses-conflict") from None
        if put.created:
            response.status_code = status.HTTP_201_CREATED
        return CouponOut.of(put.coupon)

    @router.get("/coupons", responses=problem_responses(401, 403, 422), tags=["coupons"])
    async def list_coupons(
        caller: Caller,
        merchant_id: Annotated[str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)] = None,
    ) -> CouponList:
        """A merchant's coupons with their uses, by code: for that merchant or an admin. Without
        `merchant_id`, every coupon: an admin only."""
        try:
            coupons = await coupons_of(service, caller, merchant_id)
        except NotPermitted as error:
            raise _forbidden(error) from None
        return CouponList(items=[CouponOut.of(c) for c in coupons])

    @router.get("/coupons/{code}", responses=problem_responses(401, 404, 422), tags=["coupons"])
    async def get_coupon(code: CouponCode, caller: Caller) -> CouponOut:
        """One coupon with its uses left, held and used. For its merchant and admins only; anyone
        else is answered 404, so codes cannot be tried out here."""
        coupon = await coupon_for(service, caller, code)
        if coupon is None:
            raise Problem(404, "Coupon not found", f"no coupon {code}", code="coupon-not-found")
        return CouponOut.of(coupon)

    return router


# --- merchant quality and recommendations --------------------------------------------------------


def _rate(rate: Fraction | None) -> float | None:
    return None if rate is None else round(float(rate), 4)


class QualityCountsOut(BaseModel):
    orders: int = Field(description="Confirmed orders holding the merchant's products.")
    refunded: int = Field(description="Of those, orders with a refund requested (each order once).")
    complaints: int = Field(description="After-sales cases opened against the merchant.")
    reviews: int = Field(description="Verified purchases' ratings of the merchant.")
    refund_rate: float | None = Field(description="refunded / orders; null before the first order.")
    complaint_rate: float | None = Field(description="complaints / orders; null before the first order.")
    average_rating: float | None = Field(description="1 to 5; null before the first review.")

    @classmethod
    def of(cls, counts: QualityCounts) -> QualityCountsOut:
        return cls(
            orders=counts.orders,
            refunded=counts.refunded,
            complaints=counts.complaints,
            reviews=counts.reviews,
            refund_rate=_rate(counts.refund_rate),
            complaint_rate=_rate(counts.complaint_rate),
            average_rating=_rate(counts.average_rating),
        )


class QualityThresholdsOut(BaseModel):
    min_orders: int = Field(description="Rates are judged from this many judged orders on.")
    max_refund_rate: float
    max_complaint_rate: float
    min_average_rating: float
    min_reviews: int = Field(description="The rating is judged from this many judged reviews on.")
    auto_suspend: bool = Field(description="Whether crossing a limit suspends the merchant.")

    @classmethod
    def of(cls, rules: QualityRules) -> QualityThresholdsOut:
        return cls(
            min_orders=rules.min_orders,
            max_refund_rate=float(rules.max_refund_rate),
            max_complaint_rate=float(rules.max_complaint_rate),
            min_average_rating=float(rules.min_rating),
            min_reviews=rules.min_reviews,
            auto_suspend=rules.auto_suspend,
        )


class AutomaticSuspensionOut(BaseModel):
    at: datetime
    reason: str


class MerchantQualityOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "merchant_id": "m-westlake-tea",
                    "status": "SUSPENDED",
                    "reason": "refund rate 40% over 20 orders exceeds the 30% limit",
                    "judged_since": None,
                    "judged": {
                        "orders": 20,
                        "refunded": 8,
                        "complaints": 1,
                        "reviews": 4,
                        "refund_rate": 0.4,
                        "complaint_rate": 0.05,
                        "average_rating": 3.5,
                    },
                    "total": {
                        "orders": 20,
                        "refunded": 8,
                        "complaints": 1,
                        "reviews": 4,
                        "refund_rate": 0.4,
                        "complaint_rate": 0.05,
                        "average_rating": 3.5,
                    },
                    "thresholds": {
                        "min_orders": 20,
                        "max_refund_rate": 0.3,
                        "max_complaint_rate": 0.2,
                        "min_average_rating": 3.0,
                        "min_reviews": 10,
                        "auto_suspend": True,
                    },
                    "crossed": ["refund rate 40% over 20 orders exceeds the 30% limit"],
                    "at_risk": True,
                    "automatic_suspension": {
                        "at": "2026-11-26T03:10:00Z",
                        "reason": "refund rate 40% over 20 orders exceeds the 30% limit",
                    },
                }
            ]
        }
    )

    merchant_id: str
    status: MerchantStatus
    reason: str = Field(description="Why it is rejected or suspended; empty otherwise.")
    judged_since: datetime | None = Field(
        description="The rules judge the orders confirmed since then (the last reinstatement); null: all."
    )
    judged: QualityCountsOut = Field(description="What the rules judge: orders since `judged_since`.")
    total: QualityCountsOut = Field(description="Since the merchant's first order.")
    thresholds: QualityThresholdsOut
    crossed: list[str] = Field(description="The limits the judged counts cross, in words.")
    at_risk: bool = Field(
        description="The judged rates cross a limit, even if too few orders or reviews came to judge them."
    )
    automatic_suspension: AutomaticSuspensionOut | None = Field(
        description="When the merchant is suspended by the quality rules: when and why."
    )

    @classmethod
    def of(cls, view: QualityView) -> MerchantQualityOut:
        suspension = view.automatic_suspension
        return cls(
            merchant_id=view.merchant.merchant_id,
            status=view.merchant.status,
            reason=view.merchant.reason,
            judged_since=view.quality.judged_since,
            judged=QualityCountsOut.of(view.quality.judged),
            total=QualityCountsOut.of(view.quality.total),
            thresholds=QualityThresholdsOut.of(view.rules),
            crossed=view.crossed,
            at_risk=view.at_risk,
            automatic_suspension=None
            if suspension is None
            else AutomaticSuspensionOut(at=suspension.at, reason=suspension.reason),
        )


class MerchantQualityList(BaseModel):
    items: list[MerchantQualityOut]


class RecommendedProductOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "sku": "SKU-TEA-CUP",
                    "name": "Celadon tea cup",
                    "merchant_id": "m-westlake-tea",
                    "price_fen": 3800,
                    "currency": "CNY",
                    "source": "bought_together",
                    "score": 12,
                }
            ]
        }
    )

    sku: str
    name: str
    merchant_id: str
    price_fen: int
    currency: str
    source: RecommendationSource = Field(description="Why it is recommended.")
    score: int = Field(
        description="Orders that bought it together with the product (or the customer's products); "
        "for a best seller, orders that bought it."
    )

    @classmethod
    def of(cls, recommended: Recommended) -> RecommendedProductOut:
        listing = recommended.listing
        return cls(
            sku=listing.sku,
            name=listing.name,
            merchant_id=listing.merchant_id,
            price_fen=listing.price_fen,
            currency=listing.currency,
            source=recommended.source,
            score=recommended.score,
        )


class RecommendedProductList(BaseModel):
    items: list[RecommendedProductOut]


Limit = Annotated[
    int,
    Query(ge=1, le=MAX_RECOMMENDATIONS, description=f"At most {MAX_RECOMMENDATIONS} products."),
]
# A customer id is a token's subject, which may be an account's e-mail: no id pattern, no slash.
CustomerId = Annotated[str, Path(min_length=1, max_length=254, pattern=r"^[^/]+$")]


def build_signals_router(service: Inventory) -> APIRouter:
    """Merchants' quality and recommendations. Included before `build_router`'s routes, so that
    `/merchants/quality` is not read as a merchant named `quality`."""
    router = APIRouter(prefix="/v1", tags=["inventory"])

    @router.get("/merchants/quality", responses=problem_responses(401, 403, 422))
    async def list_merchants_quality(
        caller: Caller,
        at_risk: Annotated[
            bool, Query(description="Only merchants whose judged rates cross a limit.")
        ] = False,
    ) -> MerchantQualityList:
        """Every merchant with orders counted: its quality counts, rates and the limits; with
        `?at_risk=true` only those whose judged rates cross a limit (suspended or not, enough orders
        to judge or not). Admin only."""
        try:
            views = await merchants_quality(service, caller, at_risk=at_risk)
        except NotPermitted as error:
            raise _forbidden(error) from None
        return MerchantQualityList(items=[MerchantQualityOut.of(view) for view in views])

    @router.get("/merchants/{merchant_id}/quality", responses=problem_responses(401, 403, 404, 422))
    async def get_merchant_quality(merchant_id: MerchantId, caller: Caller) -> MerchantQualityOut:
        """A merchant's confirmed orders, refunds, complaints and rating, in total and as judged since
        its last reinstatement; the limits; the ones crossed; and, if the quality rules suspended it,
        when and why. For that merchant and admins."""
        try:
            view = await merchant_quality(service, caller, merchant_id)
        except NotPermitted as error:
            raise _forbidden(error) from None
        except UnknownMerchant:
            raise _merchant_not_found(merchant_id) from None
        return MerchantQualityOut.of(view)

    @router.get("/products/{sku}/also-bought", responses=problem_responses(404, 422))
    async def get_also_bought(sku: Sku, limit: Limit = DEFAULT_RECOMMENDATIONS) -> RecommendedProductList:
        """The products bought most often in the same order as `sku`, most first; only those that
        can be bought now (active, in stock, of an approved merchant). Public."""
        try:
            found = await also_bought(service, sku, limit)
        except UnknownProduct:
            raise _product_not_found(sku) from None
        return RecommendedProductList(items=[RecommendedProductOut.of(r) for r in found])

    @router.get("/customers/{customer_id}/recommendations", responses=problem_responses(401, 403, 422))
    async def get_recommendations(
        customer_id: CustomerId, caller: Caller, limit: Limit = DEFAULT_RECOMMENDATIONS
    ) -> RecommendedProductList:
        """Products for the customer: bought with what they bought (weighted by how often), then
        the best sellers of the categories they bought from, then the best sellers overall; never
        one they bought, nor one that cannot be bought now. The customer's own token or an admin's."""
        try:
            found = await recommendations_for(service, caller, customer_id, limit)
        except NotPermitted as error:
            raise _forbidden(error) from None
        return RecommendedProductList(items=[RecommendedProductOut.of(r) for r in found])

    return router
