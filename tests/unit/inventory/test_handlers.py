"""Batches of order events through the handlers, against the in-memory store."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import count

import pytest

from services.inventory.domain import (
    MAX_STOCK,
    InvalidWebhookUrl,
    MerchantAction,
    MerchantStatusConflict,
    Product,
    ProductDetails,
    ReasonRequired,
    Reservation,
    ReservationStatus,
    StockOutOfRange,
)
from services.inventory.handlers import (
    Inventory,
    MerchantConflict,
    MerchantEdit,
    NotPermitted,
    ProductMoveRefused,
    PutProduct,
    Registration,
    RegistrationIncomplete,
    UnknownMerchant,
    UnknownProduct,
    add_stock,
    decide_merchant,
    handle_batch,
    register_merchant,
    release_expired,
    upsert_merchant,
    upsert_product,
)
from services.inventory.store import StockConflict
from shared.auth import Principal, Role
from shared.contracts import (
    Event,
    MerchantStatus,
    MerchantUpserted,
    OrderEndReason,
    PaymentMethod,
    ProductUpserted,
    ReservationEndReason,
    Shortage,
    StockCommitted,
    StockLine,
    StockRejected,
    StockRejectReason,
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
ADMIN = Principal("admin-1", Role.ADMIN)
TEA_HOUSE = Principal("m-1", Role.MERCHANT, merchant_id="m-1")
POTTERY = Principal("m-2", Role.MERCHANT, merchant_id="m-2")
SHOPPER = Principal("c-1", Role.CUSTOMER)
EVERY_METHOD = frozenset(PaymentMethod)


def details(name: str = "Longjing", merchant_id: str = "m-1", price_fen: int = 1000) -> ProductDetails:
    return ProductDetails(name=name, merchant_id=merchant_id, price_fen=price_fen)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def service() -> Inventory:
    store = InMemoryInventoryStore()
    inventory = Inventory(store=store, reservation_ttl=TTL, clock=Clock())
    await register_merchant(inventory, ADMIN, Registration("m-1", "West Lake Tea", EVERY_METHOD), None)
    await register_merchant(inventory, ADMIN, Registration("m-2", "Jingdezhen Porcelain", EVERY_METHOD), None)
    for sku, available in [("TEA", 5), ("CUP", 1), ("POT", 9)]:
        await upsert_product(
            inventory, ADMIN, PutProduct(sku=sku, details=details(sku), available=available), None
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


# --- holding stock as long as the order may be paid, and paid after it ran out ----------------------


def clock_of(service: Inventory) -> Clock:
    assert isinstance(service.clock, Clock)
    return service.clock


async def expire(service: Inventory, after: timedelta = TTL) -> None:
    """Let the reservations held at T0 run out, as the sweeper does."""
    clock_of(service).now = T0 + after
    assert await release_expired(service) >= 1


async def test_stock_is_held_until_the_orders_own_deadline_not_just_the_ttl(service: Inventory) -> None:
    hold_until = T0 + timedelta(hours=1)
    await handle_batch(service, [deliver(placed("o-1", line("TEA", 2), hold_until=hold_until))])

    [reserved] = emitted(service)
    assert isinstance(reserved, StockReserved) and reserved.expires_at == hold_until
    clock_of(service).now = T0 + TTL
    assert await release_expired(service) == 0, "the order may still be reviewed and paid"
    clock_of(service).now = hold_until
    assert await release_expired(service) == 1


async def test_no_order_holds_stock_past_the_operators_cap(service: Inventory) -> None:
    service.max_hold = timedelta(minutes=30)

    await handle_batch(service, [deliver(placed("o-1", line("TEA", 2), hold_until=T0 + timedelta(days=2)))])

    [reserved] = emitted(service)
    assert isinstance(reserved, StockReserved) and reserved.expires_at == T0 + timedelta(minutes=30)


async def test_an_order_paid_after_its_reservation_expired_is_taken_again_and_committed_once(
    service: Inventory,
) -> None:
    await handle_batch(service, [deliver(placed("o-1", line("TEA", 2)))])
    await expire(service)
    assert await stock(service, "TEA") == (5, 0)
    store_of(service).outbox.clear()

    confirmation = deliver(confirmed("o-1", line("TEA", 2)))
    await handle_batch(service, [confirmation])
    # Redelivered, and confirmed again under another envelope, then cancelled twice: no effect.
    await handle_batch(service, [confirmation, deliver(confirmed("o-1", line("TEA", 2)))])
    await handle_batch(service, [deliver(cancelled("o-1")), deliver(cancelled("o-1"))])

    assert emitted(service) == [StockCommitted(order_id="o-1", lines=[StockLine(sku="TEA", quantity=2)])]
    assert await stock(service, "TEA") == (3, 0)
    assert store_of(service).state.reservations["o-1"].status is ReservationStatus.COMMITTED


async def test_an_order_paid_after_its_last_unit_was_sold_to_another_is_told_the_reservation_was_lost(
    service: Inventory,
) -> None:
    await handle_batch(service, [deliver(placed("o-1", line("CUP", 1)))])
    await expire(service)
    await handle_batch(service, [deliver(placed("o-2", line("CUP", 1)))])  # the last cup, sold again
    store_of(service).outbox.clear()

    await handle_batch(service, [deliver(confirmed("o-1", line("CUP", 1)))])

    assert emitted(service) == [
        StockRejected(
            order_id="o-1",
            reason=StockRejectReason.RESERVATION_LOST,
            shortages=[Shortage(sku="CUP", quantity=1, available=0)],
        )
    ]
    assert await stock(service, "CUP") == (0, 1), "the other order keeps its cup; none is oversold"
    lost = store_of(service).state.reservations["o-1"]
    assert (lost.status, lost.reason) == (ReservationStatus.REJECTED, StockRejectReason.RESERVATION_LOST)

    # The order is cancelled for it, and the cup comes back in stock: nothing more happens to o-1.
    await handle_batch(service, [deliver(cancelled("o-1", OrderEndReason.RESERVATION_LOST))])
    await add_stock(service, TEA_HOUSE, "CUP", 4)
    await handle_batch(service, [deliver(confirmed("o-1", line("CUP", 1)))])

    assert len(emitted(service)) == 1
    assert await stock(service, "CUP") == (4, 1)


async def test_an_order_paid_with_no_reservation_on_record_is_taken_then_and_there(
    service: Inventory,
) -> None:
    await handle_batch(service, [deliver(confirmed("o-9", line("POT", 4), line("TEA", 1)))])

    [committed] = emitted(service)
    assert isinstance(committed, StockCommitted)
    assert await stock(service, "POT") == (5, 0)
    assert await stock(service, "TEA") == (4, 0)


async def test_a_confirmation_racing_the_expiry_sweep_is_decided_again_on_what_the_sweep_left(
    service: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await handle_batch(service, [deliver(placed("o-1", line("TEA", 2)))])
    store = store_of(service)
    store.outbox.clear()
    read_reservations = _MemoryTransaction.reservations

    async def swept_after_read(
        self: _MemoryTransaction, order_ids: Collection[str]
    ) -> dict[str, Reservation]:
        # The sweeper expires the reservation right after this replica read it as held.
        read = await read_reservations(self, order_ids)
        swept = self.state.reservations["o-1"]
        swept.status, swept.reason = ReservationStatus.RELEASED, ReservationEndReason.EXPIRED
        self.state.products["TEA"].available += 2
        self.state.products["TEA"].reserved -= 2
        return read

    confirmation = deliver(confirmed("o-1", line("TEA", 2)))
    with monkeypatch.context() as patched:
        patched.setattr(_MemoryTransaction, "reservations", swept_after_read)
        with pytest.raises(StockConflict):
            await handle_batch(service, [confirmation])
    assert store.outbox == [] and await stock(service, "TEA") == (3, 2)

    await expire(service)  # the sweep commits for real; the confirmation is redelivered
    store.outbox.clear()
    await handle_batch(service, [confirmation])

    assert [type(e) for e in emitted(service)] == [StockCommitted]
    assert await stock(service, "TEA") == (3, 0)


async def test_a_product_needs_a_known_merchant(service: Inventory) -> None:
    with pytest.raises(UnknownMerchant):
        await upsert_product(
            service, ADMIN, PutProduct(sku="X", details=details("X", merchant_id="nobody"), available=1), None
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


# --- catalog -------------------------------------------------------------------------------------


async def sell(service: Inventory, order_id: str, sku: str, quantity: int, *, confirm: bool = False) -> None:
    await handle_batch(service, [deliver(placed(order_id, line(sku, quantity)))])
    if confirm:
        await handle_batch(service, [deliver(confirmed(order_id, line(sku, quantity)))])


async def test_a_product_edit_keeps_the_stock_sold_since_and_announces_the_product(
    service: Inventory,
) -> None:
    await sell(service, "o-1", "POT", 2)
    await sell(service, "o-2", "POT", 1, confirm=True)
    store_of(service).outbox.clear()

    put = await upsert_product(
        service,
        TEA_HOUSE,
        PutProduct(sku="POT", details=details("Clay teapot", price_fen=8800), available=9),
        "corr-http",
    )

    assert not put.created
    assert (put.product.name, put.product.price_fen) == ("Clay teapot", 8800)
    assert await stock(service, "POT") == (6, 2), "the stale `available` of 9 is ignored"
    [envelope] = store_of(service).outbox
    assert (envelope.type, envelope.subject, envelope.correlation_id) == (
        ProductUpserted.TYPE,
        "POT",
        "corr-http",
    )
    assert decode_data(envelope) == ProductUpserted(
        sku="POT", name="Clay teapot", merchant_id="m-1", price_fen=8800
    )


async def test_a_new_product_starts_with_its_stock_and_limit(service: Inventory) -> None:
    command = PutProduct(
        sku="BOX",
        details=ProductDetails(name="Gift box", merchant_id="m-2", price_fen=19900, max_per_order=2),
        available=3,
    )

    put = await upsert_product(service, POTTERY, command, None)

    assert put.created
    assert (put.product.available, put.product.reserved, put.product.max_per_order) == (3, 0, 2)
    [event] = emitted(service)
    assert isinstance(event, ProductUpserted) and event.max_per_order == 2


async def test_three_of_ten_sold_a_price_change_leaves_seven_and_adding_five_makes_twelve(
    service: Inventory,
) -> None:
    await upsert_product(
        service, TEA_HOUSE, PutProduct(sku="JAR", details=details("Jar"), available=10), None
    )
    await sell(service, "o-1", "JAR", 2)
    await sell(service, "o-2", "JAR", 1, confirm=True)

    await upsert_product(
        service, TEA_HOUSE, PutProduct(sku="JAR", details=details("Jar", price_fen=1200), available=10), None
    )
    assert await stock(service, "JAR") == (7, 2)

    restocked = await add_stock(service, TEA_HOUSE, "JAR", 5)

    assert (restocked.available, restocked.reserved, restocked.price_fen) == (12, 2, 1200)
    assert await stock(service, "JAR") == (12, 2)


async def test_a_correction_takes_away_sellable_units_only(service: Inventory) -> None:
    await sell(service, "o-1", "TEA", 2)

    assert (await add_stock(service, ADMIN, "TEA", -3)).available == 0
    with pytest.raises(StockOutOfRange, match="only 0 are sellable"):
        await add_stock(service, ADMIN, "TEA", -1)

    assert await stock(service, "TEA") == (0, 2)
    await handle_batch(service, [deliver(cancelled("o-1"))])
    assert await stock(service, "TEA") == (2, 0), "the held units come back when the order ends"


async def test_stock_above_the_limit_is_refused_and_nothing_changes(service: Inventory) -> None:
    with pytest.raises(StockOutOfRange, match="above the limit"):
        await add_stock(service, ADMIN, "TEA", MAX_STOCK)

    assert await stock(service, "TEA") == (5, 0)


async def test_stock_changes_need_the_products_merchant_or_an_admin(service: Inventory) -> None:
    for stranger in (POTTERY, SHOPPER):
        with pytest.raises(NotPermitted, match="only merchant m-1 or an admin"):
            await add_stock(service, stranger, "TEA", 1)
    with pytest.raises(UnknownProduct):
        await add_stock(service, ADMIN, "GHOST", 1)

    assert await stock(service, "TEA") == (5, 0)


async def test_a_stock_change_that_races_a_reservation_is_decided_again_on_fresh_stock(
    service: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_of(service)
    read_products = _MemoryTransaction.products
    raced: list[bool] = []

    async def sold_meanwhile(self: _MemoryTransaction, skus: Collection[str]) -> dict[str, Product]:
        products = await read_products(self, skus)
        if not raced:
            # The order consumer holds 4 of the 5 units after this read, before this write.
            raced.append(True)
            store.state.products["TEA"].available -= 4
            store.state.products["TEA"].reserved += 4
            self.state.products["TEA"].available -= 4
            self.state.products["TEA"].reserved += 4
        return products

    monkeypatch.setattr(_MemoryTransaction, "products", sold_meanwhile)

    with pytest.raises(StockOutOfRange, match="only 1 are sellable"):
        await add_stock(service, TEA_HOUSE, "TEA", -3)
    assert await stock(service, "TEA") == (1, 4)


async def test_only_the_owner_or_an_admin_edits_a_product(service: Inventory) -> None:
    for stranger in (POTTERY, SHOPPER):
        with pytest.raises(NotPermitted, match="only merchant m-1 or an admin may change TEA"):
            await upsert_product(
                service, stranger, PutProduct(sku="TEA", details=details("Mine now", merchant_id="m-2")), None
            )
    with pytest.raises(NotPermitted, match="add products for merchant m-1"):
        await upsert_product(service, POTTERY, PutProduct(sku="NEW", details=details()), None)

    tea = await service.store.get_product("TEA")
    assert tea is not None and (tea.name, tea.merchant_id) == ("TEA", "m-1")
    assert await service.store.get_product("NEW") is None
    assert store_of(service).outbox == []


async def test_a_merchant_cannot_move_its_product_to_another_merchant_but_an_admin_can(
    service: Inventory,
) -> None:
    move = PutProduct(sku="TEA", details=details("TEA", merchant_id="m-2"))

    with pytest.raises(ProductMoveRefused, match="TEA belongs to merchant m-1"):
        await upsert_product(service, TEA_HOUSE, move, None)
    assert store_of(service).outbox == []

    moved = await upsert_product(service, ADMIN, move, None)
    assert (moved.product.merchant_id, moved.product.available) == ("m-2", 5)
    with pytest.raises(UnknownMerchant):
        await upsert_product(service, ADMIN, PutProduct(sku="TEA", details=details(merchant_id="m-9")), None)


async def test_merchants_are_registered_once_and_announced(service: Inventory) -> None:
    wallets = frozenset({PaymentMethod.WECHAT_PAY, PaymentMethod.ALIPAY})
    cash_free = Registration("m-3", "Sichuan Pantry", wallets, "LIC-3", "pantry@example.com")
    store_of(service).outbox.clear()

    first = await register_merchant(
        service, Principal("m-3", Role.MERCHANT, merchant_id="m-3"), cash_free, "c"
    )
    again = await register_merchant(service, ADMIN, cash_free, None)
    with pytest.raises(MerchantConflict, match="PUT /v1/merchants/m-3"):
        await register_merchant(service, ADMIN, Registration("m-3", "Sichuan Pantry", wallets), None)
    with pytest.raises(NotPermitted):
        await register_merchant(service, TEA_HOUSE, Registration("m-4", "Someone", wallets), None)

    assert (first.created, first.merchant.status) == (True, MerchantStatus.PENDING)
    assert (again.created, again.merchant) == (False, first.merchant)
    assert emitted(service) == [
        MerchantUpserted(
            merchant_id="m-3",
            name="Sichuan Pantry",
            payment_methods=[PaymentMethod.WECHAT_PAY, PaymentMethod.ALIPAY],
            status=MerchantStatus.PENDING,
        )
    ]
    assert store_of(service).outbox[0].subject == "m-3"


async def test_a_merchant_changes_its_payment_methods_and_every_write_is_announced(
    service: Inventory,
) -> None:
    store_of(service).outbox.clear()
    alipay_only = MerchantEdit("m-1", "West Lake Tea", frozenset({PaymentMethod.ALIPAY}))

    assert not (await upsert_merchant(service, TEA_HOUSE, alipay_only, None)).created
    assert not (await upsert_merchant(service, TEA_HOUSE, alipay_only, None)).created
    created = await upsert_merchant(service, ADMIN, MerchantEdit("m-5", "New", EVERY_METHOD), None)
    with pytest.raises(NotPermitted):
        await upsert_merchant(service, POTTERY, MerchantEdit("m-1", "Taken over", EVERY_METHOD), None)
    with pytest.raises(NotPermitted, match="POST /v1/merchants"):
        await upsert_merchant(
            service,
            Principal("m-6", Role.MERCHANT, merchant_id="m-6"),
            MerchantEdit("m-6", "Me", EVERY_METHOD),
            None,
        )

    assert (created.created, created.merchant.status) == (True, MerchantStatus.APPROVED)
    assert [entry.action for entry in created.merchant.history] == [MerchantAction.CREATE_APPROVED]
    stored = await service.store.get_merchant("m-1")
    assert stored is not None and stored.payment_methods == {PaymentMethod.ALIPAY}
    announced = [
        (e.merchant_id, e.payment_methods) for e in emitted(service) if isinstance(e, MerchantUpserted)
    ]
    assert announced == [
        ("m-1", [PaymentMethod.ALIPAY]),
        ("m-1", [PaymentMethod.ALIPAY]),
        ("m-5", list(PaymentMethod)),
    ]


# --- vetting -------------------------------------------------------------------------------------


async def test_a_pending_merchants_lines_are_refused_and_approval_lets_them_reserve(
    service: Inventory,
) -> None:
    registration = Registration("m-3", "Silk", EVERY_METHOD, "LIC-3", "silk@example.com")
    await register_merchant(service, ADMIN, registration, None)
    await upsert_product(
        service, ADMIN, PutProduct(sku="SCARF", details=details("Scarf", "m-3"), available=4), None
    )
    store_of(service).outbox.clear()

    await handle_batch(service, [deliver(placed("o-1", line("SCARF", 1, "m-3")))])
    await decide_merchant(service, ADMIN, "m-3", MerchantAction.APPROVE, "", None)
    await handle_batch(service, [deliver(placed("o-2", line("SCARF", 1, "m-3")))])

    refused, approved, relisted, reserved = emitted(service)
    assert isinstance(refused, StockRejected)
    assert [(s.sku, s.available) for s in refused.shortages] == [("SCARF", 0)]
    assert isinstance(approved, MerchantUpserted) and approved.status is MerchantStatus.APPROVED
    assert isinstance(relisted, ProductUpserted) and (relisted.sku, relisted.active) == ("SCARF", True)
    assert isinstance(reserved, StockReserved)
    assert await stock(service, "SCARF") == (3, 1)


async def test_suspension_delists_active_products_and_reinstating_relists_only_those(
    service: Inventory,
) -> None:
    hidden = PutProduct(sku="HIDDEN", details=replace(details("Hidden"), active=False), available=3)
    await upsert_product(service, ADMIN, hidden, None)
    store_of(service).outbox.clear()

    suspended = await decide_merchant(service, ADMIN, "m-1", MerchantAction.SUSPEND, " fake goods ", "c-9")
    await handle_batch(service, [deliver(placed("o-1", line("TEA", 1)))])
    delisted = emitted(service)
    store_of(service).outbox.clear()
    await decide_merchant(service, ADMIN, "m-1", MerchantAction.REINSTATE, "", None)

    assert (suspended.status, suspended.reason) == (MerchantStatus.SUSPENDED, "fake goods")
    assert [(e.action, e.by, e.reason) for e in suspended.history[-1:]] == [
        (MerchantAction.SUSPEND, "admin-1", "fake goods")
    ]
    merchant_event, *products, rejection = delisted
    assert merchant_event == MerchantUpserted(
        merchant_id="m-1",
        name="West Lake Tea",
        payment_methods=list(PaymentMethod),
        status=MerchantStatus.SUSPENDED,
        reason="fake goods",
    )
    assert [(p.sku, p.active) for p in products if isinstance(p, ProductUpserted)] == [
        ("CUP", False),
        ("POT", False),
        ("TEA", False),
    ]
    assert isinstance(rejection, StockRejected) and rejection.substitutes == []
    reinstated, *relisted = emitted(service)
    assert isinstance(reinstated, MerchantUpserted) and (reinstated.status, reinstated.reason) == (
        MerchantStatus.APPROVED,
        "",
    )
    assert [(p.sku, p.active) for p in relisted if isinstance(p, ProductUpserted)] == [
        ("CUP", True),
        ("POT", True),
        ("TEA", True),
    ]


async def test_a_decision_out_of_turn_or_by_a_merchant_changes_nothing(service: Inventory) -> None:
    store_of(service).outbox.clear()

    with pytest.raises(MerchantStatusConflict, match="m-1 is APPROVED: only a PENDING merchant"):
        await decide_merchant(service, ADMIN, "m-1", MerchantAction.APPROVE, "", None)
    with pytest.raises(MerchantStatusConflict, match="only a SUSPENDED merchant can be reinstated"):
        await decide_merchant(service, ADMIN, "m-1", MerchantAction.REINSTATE, "", None)
    with pytest.raises(ReasonRequired):
        await decide_merchant(service, ADMIN, "m-1", MerchantAction.SUSPEND, "  ", None)
    with pytest.raises(NotPermitted):
        await decide_merchant(service, TEA_HOUSE, "m-1", MerchantAction.SUSPEND, "myself", None)
    with pytest.raises(UnknownMerchant):
        await decide_merchant(service, ADMIN, "m-9", MerchantAction.SUSPEND, "who", None)

    merchant = await service.store.get_merchant("m-1")
    assert merchant is not None and merchant.status is MerchantStatus.APPROVED
    assert emitted(service) == []


async def test_a_merchant_registering_itself_gives_licence_and_contact_and_an_https_webhook(
    service: Inventory,
) -> None:
    me = Principal("m-7", Role.MERCHANT, merchant_id="m-7")

    with pytest.raises(RegistrationIncomplete, match="licence_number and contact"):
        await register_merchant(service, me, Registration("m-7", "Me", EVERY_METHOD), None)
    plain = Registration(
        "m-7", "Me", EVERY_METHOD, "LIC", "13912345678", webhook_url="http://me.example/hook"
    )
    with pytest.raises(InvalidWebhookUrl, match="https://"):
        await register_merchant(service, me, plain, None)
    service.allow_http_webhooks = True
    put = await register_merchant(service, me, plain, None)

    assert (put.merchant.status, put.merchant.webhook_url) == (
        MerchantStatus.PENDING,
        "http://me.example/hook",
    )
    assert put.merchant.history[0].by == "m-7"
