"""The client gateway: place, follow, find and cancel orders; browse the catalog replica.

Who may do what:
- a customer places orders in their own name and sees and cancels only their own;
- a guest (no token, a contact instead) places an order and gets a token for that one order;
- a merchant sees the orders that hold its products; an admin sees and cancels any.
Someone else's order answers 404, never 403, so order ids do not leak.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from sse_starlette import EventSourceResponse, ServerSentEvent

from services.order.accounts.domain import ADDRESS_EXAMPLE, CompleteAddress, MainlandMobile, email_address
from services.order.accounts.store import AddressBook
from services.order.domain import (
    MAX_LINES,
    MAX_QUANTITY,
    TOKEN_METHODS,
    CannotCancel,
    CatalogItem,
    FieldIssue,
    Order,
    OrderError,
    OrderStatus,
    PaymentStatus,
    RequestedItem,
)
from services.order.handlers import (
    IdempotencyKeyReused,
    InvalidOrder,
    OrderService,
    PlaceOrder,
    UnknownOrder,
    cancel_order,
    find_by_contact,
    place_order,
    review_request,
)
from services.order.store import InvalidCursor, OrderQuery, Scope
from services.order.throttle import Throttle, rule
from shared.auth import Caller, MaybeCaller, Principal, Role, TokenIssuer, unauthenticated
from shared.contracts import PayActionType, PaymentMethod, PriceTier, ServiceSlot, ShippingAddress
from shared.contracts.common import looks_like_card_number
from shared.crypto import PersonalData
from shared.http import Problem, field_errors, problem_responses

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
OrderId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
LONG_POLL_MAX_S = 30.0
# How often a waiting request re-reads an order another replica may have changed.
REREAD_INTERVAL_S = 1.0


# --- request and response models ---------------------------------------------------------------


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Identifier
    quantity: int = Field(ge=1, le=MAX_QUANTITY, description="Also limited by the product's max_per_order.")
    slot_id: Identifier | None = Field(
        default=None,
        description="The time slot to book: required for a `service` product (one of its `slots`), "
        "refused for any other.",
    )


class PaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: PaymentMethod
    token: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        validate_default=True,
        description="The payment provider's token, never card data: required for bank_card. Wallets "
        "(wechat_pay, alipay) need none and ignore one: the payer approves on the provider's page.",
    )

    @field_validator("token")
    @classmethod
    def _a_provider_token(cls, token: str | None, info: ValidationInfo) -> str | None:
        # The messages never quote the token: it may be card data, which no answer or log repeats.
        if token is None:
            method = info.data.get("method")
            if method in TOKEN_METHODS:
                raise PydanticCustomError("missing", f"{method} needs the payment provider's token")
            return None
        if looks_like_card_number(token):
            raise PydanticCustomError(
                "card_number", "looks like a card number; send the payment provider's token, never card data"
            )
        return token

    def provider_token(self) -> str | None:
        """The token the payment method charges with; a wallet's is dropped unused."""
        return self.token if self.method in TOKEN_METHODS else None


