"""Booking a service product's slot at the gateway: the replica keeps each service's upcoming slots,
an order item of a service names one of them, and the order carries and shows it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from limits.aio.storage import MemoryStorage

from services.order.api import GatewayLimits
from services.order.domain import CatalogItem, FieldIssue, RequestedItem, price_lines, review_slots
from services.order.handlers import OrderService, PlaceOrder, handle_batch
from services.order.store import catalog_from_doc, catalog_to_doc
from services.order.throttle import Throttle
from shared.contracts import (
    OrderLine,
    OrderPlaced,
    PaymentMethod,
    PriceTier,
    ProductKind,
    ProductUpserted,
    ServiceSlot,
    decode_data,
)
from tests.twins.accounts import InMemoryAccountStore
from tests.twins.order import InMemoryOrderNumbers, InMemoryOrderStore
from tests.unit.order.factories import order_service, seeded_store
from tests.unit.order.test_api import ORDER, SHOPPER, gateway, problem, read
from tests.unit.samples import ADDRESS, T0, delivery

pytestmark = pytest.mark.unit

HOUR = timedelta(hours=1)
MON = ServiceSlot(slot_id="mon-10", starts_at=T0 + HOUR, ends_at=T0 + 2 * HOUR)
TUE = ServiceSlot(slot_id="tue-10", starts_at=T0 + 25 * HOUR, ends_at=T0 + 26 * HOUR)
STARTED = ServiceSlot(slot_id="sun-10", starts_at=T0 - HOUR, ends_at=T0 + HOUR)
LESSON = CatalogItem(
    "LESSON",
    "Piano lesson",
    "m-1",
    ProductKind.SERVICE,
    20000,
    price_tiers=(PriceTier(min_quantity=2, unit_price_fen=18000),),
    slots=(STARTED, MON, TUE),
)
TEA = CatalogItem("TEA", "Longjing", "m-1", ProductKind.PHYSICAL, 8800)
CATALOG = {"LESSON": LESSON, "TEA": TEA}


@pytest.fixture
async def store() -> InMemoryOrderStore:
    return await seeded_store()


@pytest.fixture
def service(store: InMemoryOrderStore) -> OrderService:
    return order_service(store, InMemoryOrderNumbers())


@pytest.fixture
async def client(service: OrderService) -> AsyncIterator[httpx.AsyncClient]:
    app = gateway(service, InMemoryAccountStore(), Throttle(MemoryStorage()), GatewayLimits())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


def test_a_service_item_names_one_of_its_slots_still_to_start() -> None:
    items: list[RequestedItem | None] = [
        RequestedItem("LESSON", 1, "mon-10"),
        RequestedItem("LESSON", 1),
        RequestedItem("LESSON", 1, "sun-10"),
        RequestedItem("LESSON", 1, "never"),
        None,
        RequestedItem("TEA", 1, "mon-10"),
        RequestedItem("TEA", 1),
        RequestedItem("NOPE", 1, "mon-10"),
    ]

    assert review_slots(items, CATALOG, T0) == [
        FieldIssue("items.1.slot_id", "LESSON is a service: name the slot to book (slot_id)"),
        FieldIssue("items.2.slot_id", "LESSON has no slot sun-10 open for booking"),
        FieldIssue("items.3.slot_id", "LESSON has no slot never open for booking"),
        FieldIssue("items.5.slot_id", "TEA is a physical product: it has no slots"),
    ]


def test_each_slot_is_its_own_line_priced_at_the_tier_the_whole_service_reaches() -> None:
    lines = price_lines(
        [
            RequestedItem("LESSON", 1, "mon-10"),
            RequestedItem("TEA", 1),
            RequestedItem("LESSON", 1, "tue-10"),
            RequestedItem("LESSON", 1, "mon-10"),
        ],
        CATALOG,
    )

    assert [(line.sku, line.slot_id, line.quantity, line.unit_price_fen) for line in lines] == [
        ("LESSON", "mon-10", 2, 18000),
        ("TEA", None, 1, 8800),
        ("LESSON", "tue-10", 1, 18000),
    ]


def test_the_slot_is_part_of_what_makes_two_requests_the_same_and_keys_without_slots_still_match() -> None:
    def command(*items: RequestedItem) -> PlaceOrder:
        return PlaceOrder("c-1", list(items), ADDRESS, PaymentMethod.ALIPAY, None, key_scope="c-1")

    monday = command(RequestedItem("LESSON", 1, "mon-10"))

    assert monday.fingerprint() != command(RequestedItem("LESSON", 1, "tue-10")).fingerprint()
    assert (
        command(RequestedItem("TEA", 1)).fingerprint() == command(RequestedItem("TEA", 1, None)).fingerprint()
    )


def test_the_replica_keeps_a_services_slots_as_stored() -> None:
    assert catalog_from_doc({"_id": "LESSON", **catalog_to_doc(LESSON)}) == LESSON
    assert catalog_from_doc({"_id": "TEA", **catalog_to_doc(TEA)}).slots == ()


async def announce_lesson(service: OrderService, *slots: ServiceSlot) -> None:
    event = ProductUpserted(
        sku="LESSON",
        name="Piano lesson",
        merchant_id="m-1",
        kind=ProductKind.SERVICE,
        price_fen=20000,
        slots=list(slots),
    )
    await handle_batch(service, [delivery(event)])


def booking(slot_id: str | None, sku: str = "LESSON") -> dict[str, Any]:
    item: dict[str, Any] = {"sku": sku, "quantity": 1}
    if slot_id is not None:
        item["slot_id"] = slot_id
    return {**ORDER, "items": [item]}


async def test_an_order_books_a_slot_the_replica_lists_and_shows_it(
    client: httpx.AsyncClient, service: OrderService, store: InMemoryOrderStore
) -> None:
    await announce_lesson(service, STARTED, MON, TUE)

    listed = (await client.get("/v1/products/LESSON")).json()
    response = await client.post("/v1/orders", json=booking("tue-10"), headers=SHOPPER)

    assert [s["slot_id"] for s in listed["slots"]] == ["mon-10", "tue-10"]
    assert response.status_code == 202, response.text
    [placed] = [event for envelope in store.outbox if isinstance(event := decode_data(envelope), OrderPlaced)]
    assert placed.lines == [
        OrderLine(
            sku="LESSON",
            name="Piano lesson",
            merchant_id="m-1",
            kind=ProductKind.SERVICE,
            quantity=1,
            unit_price_fen=20000,
            slot_id="tue-10",
        )
    ]
    shown = await read(client, response.json()["order_id"], SHOPPER)
    assert [(line["sku"], line["slot_id"]) for line in shown["lines"]] == [("LESSON", "tue-10")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (booking(None), "LESSON is a service: name the slot to book (slot_id)"),
        (booking("sun-10"), "LESSON has no slot sun-10 open for booking"),
        (booking("no-such-slot"), "LESSON has no slot no-such-slot open for booking"),
        (booking("mon-10", sku="TEA"), "TEA is a physical product: it has no slots"),
    ],
)
async def test_an_item_with_a_missing_unknown_or_started_slot_is_422_naming_sku_and_slot(
    client: httpx.AsyncClient,
    service: OrderService,
    store: InMemoryOrderStore,
    body: dict[str, Any],
    message: str,
) -> None:
    await announce_lesson(service, STARTED, MON)
    before = len(store.outbox)

    refused = problem(await client.post("/v1/orders", json=body, headers=SHOPPER), 422, "invalid-order")

    assert {"field": "items.0.slot_id", "message": message, "location": "body"} in refused["errors"]
    assert len(store.outbox) == before and store.orders == {}


async def test_a_malformed_slot_id_is_422_with_the_rest_of_the_requests_problems(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    await announce_lesson(service, MON)
    body = {**booking("bad slot!"), "payment": {"method": "bank_card"}}

    refused = problem(await client.post("/v1/orders", json=body, headers=SHOPPER), 422, "invalid-order")

    assert {"items.0.slot_id", "payment.token"} <= {error["field"] for error in refused["errors"]}
