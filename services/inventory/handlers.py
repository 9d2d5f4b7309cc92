"""Use cases of the inventory service: maintain the catalog, reserve and settle stock for orders."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from services.inventory.domain import (
    DEFAULT_MAX_HOLD,
    Changes,
    Coupon,
    CouponBook,
    CouponClaim,
    CouponTerms,
    Ledger,
    Listing,
    Merchant,
    MerchantAction,
    MerchantQuality,
    NotAService,
    NotVirtual,
    Product,
    ProductDetails,
    QualityBook,
    QualityRules,
    QualitySuspension,
    RecommendationList,
    RecommendationSource,
    Reservation,
    ReservationStatus,
    SkuSales,
    Slot,
    SlotKey,
    SlotPlan,
    StatusChange,
    StockDelta,
    Subscription,
    already_pooled,
    back_in_stock,
    check_room_for_a_slot,
    checked_webhook_url,
    co_purchase_scores,
    committed_virtual_lines,
    last_automatic_suspension,
    low_stock_moves,
    parse_codes,
    record_sales,
    upcoming,
)
from services.inventory.store import InventoryStore, Purchase, StockTransaction
from shared.auth import Principal, Role
from shared.clock import Clock, utc_now
from shared.contracts import (
    AfterSalesRequested,
    AssignedCodes,
    BackInStock,
    CodesAssigned,
    Envelope,
    Event,
    LowStock,
    OrderCancelled,
    OrderConfirmed,
    OrderEvent,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    OrderReviewed,
    PaymentMethod,
    ProductKind,
    RefundRequested,
    ReservationEndReason,
    StockLine,
    StockRejectReason,
)
from shared.errors import retry_transient
from shared.handlers import Handlers, Replies
from shared.kafka import Delivery, new_envelope, reply_to
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
    # The limits past which a merchant is suspended automatically (see the quality section).
    quality_rules: QualityRules = field(default_factory=QualityRules)


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


class PaymentMethodsNotAccepted(ValueError):
    """A product names payment methods its merchant does not accept."""


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
            events = await _store_move(tx, existing, merchant, service.clock())
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


async def _store_move(
    tx: StockTransaction, existing: Merchant, merchant: Merchant, now: datetime
) -> list[Event]:
    """Store a merchant moved to a new status (by an admin or by the quality rules); the events that
    announce it: the merchant, and each product it keeps active when it starts or stops selling."""
    await tx.put_merchant(merchant)
    events: list[Event] = [merchant.upserted()]
    if merchant.sells != existing.sells:
        # Products the merchant deactivated itself were never listed and stay as they are.
        products = [p for p in await tx.products_of(merchant.merchant_id) if p.active]
        events += await _product_announcements(tx, products, merchant.sells, now)
    return events


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
                _refuse_stock_without_codes(details.kind, command.sku, command.available)
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
            beyond = details.methods_beyond(merchant)
            if beyond:
                raise PaymentMethodsNotAccepted(
                    f"merchant {merchant.merchant_id} does not accept {', '.join(beyond)}: a product's "
                    f"payment methods are some of its merchant's ({', '.join(merchant.accepted_methods)})"
                )
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
            _refuse_stock_without_codes(product.kind, sku, add)
            if product.kind is ProductKind.SERVICE:
                raise StockIsInSlots(
                    f"{sku} is a service: its stock is its slots' capacity; change a slot with "
                    f"PUT /v1/products/{sku}/slots/{{slot_id}}"
                )
            # The same guarded increment as a reservation's: a concurrent reservation either lands
            # first (and this decides on it after a retry) or conflicts, never lost or overwritten.
            changed = await save_stock_changes(tx, {sku: product.stock_change(add)}, correlation_id=None)
            return changed[sku]

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


# --- virtual goods: code pools -------------------------------------------------------------------


@dataclass(frozen=True)
class CodesAdded:
    added: int
    product: Product


def _refuse_stock_without_codes(kind: ProductKind, sku: str, add: int) -> None:
    # Every sellable unit of a virtual product is a code in its pool; units added without one would
    # be sold with no code to deliver. Taking units away is safe: the codes stay unsold.
    if kind is ProductKind.VIRTUAL and add > 0:
        raise NotVirtual(
            f"{sku} is virtual: its stock is its pool of codes; add codes with POST /v1/products/{sku}/codes"
        )


async def add_codes(service: Inventory, caller: Principal, sku: str, text: str) -> CodesAdded:
    """Add a virtual product's codes (one per line) to its pool, each an available unit: all of
    them or, when one is refused, none.

    Raises InvalidCodes (DuplicateCodes naming the lines that repeat a code of the upload or of the
    pool), UnknownProduct, NotPermitted and NotVirtual; nothing changes then. The codes are stored
    sealed and never logged or answered."""
    codes = parse_codes(text)

    async def write() -> CodesAdded:
        async with service.store.transaction(SERVICE) as tx:
            product = (await tx.products([sku])).get(sku)
            if product is None:
                raise UnknownProduct(f"no product {sku}")
            _authorize(caller, product.merchant_id, f"add codes to {sku}")
            if product.kind is not ProductKind.VIRTUAL:
                raise NotVirtual(f"{sku} is {product.kind}: only a virtual product has a pool of codes")
            already_pooled(codes, await tx.pooled_codes(sku, [c.code for c in codes]))
            await tx.add_codes(sku, [c.code for c in codes])
            # Through the stock path a restock takes: each code is a unit, added without a race to
            # a reservation, and the product's back-in-stock subscribers are told.
            after = await save_stock_changes(tx, {sku: product.stock_change(len(codes))}, correlation_id=None)
            return CodesAdded(len(codes), after[sku])

    added = await retry_transient(write)
    log.info(
        "codes_added",
        sku=sku,
        added=added.added,
        available=added.product.available,
        by_role=caller.role.value,
        by_merchant=caller.merchant_id,
    )
    return added


async def _assign_codes(tx: StockTransaction, batch: StockBatch, deliveries: Sequence[Delivery]) -> None:
    """Give each order this batch committed one code per unit of its virtual lines, and announce
    them (CodesAssigned, the codes sealed as stored) in reply to its confirmation."""
    wanted = committed_virtual_lines(batch.ledger.changes(), batch.ledger.products)
    if not wanted:
        return
    confirmations = {
        d.event.order_id: (d.event, d.envelope)
        for d in reversed(deliveries)
        if isinstance(d.event, OrderConfirmed)
    }
    for order_id, lines in wanted.items():
        confirmed, cause = confirmations[order_id]
        assigned = []
        for line in lines:
            sealed = await tx.assign_codes(line.sku, order_id, line.quantity)
            if len(sealed) < line.quantity:
                # Only when stock was added to the product without codes (before virtual stock
                # came only from codes): the order is paid, so it gets what there is.
                log.error(
                    "codes_short", order_id=order_id, sku=line.sku, wanted=line.quantity, got=len(sealed)
                )
            if sealed:
                assigned.append(AssignedCodes(sku=line.sku, sealed_codes=sealed))
        if assigned:
            event = CodesAssigned(order_id=order_id, customer_id=confirmed.customer_id, lines=assigned)
            batch.replies.reply(cause, [event])


# --- stock moved outside orders: back in stock, low stock ---------------------------------------


async def save_stock_changes(
    tx: StockTransaction, stock: Mapping[str, StockDelta], *, correlation_id: str | None
) -> dict[str, Product]:
    """Move stock outside any order (a restock, a correction, uploaded codes) within `tx`, and
    announce what that causes in the same write: BackInStock to the product's subscribers when it
    went from nothing sellable to some (their subscriptions used up, so each is told once), LowStock
    when it fell to or below its threshold. The changed products as stored after the change.

    Raises StockConflict (from `save`) when a delta would take the stock below zero."""
    before = await tx.products(stock)
    await tx.save(Changes(stock=stock, created=[], moved_from_held=[]))
    after = await tx.products(stock)
    cause = str(uuid.uuid4())
    for sku, product in after.items():
        announced = back_in_stock(product, before[sku].available, await tx.subscriptions(sku))
        for event, used_up in announced:
            await tx.end_subscriptions(used_up)
            tx.emit([_back_in_stock_envelope(event, used_up, correlation_id)])
        if announced:
            log.info("back_in_stock", sku=sku, subscribers=sum(len(chunk) for _, chunk in announced))
    await note_low_stock(tx, list(after.values()), cause, correlation_id=correlation_id)
    return after


async def note_low_stock(
    tx: StockTransaction, products: Sequence[Product], cause: str, *, correlation_id: str | None = None
) -> None:
    """Store the low-stock flags `products`' stock moves change and announce LowStock for each product
    that fell to or below its threshold (once per dip). `cause` makes the events' ids: the same cause
    announces the same events."""
    moves = low_stock_moves(products)
    if not moves:
        return
    await tx.mark_low_stock({product.sku: product.low_stock_notified for product, _ in moves})
    for product, event in moves:
        if event is None:
            continue
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{SERVICE}/{LowStock.TYPE}/{product.sku}/{cause}"))
        tx.emit(
            [
                new_envelope(
                    event,
                    source=SERVICE,
                    correlation_id=correlation_id or event_id,
                    event_id=event_id,
                )
            ]
        )


def _back_in_stock_envelope(
    event: BackInStock, used_up: Sequence[Subscription], correlation_id: str | None
) -> Envelope:
    # From the subscriptions it uses up: deciding the same restock again announces the same event,
    # and a customer who subscribes again after being told gets a new one next time.
    name = f"{SERVICE}/{BackInStock.TYPE}/" + ",".join(sorted(s.subscription_id for s in used_up))
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    return new_envelope(event, source=SERVICE, correlation_id=correlation_id or event_id, event_id=event_id)


class ProductInStock(ValueError):
    """A back-in-stock subscription to a product that can be ordered now."""


async def subscribe_back_in_stock(service: Inventory, caller: Principal, sku: str) -> bool:
    """Subscribe the calling customer to be told once when the out-of-stock `sku` is back; True when
    new, False when the customer was subscribed already.

    Raises NotPermitted for anyone but a customer, UnknownProduct, and ProductInStock when the product
    has sellable units now (it can be ordered: there is nothing to wait for)."""
    if caller.role is not Role.CUSTOMER:
        raise NotPermitted("only a customer subscribes to back-in-stock notices, for themselves")

    async def write() -> bool:
        async with service.store.transaction(SERVICE) as tx:
            product = (await tx.products([sku])).get(sku)
            if product is None:
                raise UnknownProduct(f"no product {sku}")
            if product.available > 0:
                raise ProductInStock(
                    f"{sku} is in stock ({product.available} can be ordered now): "
                    "there is nothing to wait for"
                )
            return await tx.subscribe(Subscription(sku, caller.subject, str(uuid.uuid4())))

    return await retry_transient(write)


async def unsubscribe_back_in_stock(service: Inventory, caller: Principal, sku: str) -> bool:
    """Remove the calling customer's back-in-stock subscription to `sku`; False when there was none."""
    if caller.role is not Role.CUSTOMER:
        raise NotPermitted("only a customer subscribes to back-in-stock notices, for themselves")

    async def write() -> bool:
        async with service.store.transaction(SERVICE) as tx:
            return await tx.unsubscribe(sku, caller.subject)

    return await retry_transient(write)


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