class ContactIn(BaseModel):
    """How to reach a guest and find their order again: an e-mail address or a mobile number."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=254, examples=["li.lei@example.com"])
    phone: MainlandMobile | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ContactIn:
        if (self.email is None) == (self.phone is None):
            raise ValueError("give either email or phone")
        if self.email is not None:
            self.email = email_address(self.email)
        return self

    def normalised(self) -> str:
        return f"email:{self.email}" if self.email is not None else f"phone:{self.phone}"


class PlaceOrderIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [{"sku": "SKU-TEA-LONGJING", "quantity": 1}],
                    "shipping_address": ADDRESS_EXAMPLE,
                    "payment": {"method": "bank_card", "token": "tok_approve"},
                },
                {
                    "contact": {"email": "guest@example.com"},
                    "items": [{"sku": "SKU-TEA-PUER", "quantity": 2}],
                    "shipping_address": {
                        "name": "韩梅梅",
                        "phone": "13912345678",
                        "province": "广东省",
                        "city": "深圳市",
                        "district": "南山区",
                        "line1": "科苑路 9 号",
                        "postal_code": "518000",
                    },
                    "payment": {"method": "alipay"},
                },
            ]
        },
    )

    customer_id: Identifier | None = Field(
        default=None,
        description="Leave out with a customer token (it is the token's subject); required for an admin "
        "ordering on a customer's behalf; absent for a guest.",
    )
    contact: ContactIn | None = Field(default=None, description="A guest's contact (no token).")
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_LINES)
    shipping_address: CompleteAddress | None = None
    address_id: Identifier | None = Field(
        default=None, description="A saved address (GET /v1/me/addresses) instead of shipping_address."
    )
    payment: PaymentIn
    coupon: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{2,31}$",
        description="A merchant's coupon code (any case): its discount comes off that merchant's lines, "
        "priced after quantity tiers. Refused (422, field `coupon`) when unknown, switched off, outside "
        "its validity, for none of the ordered merchants or below its minimum spend; an order whose "
        "coupon has no use left for this customer ends REJECTED with reason COUPON_UNAVAILABLE.",
    )

    @model_validator(mode="after")
    def _one_address(self) -> PlaceOrderIn:
        if (self.shipping_address is None) == (self.address_id is None):
            raise ValueError("give either shipping_address or address_id")
        return self


class OrderAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "order_id": "5f0c1f1e-7d1b-4c55-9b0e-0c8f6f7e2a11",
                    "order_no": "20261126-000042",
                    "status": "PENDING",
                    "access_token": None,
                }
            ]
        }
    )

    order_id: str
    order_no: str
    status: OrderStatus
    access_token: str | None = Field(
        default=None, description="A guest's token for this one order (guest checkout only)."
    )


class LineOut(BaseModel):
    sku: str
    name: str
    merchant_id: str
    kind: str
    quantity: int
    unit_price_fen: int
    line_total_fen: int
    slot_id: str | None = Field(default=None, description="The booked time slot of a `service` line.")


class CouponOut(BaseModel):
    code: str
    merchant_id: str
    discount_fen: int = Field(
        description="Taken off the merchant's lines: total_fen is lines_total_fen less this."
    )


class TimelineOut(BaseModel):
    status: OrderStatus
    at: datetime
    cause: str
    note: str = Field(description="What happened, written for the customer.")
    detail: str | None = Field(default=None, description="Internal detail (admin only).")


class PayActionOut(BaseModel):
    type: PayActionType = Field(description="qr: show `url` as a QR code to scan; redirect: open `url`.")
    url: str


class PaymentOut(BaseModel):
    """The order's payment as the customer sees it."""

    method: PaymentMethod
    status: PaymentStatus = Field(
        description="not_requested until the order's checks pass and payment is asked for (an order "
        "rejected before that stays not_requested); requested; pending (the payer has to act, see "
        "`action`); authorized; captured (a partial refund stays captured, see `refunded_fen`); "
        "failed; voided (released, nothing charged); refunded (everything captured went back)."
    )
    action: PayActionOut | None = Field(
        description="What the payer does to pay (WeChat Pay, Alipay), only while the payment is "
        "pending on an order that waits for it; null otherwise."
    )
    refunded_fen: int = Field(description="Refunded so far, in fen.")


class RiskOut(BaseModel):
    """The saga's internal checks (admin only)."""

    stock: str
    fraud: str
    fraud_score: int | None


class DeliveredCodesOut(BaseModel):
    """The codes a virtual product's line was given."""

    sku: str
    count: int
    codes: list[str] | None = Field(
        description="The codes themselves, for the order's buyer only (on GET /v1/orders/{order_id}); "
        "null for anyone else, who sees only how many were delivered."
    )


class SubstituteOut(BaseModel):
    """A product on sale that inventory offered instead of what was out of stock."""

    sku: str
    name: str
    merchant_id: str
    price_fen: int
    category: str


class OrderOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "order_id": "5f0c1f1e-7d1b-4c55-9b0e-0c8f6f7e2a11",
                    "order_no": "20261126-000042",
                    "customer_id": "cust-1",
                    "status": "CONFIRMED",
                    "reason": None,
                    "lines": [
                        {
                            "sku": "SKU-TEA-LONGJING",
                            "name": "明前龙井 Longjing green tea 250g",
                            "merchant_id": "m-westlake-tea",
                            "kind": "physical",
                            "quantity": 1,
                            "unit_price_fen": 16800,
                            "line_total_fen": 16800,
                        }
                    ],
                    "lines_total_fen": 16800,
                    "coupon": None,
                    "total_fen": 16800,
                    "currency": "CNY",
                    "payment_method": "bank_card",
                    "payment_id": "pay-1",
                    "payment": {
                        "method": "bank_card",
                        "status": "captured",
                        "action": None,
                        "refunded_fen": 0,
                    },
                    "shipping_address": ADDRESS_EXAMPLE,
                    "placed_at": "2026-11-26T03:12:00Z",
                    "deadline_at": None,
                    "timeline": [
                        {
                            "status": "PENDING",
                            "at": "2026-11-26T03:12:00Z",
                            "cause": "order.placed",
                            "note": "Order received; checking stock and payment safety.",
                            "detail": None,
                        }
                    ],
                    "risk": None,
                }
            ]
        }
    )

    order_id: str
    order_no: str
    customer_id: str
    status: OrderStatus
    reason: str | None
    lines: list[LineOut]
    lines_total_fen: int = Field(description="The lines' total, before any coupon.")
    coupon: CouponOut | None = Field(default=None, description="The coupon applied, if any.")
    total_fen: int = Field(description="What the customer pays: the lines' total less the coupon's discount.")
    currency: str
    payment_method: str
    payment_id: str | None
    payment: PaymentOut
    shipping_address: ShippingAddress
    placed_at: datetime
    deadline_at: datetime | None
    timeline: list[TimelineOut]
    risk: RiskOut | None = Field(default=None, description="Admin only.")
    codes: list[DeliveredCodesOut] = Field(
        default_factory=list,
        description="What the order's virtual lines were given once it was paid; empty until then.",
    )
    substitutes: list[SubstituteOut] = Field(
        default_factory=list,
        description="For an order rejected out of stock: up to three products on sale from the "
        "missing products' categories, closest in price first, to order instead.",
    )


class OrderPageOut(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class LookupIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"order_no": "20261126-000042", "contact": {"email": "guest@example.com"}}]
        },
    )

    order_no: str = Field(min_length=1, max_length=32, pattern=r"^[0-9]{8}-[0-9]{1,12}$")
    contact: ContactIn


class LookupOut(BaseModel):
    order: OrderOut
    access_token: str = Field(description="A guest token for this order, to follow or cancel it.")


class ProductOut(BaseModel):
    sku: str
    name: str
    merchant_id: str
    kind: str
    price_fen: int
    max_per_order: int
    price_tiers: list[PriceTier] = Field(
        description="Wholesale prices by rising min_quantity: the highest tier a line's quantity "
        "reaches sets its unit price."
    )
    description: str
    category: str = Field(description="A slash path such as tea/green.")
    attributes: dict[str, str]
    payment_methods: list[PaymentMethod] = Field(
        description="The methods it may be paid with; empty: every method its merchant accepts."
    )
    slots: list[ServiceSlot] = Field(
        default_factory=list,
        description="A `service` product's slots still to start, earliest first: an order item books "
        "one by its `slot_id`. Seats left: inventory's GET /v1/products/{sku}/slots.",
    )


class ProductList(BaseModel):
    items: list[ProductOut]


# --- who may see what --------------------------------------------------------------------------


def can_read(principal: Principal, order: Order) -> bool:
    if principal.role is Role.ADMIN:
        return True
    if principal.role is Role.CUSTOMER:
        return order.customer_id == principal.subject
    if principal.role is Role.GUEST:
        return order.order_id == principal.order_id
    return principal.merchant_id in order.merchant_ids


def can_cancel(principal: Principal, order: Order) -> bool:
    return principal.role is not Role.MERCHANT and can_read(principal, order)


def is_buyer(principal: Principal, order: Order) -> bool:
    """The customer who placed the order, or the guest holding its token: nobody else, admin neither."""
    if principal.role is Role.CUSTOMER:
        return order.customer_id == principal.subject
    return principal.role is Role.GUEST and order.order_id == principal.order_id


