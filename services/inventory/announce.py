"""Inventory republishes its whole catalog when it starts, so that the catalog tables are whole.

(`inventory.coupons`, the merchants' coupons keyed by code, is a table of the same kind and is
republished with them, after the products.)

`inventory.merchants` and `inventory.products` are tables: the latest MerchantUpserted of every
merchant and ProductUpserted of every product, keyed by merchant id and by SKU (topics' TOPIC). Every
change inventory makes already goes there through its outbox; the gateway rebuilds its catalog
replica from them at every start (services/order/catalog.py). At start, before it serves or consumes
anything, inventory also puts the current state of every merchant and product in its outbox again,
in batches, so that:

- on the embedded broker of the local stack, which neither compacts nor keeps anything across its
  own restart, the tables hold every merchant and product again once inventory is back;
- on real Kafka, where the tables are compacted and keep the latest record of every key for good,
  products and merchants announced before the tables existed (on `inventory.events`, with 7 days of
  retention) reach them on the first start after the upgrade; afterwards a republication only adds
  records that compaction folds into the ones already there.

Each republished event has a new id: it is a new announcement of the present state. (An id derived
from the content would let a consumer that dedupes by id skip a state it had applied before and has
since seen replaced, and keep the replacement.)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from services.inventory.domain import Slot, upcoming
from services.inventory.handlers import SERVICE, Inventory
from shared.contracts import Event, ProductKind
from shared.errors import retry_transient
from shared.kafka import new_envelope
from shared.logging import get_logger

log = get_logger(__name__)

# Events per outbox write: one transaction per batch keeps each write small on a large catalog.
ANNOUNCE_BATCH = 500


async def announce_catalog(service: Inventory, *, batch_size: int = ANNOUNCE_BATCH) -> int:
    """Put the present state of every merchant, then of every product, then of every coupon, in the
    outbox, `batch_size` events per write; how many events that was. A product is listed only while
    its merchant sells, as every other announcement of it says."""
    merchants = await service.store.list_merchants()
    sells = {merchant.merchant_id: merchant.sells for merchant in merchants}
    products = await service.store.list_products()
    # A service product is announced with its upcoming slots, as every other announcement of it is.
    slots: dict[str, list[Slot]] = {}
    services = [product.sku for product in products if product.kind is ProductKind.SERVICE]
    for slot in upcoming(await service.store.list_slots(services) if services else [], service.clock()):
        slots.setdefault(slot.sku, []).append(slot)
    events: list[Event] = [merchant.upserted() for merchant in merchants]
    events += [
        product.upserted(
            merchant_sells=sells.get(product.merchant_id, False), slots=slots.get(product.sku, [])
        )
        for product in products
    ]
    coupons = await service.store.list_coupons()
    events += [coupon.upserted() for coupon in coupons]
    # One correlation id ties the whole republication together in the logs and on the tables.
    correlation_id = f"catalog-announcement-{uuid.uuid4()}"
    for start in range(0, len(events), batch_size):
        await _emit(service, events[start : start + batch_size], correlation_id)
    log.info("catalog_announced", merchants=len(merchants), products=len(products), coupons=len(coupons))
    return len(events)


async def _emit(service: Inventory, events: Sequence[Event], correlation_id: str) -> None:
    async def write() -> None:
        async with service.store.transaction(SERVICE) as tx:
            tx.emit([new_envelope(event, source=SERVICE, correlation_id=correlation_id) for event in events])

    await retry_transient(write)