# --- coupons -------------------------------------------------------------------------------------


class CouponTaken(ValueError):
    """The code is another merchant's coupon."""


@dataclass(frozen=True)
class PutCoupon:
    code: str
    terms: CouponTerms


@dataclass(frozen=True)
class CouponPut:
    coupon: Coupon
    created: bool


async def upsert_coupon(
    service: Inventory, caller: Principal, command: PutCoupon, correlation_id: str | None
) -> CouponPut:
    """Create a coupon with all its uses left, or change an existing one's terms and keep the uses its
    orders hold and used; announce it either way (CouponUpserted).

    Raises NotPermitted unless the caller acts for the coupon's merchant, UnknownMerchant, CouponTaken
    when the code is another merchant's coupon and CouponUsesConflict when the total would be below
    the uses used and held; nothing changes then."""
    terms = command.terms
    _authorize(caller, terms.merchant_id, f"write coupons of merchant {terms.merchant_id}")

    async def write() -> CouponPut:
        async with service.store.transaction(SERVICE) as tx:
            existing = (await tx.coupons([command.code])).get(command.code)
            if existing is not None and existing.terms.merchant_id != terms.merchant_id:
                # Said the same way to everyone: whose it is stays the owner's business.
                raise CouponTaken(f"coupon code {command.code} is taken; choose another code")
            if await tx.merchant(terms.merchant_id) is None:
                raise UnknownMerchant(f"no merchant {terms.merchant_id}")
            coupon = Coupon.create(command.code, terms) if existing is None else existing.edited(terms)
            stored = await tx.put_coupon(coupon, existing)
            tx.emit([_announcement(stored.upserted(), correlation_id)])
        return CouponPut(stored, created=existing is None)

    # The counters are also moved by the order consumer's reservations.
    put = await retry_transient(write)
    log.info(
        "coupon_written",
        code=command.code,
        merchant_id=terms.merchant_id,
        created=put.created,
        by_role=caller.role.value,
    )
    return put