def codes_out(order: Order, principal: Principal, personal: PersonalData | None) -> list[DeliveredCodesOut]:
    """Each line's codes: opened when `personal` is given and the caller is the buyer, counted only
    otherwise."""
    opened = personal is not None and is_buyer(principal, order)
    return [
        DeliveredCodesOut(
            sku=line.sku,
            count=len(line.sealed_codes),
            codes=[personal.open(code) for code in line.sealed_codes] if opened and personal else None,
        )
        for line in order.codes
    ]


def order_out(
    order: Order,
    principal: Principal,
    catalog: Mapping[str, CatalogItem] | None = None,
    personal: PersonalData | None = None,
) -> OrderOut:
    """The order as `principal` may see it: its substitutes as `catalog` (the replica's items of
    them) lists them, leaving out those it does not know or no longer lists; its codes opened for the
    buyer only when `personal` is given (single-order reads), counted otherwise."""
    internal = principal.is_admin
    listed = [item for sku in order.substitutes if (item := (catalog or {}).get(sku)) and item.active]
    return OrderOut(
        substitutes=[
            SubstituteOut(
                sku=item.sku,
                name=item.name,
                merchant_id=item.merchant_id,
                price_fen=item.price_fen,
                category=item.category,
            )
            for item in listed
        ],
        order_id=order.order_id,
        order_no=order.order_no,
        customer_id=order.customer_id,
        status=order.status,
        reason=order.reason,
        lines=[
            LineOut(**line.model_dump(mode="json"), line_total_fen=line.line_total_fen)
            for line in order.lines
        ],
        lines_total_fen=order.lines_total_fen,
        coupon=None
        if order.coupon is None
        else CouponOut(
            code=order.coupon.code,
            merchant_id=order.coupon.merchant_id,
            discount_fen=order.coupon.discount_fen,
        ),
        total_fen=order.total_fen,
        currency=order.currency,
        payment_method=order.payment_method.value,
        payment_id=order.payment_id,
        payment=PaymentOut(
            method=order.payment_method,
            status=order.payment_status,
            action=None
            if order.pay_action is None
            else PayActionOut(type=order.pay_action.type, url=order.pay_action.url),
            refunded_fen=order.refunded_fen,
        ),
        shipping_address=order.shipping_address,
        placed_at=order.placed_at,
        deadline_at=order.deadline_at,
        timeline=[
            TimelineOut(
                status=entry.status,
                at=entry.at,
                cause=entry.cause,
                note=entry.note,
                detail=entry.detail if internal else None,
            )
            for entry in order.timeline
        ],
        risk=RiskOut(stock=order.stock.value, fraud=order.fraud.value, fraud_score=order.fraud_score)
        if internal
        else None,
        codes=codes_out(order, principal, personal),
    )


def product_out(item: CatalogItem, now: datetime) -> ProductOut:
    return ProductOut(
        sku=item.sku,
        name=item.name,
        merchant_id=item.merchant_id,
        kind=item.kind.value,
        price_fen=item.price_fen,
        max_per_order=item.max_per_order,
        price_tiers=list(item.price_tiers),
        description=item.description,
        category=item.category,
        attributes=dict(item.attributes),
        payment_methods=[m for m in PaymentMethod if m in item.payment_methods],
        slots=item.bookable_slots(now),
    )


def _not_found(order_id: str) -> Problem:
    return Problem(404, "Order not found", f"no order {order_id}", code="order-not-found")


def _invalid(errors: list[dict[str, str]]) -> Problem:
    detail = "; ".join(f"{e['field'] or e['location']}: {e['message']}" for e in errors)
    return Problem(422, "Invalid order", detail, code="invalid-order", errors=errors)


def _issue_errors(issues: list[FieldIssue]) -> list[dict[str, str]]:
    return [{"field": issue.field, "message": issue.message, "location": "body"} for issue in issues]


def _invalid_field(field: str, message: str) -> Problem:
    return _invalid(_issue_errors([FieldIssue(field, message)]))


def guest_of(order: Order) -> Principal:
    """Who a guest's token for `order` speaks for."""
    return Principal(subject=order.customer_id, role=Role.GUEST, order_id=order.order_id)


