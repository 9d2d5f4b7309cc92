"""Use cases of the inventory service: maintain the catalog, reserve and settle stock for orders."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from services.inventory.domain import (
    DEFAULT_MAX_HOLD,
    Changes,
    Ledger,
    Merchant,
    MerchantAction,
    NotAService,
    Product,
    ProductDetails,
    Reservation,
    ReservationStatus,
    Slot,
    SlotKey,
    SlotPlan,
    check_room_for_a_slot,
    checked_webhook_url,
    upcoming,
)
from services.inventory.store import InventoryStore, StockTransaction
from shared.auth import Principal
from shared.clock import Clock, utc_now
from shared.contracts import (
    Envelope,
    Event,
    OrderCancelled,
    OrderConfirmed,
    OrderEvent,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    PaymentMethod,
    ProductKind,
    ReservationEndReason,
    StockLine,
    StockRejectReason,
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
    # How long a reservation holds at least; its order's deadline may ask for longer, up to max_hold.
    reservation_ttl: timedelta
    clock: Clock = utc_now
    max_hold: timedelta = DEFAULT_MAX_HOLD
    # Merchants' webhooks must be https in prod; a local stack may notify plain http.
    allow_http_webhooks: bool = False


# --- catalog -------------------------------------------------------------------------------------


class UnknownMerchant(LookupError):
    """No merchant has this id (a product named it, or an admin decided on it)."""


class RegistrationIncomplete(ValueError):
    """A merchant's own registration lacks what vetting needs."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"a merchant registering itself must give {' and '.join(missing)}")
        self.missing = missing


class UnknownProduct(LookupError):
    """No product has this sku."""


class MerchantConflict(ValueError):
    """The merchant id is taken by a merchant with other details."""


class NotPermitted(PermissionError):
    """The caller acts neither for the merchant concerned nor as an admin."""


class ProductMoveRefused(ValueError):
    """A merchant tried to hand one of its products to another merchant; only an admin may."""


class KindChangeRefused(ValueError):
    """A product cannot become or stop being a service while it holds stock of the other kind: a
    service's stock is its slots' seats, any other product's its units."""


class StockIsInSlots(ValueError):
    """Units were added to or taken from a service product, whose stock is its slots' seats."""


class UnknownSlot(LookupError):
    """The service product has no slot with this id."""


@dataclass(frozen=True)
class PutProduct:
    sku: str
    details: ProductDetails
    # The first stock of a new product; an existing product keeps the stock it has.
    available: int = 0


@dataclass(frozen=True)
class ProductPut:
    product: Product
    created: bool


@dataclass(frozen=True)
class Registration:
    """What a merchant registers with: its vetting details (licence and contact), where its
    notifications go and the payment methods it accepts."""

    merchant_id: str
    name: str
    payment_methods: frozenset[PaymentMethod]
    licence_number: str | None = None
    # Personal data: stored sealed, never published, never logged.
    contact: str | None = None
    webhook_url: str | None = None

    def merchant(self) -> Merchant:
        return Merchant(
            self.merchant_id,
            self.name,
            self.payment_methods,
            webhook_url=self.webhook_url,
            licence_number=self.licence_number,
            contact=self.contact,
        )


@dataclass(frozen=True)
class MerchantEdit:
    """A change of a merchant's name, payment methods and (when `replaces_webhook`) webhook URL."""

    merchant_id: str
    name: str
    payment_methods: frozenset[PaymentMethod]
    webhook_url: str | None = None
    replaces_webhook: bool = False


@dataclass(frozen=True)
class MerchantPut:
    merchant: Merchant
    created: bool


def _authorize(caller: Principal, merchant_id: str, action: str) -> None:
    if not caller.acts_for_merchant(merchant_id):
        raise NotPermitted(f"only merchant {merchant_id} or an admin may {action}")


def _webhook(service: Inventory, url: str | None) -> str | None:
    return None if url is None else checked_webhook_url(url, allow_http=service.allow_http_webhooks)