async def coupons_of(service: Inventory, caller: Principal, merchant_id: str | None) -> list[Coupon]:
    """One merchant's coupons (for that merchant or an admin), or every coupon (an admin only)."""
    if merchant_id is None:
        if not caller.is_admin:
            raise NotPermitted("only an admin may list every merchant's coupons: give merchant_id")
    else:
        _authorize(caller, merchant_id, f"list the coupons of merchant {merchant_id}")
    return await service.store.list_coupons(merchant_id)


async def coupon_for(service: Inventory, caller: Principal, code: str) -> Coupon | None:
    """The coupon with its uses, for its merchant or an admin; None for anyone else too, so that
    codes cannot be tried out."""
    coupon = await service.store.get_coupon(code)
    if coupon is None or not caller.acts_for_merchant(coupon.terms.merchant_id):
        return None
    return coupon


def _announcement(event: Event, correlation_id: str | None) -> Envelope:
    return new_envelope(event, source=SERVICE, correlation_id=correlation_id or str(uuid.uuid4()))


# --- reactions to order events -------------------------------------------------------------------


@dataclass
class StockBatch:
    """A consumed batch decided in memory: the stock and reservations it touches, and its replies."""

    ledger: Ledger
    replies: Replies
    signals: Signals = field(default_factory=lambda: Signals())