def _lenient_items(raw: Any) -> list[RequestedItem | None]:
    """The items of a request that failed validation, where they are well-formed enough to check
    against the catalog, so one answer names every problem."""
    if not isinstance(raw, list):
        return []
    found: list[RequestedItem | None] = []
    for item in raw[: MAX_LINES * 2]:
        sku = item.get("sku") if isinstance(item, dict) else None
        quantity = item.get("quantity") if isinstance(item, dict) else None
        slot_id = item.get("slot_id") if isinstance(item, dict) else None
        if isinstance(sku, str) and isinstance(quantity, int) and not isinstance(quantity, bool):
            found.append(
                RequestedItem(sku, quantity, slot_id if isinstance(slot_id, str) else None)
                if 1 <= quantity <= MAX_QUANTITY
                else None
            )
        else:
            found.append(None)
    return found


def _lenient_method(raw: Any) -> PaymentMethod | None:
    method = raw.get("method") if isinstance(raw, dict) else None
    try:
        return PaymentMethod(method) if isinstance(method, str) else None
    except ValueError:
        return None


# --- the routes --------------------------------------------------------------------------------


def client_limit(throttle: Throttle, limit: str) -> Callable[[Request, Principal | None], Awaitable[None]]:
    """A dependency that counts each request against `limit` per client: a token's subject, or
    the address of a client without one."""
    per_client = rule(limit)

    async def dependency(request: Request, principal: MaybeCaller) -> None:
        who = principal.subject if principal else f"ip:{request.client.host if request.client else '-'}"
        await throttle.check(per_client, "gateway", who)

    return dependency


def rate_limited(router: APIRouter, throttle: Throttle, limit: str) -> APIRouter:
    """`router` with every route counted by `client_limit`."""
    limited = APIRouter(dependencies=[Depends(client_limit(throttle, limit))])
    limited.include_router(router)
    return limited


@dataclass(frozen=True)
class GatewayLimits:
    per_client: str = "600/minute"
    lookup_per_client: str = "20/minute"
    lookup_per_order: str = "10/hour"
    guest_token_ttl: timedelta = timedelta(days=30)