async def register_merchant(
    service: Inventory, caller: Principal, registration: Registration, correlation_id: str | None
) -> MerchantPut:
    """Register a merchant and announce it (MerchantUpserted).

    A registration starts PENDING until an admin approves it. The one exception is an admin
    creating a merchant without a licence number: the admin vouches for it (vetted outside this
    API), so it starts APPROVED and its history says so. A merchant registering itself must give its
    licence number and contact (RegistrationIncomplete). The very same registration again changes
    nothing (`created` False); another one under a taken id is a MerchantConflict."""
    merchant_id = registration.merchant_id
    _authorize(caller, merchant_id, f"register merchant {merchant_id}")
    missing = [
        name
        for name, value in (
            ("licence_number", registration.licence_number),
            ("contact", registration.contact),
        )
        if value is None
    ]
    if missing and not caller.is_admin:
        raise RegistrationIncomplete(missing)
    candidate = replace(registration.merchant(), webhook_url=_webhook(service, registration.webhook_url))
    vouched = caller.is_admin and registration.licence_number is None
    action = MerchantAction.CREATE_APPROVED if vouched else MerchantAction.REGISTER

    async def write() -> MerchantPut:
        async with service.store.transaction(SERVICE) as tx:
            existing = await tx.merchant(merchant_id)
            if existing is not None and existing.same_registration(candidate):
                return MerchantPut(existing, created=False)
            if existing is not None:
                raise MerchantConflict(
                    f"merchant {merchant_id} is already registered as {existing.name!r} with other "
                    f"details; change it with PUT /v1/merchants/{merchant_id}"
                )
            merchant = candidate.created(action, caller.subject, service.clock())
            await tx.put_merchant(merchant)
            tx.emit([_announcement(merchant.upserted(), correlation_id)])
        return MerchantPut(merchant, created=True)

    put = await retry_transient(write)
    if put.created:
        log.info(
            "merchant_registered",
            merchant_id=merchant_id,
            status=put.merchant.status.value,
            by_role=caller.role.value,
        )
    return put


async def upsert_merchant(
    service: Inventory, caller: Principal, edit: MerchantEdit, correlation_id: str | None
) -> MerchantPut:
    """Change a merchant's name, payment methods or webhook URL, or (an admin only) create one
    APPROVED, vouched for by that admin; announce it every time, so a replica can be refreshed by
    writing the merchant again. Its status only moves through `decide_merchant`."""
    _authorize(caller, edit.merchant_id, f"change merchant {edit.merchant_id}")
    webhook_url = _webhook(service, edit.webhook_url)

    async def write() -> MerchantPut:
        async with service.store.transaction(SERVICE) as tx:
            existing = await tx.merchant(edit.merchant_id)
            if existing is None:
                if not caller.is_admin:
                    raise NotPermitted(
                        f"merchant {edit.merchant_id} is not registered: register it with "
                        "POST /v1/merchants (only an admin creates a merchant with PUT)"
                    )
                merchant = Merchant(
                    edit.merchant_id, edit.name, edit.payment_methods, webhook_url=webhook_url
                ).created(MerchantAction.CREATE_APPROVED, caller.subject, service.clock())
            else:
                merchant = replace(
                    existing,
                    name=edit.name,
                    payment_methods=edit.payment_methods,
                    webhook_url=webhook_url if edit.replaces_webhook else existing.webhook_url,
                )
            await tx.put_merchant(merchant)
            tx.emit([_announcement(merchant.upserted(), correlation_id)])
        return MerchantPut(merchant, created=existing is None)

    return await retry_transient(write)


async def decide_merchant(
    service: Inventory,
    caller: Principal,
    merchant_id: str,
    action: MerchantAction,
    reason: str,
    correlation_id: str | None,
) -> Merchant:
    """An admin approves, rejects, suspends or reinstates a merchant, recorded in its history and
    announced (MerchantUpserted). When the merchant starts or stops selling, each product it keeps
    active is announced again: delisted on suspension, relisted on approval or reinstatement.

    Raises NotPermitted for anyone but an admin, UnknownMerchant, MerchantStatusConflict when the
    action does not apply to the current status and ReasonRequired for a rejection or suspension
    without a reason; nothing changes then."""
    if not caller.is_admin:
        raise NotPermitted(f"only an admin may {action} a merchant")

    async def write() -> Merchant:
        async with service.store.transaction(SERVICE) as tx:
            existing = await tx.merchant(merchant_id)
            if existing is None:
                raise UnknownMerchant(f"no merchant {merchant_id}")
            merchant = existing.moved(action, caller.subject, service.clock(), reason)
            await tx.put_merchant(merchant)
            events: list[Event] = [merchant.upserted()]
            if merchant.sells != existing.sells:
                # Products the merchant deactivated itself were never listed and stay as they are.
                products = [p for p in await tx.products_of(merchant_id) if p.active]
                events += await _product_announcements(tx, products, merchant.sells, service.clock())
            tx.emit([_announcement(event, correlation_id) for event in events])
        return merchant

    decided = await retry_transient(write)
    log.info(
        "merchant_status_changed",
        merchant_id=merchant_id,
        action=action.value,
        status=decided.status.value,
        by_role=caller.role.value,
    )
    return decided


