"""Sales and quality signals through the handlers and the API, against the in-memory store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

import httpx
import pytest

from services.inventory.api import build_router, build_signals_router
from services.inventory.domain import (
    QUALITY_RULES,
    MerchantAction,
    ProductDetails,
    QualityCounts,
    QualityRules,
)
from services.inventory.handlers import (
    Inventory,
    PutProduct,
    Registration,
    also_bought,
    decide_merchant,
    handle_batch,
    recommendations_for,
    register_merchant,
    upsert_product,
)
from shared.auth import Principal, Role, TokenIssuer, TokenVerifier
from shared.contracts import (
    AfterSalesKind,
    AfterSalesRequested,
    Event,
    MerchantStatus,
    MerchantUpserted,
    OrderConfirmed,
    OrderReviewed,
    PaymentMethod,
    ProductUpserted,
    RefundRequested,
    decode_data,
)
from shared.http import create_app
from shared.kafka import Delivery
from shared.settings import SharedSettings
from tests.twins.inventory import InMemoryInventoryStore
from tests.unit.inventory.factories import line, placed
from tests.unit.samples import T0, delivery

pytestmark = pytest.mark.unit

ADMIN = Principal("admin-1", Role.ADMIN)
RULES = QualityRules(min_orders=4, max_refund_rate=Fraction(1, 4), min_reviews=2)
ISSUER = TokenIssuer(SharedSettings())


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def service() -> Inventory:
    """Merchants m-1 (TEA, CUP, POT) and m-2 (BOWL, VASE), all in stock."""
    inventory = Inventory(
        store=InMemoryInventoryStore(),
        reservation_ttl=timedelta(minutes=15),
        clock=Clock(),
        quality_rules=RULES,
    )
    methods = frozenset(PaymentMethod)
    for merchant_id in ("m-1", "m-2"):
        await register_merchant(inventory, ADMIN, Registration(merchant_id, merchant_id, methods), None)
    for sku, merchant_id in [
        ("TEA", "m-1"),
        ("CUP", "m-1"),
        ("POT", "m-1"),
        ("BOWL", "m-2"),
        ("VASE", "m-2"),
    ]:
        details = ProductDetails(name=sku, merchant_id=merchant_id, price_fen=1000)
        await upsert_product(inventory, ADMIN, PutProduct(sku, details, available=100), None)
    store_of(inventory).outbox.clear()
    return inventory


def store_of(service: Inventory) -> InMemoryInventoryStore:
    assert isinstance(service.store, InMemoryInventoryStore)
    return service.store


def emitted(service: Inventory) -> list[Event]:
    return [decode_data(envelope) for envelope in store_of(service).outbox]


def confirmed_by(order_id: str, customer_id: str, skus: list[str]) -> OrderConfirmed:
    lines = [line(sku, 1, merchant_id="m-2" if sku in ("BOWL", "VASE") else "m-1") for sku in skus]
    return OrderConfirmed(
        order_id=order_id,
        order_no=f"NO-{order_id}",
        customer_id=customer_id,
        lines=lines,
        total_fen=1000 * len(lines),
        payment_id=f"pay-{order_id}",
    )


async def buy(service: Inventory, customer_id: str, skus: list[str]) -> str:
    """An order placed and confirmed, in two batches; returns its id."""
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    confirmation = confirmed_by(order_id, customer_id, skus)
    await handle_batch(service, [delivery(placed(order_id, *confirmation.lines))])
    await handle_batch(service, [delivery(confirmation)])
    return order_id


def refund(order_id: str) -> Delivery:
    event = RefundRequested(
        order_id=order_id,
        refund_id=f"r-{uuid.uuid4().hex[:6]}",
        customer_id="c-1",
        amount_fen=1000,
        reason="broken",
    )
    return delivery(event)


async def quality_of(service: Inventory, merchant_id: str) -> tuple[QualityCounts, QualityCounts]:
    found = await service.store.merchant_quality(merchant_id)
    assert found is not None
    return found.total, found.judged


async def status_of(service: Inventory, merchant_id: str) -> MerchantStatus:
    merchant = await service.store.get_merchant(merchant_id)
    assert merchant is not None
    return merchant.status


# --- merchant quality ----------------------------------------------------------------------------


async def test_confirmed_orders_refunds_complaints_and_reviews_are_counted_once_each(
    service: Inventory,
) -> None:
    first = await buy(service, "c-1", ["TEA", "BOWL"])
    second = await buy(service, "c-2", ["TEA", "CUP"])
    complaint = AfterSalesRequested(
        order_id=first,
        case_id="case-1",
        customer_id="c-1",
        merchant_id="m-2",
        kind=AfterSalesKind.REFUND_ONLY,
        reason="chipped",
    )
    review = OrderReviewed(order_id=second, customer_id="c-2", merchant_id="m-1", skus=["TEA"], rating=4)
    batch = [refund(first), refund(first), delivery(complaint), delivery(complaint), delivery(review)]

    await handle_batch(service, batch)
    await handle_batch(service, batch)

    assert (
        await quality_of(service, "m-1")
        == (QualityCounts(orders=2, refunded=1, rating_sum=4, reviews=1),) * 2
    )
    assert await quality_of(service, "m-2") == (QualityCounts(orders=1, refunded=1, complaints=1),) * 2


async def test_crossing_a_limit_suspends_the_merchant_delists_its_products_in_the_same_write(
    service: Inventory,
) -> None:
    orders = [await buy(service, f"c-{n}", ["TEA"]) for n in range(4)]
    await handle_batch(service, [refund(orders[0])])
    assert await status_of(service, "m-1") is MerchantStatus.APPROVED
    store_of(service).outbox.clear()

    second = [refund(orders[1])]
    await handle_batch(service, second)

    merchant = await service.store.get_merchant("m-1")
    assert merchant is not None and merchant.status is MerchantStatus.SUSPENDED
    reason = "refund rate 50% over 4 orders exceeds the 25% limit"
    assert merchant.reason == reason
    assert (merchant.history[-1].action, merchant.history[-1].by) == (MerchantAction.SUSPEND, QUALITY_RULES)
    events = emitted(service)
    assert (
        MerchantUpserted(
            merchant_id="m-1",
            name="m-1",
            payment_methods=list(PaymentMethod),
            status=MerchantStatus.SUSPENDED,
            reason=reason,
        )
        in events
    )
    assert {e.sku for e in events if isinstance(e, ProductUpserted) and not e.active} == {"TEA", "CUP", "POT"}
    assert all(env.causation_id == second[0].envelope.id for env in store_of(service).outbox)

    await handle_batch(service, second)
    assert len(store_of(service).outbox) == len(events), "a redelivery changes nothing"
    assert (await quality_of(service, "m-1"))[0] == QualityCounts(orders=4, refunded=2)


async def test_a_reinstated_merchant_is_not_suspended_again_by_the_orders_before(service: Inventory) -> None:
    orders = [await buy(service, f"c-{n}", ["TEA"]) for n in range(4)]
    await handle_batch(service, [refund(orders[0]), refund(orders[1])])
    clock = service.clock
    assert isinstance(clock, Clock)
    clock.now += timedelta(hours=1)
    await decide_merchant(service, ADMIN, "m-1", MerchantAction.REINSTATE, "refunds explained", None)
    clock.now += timedelta(hours=1)

    await handle_batch(service, [refund(orders[2]), refund(orders[3])])
    newer = [await buy(service, f"c-new-{n}", ["CUP"]) for n in range(4)]

    merchant = await service.store.get_merchant("m-1")
    assert merchant is not None and merchant.status is MerchantStatus.APPROVED
    total, judged = await quality_of(service, "m-1")
    assert (total, judged) == (QualityCounts(orders=8, refunded=4), QualityCounts(orders=4))

    await handle_batch(service, [refund(newer[0]), refund(newer[1])])
    merchant = await service.store.get_merchant("m-1")
    assert merchant is not None and merchant.status is MerchantStatus.SUSPENDED, (
        "a new crossing suspends again"
    )


# --- recommendations -----------------------------------------------------------------------------


async def test_also_bought_ranks_by_orders_together_and_skips_what_cannot_be_bought(
    service: Inventory,
) -> None:
    await buy(service, "c-1", ["TEA", "CUP"])
    await buy(service, "c-2", ["TEA", "CUP", "BOWL"])
    await buy(service, "c-3", ["TEA", "POT"])

    assert [(r.listing.sku, r.score) for r in await also_bought(service, "TEA", 10)] == [
        ("CUP", 2),
        ("BOWL", 1),
        ("POT", 1),
    ]
    assert [r.listing.sku for r in await also_bought(service, "TEA", 1)] == ["CUP"]

    await decide_merchant(service, ADMIN, "m-2", MerchantAction.SUSPEND, "counterfeit bowls", None)
    await upsert_product(
        service, ADMIN, PutProduct("POT", ProductDetails("POT", "m-1", 1000, active=False)), None
    )
    assert [r.listing.sku for r in await also_bought(service, "TEA", 10)] == ["CUP"]


async def test_a_customer_gets_what_was_bought_with_their_purchases_then_best_sellers_never_their_own(
    service: Inventory,
) -> None:
    for n in range(3):
        await buy(service, f"c-{n}", ["TEA", "CUP"])
    await buy(service, "c-9", ["TEA", "BOWL"])
    for n in range(2):
        await buy(service, f"c-vase-{n}", ["VASE"])
    await buy(service, "shopper", ["TEA"])
    shopper = Principal("shopper", Role.CUSTOMER)

    found = await recommendations_for(service, shopper, "shopper", 10)

    assert [(r.listing.sku, r.source.value, r.score) for r in found] == [
        ("CUP", "bought_together", 3),
        ("BOWL", "bought_together", 1),
        ("VASE", "best_seller", 2),
    ]
    assert [r.listing.sku for r in await recommendations_for(service, ADMIN, "nobody", 2)] == ["TEA", "CUP"]


# --- the API -------------------------------------------------------------------------------------


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {ISSUER.access_token(principal)}"}


@pytest.fixture
async def client(service: Inventory) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app("inventory", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_signals_router(service))
    app.include_router(build_router(service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


async def test_the_quality_view_shows_counts_rates_limits_and_why_the_rules_suspended(
    service: Inventory, client: httpx.AsyncClient
) -> None:
    orders = [await buy(service, f"c-{n}", ["TEA"]) for n in range(4)]
    await handle_batch(service, [refund(orders[0]), refund(orders[1])])
    own = bearer(Principal("u-tea", Role.MERCHANT, merchant_id="m-1"))

    view = (await client.get("/v1/merchants/m-1/quality", headers=own)).json()

    reason = "refund rate 50% over 4 orders exceeds the 25% limit"
    assert (view["status"], view["reason"], view["crossed"], view["at_risk"]) == (
        "SUSPENDED",
        reason,
        [reason],
        True,
    )
    assert view["judged"] == {
        "orders": 4,
        "refunded": 2,
        "complaints": 0,
        "reviews": 0,
        "refund_rate": 0.5,
        "complaint_rate": 0.0,
        "average_rating": None,
    }
    assert view["thresholds"]["max_refund_rate"] == 0.25
    assert view["automatic_suspension"]["reason"] == reason
    listed = (
        await client.get("/v1/merchants/quality", params={"at_risk": "true"}, headers=bearer(ADMIN))
    ).json()
    assert [item["merchant_id"] for item in listed["items"]] == ["m-1"]
    everyone = (await client.get("/v1/merchants/quality", headers=bearer(ADMIN))).json()
    assert [item["merchant_id"] for item in everyone["items"]] == ["m-1"], "m-2 has no orders counted"
    fresh = (await client.get("/v1/merchants/m-2/quality", headers=bearer(ADMIN))).json()
    assert (fresh["judged"]["orders"], fresh["judged"]["refund_rate"], fresh["automatic_suspension"]) == (
        0,
        None,
        None,
    )


async def test_quality_is_for_the_merchant_and_admins_and_the_list_for_admins(
    client: httpx.AsyncClient,
) -> None:
    other = bearer(Principal("u-pot", Role.MERCHANT, merchant_id="m-2"))

    problem(await client.get("/v1/merchants/m-1/quality"), 401)
    problem(await client.get("/v1/merchants/m-1/quality", headers=other), 403)
    problem(await client.get("/v1/merchants/m-404/quality", headers=bearer(ADMIN)), 404)
    problem(await client.get("/v1/merchants/quality", headers=other), 403)
    problem(
        await client.get("/v1/merchants/quality", params={"at_risk": "maybe"}, headers=bearer(ADMIN)), 422
    )


async def test_recommendation_reads_check_who_asks_and_the_limit(
    service: Inventory, client: httpx.AsyncClient
) -> None:
    await buy(service, "c-1", ["TEA", "CUP"])
    shopper = bearer(Principal("c-1", Role.CUSTOMER))

    assert (await client.get("/v1/products/TEA/also-bought")).json()["items"][0] == {
        "sku": "CUP",
        "name": "CUP",
        "merchant_id": "m-1",
        "price_fen": 1000,
        "currency": "CNY",
        "source": "bought_together",
        "score": 1,
    }
    problem(await client.get("/v1/products/GHOST/also-bought"), 404)
    problem(await client.get("/v1/products/TEA/also-bought", params={"limit": 51}), 422)
    problem(await client.get("/v1/products/TEA/also-bought", params={"limit": 0}), 422)
    mine = await client.get("/v1/customers/c-1/recommendations", headers=shopper)
    assert mine.status_code == 200 and "TEA" not in {item["sku"] for item in mine.json()["items"]}
    problem(await client.get("/v1/customers/c-1/recommendations"), 401)
    problem(await client.get("/v1/customers/c-2/recommendations", headers=shopper), 403)
    assert (await client.get("/v1/customers/c-1/recommendations", headers=bearer(ADMIN))).status_code == 200


async def test_every_signals_route_declares_its_problems_and_examples(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]

    for path in (
        "/v1/merchants/quality",
        "/v1/merchants/{merchant_id}/quality",
        "/v1/products/{sku}/also-bought",
        "/v1/customers/{customer_id}/recommendations",
    ):
        responses = paths[path]["get"]["responses"]
        assert "422" in responses, path
        assert all(
            "application/problem+json" in r["content"]
            for status, r in responses.items()
            if status.startswith("4")
        ), path
    schemas = document["components"]["schemas"]
    assert schemas["MerchantQualityOut"].get("examples")
    assert schemas["RecommendedProductOut"].get("examples")