def build_router(
    service: OrderService,
    *,
    issuer: TokenIssuer,
    personal: PersonalData,
    addresses: AddressBook,
    throttle: Throttle,
    limits: GatewayLimits,
) -> APIRouter:
    lookup_per_client = rule(limits.lookup_per_client)
    lookup_per_order = rule(limits.lookup_per_order)
    router = APIRouter(prefix="/v1", dependencies=[Depends(client_limit(throttle, limits.per_client))])

    async def readable(order_id: str, principal: Principal) -> Order:
        order = await service.store.get(order_id)
        if order is None or not can_read(principal, order):
            raise _not_found(order_id)
        return order

    async def substitutes_of(orders: Sequence[Order]) -> Mapping[str, CatalogItem]:
        """The replica's items of the orders' substitutes (one read, none when there are none)."""
        skus = {sku for order in orders for sku in order.substitutes}
        return await service.store.catalog_items(skus) if skus else {}

    def guest_token(order: Order) -> str:
        return issuer.access_token(guest_of(order), ttl=limits.guest_token_ttl)

    @router.post(
        "/orders",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=OrderAccepted,
        responses=problem_responses(401, 403, 413, 422, 429, 503),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PlaceOrderIn.model_json_schema()}},
            }
        },
        tags=["orders"],
    )
    async def create_order(
        request: Request,
        response: Response,
        principal: MaybeCaller,
        idempotency_key: Annotated[
            str | None,
            Header(
                min_length=1,
                max_length=128,
                description="Retries with the same key and body return the first answer (24 h).",
            ),
        ] = None,
        x_correlation_id: Annotated[str | None, Header(max_length=128)] = None,
    ) -> OrderAccepted:
        """Accept an order; it is processed asynchronously. Follow it with `GET /v1/orders/{id}`
        (`?wait_for=CONFIRMED` long-polls) or `GET /v1/orders/{id}/events` (Server-Sent Events).

        With a customer token the order is the customer's. Without a token, give `contact` to order
        as a guest: the answer then carries an `access_token` for this order. Every problem with the
        request comes in one 422 whose `errors` name each field."""
        body = await _place_order_body(request, service)
        customer_id, key_scope = _who_orders(principal, body, personal)
        address, reference = await _shipping_address(body, customer_id, principal, addresses)
        command = PlaceOrder(
            customer_id=customer_id,
            items=[RequestedItem(item.sku, item.quantity, item.slot_id) for item in body.items],
            shipping_address=address,
            payment_method=body.payment.method,
            payment_token=body.payment.provider_token(),
            key_scope=key_scope,
            idempotency_key=idempotency_key,
            correlation_id=x_correlation_id,
            contact=body.contact.normalised() if principal is None and body.contact else None,
            address_reference=reference,
            coupon=None if body.coupon is None else body.coupon.upper(),
        )
        try:
            placed = await place_order(service, command)
        except InvalidOrder as error:
            raise _invalid(_issue_errors(error.issues)) from None
        except IdempotencyKeyReused as error:
            raise Problem(422, "Idempotency key reused", str(error), code="idempotency-key-reused") from None
        except OrderError as error:
            raise Problem(422, "Invalid order", str(error), code="invalid-order") from None
        order = placed.order
        response.headers["Location"] = str(request.url_for("get_order", order_id=order.order_id))
        if not placed.created:
            response.headers["Idempotent-Replayed"] = "true"
        return OrderAccepted(
            order_id=order.order_id,
            order_no=order.order_no,
            # A replay answers what the first request was answered.
            status=OrderStatus.PENDING,
            access_token=guest_token(order) if principal is None else None,
        )

    @router.get(
        "/orders",
        response_model=OrderPageOut,
        responses=problem_responses(401, 403, 422, 429),
        tags=["orders"],
    )
    async def list_orders(
        principal: Caller,
        status_in: Annotated[
            list[OrderStatus] | None, Query(alias="status", description="Repeat for several.")
        ] = None,
        created_from: Annotated[datetime | None, Query(description="Placed at or after (ISO 8601).")] = None,
        created_before: Annotated[datetime | None, Query(description="Placed before (ISO 8601).")] = None,
        customer_id: Annotated[str | None, Query(max_length=64, description="Admin only.")] = None,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> OrderPageOut:
        """Orders newest first, a page at a time: a customer's own, a merchant's (orders holding its
        products), or for an admin every order or one customer's."""
        if principal.role is Role.GUEST:
            raise Problem(
                403,
                "Forbidden",
                "a guest token reaches one order: GET /v1/orders/{order_id}",
                code="forbidden",
            )
        if principal.role is Role.ANALYST:
            raise Problem(
                403, "Forbidden", "analysts read the event streams, not the orders", code="forbidden"
            )
        if (
            customer_id is not None
            and not principal.is_admin
            and not (principal.role is Role.CUSTOMER and customer_id == principal.subject)
        ):
            raise Problem(403, "Forbidden", "you can list only your own orders", code="forbidden")
        for name, value in (("created_from", created_from), ("created_before", created_before)):
            if value is not None and value.tzinfo is None:
                raise Problem(
                    422, "Invalid request", f"{name}: give a time zone, e.g. 2026-11-26T00:00:00+08:00"
                )
        owner: str | None
        if principal.role is Role.CUSTOMER:
            scope, owner = Scope.CUSTOMER, principal.subject
        elif principal.role is Role.MERCHANT:
            scope, owner = Scope.MERCHANT, principal.merchant_id
        elif customer_id is not None:
            scope, owner = Scope.CUSTOMER, customer_id
        else:
            scope, owner = Scope.ALL, None
        query = OrderQuery(
            scope=scope,
            owner=owner,
            statuses=frozenset(status_in) if status_in else None,
            placed_from=created_from,
            placed_before=created_before,
            cursor=cursor,
            limit=limit,
        )
        try:
            page = await service.store.page(query)
        except InvalidCursor as error:
            raise Problem(422, "Invalid cursor", str(error), code="invalid-cursor") from None
        catalog = await substitutes_of(page.orders)
        return OrderPageOut(
            items=[order_out(order, principal, catalog) for order in page.orders],
            next_cursor=page.next_cursor,
        )

    @router.post(
        "/orders/lookup",
        response_model=LookupOut,
        responses=problem_responses(404, 422, 429),
        tags=["orders"],
    )
    async def lookup_order(body: LookupIn, request: Request) -> LookupOut:
        """Find a guest order again by its number and the contact it was placed with. A wrong number
        and a wrong contact answer the same 404. Throttled per client address and per order number."""
        client = request.client.host if request.client else "-"
        await throttle.check(lookup_per_client, "lookup", f"ip:{client}")
        await throttle.check(lookup_per_order, "lookup", f"order:{body.order_no}")
        order = await find_by_contact(service, body.order_no, body.contact.normalised())
        if order is None:
            raise Problem(
                404,
                "Order not found",
                "no order with this number and contact",
                code="order-not-found",
            )
        return LookupOut(
            order=order_out(order, guest_of(order), await substitutes_of([order])),
            access_token=guest_token(order),
        )

    @router.get(
        "/orders/by-number/{order_no}",
        response_model=OrderOut,
        responses=problem_responses(401, 404, 429),
        tags=["orders"],
    )
    async def get_order_by_number(
        principal: Caller, order_no: Annotated[str, Path(max_length=32, pattern=r"^[0-9]{8}-[0-9]{1,12}$")]
    ) -> OrderOut:
        """An order by the number shown to the customer."""
        order = await service.store.by_number(order_no)
        if order is None or not can_read(principal, order):
            raise Problem(404, "Order not found", f"no order {order_no}", code="order-not-found")
        return order_out(order, principal, await substitutes_of([order]))

    @router.get(
        "/orders/{order_id}",
        response_model=OrderOut,
        name="get_order",
        responses=problem_responses(401, 404, 422, 429),
        tags=["orders"],
    )
    async def get_order(
        principal: Caller,
        order_id: OrderId,
        wait_for: Annotated[
            OrderStatus | None,
            Query(description="Long-poll: answer as soon as the order has this status or has ended."),
        ] = None,
        timeout_s: Annotated[
            float,
            Query(
                alias="timeout", gt=0, le=LONG_POLL_MAX_S, description="Longest wait in seconds for wait_for."
            ),
        ] = 10.0,
    ) -> OrderOut:
        """An order with its lines, totals and the timeline of every transition. A paid order's
        virtual lines show their codes to the buyer (its customer, or the guest holding its token)
        and only how many to anyone else."""
        order = await readable(order_id, principal)
        if wait_for is not None:
            until = time.monotonic() + timeout_s
            while order.status is not wait_for and not order.is_final:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                await service.watch.next_change(order_id, min(remaining, REREAD_INTERVAL_S))
                order = await readable(order_id, principal)
        return order_out(order, principal, await substitutes_of([order]), personal)

    @router.get(
        "/orders/{order_id}/events",
        response_class=EventSourceResponse,
        responses={
            200: {
                "description": "A `text/event-stream`: one `transition` event per timeline entry "
                "(data: the entry as JSON, id: its position), ending after the order's final state. "
                "Reconnect with `Last-Event-ID` to resume.",
                "content": {"text/event-stream": {}},
            },
            **problem_responses(401, 404, 429),
        },
        tags=["orders"],
    )
    async def order_events(
        principal: Caller,
        order_id: OrderId,
        last_event_id: Annotated[int | None, Header(ge=-1)] = None,
    ) -> EventSourceResponse:
        """Server-Sent Events: each transition of the order as it happens, until it ends."""
        await readable(order_id, principal)
        start = 0 if last_event_id is None else last_event_id + 1

        async def transitions() -> AsyncIterator[ServerSentEvent]:
            sent = start
            while True:
                order = await readable(order_id, principal)
                view = order_out(order, principal)
                for position in range(sent, len(view.timeline)):
                    entry = view.timeline[position]
                    yield ServerSentEvent(
                        data=orjson.dumps(entry.model_dump(mode="json")).decode(),
                        event="transition",
                        id=str(position),
                    )
                sent = max(sent, len(view.timeline))
                if order.is_final:
                    return
                await service.watch.next_change(order_id, REREAD_INTERVAL_S)

        return EventSourceResponse(transitions(), ping=15)

    @router.post(
        "/orders/{order_id}/cancel",
        response_model=OrderOut,
        responses=problem_responses(401, 403, 404, 409, 429, 503),
        tags=["orders"],
    )
    async def cancel(principal: Caller, order_id: OrderId) -> OrderOut:
        """Cancel an order before it is paid: it ends CANCELLED (CUSTOMER_CANCELLED) and its stock
        goes back. Cancelling again answers the cancelled order; a paid order answers 409."""
        order = await readable(order_id, principal)
        if not can_cancel(principal, order):
            raise Problem(403, "Forbidden", "merchants cannot cancel a customer's order", code="forbidden")
        try:
            cancelled = await cancel_order(service, order_id)
        except CannotCancel as error:
            raise Problem(409, "Cannot cancel", str(error), code="cannot-cancel") from None
        except UnknownOrder:
            raise _not_found(order_id) from None
        return order_out(cancelled, principal)

    @router.get("/products", response_model=ProductList, responses=problem_responses(429), tags=["catalog"])
    async def list_products(limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> ProductList:
        """The products clients can order (the gateway's replica of inventory's catalog)."""
        items = await service.store.catalog_page(limit)
        now = service.clock()
        return ProductList(items=[product_out(item, now) for item in items])

    @router.get(
        "/products/{sku}", response_model=ProductOut, responses=problem_responses(404, 429), tags=["catalog"]
    )
    async def get_product(sku: Annotated[str, Path(max_length=64)]) -> ProductOut:
        """One orderable product from the replica."""
        found = (await service.store.catalog_items([sku])).get(sku)
        if found is None or not found.active:
            raise Problem(404, "Product not found", f"no product {sku}", code="product-not-found")
        return product_out(found, service.clock())

    return router


async def _place_order_body(request: Request, service: OrderService) -> PlaceOrderIn:
    """The request body validated, with the catalog's objections added to pydantic's: one 422
    lists every problem, the shape's and the catalog's."""
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Problem(422, "Invalid request", "the body is not JSON", code="invalid-request") from None
    try:
        return PlaceOrderIn.model_validate(data)
    except ValidationError as error:
        errors = field_errors({**e, "loc": ("body", *e["loc"])} for e in error.errors())
    if isinstance(data, dict):
        issues = await review_request(
            service, _lenient_items(data.get("items")), _lenient_method(data.get("payment"))
        )
        reported = {e["field"] for e in errors}
        errors += [e for e in _issue_errors(issues) if e["field"] not in reported]
    raise _invalid(errors)


def _who_orders(principal: Principal | None, body: PlaceOrderIn, personal: PersonalData) -> tuple[str, str]:
    """The customer the order is for, and the scope its Idempotency-Key belongs to."""
    if principal is None:
        if body.customer_id is not None:
            raise unauthenticated(
                "ordering as a customer needs that customer's token; a guest leaves customer_id out"
            )
        if body.contact is None:
            raise unauthenticated(
                "sign in (Authorization: Bearer), or order as a guest with contact.email or contact.phone"
            )
        if body.address_id is not None:
            raise _invalid_field("address_id", "a guest gives shipping_address")
        return f"guest-{uuid.uuid4().hex}", f"guest:{personal.blind_index(body.contact.normalised())}"
    if body.contact is not None:
        raise _invalid_field("contact", "only a guest order takes a contact")
    if principal.role is Role.CUSTOMER:
        if body.customer_id is not None and body.customer_id != principal.subject:
            raise Problem(403, "Forbidden", "you can place orders only in your own name", code="forbidden")
        return principal.subject, f"customer:{principal.subject}"
    if principal.role is Role.ADMIN:
        if body.customer_id is None:
            raise _invalid_field("customer_id", "an admin orders on a customer's behalf: name the customer")
        return body.customer_id, f"admin:{principal.subject}"
    raise Problem(403, "Forbidden", f"a {principal.role} token cannot place orders", code="forbidden")


async def _shipping_address(
    body: PlaceOrderIn, customer_id: str, principal: Principal | None, addresses: AddressBook
) -> tuple[ShippingAddress, str | None]:
    if body.shipping_address is not None:
        return body.shipping_address, None
    if body.address_id is None or principal is None:
        raise AssertionError("PlaceOrderIn holds one of shipping_address and address_id")
    saved = await addresses.address(customer_id, body.address_id)
    if saved is None:
        raise _invalid_field("address_id", "no such saved address")
    return saved, f"address:{body.address_id}"
