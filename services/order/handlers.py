"""Use cases of the order service: place an order, react to the other services, enforce deadlines."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

import orjson

from services.order.domain import (
    CatalogItem,
    Deadlines,
    Order,
    RequestedItem,
    price_lines,
)
from services.order.numbers import OrderNumbers, parse_order_no
from services.order.store import (
    IdempotencyConflict,
    IdempotencyKey,
    NewOrder,
    OrderNumberTaken,
    OrderStore,
)
from shared.batching import Admission, GroupCommit
from shared.clock import Clock, utc_now
from shared.contracts import (
    Envelope,
    Event,
    FraudScored,
    OrderEvent,
    PaymentAuthorized,
    PaymentFailed,
    PaymentMethod,
    ProductUpserted,
    ShippingAddress,
    StockRejected,
    StockReserved,
)
from shared.errors import ConcurrentWrite, retry_transient
from shared.handlers import Handlers, Replies
from shared.kafka import Delivery, describe, new_envelope
from shared.logging import get_logger

SERVICE = "order"
log = get_logger(__name__)


@dataclass
class OrderService:
    store: OrderStore
    numbers: OrderNumbers
    deadlines: Deadlines
    # Who this replica's deadline sweeper claims overdue orders as: unique per process.
    sweeper_id: str
    # How long a claim keeps other sweepers off an order: past it, a crashed sweeper's orders are free.
    sweep_lease: timedelta = timedelta(seconds=30)
    clock: Clock = utc_now
    # Orders being placed at once; past it a new one is refused (503) instead of queueing.
    admission: Admission = field(default_factory=lambda: Admission(256))
    # New orders that arrive together are stored in one transaction.
    intake: GroupCommit[NewPlacement] = field(init=False)

    def __post_init__(self) -> None:
        self.intake = GroupCommit(partial(_insert, self), max_pending=self.admission.limit)


@dataclass(frozen=True)
class NewPlacement:
    """A priced order with its OrderPlaced, waiting to be stored."""

    new: NewOrder
    envelopes: Sequence[Envelope]


class UnknownOrder(LookupError):
    """An event about an order this service never placed: dead-lettered for a person to look at."""


@dataclass(frozen=True)
class PlaceOrder:
    customer_id: str
    items: list[RequestedItem]
    shipping_address: ShippingAddress
    payment_method: PaymentMethod
    payment_token: str
    idempotency_key: str | None = None
    correlation_id: str | None = None

    def fingerprint(self) -> str:
        """What makes two requests "the same" for an Idempotency-Key replay."""
        body = {
            "customer_id": self.customer_id,
            "items": [(item.sku, item.quantity) for item in self.items],
            "address": self.shipping_address.model_dump(),
            "payment": [self.payment_method.value, self.payment_token],
        }
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class Placed:
    order: Order
    created: bool  # False when an Idempotency-Key replay returned the earlier order


class IdempotencyKeyReused(ValueError):
    """The same Idempotency-Key came with a different request body."""


async def place_order(service: OrderService, command: PlaceOrder) -> Placed:
    """Price the order from the catalog replica, store it PENDING and emit OrderPlaced.

    Raises Overloaded at once when too many orders are being placed already."""
    with service.admission.admit():
        return await _place(service, command)


async def _place(service: OrderService, command: PlaceOrder) -> Placed:
    idempotency = None
    if command.idempotency_key:
        idempotency = IdempotencyKey(
            f"{command.customer_id}:{command.idempotency_key}", command.fingerprint()
        )
    catalog = await service.store.catalog_items(item.sku for item in command.items)
    lines = price_lines(command.items, catalog)
    now = service.clock()
    order_id = str(uuid.uuid4())
    for attempt in (1, 2):
        order, events = Order.place(
            order_id=order_id,
            order_no=await service.numbers.next(now),
            customer_id=command.customer_id,
            lines=lines,
            shipping_address=command.shipping_address,
            payment_method=command.payment_method,
            payment_token=command.payment_token,
            now=now,
            deadlines=service.deadlines,
            correlation_id=command.correlation_id or order_id,
        )
        placement = NewPlacement(NewOrder(order, idempotency), [_envelope(order, event) for event in events])
        try:
            await retry_transient(partial(service.intake.submit, placement))
            return Placed(order, created=True)
        except OrderNumberTaken:
            if attempt == 2:
                raise
            # Redis lost its counter (it keeps nothing on disk) while Mongo kept the orders.
            day, _ = parse_order_no(order.order_no)
            latest = await service.store.latest_order_no(day)
            if latest is not None:
                await service.numbers.continue_after(latest)
            log.warning("order_no_sequence_repaired", after=latest)
        except IdempotencyConflict as conflict:
            if idempotency is not None and conflict.fingerprint != idempotency.fingerprint:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was already used for a different order request"
                ) from None
            earlier = await service.store.get(conflict.order_id)
            if earlier is None:
                raise
            return Placed(earlier, created=False)
    raise AssertionError("unreachable")


async def _insert(service: OrderService, placements: Sequence[NewPlacement]) -> None:
    async with service.store.transaction(SERVICE) as tx:
        await tx.insert_new([placement.new for placement in placements])
        tx.emit([envelope for placement in placements for envelope in placement.envelopes])


def _envelope(order: Order, event: Event) -> Envelope:
    return new_envelope(event, source=SERVICE, correlation_id=order.correlation_id)


# --- reactions to other services' events ---------------------------------------------------


@dataclass(kw_only=True)
class Batch(Replies):
    """The in-memory view a consumed batch is applied to before one transaction stores it."""

    orders: dict[str, Order]
    now: datetime
    deadlines: Deadlines
    changed: dict[str, Order] = field(default_factory=dict)
    catalog: dict[str, CatalogItem] = field(default_factory=dict)

    def order(self, order_id: str) -> Order:
        try:
            return self.orders[order_id]
        except KeyError:
            raise UnknownOrder(f"no order {order_id}") from None

    def apply(self, order_id: str, cause: Envelope, decide: Callable[[Order], list[Event]]) -> None:
        order = self.order(order_id)
        steps_before = len(order.timeline)
        events = decide(order)
        if len(order.timeline) != steps_before:  # every state change leaves a timeline entry
            self.changed[order.order_id] = order
        self.reply(cause, events)


def on_stock_reserved(batch: Batch, event: StockReserved, cause: Envelope) -> None:
    batch.apply(event.order_id, cause, lambda order: order.stock_reserved(batch.now, batch.deadlines))


def on_stock_rejected(batch: Batch, event: StockRejected, cause: Envelope) -> None:
    short = ", ".join(f"{s.sku} (asked {s.quantity}, {s.available} left)" for s in event.shortages)
    batch.apply(event.order_id, cause, lambda order: order.stock_rejected(batch.now, short or event.reason))


def on_fraud_scored(batch: Batch, event: FraudScored, cause: Envelope) -> None:
    batch.apply(
        event.order_id,
        cause,
        lambda order: order.fraud_scored(
            batch.now, event.decision, event.score, event.reasons, batch.deadlines
        ),
    )


def on_payment_authorized(batch: Batch, event: PaymentAuthorized, cause: Envelope) -> None:
    batch.apply(event.order_id, cause, lambda order: order.payment_authorized(batch.now, event.payment_id))


def on_payment_failed(batch: Batch, event: PaymentFailed, cause: Envelope) -> None:
    detail = f"{event.reason} {event.detail}".strip()
    batch.apply(
        event.order_id, cause, lambda order: order.payment_failed(batch.now, event.payment_id, detail)
    )


def on_product_upserted(batch: Batch, event: ProductUpserted, _cause: Envelope) -> None:
    batch.catalog[event.sku] = CatalogItem(
        sku=event.sku,
        name=event.name,
        merchant_id=event.merchant_id,
        kind=event.kind,
        price_fen=event.price_fen,
        active=event.active,
    )


async def handle_batch(service: OrderService, deliveries: Sequence[Delivery]) -> None:
    """Apply a consumed batch to the orders it touches and store it all in one transaction."""
    fresh = await service.store.unapplied(SERVICE, HANDLERS.relevant(deliveries))
    if not fresh:
        return
    order_ids = {d.event.order_id for d in fresh if isinstance(d.event, OrderEvent)}
    batch = Batch(
        source=SERVICE,
        orders=await service.store.get_many(order_ids) if order_ids else {},
        now=service.clock(),
        deadlines=service.deadlines,
    )
    HANDLERS.dispatch(batch, fresh)
    async with service.store.transaction(SERVICE) as tx:
        await tx.save_changed(list(batch.changed.values()))
        await tx.upsert_catalog(list(batch.catalog.values()))
        tx.mark_applied([d.envelope.id for d in fresh])
        tx.emit(batch.outgoing)


# --- deadlines -----------------------------------------------------------------------------


async def enforce_deadlines(service: OrderService, limit: int = 200) -> int:
    """Drive overdue orders to their compensating end, each on its own; returns how many moved.

    Orders are claimed first, so replicas sweeping at once share the work instead of racing for
    the same orders. An order that changed since it was claimed is left to the next tick."""
    now = service.clock()
    claimed = await service.store.claim_overdue(now, limit, service.sweeper_id, service.sweep_lease)
    moved = 0
    for order in claimed:
        try:
            if await _end_overdue(service, order, now):
                moved += 1
        except ConcurrentWrite as error:
            log.info("deadline_deferred", order_id=order.order_id, error=describe(error))
    return moved


async def _end_overdue(service: OrderService, order: Order, now: datetime) -> bool:
    events = order.deadline_passed(now)
    if not events:
        return False
    async with service.store.transaction(SERVICE) as tx:
        await tx.save_changed([order])
        tx.emit([_envelope(order, event) for event in events])
    log.info("deadline_passed", order_id=order.order_id, reason=order.reason)
    return True


HANDLERS = (
    Handlers[Batch]()
    .on(StockReserved, on_stock_reserved)
    .on(StockRejected, on_stock_rejected)
    .on(FraudScored, on_fraud_scored)
    .on(PaymentAuthorized, on_payment_authorized)
    .on(PaymentFailed, on_payment_failed)
    .on(ProductUpserted, on_product_upserted)
)