async def upsert_product(
    service: Inventory, caller: Principal, command: PutProduct, correlation_id: str | None
) -> ProductPut:
    """Create a product with its first stock, or change an existing one's details and keep its stock;
    announce it either way (ProductUpserted)."""
    details = command.details

    async def write() -> ProductPut:
        async with service.store.transaction(SERVICE) as tx:
            existing = (await tx.products([command.sku])).get(command.sku)
            if existing is None:
                _authorize(caller, details.merchant_id, f"add products for merchant {details.merchant_id}")
                if details.kind is ProductKind.SERVICE and command.available:
                    raise StockIsInSlots(
                        f"{command.sku} is a service: it has no units of stock, its stock is its slots' "
                        f"capacity (PUT /v1/products/{command.sku}/slots/{{slot_id}})"
                    )
                product = Product.create(command.sku, details, command.available)
            else:
                _authorize(caller, existing.merchant_id, f"change {command.sku}")
                if details.merchant_id != existing.merchant_id and not caller.is_admin:
                    raise ProductMoveRefused(
                        f"{command.sku} belongs to merchant {existing.merchant_id} and cannot move to "
                        f"merchant {details.merchant_id}; only an admin may move a product"
                    )
                await _check_kind_change(tx, existing, details.kind)
                product = existing.edited(details)
            merchant = await tx.merchant(details.merchant_id)
            if merchant is None:
                raise UnknownMerchant(f"no merchant {details.merchant_id}")
            stored = await tx.put_product(product)
            [announced] = await _product_announcements(tx, [stored], merchant.sells, service.clock())
            tx.emit([_announcement(announced, correlation_id)])
        return ProductPut(stored, created=existing is None)

    # The product document is also written by the order consumer's reservations.
    return await retry_transient(write)


async def add_stock(service: Inventory, caller: Principal, sku: str, add: int) -> Product:
    """Restock (`add` > 0) or correct downwards (`add` < 0) a product's sellable units."""

    async def write() -> Product:
        async with service.store.transaction(SERVICE) as tx:
            product = (await tx.products([sku])).get(sku)
            if product is None:
                raise UnknownProduct(f"no product {sku}")
            _authorize(caller, product.merchant_id, f"change the stock of {sku}")
            if product.kind is ProductKind.SERVICE:
                raise StockIsInSlots(
                    f"{sku} is a service: its stock is its slots' capacity; change a slot with "
                    f"PUT /v1/products/{sku}/slots/{{slot_id}}"
                )
            # The same guarded increment as a reservation's: a concurrent reservation either lands
            # first (and this decides on it after a retry) or conflicts, never lost or overwritten.
            await tx.save(Changes(stock={sku: product.stock_change(add)}, created=[], moved_from_held=[]))
            return (await tx.products([sku]))[sku]

    changed = await retry_transient(write)
    # Who by role and merchant, not by subject: a subject may be a customer's phone or e-mail.
    log.info(
        "stock_changed",
        sku=sku,
        add=add,
        available=changed.available,
        by_role=caller.role.value,
        by_merchant=caller.merchant_id,
    )
    return changed


# --- service slots -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotPut:
    slot: Slot
    created: bool


async def put_slot(
    service: Inventory, caller: Principal, sku: str, plan: SlotPlan, correlation_id: str | None
) -> SlotPut:
    """Offer a new slot of a service product, or change one's times and capacity; announce the
    product with its upcoming slots (ProductUpserted).

    Raises UnknownProduct, NotPermitted, NotAService, InvalidSlot (bad times or capacity) and
    SlotConflict (a started slot, a slot with bookings moved or cut below them, too many slots);
    nothing changes then."""

    async def write() -> SlotPut:
        async with service.store.transaction(SERVICE) as tx:
            product = await _service_product(tx, caller, sku, f"change the slots of {sku}")
            now = service.clock()
            slots = await tx.slots_of([sku])
            existing = next((s for s in slots if s.slot_id == plan.slot_id), None)
            if existing is None:
                check_room_for_a_slot(slots, now)
                slot = Slot.offered(sku, plan, now)
            else:
                slot = existing.replanned(plan, now)
            await tx.put_slot(slot, existing)
            others = [s for s in slots if s.slot_id != plan.slot_id]
            await _announce_slots(tx, product, [*others, slot], now, correlation_id)
        return SlotPut(slot, created=existing is None)

    # The slot's seats are also moved by the order consumer's reservations.
    put = await retry_transient(write)
    log.info("slot_put", sku=sku, slot_id=plan.slot_id, capacity=plan.capacity, created=put.created)
    return put