def on_order_placed(batch: StockBatch, event: OrderPlaced, cause: Envelope) -> None:
    """Hold the order's stock, and a use of its coupon, for as long as it may be paid, or reject it
    naming the shortages and substitutes, or why the coupon is not to be had."""
    coupon = None
    if event.coupon is not None:
        coupon = CouponClaim(event.coupon.code, event.coupon.merchant_id, event.customer_id)
    batch.replies.reply(
        cause,
        batch.ledger.reserve(event.order_id, event.lines, cause.correlation_id, event.hold_until, coupon),
    )


def on_order_ended(batch: StockBatch, event: OrderRejected | OrderCancelled, cause: Envelope) -> None:
    """Give the order's held stock back."""
    batch.replies.reply(cause, batch.ledger.release(event.order_id, event.reason))


def on_order_confirmed(batch: StockBatch, event: OrderConfirmed, cause: Envelope) -> None:
    """Let the order's stock leave for good: what it holds, or, if its reservation ran out before the
    payment came, the same units taken again; when they are gone, say the reservation was lost."""
    batch.replies.reply(cause, batch.ledger.confirm(event.order_id, event.lines, cause.correlation_id))
    reservation = batch.ledger.reservations.get(event.order_id)
    if reservation is not None and reservation.status is ReservationStatus.COMMITTED:
        # A sale, for the merchants' quality and the recommendations; a lost reservation is none.
        batch.signals.add(event, cause)


