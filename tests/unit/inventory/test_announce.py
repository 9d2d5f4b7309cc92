"""At start inventory republishes its whole catalog onto the tables, in batches, through its outbox."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.inventory.announce import announce_catalog
from services.inventory.domain import Merchant, Product
from services.inventory.handlers import Inventory
from shared.contracts import (
    MerchantStatus,
    MerchantUpserted,
    PriceTier,
    ProductUpserted,
    decode_data,
    topics,
)
from shared.kafka import topic_for
from tests.twins.inventory import InMemoryInventoryStore

pytestmark = pytest.mark.unit


def inventory(*merchants: Merchant, products: int = 0) -> tuple[Inventory, InMemoryInventoryStore]:
    store = InMemoryInventoryStore()
    for merchant in merchants:
        store.state.merchants[merchant.merchant_id] = merchant
    for n in range(products):
        sku = f"SKU-{n:03}"
        owner = merchants[n % len(merchants)].merchant_id
        store.state.products[sku] = Product(
            sku=sku, name=sku, merchant_id=owner, price_fen=100 + n, available=n
        )
    return Inventory(store=store, reservation_ttl=timedelta(minutes=15)), store


async def test_every_merchant_and_product_is_announced_on_its_table_merchants_first() -> None:
    service, store = inventory(Merchant("m-1", "Tea house"), Merchant("m-2", "Pottery"), products=5)

    assert await announce_catalog(service) == 7

    assert [topic_for(envelope) for envelope in store.outbox] == [topics.INVENTORY_MERCHANTS] * 2 + [
        topics.INVENTORY_PRODUCTS
    ] * 5
    announced = [decode_data(envelope) for envelope in store.outbox]
    assert [e.merchant_id for e in announced if isinstance(e, MerchantUpserted)] == ["m-1", "m-2"]
    products = {e.sku: e for e in announced if isinstance(e, ProductUpserted)}
    assert sorted(products) == [f"SKU-{n:03}" for n in range(5)]
    assert products["SKU-004"].price_fen == 104 and products["SKU-004"].active
    assert len({envelope.correlation_id for envelope in store.outbox}) == 1


async def test_a_product_is_republished_with_its_price_tiers() -> None:
    service, store = inventory(Merchant("m-1", "Tea house"), products=1)
    tiers = (PriceTier(min_quantity=3, unit_price_fen=90), PriceTier(min_quantity=10, unit_price_fen=80))
    store.state.products["SKU-000"].price_tiers = tiers

    await announce_catalog(service)

    [_, product] = [decode_data(envelope) for envelope in store.outbox]
    assert isinstance(product, ProductUpserted) and product.price_tiers == list(tiers)


async def test_a_large_catalog_is_written_in_batches() -> None:
    service, store = inventory(Merchant("m-1", "Tea house"), products=12)
    writes = 0
    transaction = store.transaction

    def counted(consumer: str):  # type: ignore[no-untyped-def]
        nonlocal writes
        writes += 1
        return transaction(consumer)

    store.transaction = counted  # type: ignore[method-assign]

    assert await announce_catalog(service, batch_size=5) == 13
    assert writes == 3 and len(store.outbox) == 13


async def test_a_product_of_a_merchant_that_does_not_sell_is_announced_delisted() -> None:
    suspended = Merchant("m-1", "Tea house", status=MerchantStatus.SUSPENDED, reason="complaints")
    service, store = inventory(suspended, products=1)

    await announce_catalog(service)

    [merchant, product] = [decode_data(envelope) for envelope in store.outbox]
    assert isinstance(merchant, MerchantUpserted) and merchant.status is MerchantStatus.SUSPENDED
    assert isinstance(product, ProductUpserted) and not product.active


async def test_an_empty_inventory_announces_nothing() -> None:
    service, store = inventory()
    assert await announce_catalog(service) == 0
    assert store.outbox == []