async def remove_slot(
    service: Inventory, caller: Principal, sku: str, slot_id: str, correlation_id: str | None
) -> None:
    """Withdraw a slot nobody booked and announce the product without it. Raises UnknownProduct,
    NotPermitted, NotAService, UnknownSlot, and SlotConflict when seats are taken (the slot is
    closed by setting its capacity to them instead, which keeps the bookings)."""

    async def write() -> None:
        async with service.store.transaction(SERVICE) as tx:
            product = await _service_product(tx, caller, sku, f"change the slots of {sku}")
            slots = await tx.slots_of([sku])
            slot = next((s for s in slots if s.slot_id == slot_id), None)
            if slot is None:
                raise UnknownSlot(f"{sku} has no slot {slot_id}")
            slot.check_removable()
            await tx.remove_slot(slot)
            others = [s for s in slots if s.slot_id != slot_id]
            await _announce_slots(tx, product, others, service.clock(), correlation_id)

    await retry_transient(write)
    log.info("slot_removed", sku=sku, slot_id=slot_id)


async def _service_product(tx: StockTransaction, caller: Principal, sku: str, action: str) -> Product:
    product = (await tx.products([sku])).get(sku)
    if product is None:
        raise UnknownProduct(f"no product {sku}")
    _authorize(caller, product.merchant_id, action)
    if product.kind is not ProductKind.SERVICE:
        raise NotAService(f"{sku} is a {product.kind} product: only a service product has slots")
    return product


async def _announce_slots(
    tx: StockTransaction, product: Product, slots: Sequence[Slot], now: datetime, correlation_id: str | None
) -> None:
    merchant = await tx.merchant(product.merchant_id)
    sells = merchant is not None and merchant.sells
    announced = product.upserted(merchant_sells=sells, slots=upcoming(slots, now))
    tx.emit([_announcement(announced, correlation_id)])


async def _product_announcements(
    tx: StockTransaction, products: Sequence[Product], merchant_sells: bool, now: datetime
) -> list[Event]:
    """The products as announced, each service product with its upcoming slots: an announcement
    without them would empty the gateway's slots of it."""
    services = [p.sku for p in products if p.kind is ProductKind.SERVICE]
    slots = await tx.slots_of(services) if services else []
    return [
        p.upserted(merchant_sells=merchant_sells, slots=upcoming([s for s in slots if s.sku == p.sku], now))
        for p in products
    ]


async def _check_kind_change(tx: StockTransaction, product: Product, kind: ProductKind) -> None:
    if kind is product.kind:
        return
    if product.kind is ProductKind.SERVICE and await tx.slots_of([product.sku]):
        raise KindChangeRefused(
            f"{product.sku} is a service with slots: remove them before it becomes a {kind} product"
        )
    if kind is ProductKind.SERVICE and (product.available or product.reserved):
        raise KindChangeRefused(
            f"{product.sku} holds {product.available + product.reserved} unit(s) of stock: a service's "
            "stock is its slots' seats, so take its units away before it becomes a service"
        )


def _slot_keys(lines: Iterable[OrderLine | StockLine]) -> set[SlotKey]:
    return {(line.sku, line.slot_id) for line in lines if line.slot_id is not None}


def _announcement(event: Event, correlation_id: str | None) -> Envelope:
    return new_envelope(event, source=SERVICE, correlation_id=correlation_id or str(uuid.uuid4()))


# --- reactions to order events -------------------------------------------------------------------


@dataclass
class StockBatch:
    """A consumed batch decided in memory: the stock and reservations it touches, and its replies."""

    ledger: Ledger
    replies: Replies


def on_order_placed(batch: StockBatch, event: OrderPlaced, cause: Envelope) -> None:
    """Hold the order's stock for as long as it may be paid, or reject it naming the shortages and
    substitutes."""
    batch.replies.reply(
        cause, batch.ledger.reserve(event.order_id, event.lines, cause.correlation_id, event.hold_until)
    )