async def handle_batch(service: Inventory, deliveries: Sequence[Delivery]) -> None:
    """Decide a consumed batch against the stock it touches and store it all in one transaction."""
    fresh = await service.store.unapplied(SERVICE, HANDLERS.relevant(deliveries))
    if not fresh:
        return
    async with service.store.transaction(SERVICE) as tx:
        batch = await _decide(service, tx, fresh)
        changes = batch.ledger.changes()
        await tx.save(changes)
        await _assign_codes(tx, batch, fresh)
        tx.emit(batch.replies.outgoing)
        await note_low_stock(tx, [batch.ledger.products[sku] for sku in changes.stock], fresh[0].envelope.id)
        suspensions = await count_signals(service, tx, batch.signals, batch.ledger.now)
        tx.mark_applied([d.envelope.id for d in fresh])
    for suspension in suspensions:
        log.warning(
            "merchant_suspended_by_quality_rules",
            merchant_id=suspension.merchant.merchant_id,
            reason=suspension.suspended.reason,
        )
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
    claims = [
        (d.event.coupon.code, d.event.customer_id)
        for d in deliveries
        if isinstance(d.event, OrderPlaced) and d.event.coupon is not None
    ]
    coupons = await _coupon_book(tx, reservations, claims)
    now = service.clock()
    batch = _dispatch(service, deliveries, products, reservations, merchants, coupons, now, slots)
    if batch.ledger.wanted_substitutes:
        # Substitutes need the short products' category (or merchant) neighbours and their merchants;
        # reading them only when an order is short keeps the common batch at three reads. The batch
        # is then decided again, with them.
        candidates = await tx.substitute_candidates(batch.ledger.wanted_substitutes, exclude=set(products))
        products = {**{p.sku: p for p in candidates}, **products}
        unread = {p.merchant_id for p in candidates} - merchants.keys()
        if unread:
            merchants = {**merchants, **await tx.merchants(unread)}
        batch = _dispatch(service, deliveries, products, reservations, merchants, coupons, now, slots)
    return batch


async def _coupon_book(
    tx: StockTransaction, reservations: dict[str, Reservation], claims: Sequence[tuple[str, str]]
) -> CouponBook | None:
    """The coupons the batch's new orders name and its reservations hold uses of, those uses, and
    which of the new orders' customers used their coupon already; None (no reads) when the batch
    touches no coupon, which is the common case."""
    # Only a held use moves, or one given back on expiry that a late payment takes again.
    with_coupon = {
        order_id: r.coupon
        for order_id, r in reservations.items()
        if r.coupon is not None and (r.status is ReservationStatus.HELD or r.expired)
    }
    if not claims and not with_coupon:
        return None
    uses = await tx.coupon_uses(with_coupon) if with_coupon else {}
    coupons = await tx.coupons({code for code, _ in claims} | set(with_coupon.values()))
    redeemed = await tx.redeemed(claims) if claims else set()
    return CouponBook.open(coupons, uses, redeemed)


