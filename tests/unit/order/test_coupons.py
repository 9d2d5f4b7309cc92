"""A merchant's coupon at the gateway: priced from the replica after quantity tiers, put on OrderPlaced,
refused naming why, and an order rejected when inventory has no use of it left."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timedelta

import orjson
import pytest

from services.order.catalog import apply_catalog
from services.order.domain import (
    CatalogItem,
    CouponRefused,
    CouponTerms,
    OrderStatus,
    RequestedItem,
    apply_coupon,
    price_lines,
)
from services.order.handlers import (
    IdempotencyKeyReused,
    InvalidOrder,
    OrderService,
    PlaceOrder,
    handle_batch,
    place_order,
)
from shared.contracts import (
    CouponApplied,
    CouponDiscount,
    CouponUpserted,
    Event,
    OrderEndReason,
    OrderPlaced,
    OrderRejected,
    PaymentRequested,
    PriceTier,
    ProductKind,
    StockRejected,
    StockRejectReason,
    decode_data,
)
from tests.twins.order import InMemoryOrderNumbers, InMemoryOrderStore
from tests.unit.order.factories import command, order_service, reserved, scored, seeded_store, stored
from tests.unit.samples import T0, delivery

pytestmark = pytest.mark.unit

TIERED = CatalogItem(
    "TEA",
    "Longjing",
    "m-1",
    ProductKind.PHYSICAL,
    1000,
    price_tiers=(PriceTier(min_quantity=3, unit_price_fen=799),),
)
CUP = CatalogItem("CUP", "Celadon cup", "m-2", ProductKind.PHYSICAL, 1999)
CATALOG = {item.sku: item for item in (TIERED, CUP)}


def coupon(**changes: object) -> CouponTerms:
    base = CouponTerms(
        code="TEA15",
        merchant_id="m-1",
        discount=CouponDiscount.PERCENT,
        value=15,
        valid_from=T0 - timedelta(days=1),
        valid_until=T0 + timedelta(days=1),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def discount(terms: CouponTerms | None, *items: tuple[str, int], now: datetime = T0) -> int:
    priced = price_lines([RequestedItem(sku, quantity) for sku, quantity in items], CATALOG)
    return apply_coupon("TEA15", terms, priced, now).discount_fen


def refusal(terms: CouponTerms | None, *items: tuple[str, int], now: datetime = T0) -> str:
    with pytest.raises(CouponRefused) as refused:
        discount(terms, *items, now=now)
    return str(refused.value)


# --- pricing -------------------------------------------------------------------------------------


def test_a_percent_coupon_takes_its_share_of_the_merchants_lines_after_tiers_rounded_down() -> None:
    # 3 x 799 = 2397 reaches the tier; 15% is 359.55; the other merchant's cup is not discounted.
    assert discount(coupon(), ("TEA", 3), ("CUP", 2)) == 359
    assert discount(coupon(), ("TEA", 1)) == 150
    assert discount(coupon(value=100), ("TEA", 2)) == 2000


def test_an_amount_coupon_takes_its_value_off_but_never_more_than_the_merchants_lines() -> None:
    amount = coupon(discount=CouponDiscount.AMOUNT, value=1500)

    assert discount(amount, ("TEA", 2), ("CUP", 1)) == 1500
    assert discount(amount, ("TEA", 1), ("CUP", 5)) == 1000


def test_the_minimum_spend_counts_the_merchants_lines_as_priced() -> None:
    needs_24 = coupon(min_spend_fen=2400)

    assert "needs ¥24.00 spent on merchant m-1's products; the order has ¥23.97" in refusal(
        needs_24, ("TEA", 3), ("CUP", 3)
    )
    assert discount(needs_24, ("TEA", 4)) == 4 * 799 * 15 // 100


@pytest.mark.parametrize(
    ("terms", "why"),
    [
        (None, "there is no coupon TEA15"),
        (coupon(active=False), "switched off"),
        (coupon(valid_until=T0), "expired at 2026-11-25T12:00:00+00:00"),
        (coupon(valid_from=T0 + timedelta(minutes=1)), "valid from"),
        (coupon(merchant_id="m-9"), "for products of merchant m-9, and none are ordered"),
    ],
)
def test_a_coupon_that_cannot_apply_is_refused_saying_why(terms: CouponTerms | None, why: str) -> None:
    assert why in refusal(terms, ("TEA", 1))


# --- placing an order with a coupon ---------------------------------------------------------------


@pytest.fixture
async def store() -> InMemoryOrderStore:
    store = await seeded_store([TIERED, CUP])
    async with store.transaction("seed") as tx:
        await tx.upsert_coupons([coupon()])
    return store


@pytest.fixture
def service(store: InMemoryOrderStore) -> OrderService:
    return order_service(store, InMemoryOrderNumbers())


def emitted(store: InMemoryOrderStore) -> list[Event]:
    return [decode_data(envelope) for envelope in store.outbox]


def with_coupon(order: PlaceOrder, code: str | None = "TEA15") -> PlaceOrder:
    return replace(order, coupon=code)


async def test_an_order_with_a_coupon_carries_it_on_order_placed_and_pays_the_discounted_total(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = (await place_order(service, with_coupon(command(("TEA", 3), ("CUP", 1))))).order

    applied = CouponApplied(code="TEA15", merchant_id="m-1", discount_fen=359)
    assert (order.coupon, order.lines_total_fen, order.total_fen) == (applied, 2397 + 1999, 2397 + 1999 - 359)
    [placed] = emitted(store)
    assert isinstance(placed, OrderPlaced)
    assert (placed.coupon, placed.total_fen) == (applied, order.total_fen)
    assert (await stored(service, order.order_id)).coupon == applied

    await handle_batch(service, [delivery(reserved(order.order_id)), delivery(scored(order.order_id))])

    requested = emitted(store)[-1]
    assert isinstance(requested, PaymentRequested) and requested.amount_fen == 2397 + 1999 - 359


async def test_a_refused_coupon_places_nothing_and_names_the_coupon_field(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    with pytest.raises(InvalidOrder) as refused:
        await place_order(service, with_coupon(command(("CUP", 1))))

    [issue] = refused.value.issues
    assert (issue.field, issue.message) == (
        "coupon",
        "coupon TEA15 is for products of merchant m-1, and none are ordered",
    )
    assert not store.orders and not store.outbox


async def test_a_replay_with_the_same_coupon_returns_the_first_order_and_another_coupon_is_refused(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    first = await place_order(service, with_coupon(command(("TEA", 1), key="k-1")))
    async with store.transaction("seed") as tx:
        await tx.upsert_coupons([coupon(active=False)])  # switched off since: a replay still answers

    replay = await place_order(service, with_coupon(command(("TEA", 1), key="k-1")))
    with pytest.raises(IdempotencyKeyReused):
        await place_order(service, with_coupon(command(("TEA", 1), key="k-1"), None))

    assert replay.created is False and replay.order == first.order
    assert len(store.outbox) == 1


def test_an_order_without_a_coupon_has_the_fingerprint_it_had_before_coupons() -> None:
    plain = command(("TEA", 1), key="k-1")
    before_coupons = {
        "customer_id": plain.customer_id,
        "items": [("TEA", 1)],
        "address": plain.shipping_address.model_dump(),
        "payment": [plain.payment_method.value, plain.payment_token],
        "contact": None,
    }

    expected = hashlib.sha256(orjson.dumps(before_coupons, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert plain.fingerprint() == expected
    assert with_coupon(plain).fingerprint() != expected


async def test_no_use_of_the_coupon_left_rejects_the_order_as_coupon_unavailable_once(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = (await place_order(service, with_coupon(command(("TEA", 1))))).order
    no_use = StockRejected(
        order_id=order.order_id,
        reason=StockRejectReason.COUPON_UNAVAILABLE,
        detail="coupon TEA15 has no use left: all 5 are used or held by orders",
    )

    await handle_batch(service, [delivery(no_use), delivery(no_use)])

    after = await stored(service, order.order_id)
    assert (after.status, after.reason) == (OrderStatus.REJECTED, OrderEndReason.COUPON_UNAVAILABLE)
    assert "no use left" in after.timeline[-1].note and "Nothing was charged" in after.timeline[-1].note
    rejections = [e for e in emitted(store) if isinstance(e, OrderRejected)]
    assert [(e.reason, e.detail) for e in rejections] == [(OrderEndReason.COUPON_UNAVAILABLE, no_use.detail)]


async def test_the_coupon_table_keeps_the_replicas_latest_terms_of_each_coupon(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    def upserted(**changes: object) -> CouponUpserted:
        fields: dict[str, object] = {
            "code": "POT5",
            "merchant_id": "m-2",
            "discount": CouponDiscount.AMOUNT,
            "value": 500,
            "valid_from": T0,
            "valid_until": T0 + timedelta(days=1),
            "total_uses": 10,
        }
        return CouponUpserted.model_validate({**fields, **changes})

    await apply_catalog(service, [delivery(upserted()), delivery(upserted(min_spend_fen=3000, active=False))])

    assert await store.coupon("POT5") == CouponTerms(
        "POT5",
        "m-2",
        CouponDiscount.AMOUNT,
        500,
        T0,
        T0 + timedelta(days=1),
        min_spend_fen=3000,
        active=False,
    )
