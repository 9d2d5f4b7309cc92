"""Use cases of the order service: place an order, react to the other services, enforce deadlines."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

import orjson

from services.order.domain import (
    CatalogItem,
    CouponRefused,
    CouponTerms,
    Deadlines,
    FieldIssue,
    MerchantTerms,
    Order,
    OrderError,
    PayAction,
    RequestedItem,
    apply_coupon,
    price_lines,
    review_items,
    review_slots,
    same_contact,
)
from services.order.numbers import OrderNumbers, parse_order_no
from services.order.store import (
    ConcurrentUpdate,
    IdempotencyConflict,
    IdempotencyKey,
    NewOrder,
    OrderNumberTaken,
    OrderStore,
)
from shared.batching import Admission, GroupCommit
from shared.clock import Clock, utc_now
from shared.contracts import (
    CodesAssigned,
    CouponUpserted,
    Envelope,
    Event,
    FraudScored,
    MerchantUpserted,
    OrderEvent,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentMethod,
    PaymentPending,
    PaymentRefunded,
    PaymentVoided,
    ProductUpserted,
    ShippingAddress,
    StockRejected,
    StockRejectReason,
    StockReserved,
)
from shared.crypto import TokenSealer
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
    # Seals a provider token for the payment service before the order is stored.
    token_sealer: TokenSealer
    # How long a claim keeps other sweepers off an order: past it, a crashed sweeper's orders are free.
    sweep_lease: timedelta = timedelta(seconds=30)
    clock: Clock = utc_now
    # Orders being placed at once; past it a new one is refused (503) instead of queueing.
    admission: Admission = field(default_factory=lambda: Admission(256))
    # New orders that arrive together are stored in one transaction.
    intake: GroupCommit[NewPlacement] = field(init=False)
    # Wakes the long-polls and event streams of orders this process changed.
    watch: OrderWatch = field(init=False)
    # Requests with one Idempotency-Key are placed one after the other in this process; across
    # replicas the key's unique index decides.
    _key_locks: dict[str, tuple[asyncio.Lock, int]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.intake = GroupCommit(partial(_insert, self), max_pending=self.admission.limit)
        self.watch = OrderWatch()

    @asynccontextmanager
    async def one_at_a_time(self, key: str | None) -> AsyncIterator[None]:
        if key is None:
            yield
            return
        # The lock lives while anyone holds or waits for it: dropped earlier, a later request
        # would get a fresh lock and run beside the ones still queued.
        lock, users = self._key_locks.get(key, (asyncio.Lock(), 0))
        self._key_locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._key_locks[key]
            if users == 1:
                del self._key_locks[key]
            else:
                self._key_locks[key] = (lock, users - 1)


class OrderWatch:
    """Who is waiting for which order to change, woken when this process commits a change.

    Another replica's changes are not seen here, so waiters also re-read on a short interval."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}

    def changed(self, order_ids: Iterable[str]) -> None:
        for order_id in order_ids:
            for event in self._waiting.get(order_id, ()):
                event.set()

    async def next_change(self, order_id: str, timeout_s: float) -> None:
        """Return when `order_id` changes in this process, or after `timeout_s`."""
        event = asyncio.Event()
        self._waiting.setdefault(order_id, set()).add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            pass  # the caller re-reads the order either way
        finally:
            waiters = self._waiting.get(order_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiting[order_id]


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
    # The provider token in clear, as the client sent it (None for wallets): only fingerprinted
    # here, and sealed before anything is stored.
    payment_token: str | None
    # Whose Idempotency-Keys this request's key is one of: the caller, or a guest's contact.
    key_scope: str
    idempotency_key: str | None = None
    correlation_id: str | None = None
    contact: str | None = None  # a guest's normalised contact
    # What the client sent to name the address (a saved address id or the address itself), so a
    # replay is compared with the request and not with what the address book holds now.
    address_reference: str | None = None
    coupon: str | None = None  # a merchant's coupon code, as inventory spells it (capitals)

    def fingerprint(self) -> str:
        """What makes two requests "the same" for an Idempotency-Key replay."""
        body: dict[str, object] = {
            "customer_id": self.customer_id,
            # An item's slot only when it has one: keys used before slots existed still match.
            "items": [
                (item.sku, item.quantity) if item.slot_id is None else (item.sku, item.quantity, item.slot_id)
                for item in self.items
            ],
            "address": self.address_reference or self.shipping_address.model_dump(),
            "payment": [self.payment_method.value, self.payment_token],
            "contact": self.contact,
        }
        if self.coupon is not None:
            # Only when given, so the fingerprints of keys stored before coupons stay as they were.
            body["coupon"] = self.coupon
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()

    @property
    def scoped_key(self) -> str | None:
        return None if self.idempotency_key is None else f"{self.key_scope}:{self.idempotency_key}"


class InvalidOrder(OrderError):
    """The request names products, quantities or a payment method the catalog refuses."""

    def __init__(self, issues: Sequence[FieldIssue]) -> None:
        super().__init__("; ".join(f"{issue.field}: {issue.message}" for issue in issues))
        self.issues = list(issues)


@dataclass(frozen=True)
class Placed:
    order: Order
    created: bool  # False when an Idempotency-Key replay returned the earlier order


class IdempotencyKeyReused(ValueError):
    """The same Idempotency-Key came with a different request body."""


async def review_request(
    service: OrderService, items: Sequence[RequestedItem | None], method: PaymentMethod | None
) -> list[FieldIssue]:
    """What the catalog and the merchants' terms say is wrong with an order request."""
    _, issues = await _reviewed(service, items, method)
    return issues


async def _reviewed(
    service: OrderService, items: Sequence[RequestedItem | None], method: PaymentMethod | None
) -> tuple[dict[str, CatalogItem], list[FieldIssue]]:
    catalog = await service.store.catalog_items(item.sku for item in items if item is not None)
    merchants = await service.store.merchant_terms({product.merchant_id for product in catalog.values()})
    issues = review_items(items, catalog, merchants, method) + review_slots(items, catalog, service.clock())
    return catalog, issues


async def place_order(service: OrderService, command: PlaceOrder) -> Placed:
    """Price the order from the catalog replica, store it PENDING and emit OrderPlaced.

    A request with an Idempotency-Key used before returns that order and does nothing else: no
    pricing, no order number, nothing sent on. Raises Overloaded at once when too many orders are
    being placed already, InvalidOrder when the catalog refuses the request."""
    with service.admission.admit():
        async with service.one_at_a_time(command.scoped_key):
            return await _place(service, command)


async def _replay(service: OrderService, command: PlaceOrder) -> Placed | None:
    if command.scoped_key is None:
        return None
    used = await service.store.idempotency_key(command.scoped_key)
    if used is None:
        return None
    return await _earlier(service, command, used.order_id, used.fingerprint)


async def _earlier(service: OrderService, command: PlaceOrder, order_id: str, fingerprint: str) -> Placed:
    if fingerprint != command.fingerprint():
        raise IdempotencyKeyReused("this Idempotency-Key was already used for a different order request")
    earlier = await service.store.get(order_id)
    if earlier is None:
        raise ConcurrentUpdate("the order of a used Idempotency-Key is not readable yet")
    return Placed(earlier, created=False)


async def _place(service: OrderService, command: PlaceOrder) -> Placed:
    replayed = await _replay(service, command)
    if replayed is not None:
        return replayed
    idempotency = None
    if command.scoped_key is not None:
        idempotency = IdempotencyKey(command.scoped_key, command.fingerprint())
    catalog, issues = await _reviewed(service, command.items, command.payment_method)
    if issues:
        raise InvalidOrder(issues)
    lines = price_lines(command.items, catalog)
    now = service.clock()
    coupon = None
    if command.coupon is not None:
        try:
            coupon = apply_coupon(command.coupon, await service.store.coupon(command.coupon), lines, now)
        except CouponRefused as refused:
            raise InvalidOrder([FieldIssue("coupon", str(refused))]) from None
    sealed_token = None if command.payment_token is None else service.token_sealer.seal(command.payment_token)
    order_id = str(uuid.uuid4())
    for attempt in (1, 2):
        order, events = Order.place(
            order_id=order_id,
            order_no=await service.numbers.next(now),
            customer_id=command.customer_id,
            lines=lines,
            shipping_address=command.shipping_address,
            payment_method=command.payment_method,
            payment_token=sealed_token,
            now=now,
            deadlines=service.deadlines,
            correlation_id=command.correlation_id or order_id,
            contact=command.contact,
            coupon=coupon,
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
        except IdempotencyConflict as conflict:  # another replica took the key meanwhile
            return await _earlier(service, command, conflict.order_id, conflict.fingerprint)
    raise AssertionError("unreachable")


async def _insert(service: OrderService, placements: Sequence[NewPlacement]) -> None:
    async with service.store.transaction(SERVICE) as tx:
        await tx.insert_new([placement.new for placement in placements])
        tx.emit([envelope for placement in placements for envelope in placement.envelopes])


async def find_by_contact(service: OrderService, order_no: str, contact: str) -> Order | None:
    """A guest's order, when `contact` is the one it was placed with."""
    order = await service.store.by_number(order_no)
    if order is None or not same_contact(contact, order.contact):
        return None
    return order


async def cancel_order(service: OrderService, order_id: str) -> Order:
    """Cancel at the customer's request; raises CannotCancel once the order is paid or ended."""
    for attempt in (1, 2, 3):
        order = await service.store.get(order_id)
        if order is None:
            raise UnknownOrder(f"no order {order_id}")
        events = order.cancel_by_customer(service.clock())
        if not events:
            return order
        try:
            async with service.store.transaction(SERVICE) as tx:
                await tx.save_changed([order])
                tx.emit([_envelope(order, event) for event in events])
        except ConcurrentUpdate:
            if attempt == 3:
                raise
            continue  # the saga moved the order meanwhile: decide again on its new state
        service.watch.changed([order_id])
        log.info("order_cancelled_by_customer", order_id=order_id)
        return order
    raise AssertionError("unreachable")


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
    merchants: dict[str, MerchantTerms] = field(default_factory=dict)
    coupons: dict[str, CouponTerms] = field(default_factory=dict)

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
    short = ", ".join(
        f"{s.sku}{'' if s.slot_id is None else f' slot {s.slot_id}'} (asked {s.quantity}, {s.available} left)"
        for s in event.shortages
    )
    skus = [shortage.sku for shortage in event.shortages]
    detail = short or event.detail or event.reason
    if event.reason is StockRejectReason.COUPON_UNAVAILABLE:
        why = event.detail or "no use of the coupon is left for this order"
        batch.apply(event.order_id, cause, lambda order: order.coupon_unavailable(batch.now, why))
    elif event.reason is StockRejectReason.RESERVATION_LOST:
        batch.apply(event.order_id, cause, lambda order: order.reservation_lost(batch.now, skus, detail))
    else:
        batch.apply(
            event.order_id,
            cause,
            lambda order: order.stock_rejected(batch.now, skus, detail, event.substitutes),
        )


def on_fraud_scored(batch: Batch, event: FraudScored, cause: Envelope) -> None:
    batch.apply(
        event.order_id,
        cause,
        lambda order: order.fraud_scored(
            batch.now, event.decision, event.score, event.reasons, batch.deadlines
        ),
    )


def on_payment_pending(batch: Batch, event: PaymentPending, cause: Envelope) -> None:
    action = PayAction(event.action_type, event.action_url)
    batch.apply(
        event.order_id,
        cause,
        lambda order: order.payment_pending(batch.now, event.payment_id, event.amount_fen, action),
    )


def on_payment_authorized(batch: Batch, event: PaymentAuthorized, cause: Envelope) -> None:
    batch.apply(event.order_id, cause, lambda order: order.payment_authorized(batch.now, event.payment_id))


def on_payment_failed(batch: Batch, event: PaymentFailed, cause: Envelope) -> None:
    batch.apply(
        event.order_id,
        cause,
        lambda order: order.payment_failed(batch.now, event.payment_id, event.reason, event.detail),
    )


def on_payment_captured(batch: Batch, event: PaymentCaptured, cause: Envelope) -> None:
    batch.apply(
        event.order_id,
        cause,
        lambda order: order.payment_captured(batch.now, event.payment_id, event.amount_fen),
    )


def on_payment_voided(batch: Batch, event: PaymentVoided, cause: Envelope) -> None:
    batch.apply(
        event.order_id,
        cause,
        lambda order: order.payment_voided(batch.now, event.payment_id, event.amount_fen, late=event.late),
    )


def on_payment_refunded(batch: Batch, event: PaymentRefunded, cause: Envelope) -> None:
    batch.apply(
        event.order_id,
        cause,
        lambda order: order.payment_refunded(
            batch.now,
            event.payment_id,
            event.refund_id,
            event.amount_fen,
            refunded_total_fen=event.refunded_total_fen,
            captured_fen=event.captured_fen,
            reason=event.reason,
        ),
    )


def on_codes_assigned(batch: Batch, event: CodesAssigned, cause: Envelope) -> None:
    """Keep the codes of the order's virtual lines (sealed) for its buyer to read."""
    batch.apply(event.order_id, cause, lambda order: order.codes_assigned(batch.now, event.lines))


def on_product_upserted(batch: Batch, event: ProductUpserted, _cause: Envelope) -> None:
    batch.catalog[event.sku] = CatalogItem(
        sku=event.sku,
        name=event.name,
        merchant_id=event.merchant_id,
        kind=event.kind,
        price_fen=event.price_fen,
        active=event.active,
        max_per_order=event.max_per_order,
        price_tiers=tuple(event.price_tiers),
        description=event.description,
        category=event.category,
        attributes=dict(event.attributes),
        payment_methods=frozenset(event.payment_methods),
        slots=tuple(event.slots),
    )


def on_merchant_upserted(batch: Batch, event: MerchantUpserted, _cause: Envelope) -> None:
    batch.merchants[event.merchant_id] = MerchantTerms(
        merchant_id=event.merchant_id,
        payment_methods=frozenset(event.payment_methods),
        status=event.status,
        reason=event.reason,
    )


def on_coupon_upserted(batch: Batch, event: CouponUpserted, _cause: Envelope) -> None:
    batch.coupons[event.code] = CouponTerms(
        code=event.code,
        merchant_id=event.merchant_id,
        discount=event.discount,
        value=event.value,
        valid_from=event.valid_from,
        valid_until=event.valid_until,
        min_spend_fen=event.min_spend_fen,
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
        await tx.upsert_merchants(list(batch.merchants.values()))
        tx.mark_applied([d.envelope.id for d in fresh])
        tx.emit(batch.outgoing)
    service.watch.changed(batch.changed)


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
    service.watch.changed([order.order_id])
    log.info("deadline_passed", order_id=order.order_id, reason=order.reason)
    return True


HANDLERS = (
    Handlers[Batch]()
    .on(StockReserved, on_stock_reserved)
    .on(StockRejected, on_stock_rejected)
    .on(FraudScored, on_fraud_scored)
    .on(PaymentPending, on_payment_pending)
    .on(PaymentAuthorized, on_payment_authorized)
    .on(PaymentFailed, on_payment_failed)
    .on(PaymentCaptured, on_payment_captured)
    .on(PaymentVoided, on_payment_voided)
    .on(PaymentRefunded, on_payment_refunded)
    .on(ProductUpserted, on_product_upserted)
    .on(MerchantUpserted, on_merchant_upserted)
    .on(CodesAssigned, on_codes_assigned)
)
