"""Use cases of the inventory service: maintain the catalog, reserve and settle stock for orders."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.inventory.domain import Ledger, Merchant, Product, Reservation, ReservationStatus
from services.inventory.store import InventoryStore, StockTransaction
from shared.clock import Clock, utc_now
from shared.contracts import (
    Envelope,
    Event,
    OrderCancelled,
    OrderConfirmed,
    OrderEvent,
    OrderPlaced,
    OrderRejected,
    ProductKind,
    ReservationEndReason,
)
from shared.errors import retry_transient
from shared.handlers import Handlers, Replies
from shared.kafka import Delivery, new_envelope
from shared.logging import get_logger

SERVICE = "inventory"
log = get_logger(__name__)


@dataclass
class Inventory:
    store: InventoryStore
    reservation_ttl: timedelta
    clock: Clock = utc_now


# --- catalog -------------------------------------------------------------------------------------


class UnknownMerchant(LookupError):
    """A product names a merchant that was never registered."""


class MerchantConflict(ValueError):
    """The merchant id is taken by a merchant with another name."""


@dataclass(frozen=True)
class PutProduct:
    sku: str
    name: str
    merchant_id: str
    price_fen: int
    available: int
    kind: ProductKind = ProductKind.PHYSICAL
    active: bool = True


async def register_merchant(service: Inventory, merchant: Merchant) -> bool:
    """Register a merchant; False when the very same merchant was already there."""
    existing = await service.store.add_merchant(merchant)
    if existing is None:
        return True
    if existing.name != merchant.name:
        raise MerchantConflict(f"merchant {merchant.merchant_id} is already registered as {existing.name!r}")
    return False


async def upsert_product(service: Inventory, command: PutProduct, correlation_id: str | None) -> Product:
    """Create or replace a product (its `available` is a restock; reserved stays) and announce it."""

    async def write() -> Product:
        async with service.store.transaction(SERVICE) as tx:
            if await tx.merchant(command.merchant_id) is None:
                raise UnknownMerchant(f"no merchant {command.merchant_id}")
            product = await tx.put_product(
                Product(
                    sku=command.sku,
                    name=command.name,
                    merchant_id=command.merchant_id,
                    price_fen=command.price_fen,
                    available=command.available,
                    kind=command.kind,
                    active=command.active,
                )
            )
            envelope = new_envelope(
                product.upserted(), source=SERVICE, correlation_id=correlation_id or str(uuid.uuid4())
            )
            tx.emit([envelope])
        return product

    # A restock races the reservations on the same product document.
    return await retry_transient(write)


# --- reactions to order events -------------------------------------------------------------------


@dataclass
class StockBatch:
    """A consumed batch decided in memory: the stock and reservations it touches, and its replies."""

    ledger: Ledger
    replies: Replies


def on_order_placed(batch: StockBatch, event: OrderPlaced, cause: Envelope) -> None:
    """Hold the order's stock, or reject it naming the shortages and substitutes."""
    batch.replies.reply(cause, batch.ledger.reserve(event.order_id, event.lines, cause.correlation_id))


def on_order_ended(batch: StockBatch, event: OrderRejected | OrderCancelled, cause: Envelope) -> None:
    """Give the order's held stock back."""
    batch.replies.reply(cause, batch.ledger.release(event.order_id, event.reason))


def on_order_confirmed(batch: StockBatch, event: OrderConfirmed, cause: Envelope) -> None:
    """Let the order's held stock leave for good."""
    batch.replies.reply(cause, batch.ledger.commit(event.order_id))


async def handle_batch(service: Inventory, deliveries: Sequence[Delivery]) -> None:
    """Decide a consumed batch against the stock it touches and store it all in one transaction."""
    fresh = await service.store.unapplied(SERVICE, HANDLERS.relevant(deliveries))
    if not fresh:
        return
    async with service.store.transaction(SERVICE) as tx:
        batch = await _decide(service, tx, fresh)
        await tx.save(batch.ledger.changes())
        tx.emit(batch.replies.outgoing)
        tx.mark_applied([d.envelope.id for d in fresh])


async def _decide(service: Inventory, tx: StockTransaction, deliveries: Sequence[Delivery]) -> StockBatch:
    order_ids = {d.event.order_id for d in deliveries if isinstance(d.event, OrderEvent)}
    reservations = await tx.reservations(order_ids)
    skus = {line.sku for d in deliveries if isinstance(d.event, OrderPlaced) for line in d.event.lines}
    skus |= {
        line.sku for r in reservations.values() if r.status is ReservationStatus.HELD for line in r.lines
    }
    products = await tx.products(skus)
    now = service.clock()
    batch = _dispatch(deliveries, products, reservations, now, service.reservation_ttl)
    if batch.ledger.short_merchants:
        # Substitutes need the short merchants' other products; reading them only when an order
        # is short keeps the common batch at two reads. The batch is then decided again, with them.
        candidates = await tx.substitute_candidates(batch.ledger.short_merchants, exclude=set(products))
        products = {**{p.sku: p for p in candidates}, **products}
        batch = _dispatch(deliveries, products, reservations, now, service.reservation_ttl)
    return batch


def _dispatch(
    deliveries: Sequence[Delivery],
    products: dict[str, Product],
    reservations: dict[str, Reservation],
    now: datetime,
    ttl: timedelta,
) -> StockBatch:
    batch = StockBatch(Ledger.open(products, reservations, now=now, ttl=ttl), Replies(source=SERVICE))
    HANDLERS.dispatch(batch, deliveries)
    return batch


async def release_expired(service: Inventory, limit: int = 200) -> int:
    """Release reservations still held past their deadline; returns how many."""
    now = service.clock()
    async with service.store.transaction(SERVICE) as tx:
        reservations = await tx.expired_reservations(now, limit)
        if not reservations:
            return 0
        products = await tx.products({line.sku for r in reservations.values() for line in r.lines})
        ledger = Ledger.open(products, reservations, now=now, ttl=service.reservation_ttl)
        released = ledger.expire()
        await tx.save(ledger.changes())
        tx.emit([_expiry_envelope(reservation, event) for reservation, event in released])
    for reservation, _ in released:
        log.info("reservation_expired", order_id=reservation.order_id)
    return len(released)


def _expiry_envelope(reservation: Reservation, event: Event) -> Envelope:
    # No event caused it, so its id derives from the order: two sweeps emitting the same expiry
    # would emit one event, which consumers apply once.
    name = f"{SERVICE}/{ReservationEndReason.EXPIRED}/{reservation.order_id}"
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    return new_envelope(event, source=SERVICE, correlation_id=reservation.correlation_id, event_id=event_id)


HANDLERS = (
    Handlers[StockBatch]()
    .on(OrderPlaced, on_order_placed)
    .on(OrderRejected, on_order_ended)
    .on(OrderCancelled, on_order_ended)
    .on(OrderConfirmed, on_order_confirmed)
)