def _dispatch(
    service: Inventory,
    deliveries: Sequence[Delivery],
    products: dict[str, Product],
    reservations: dict[str, Reservation],
    merchants: dict[str, Merchant],
    coupons: CouponBook | None,
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
        coupons=coupons,
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
        coupons = await _coupon_book(tx, reservations, claims=())
        ledger = Ledger.open(
            products, reservations, now=now, ttl=service.reservation_ttl, slots=slots, coupons=coupons
        )
        released = ledger.expire()
        changes = ledger.changes()
        await tx.save(changes)
        # Released units may lift a product above its low-stock threshold again.
        await note_low_stock(tx, [ledger.products[sku] for sku in changes.stock], f"expiry/{now.isoformat()}")
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


# --- merchant quality and co-purchases -----------------------------------------------------------

Signal = OrderConfirmed | RefundRequested | AfterSalesRequested | OrderReviewed


@dataclass
class Signals:
    """A batch's sales and quality signals in delivery order, counted once the stock is decided."""

    events: list[Signal] = field(default_factory=list)
    # What the suspensions a batch decides answer to: its last signal.
    last_cause: Envelope | None = None

    def add(self, event: Signal, cause: Envelope) -> None:
        self.events.append(event)
        self.last_cause = cause


def on_quality_signal(
    batch: StockBatch, event: RefundRequested | AfterSalesRequested | OrderReviewed, cause: Envelope
) -> None:
    """A refund, a complaint or a review: counted towards the order's merchants' quality."""
    batch.signals.add(event, cause)


async def count_signals(
    service: Inventory, tx: StockTransaction, signals: Signals, now: datetime
) -> list[QualitySuspension]:
    """Count the batch's signals into the merchants' quality and the co-purchases, in the batch's
    transaction; suspend each approved merchant whose judged counts now cross a limit, as an admin's
    suspension would, with the limits crossed as the reason. Returns those suspensions."""
    if not signals.events or signals.last_cause is None:
        return []
    orders = await tx.order_signals({event.order_id for event in signals.events})
    merchant_ids = {m for o in orders.values() for m in o.merchants} | {
        line.merchant_id for e in signals.events if isinstance(e, OrderConfirmed) for line in e.lines
    }
    book = QualityBook.open(
        orders, await tx.merchant_qualities(merchant_ids), await tx.merchants(merchant_ids), now
    )
    sold: list[OrderConfirmed] = []
    for event in signals.events:
        match event:
            case OrderConfirmed():
                if event.order_id not in book.orders:
                    sold.append(event)
                book.confirmed(event.order_id, [line.merchant_id for line in event.lines])
            case RefundRequested():
                book.refund_requested(event.order_id)
            case AfterSalesRequested():
                book.after_sales_requested(event.order_id, event.case_id, event.merchant_id)
            case OrderReviewed():
                book.reviewed(event.order_id, event.merchant_id, event.rating)
    await tx.save_quality(book.changed_orders(), book.changes())
    if sold:
        skus = {line.sku for order in sold for line in order.lines}
        sales = record_sales(await tx.sku_sales(skus), [[line.sku for line in o.lines] for o in sold])
        purchases = [
            Purchase(order.customer_id, sku)
            for order in sold
            for sku in dict.fromkeys(line.sku for line in order.lines)
        ]
        await tx.save_sales(list(sales.values()), purchases)
    suspensions = book.suspensions(service.quality_rules)
    for suspension in suspensions:
        events = await _store_move(tx, suspension.merchant, suspension.suspended, service.clock())
        tx.emit([reply_to(signals.last_cause, event, source=SERVICE) for event in events])
    return suspensions


# --- merchant quality and recommendations: reads -------------------------------------------------


@dataclass(frozen=True)
class QualityView:
    """A merchant's quality as the rules see it now."""

    merchant: Merchant
    quality: MerchantQuality
    rules: QualityRules

    @property
    def crossed(self) -> list[str]:
        """The limits its judged counts cross, judged as the rules would."""
        return self.rules.crossed(self.quality.judged)

    @property
    def at_risk(self) -> bool:
        """Its judged rates cross a limit, even if too few orders or reviews came in to judge them."""
        return bool(self.rules.over_limits(self.quality.judged))

    @property
    def automatic_suspension(self) -> StatusChange | None:
        return last_automatic_suspension(self.merchant)


def _quality_view(service: Inventory, merchant: Merchant, quality: MerchantQuality | None) -> QualityView:
    stored = quality or MerchantQuality(merchant.merchant_id)
    return QualityView(merchant, stored.as_of(merchant), service.quality_rules)


async def merchant_quality(service: Inventory, caller: Principal, merchant_id: str) -> QualityView:
    """One merchant's quality counts, rates, the limits and whether the rules suspended it: for that
    merchant and admins. Raises NotPermitted or UnknownMerchant."""
    _authorize(caller, merchant_id, f"see the quality of merchant {merchant_id}")
    merchant = await service.store.get_merchant(merchant_id)
    if merchant is None:
        raise UnknownMerchant(f"no merchant {merchant_id}")
    return _quality_view(service, merchant, await service.store.merchant_quality(merchant_id))


async def merchants_quality(service: Inventory, caller: Principal, *, at_risk: bool) -> list[QualityView]:
    """Every merchant with quality counts (only those at risk, with `at_risk`), by id. Admin only."""
    if not caller.is_admin:
        raise NotPermitted("only an admin may list the merchants' quality")
    merchants = {m.merchant_id: m for m in await service.store.list_merchants()}
    views = [
        _quality_view(service, merchants[q.merchant_id], q)
        for q in await service.store.merchant_qualities_all()
        if q.merchant_id in merchants
    ]
    return [view for view in views if view.at_risk or not at_risk]


@dataclass(frozen=True)
class Recommended:
    listing: Listing
    source: RecommendationSource
    score: int


# How many ranked candidates are read per wanted recommendation: some will not be sellable.
CANDIDATES_PER_PICK = 3


async def _fill(
    service: Inventory,
    picks: RecommendationList,
    ranked: Sequence[tuple[str, int]],
    source: RecommendationSource,
) -> None:
    unknown = [sku for sku, _ in ranked if sku not in picks.listings]
    if unknown:
        found = await service.store.listings(unknown)
        picks.listings.update(found)
        picks.approved_merchants |= await service.store.approved_merchants(
            {listing.merchant_id for listing in found.values()}
        )
    picks.add(ranked, source)


def _recommended(picks: RecommendationList) -> list[Recommended]:
    return [Recommended(picks.listings[r.sku], r.source, r.score) for r in picks.picked]


async def also_bought(service: Inventory, sku: str, limit: int) -> list[Recommended]:
    """What was bought most with `sku` and can be bought now. Raises UnknownProduct."""
    if await service.store.get_product(sku) is None:
        raise UnknownProduct(f"no product {sku}")
    sales = (await service.store.sales([sku])).get(sku) or SkuSales(sku)
    picks = RecommendationList(limit, {}, set(), exclude={sku})
    await _fill(service, picks, sales.bought_with, RecommendationSource.BOUGHT_TOGETHER)
    return _recommended(picks)


async def recommendations_for(
    service: Inventory, caller: Principal, customer_id: str, limit: int
) -> list[Recommended]:
    """Products for a customer, none of which they bought and all of which can be bought now: those
    bought with what they bought (most often first), then the best sellers of the categories they
    bought from, then the best sellers overall. For that customer and admins; raises NotPermitted."""
    if not (caller.is_admin or (caller.role is Role.CUSTOMER and caller.subject == customer_id)):
        raise NotPermitted(f"only customer {customer_id} or an admin may see their recommendations")
    bought = await service.store.purchases(customer_id)
    picks = RecommendationList(limit, {}, set(), exclude=set(bought))
    wanted = limit * CANDIDATES_PER_PICK
    scores = co_purchase_scores(bought, await service.store.sales(bought))
    await _fill(service, picks, scores[:wanted], RecommendationSource.BOUGHT_TOGETHER)
    if not picks.full and bought:
        categories = {
            listing.category
            for listing in (await service.store.listings(bought)).values()
            if listing.category
        }
        if categories:
            ranked = await service.store.best_sellers(wanted + len(bought), categories)
            await _fill(service, picks, ranked, RecommendationSource.CATEGORY_BEST_SELLER)
    if not picks.full:
        ranked = await service.store.best_sellers(wanted + len(bought))
        await _fill(service, picks, ranked, RecommendationSource.BEST_SELLER)
    return _recommended(picks)


HANDLERS = (
    Handlers[StockBatch]()
    .on(OrderPlaced, on_order_placed)
    .on(OrderRejected, on_order_ended)
    .on(OrderCancelled, on_order_ended)
    .on(OrderConfirmed, on_order_confirmed)
    .on(RefundRequested, on_quality_signal)
    .on(AfterSalesRequested, on_quality_signal)
    .on(OrderReviewed, on_quality_signal)
)
