"""Batches of order events through the handlers, against the in-memory store."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from itertools import count

import pytest

from services.inventory.domain import Merchant, Product, ReservationStatus
from services.inventory.handlers import (
    Inventory,
    PutProduct,
    UnknownMerchant,
    handle_batch,
    release_expired,
    upsert_product,
)
from services.inventory.store import StockConflict
from shared.contracts import (
    Event,
    OrderEndReason,
    ProductUpserted,
    ReservationEndReason,
    StockCommitted,
    StockLine,
    StockRejected,
    StockReleased,
    StockReserved,
    decode_data,
)
from tests.twins.inventory import InMemoryInventoryStore, _MemoryTransaction
from tests.unit.inventory.factories import cancelled, confirmed, line, placed, rejected
from tests.unit.samples import T0
from tests.unit.samples import delivery as deliver

pytestmark = pytest.mark.unit

TTL = timedelta(minutes=15)
_offsets = count()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def service() -> Inventory:
    store = InMemoryInventoryStore()
    inventory = Inventory(store=store, reservation_ttl=TTL, clock=Clock())
    await store.add_merchant(Merchant("m-1", "West Lake Tea"))
    for sku, available in [("TEA", 5), ("CUP", 1), ("POT", 9)]:
        await upsert_product(
            inventory,
            PutProduct(sku=sku, name=sku, merchant_id="m-1", price_fen=1000, available=available),
            None,
        )
    store.outbox.clear()
    return inventory


def store_of(service: Inventory) -> InMemoryInventoryStore:
    assert isinstance(service.store, InMemoryInventoryStore)
    return service.store


def emitted(service: Inventory) -> list[Event]:
    return [decode_data(env) for env in store_of(service).outbox]


async def stock(service: Inventory, sku: str) -> tuple[int, int]:
    product = await service.store.get_product(sku)
    assert product is not None
    return product.available, product.reserved


async def test_an_order_is_reserved_and_the_reply_carries_its_correlation(service: Inventory) -> None:
    delivery = deliver(placed("o-1", line("TEA", 2)), correlation_id="corr-o-1")

    await handle_batch(service, [delivery])

    [envelope] = store_of(service).outbox
    assert envelope.type == StockReserved.TYPE
    assert (envelope.correlation_id, envelope.causation_id, envelope.subject) == (
        "corr-o-1",
        delivery.envelope.id,
        "o-1",
    )
    assert await stock(service, "TEA") == (3, 2)


async def test_the_same_delivery_twice_is_applied_once(service: Inventory) -> None:
    delivery = deliver(placed("o-1", line("TEA", 2)))

    await handle_batch(service, [delivery, delivery])
    await handle_batch(service, [delivery])

    assert await stock(service, "TEA") == (3, 2)
    assert len(store_of(service).outbox) == 1


async def test_a_second_order_placed_for_the_same_order_reserves_once(service: Inventory) -> None:
    await handle_batch(service, [deliver(placed("o-1", line("TEA", 2)))])
    await handle_batch(service, [deliver(placed("o-1", line("TEA", 2)))])

    assert await stock(service, "TEA") == (3, 2)
    assert [type(e) for e in emitted(service)] == [StockReserved]


async def test_competing_orders_in_one_batch_and_substitutes_from_the_store(service: Inventory) -> None:
    await handle_batch(
        service, [deliver(placed("o-1", line("CUP", 1))), deliver(placed("o-2", line("CUP", 1)))]
    )

    first, second = emitted(service)
    assert isinstance(first, StockReserved)
    assert isinstance(second, StockRejected)
    assert [s.sku for s in second.shortages] == ["CUP"]
    # Not in the order, so loaded by the substitute read, not the order's own.
    assert second.substitutes == ["POT", "TEA"]
    assert await stock(service, "CUP") == (0, 1)


async def test_rejected_and_cancelled_orders_give_held_stock_back(service: Inventory) -> None:
    await handle_batch(
        service, [deliver(placed("o-1", line("TEA", 2))), deliver(placed("o-2", line("POT", 4)))]
    )
    await handle_batch(service, [deliver(rejected("o-1", OrderEndReason.FRAUD)), deliver(cancelled("o-2"))])

    released = [e for e in emitted(service) if isinstance(e, StockReleased)]
    assert [(e.order_id, e.reason) for e in released] == [
        ("o-1", OrderEndReason.FRAUD),
        ("o-2", OrderEndReason.PAYMENT_DECLINED),
    ]
    assert await stock(service, "TEA") == (5, 0)
    assert await stock(service, "POT") == (9, 0)


async def test_ending_an_order_with_nothing_held_only_marks_it_applied(service: Inventory) -> None:
    delivery = deliver(cancelled("o-404"))

    await handle_batch(service, [delivery])

    assert store_of(service).outbox == []
    assert f"inventory:{delivery.envelope.id}" in store_of(service).ledger.processed


async def test_a_confirmed_order_commits_its_reservation_once(service: Inventory) -> None:
    await handle_batch(service, [deliver(placed("o-1", line("TEA", 2)))])
    await handle_batch(service, [deliver(confirmed("o-1", line("TEA", 2)))])
    await handle_batch(service, [deliver(confirmed("o-1", line("TEA", 2))), deliver(cancelled("o-1"))])

    assert [type(e) for e in emitted(service)] == [StockReserved, StockCommitted]
    assert await stock(service, "TEA") == (3, 0)
    assert store_of(service).state.reservations["o-1"].status is ReservationStatus.COMMITTED


async def test_other_event_types_are_passed_over_without_a_write(service: Inventory) -> None:
    other = deliver(ProductUpserted(sku="X", name="X", merchant_id="m-1", price_fen=1))

    await handle_batch(service, [other])

    assert store_of(service).ledger.processed == set(), "an event that changes nothing is not recorded"
    assert store_of(service).outbox == []


async def test_expired_reservations_are_released_with_the_orders_correlation(service: Inventory) -> None:
    await handle_batch(service, [deliver(placed("o-1", line("TEA", 2)), correlation_id="corr-o-1")])
    store_of(service).outbox.clear()
    assert isinstance(service.clock, Clock)

    assert await release_expired(service) == 0
    service.clock.now = T0 + TTL
    assert await release_expired(service) == 1
    assert await release_expired(service) == 0

    [envelope] = store_of(service).outbox
    assert envelope.correlation_id == "corr-o-1"
    assert decode_data(envelope) == StockReleased(
        order_id="o-1", lines=[StockLine(sku="TEA", quantity=2)], reason=ReservationEndReason.EXPIRED
    )
    assert await stock(service, "TEA") == (5, 0)


async def test_restocking_keeps_reserved_and_announces_the_product(service: Inventory) -> None:
    await handle_batch(service, [deliver(placed("o-1", line("TEA", 2)))])
    store_of(service).outbox.clear()

    product = await upsert_product(
        service,
        PutProduct(sku="TEA", name="Longjing", merchant_id="m-1", price_fen=8800, available=40),
        "corr-http",
    )

    assert (product.available, product.reserved) == (40, 2)
    [envelope] = store_of(service).outbox
    assert (envelope.type, envelope.subject, envelope.correlation_id) == (
        ProductUpserted.TYPE,
        "TEA",
        "corr-http",
    )


async def test_a_product_needs_a_known_merchant(service: Inventory) -> None:
    with pytest.raises(UnknownMerchant):
        await upsert_product(
            service, PutProduct(sku="X", name="X", merchant_id="nobody", price_fen=1, available=1), None
        )

    assert await service.store.get_product("X") is None
    assert store_of(service).outbox == []


async def test_a_batch_decided_on_stale_stock_fails_and_changes_nothing(
    service: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_of(service)
    read_products = _MemoryTransaction.products

    async def stale_products(self: _MemoryTransaction, skus: Collection[str]) -> dict[str, Product]:
        # What this replica sees just before another one sells the last cup.
        products = await read_products(self, skus)
        self.state.products["CUP"].available = 0
        return products

    monkeypatch.setattr(_MemoryTransaction, "products", stale_products)
    delivery = deliver(placed("o-1", line("CUP", 1)))

    with pytest.raises(StockConflict):
        await handle_batch(service, [delivery])

    assert store.outbox == []
    assert f"inventory:{delivery.envelope.id}" not in store.ledger.processed
    assert await stock(service, "CUP") == (1, 0)