def on_order_ended(batch: StockBatch, event: OrderRejected | OrderCancelled, cause: Envelope) -> None:
    """Give the order's held stock back."""
    batch.replies.reply(cause, batch.ledger.release(event.order_id, event.reason))


def on_order_confirmed(batch: StockBatch, event: OrderConfirmed, cause: Envelope) -> None:
    """Let the order's stock leave for good: what it holds, or, if its reservation ran out before the
    payment came, the same units taken again; when they are gone, say the reservation was lost."""
    batch.replies.reply(cause, batch.ledger.confirm(event.order_id, event.lines, cause.correlation_id))


async def handle_batch(service: Inventory, deliveries: Sequence[Delivery]) -> None:
    """Decide a consumed batch against the stock it touches and store it all in one transaction."""
    fresh = await service.store.unapplied(SERVICE, HANDLERS.relevant(deliveries))
    if not fresh:
        return
    async with service.store.transaction(SERVICE) as tx:
        batch = await _decide(service, tx, fresh)
        changes = batch.ledger.changes()
        await tx.save(changes)
        tx.emit(batch.replies.outgoing)
        tx.mark_applied([d.envelope.id for d in fresh])
    for reservation in _paid_without_a_hold(changes):
        # Rare and worth an operator's eye: the hold cap is shorter than orders take to be paid.
        log.warning(
            "paid_after_reservation_expired",
            order_id=reservation.order_id,
            outcome="lost" if reservation.status is ReservationStatus.REJECTED else "taken_again",
        )


def _paid_without_a_hold(changes: Changes) -> list[Reservation]:
    """Reservations settled by a confirmation that found nothing held (expired or never made)."""
    settled_at_once = [
        r
        for r in changes.created
        if r.status is ReservationStatus.COMMITTED or r.reason == StockRejectReason.RESERVATION_LOST
    ]
    return [*changes.moved_from_expired, *settled_at_once]


async def _decide(service: Inventory, tx: StockTransaction, deliveries: Sequence[Delivery]) -> StockBatch:
    order_ids = {d.event.order_id for d in deliveries if isinstance(d.event, OrderEvent)}
    reservations = await tx.reservations(order_ids)
    # A confirmation's lines too: its reservation may have expired, and the units be taken again.
    skus = {
        line.sku
        for d in deliveries
        if isinstance(d.event, OrderPlaced | OrderConfirmed)
        for line in d.event.lines
    }
    skus |= {
        line.sku for r in reservations.values() if r.status is ReservationStatus.HELD for line in r.lines
    }
    products = await tx.products(skus)
    slots = await tx.slots(
        _slot_keys(
            line
            for d in deliveries
            if isinstance(d.event, OrderPlaced | OrderConfirmed)
            for line in d.event.lines
        )
        | _slot_keys(
            line for r in reservations.values() if r.status is ReservationStatus.HELD for line in r.lines
        )
    )
    # Only an approved merchant's products are reserved: the merchants are read with the stock.
    ordered_from = {
        line.merchant_id for d in deliveries if isinstance(d.event, OrderPlaced) for line in d.event.lines
    }
    merchants = await tx.merchants(ordered_from | {p.merchant_id for p in products.values()})
    now = service.clock()
    batch = _dispatch(service, deliveries, products, reservations, merchants, now, slots)
    if batch.ledger.short_merchants:
        # Substitutes need the short merchants' other products; reading them only when an order
        # is short keeps the common batch at three reads. The batch is then decided again, with them.
        candidates = await tx.substitute_candidates(batch.ledger.short_merchants, exclude=set(products))
        products = {**{p.sku: p for p in candidates}, **products}
        batch = _dispatch(service, deliveries, products, reservations, merchants, now, slots)
    return batch


def _dispatch(
    service: Inventory,
    deliveries: Sequence[Delivery],
    products: dict[str, Product],
    reservations: dict[str, Reservation],
    merchants: dict[str, Merchant],
    now: datetime,
    slots: dict[SlotKey, Slot],
) -> StockBatch:
    ledger = Ledger.open(
        products,
        reservations,
        now=now,
        ttl=service.reservation_ttl,
        max_hold=service.max_hold,
        merchants=merchants,
        slots=slots,
    )
    batch = StockBatch(ledger, Replies(source=SERVICE))
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
        slots = await tx.slots(_slot_keys(line for r in reservations.values() for line in r.lines))
        ledger = Ledger.open(products, reservations, now=now, ttl=service.reservation_ttl, slots=slots)
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
