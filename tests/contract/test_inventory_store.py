"""What the inventory handlers rely on from their store, held against the in-memory twin and MongoDB alike."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from pydantic import SecretStr
from pymongo import ASCENDING

from services.inventory.domain import (
    Changes,
    Coupon,
    CouponChanges,
    CouponDelta,
    CouponMove,
    CouponTerms,
    CouponUse,
    CouponUseStatus,
    Merchant,
    MerchantAction,
    Product,
    Reservation,
    ReservationStatus,
    Slot,
    SlotPlan,
    StatusChange,
    StockDelta,
    Subscription,
    SubstituteSearch,
)
from services.inventory.handlers import Inventory, add_stock, handle_batch, put_slot
from services.inventory.store import (
    CANDIDATES_PER_SIDE,
    COUPON_USES,
    MERCHANTS,
    PRODUCTS,
    InventoryStore,
    MongoInventoryStore,
    StockConflict,
)
from shared.auth import Principal, Role
from shared.contracts import (
    MAX_UNITS_PER_ORDER,
    CouponDiscount,
    Envelope,
    MerchantStatus,
    OrderEndReason,
    OrderLine,
    PaymentMethod,
    PriceTier,
    ProductKind,
    ProductUpserted,
    ReservationEndReason,
    StockLine,
    StockRejectReason,
    StockReserved,
)
from shared.crypto import PersonalData
from shared.errors import ConcurrentWrite, retry_transient
from shared.kafka import Delivery, decode, new_envelope
from shared.mongo import OUTBOX, MongoStore
from tests.twins.inventory import InMemoryInventoryStore
from tests.unit.inventory.factories import cancelled, line, placed, placed_with_coupon
from tests.unit.samples import T0, delivery

CONSUMER = "inventory"
PERSONAL = PersonalData(SecretStr("t1:dGVzdC1vbmx5LWludmVudG9yeS1zdG9yZS1rZXktMDE"))
TTL = timedelta(minutes=15)
ReadOutbox = Callable[[], Awaitable[list[Envelope]]]


def product(
    sku: str,
    *,
    merchant_id: str = "m-1",
    available: int = 10,
    active: bool = True,
    price_fen: int = 1000,
    category: str = "",
) -> Product:
    return Product(
        sku,
        f"name of {sku}",
        merchant_id,
        price_fen=price_fen,
        available=available,
        active=active,
        category=category,
    )


def reservation(
    order_id: str,
    *lines: StockLine,
    status: ReservationStatus = ReservationStatus.HELD,
    expires_at: timedelta | None = TTL,
) -> Reservation:
    deadline = None if expires_at is None else T0 + expires_at
    return Reservation(order_id, list(lines), status, f"corr-{order_id}", expires_at=deadline)


def announcement(sku: str) -> Envelope:
    event = ProductUpserted(sku=sku, name=sku, merchant_id="m-1", price_fen=1000)
    return new_envelope(event, source=CONSUMER, correlation_id=f"corr-{sku}")


def changes(
    stock: Mapping[str, StockDelta] | None = None,
    created: Sequence[Reservation] = (),
    moved_from_held: Sequence[Reservation] = (),
    moved_from_expired: Sequence[Reservation] = (),
    slots: Mapping[tuple[str, str], StockDelta] | None = None,
) -> Changes:
    return Changes(
        stock or {}, list(created), list(moved_from_held), list(moved_from_expired), slots=slots or {}
    )


HOUR = timedelta(hours=1)


def slot(slot_id: str, *, sku: str = "LESSON", capacity: int = 3, starts_in: timedelta = HOUR) -> Slot:
    return Slot(sku, slot_id, T0 + starts_in, T0 + starts_in + HOUR, capacity, available=capacity)


def booking(slot_id: str) -> OrderLine:
    return OrderLine(
        sku="LESSON",
        name="Lesson",
        merchant_id="m-1",
        kind=ProductKind.SERVICE,
        quantity=1,
        unit_price_fen=20000,
        slot_id=slot_id,
    )


async def put_slots(store: InventoryStore, *slots: Slot) -> None:
    async with store.transaction(CONSUMER) as tx:
        for each in slots:
            await tx.put_slot(each, None)


async def put(store: InventoryStore, *products: Product) -> None:
    async with store.transaction(CONSUMER) as tx:
        for item in products:
            await tx.put_product(item)


async def save(store: InventoryStore, batch: Changes) -> None:
    async with store.transaction(CONSUMER) as tx:
        await tx.save(batch)


async def stock(store: InventoryStore, sku: str) -> tuple[int, int]:
    found = await store.get_product(sku)
    assert found is not None
    return found.available, found.reserved


async def reservations(store: InventoryStore, *order_ids: str) -> dict[str, Reservation]:
    async with store.transaction(CONSUMER) as tx:
        return await tx.reservations(order_ids)


class InventoryStoreContract:
    """Subclasses provide the fixtures `store` (an empty InventoryStore) and `outbox` (reads back what
    the store's committed transactions emitted, oldest first)."""

    # --- products ----------------------------------------------------------------------------------

    async def test_a_product_is_created_changed_and_listed_by_sku(self, store: InventoryStore) -> None:
        await put(store, product("TEA"), product("CUP", merchant_id="m-2"), product("BOWL"))
        changed = Product(
            "TEA",
            "Longjing",
            "m-2",
            price_fen=8800,
            available=10,
            kind=ProductKind.VIRTUAL,
            active=False,
            max_per_order=2,
        )

        async with store.transaction(CONSUMER) as tx:
            stored = await tx.put_product(changed)

        assert stored == changed
        assert await store.get_product("TEA") == changed
        assert await store.get_product("GHOST") is None
        assert [p.sku for p in await store.list_products()] == ["BOWL", "CUP", "TEA"]
        assert [p.sku for p in await store.list_products("m-2")] == ["CUP", "TEA"]
        assert await store.list_products("m-404") == []

    async def test_price_tiers_are_stored_in_order_replaced_by_an_edit_and_removed_by_an_empty_list(
        self, store: InventoryStore
    ) -> None:
        tiers = (
            PriceTier(min_quantity=3, unit_price_fen=900),
            PriceTier(min_quantity=10, unit_price_fen=800),
        )
        tiered = Product("TEA", "Longjing", "m-1", 1000, available=10, price_tiers=tiers)

        async with store.transaction(CONSUMER) as tx:
            created = await tx.put_product(tiered)
        fewer = Product("TEA", "Longjing", "m-1", 1000, available=10, price_tiers=tiers[1:])
        async with store.transaction(CONSUMER) as tx:
            edited = await tx.put_product(fewer)
        after_edit = await store.get_product("TEA")
        async with store.transaction(CONSUMER) as tx:
            await tx.put_product(Product("TEA", "Longjing", "m-1", 1000, available=10))

        assert created == tiered and created.price_tiers == tiers
        assert edited == after_edit == fewer
        cleared = await store.get_product("TEA")
        assert cleared is not None and cleared.price_tiers == ()
        assert [p.price_tiers for p in await store.list_products()] == [()]

    async def test_a_new_product_gets_its_stock_with_nothing_reserved(self, store: InventoryStore) -> None:
        async with store.transaction(CONSUMER) as tx:
            created = await tx.put_product(
                Product("TEA", "Longjing", "m-1", 8800, available=40, reserved=7, max_per_order=5)
            )

        assert created == Product("TEA", "Longjing", "m-1", 8800, available=40, reserved=0, max_per_order=5)
        assert await store.get_product("TEA") == created

    async def test_changing_a_product_keeps_the_stored_stock_whatever_the_caller_passes(
        self, store: InventoryStore
    ) -> None:
        await put(store, product("TEA", available=10))
        await save(store, changes({"TEA": StockDelta(-3, 3)}))
        await save(store, changes({"TEA": StockDelta(0, -1)}))

        async with store.transaction(CONSUMER) as tx:
            # A stale read's stock, as an edit made from an old page would carry it.
            edited = await tx.put_product(Product("TEA", "Longjing", "m-1", 9900, available=10, reserved=0))

        assert (edited.price_fen, edited.available, edited.reserved) == (9900, 7, 2)
        assert await stock(store, "TEA") == (7, 2)

    async def test_products_read_in_a_transaction_are_those_that_exist(self, store: InventoryStore) -> None:
        await put(store, product("TEA"), product("CUP"))

        async with store.transaction(CONSUMER) as tx:
            found = await tx.products({"TEA", "GHOST"})

        assert found == {"TEA": product("TEA")}

    # --- stock -------------------------------------------------------------------------------------

    async def test_saved_stock_deltas_add_to_the_stored_stock(self, store: InventoryStore) -> None:
        await put(store, product("TEA", available=5), product("CUP", available=2))

        await save(store, changes({"TEA": StockDelta(-3, 3), "CUP": StockDelta(-2, 2)}))
        await save(store, changes({"TEA": StockDelta(1, -1), "CUP": StockDelta(0, -2)}))

        assert await stock(store, "TEA") == (3, 2)
        assert await stock(store, "CUP") == (0, 0)

    async def test_a_transaction_reads_the_stock_it_saved(self, store: InventoryStore) -> None:
        await put(store, product("TEA", available=5))

        async with store.transaction(CONSUMER) as tx:
            await tx.save(changes({"TEA": StockDelta(7, 0)}))
            seen = await tx.products({"TEA"})

        assert (seen["TEA"].available, seen["TEA"].reserved) == (12, 0)
        assert await stock(store, "TEA") == (12, 0)

    @pytest.mark.parametrize(
        "delta",
        [
            pytest.param({"CUP": StockDelta(-3, 3)}, id="available-below-zero"),
            pytest.param({"CUP": StockDelta(2, -2)}, id="reserved-below-zero"),
            pytest.param({"GHOST": StockDelta(-1, 1)}, id="unknown-sku"),
        ],
    )
    async def test_a_delta_the_stock_cannot_take_conflicts_and_nothing_is_written(
        self, store: InventoryStore, outbox: ReadOutbox, delta: dict[str, StockDelta]
    ) -> None:
        await put(store, product("TEA", available=5), product("CUP", available=2))
        cause = delivery(cancelled("o-1"))

        with pytest.raises(StockConflict):
            async with store.transaction(CONSUMER) as tx:
                tx.mark_applied([cause.envelope.id])
                tx.emit([announcement("TEA")])
                await tx.save(changes({"TEA": StockDelta(-1, 1), **delta}, created=[reservation("o-1")]))

        assert await stock(store, "TEA") == (5, 0)
        assert await stock(store, "CUP") == (2, 0)
        assert await reservations(store, "o-1") == {}
        assert await store.unapplied(CONSUMER, [cause]) == [cause]
        assert await outbox() == []

    # --- reservations ------------------------------------------------------------------------------

    async def test_created_reservations_read_back_as_saved(self, store: InventoryStore) -> None:
        held = reservation("o-1", StockLine(sku="TEA", quantity=2), StockLine(sku="CUP", quantity=1))
        rejected = reservation(
            "o-2", StockLine(sku="POT", quantity=9), status=ReservationStatus.REJECTED, expires_at=None
        )

        await save(store, changes(created=[held, rejected]))

        assert await reservations(store, "o-1", "o-2", "o-404") == {"o-1": held, "o-2": rejected}

    async def test_creating_a_reservation_that_exists_conflicts(self, store: InventoryStore) -> None:
        first = reservation("o-1", StockLine(sku="TEA", quantity=2))
        await save(store, changes(created=[first]))

        with pytest.raises(StockConflict):
            await save(store, changes(created=[reservation("o-1", StockLine(sku="CUP", quantity=1))]))

        assert await reservations(store, "o-1") == {"o-1": first}

    async def test_a_reservation_moves_on_from_held_once(self, store: InventoryStore) -> None:
        await save(store, changes(created=[reservation("o-1", StockLine(sku="TEA", quantity=2))]))
        released = reservation("o-1", StockLine(sku="TEA", quantity=2), status=ReservationStatus.RELEASED)
        released.reason = OrderEndReason.FRAUD
        committed = reservation("o-1", StockLine(sku="TEA", quantity=2), status=ReservationStatus.COMMITTED)

        await save(store, changes(moved_from_held=[released]))
        with pytest.raises(StockConflict):
            await save(store, changes(moved_from_held=[committed]))

        stored = (await reservations(store, "o-1"))["o-1"]
        assert (stored.status, stored.reason) == (ReservationStatus.RELEASED, OrderEndReason.FRAUD)

    async def test_moving_a_reservation_never_stored_conflicts(self, store: InventoryStore) -> None:
        ghost = reservation("o-404", status=ReservationStatus.RELEASED)

        with pytest.raises(StockConflict):
            await save(store, changes(moved_from_held=[ghost]))

        assert await reservations(store, "o-404") == {}

    async def test_a_reservation_released_as_expired_moves_on_once_with_its_lines(
        self, store: InventoryStore
    ) -> None:
        tea = StockLine(sku="TEA", quantity=2)
        await save(store, changes(created=[reservation("o-1", tea)]))
        expired = reservation("o-1", tea, status=ReservationStatus.RELEASED)
        expired.reason = ReservationEndReason.EXPIRED
        await save(store, changes(moved_from_held=[expired]))
        taken_again = reservation("o-1", tea, status=ReservationStatus.COMMITTED)
        lost = reservation("o-1", tea, status=ReservationStatus.REJECTED)
        lost.reason = StockRejectReason.RESERVATION_LOST

        await save(store, changes(moved_from_expired=[taken_again]))
        with pytest.raises(StockConflict):
            await save(store, changes(moved_from_expired=[lost]))

        stored = (await reservations(store, "o-1"))["o-1"]
        assert (stored.status, stored.reason, stored.lines) == (ReservationStatus.COMMITTED, "", [tea])

    @pytest.mark.parametrize(
        ("status", "reason"),
        [
            (ReservationStatus.HELD, ""),
            (ReservationStatus.RELEASED, OrderEndReason.CUSTOMER_CANCELLED),
            (ReservationStatus.REJECTED, ""),
        ],
    )
    async def test_only_a_reservation_released_as_expired_moves_on_from_expired(
        self, store: InventoryStore, status: ReservationStatus, reason: str
    ) -> None:
        tea = StockLine(sku="TEA", quantity=1)
        stored = reservation("o-1", tea, status=status)
        stored.reason = reason
        await save(store, changes(created=[stored]))

        with pytest.raises(StockConflict):
            await save(
                store,
                changes(moved_from_expired=[reservation("o-1", tea, status=ReservationStatus.COMMITTED)]),
            )
        with pytest.raises(StockConflict):
            await save(
                store,
                changes(moved_from_expired=[reservation("o-404", tea, status=ReservationStatus.COMMITTED)]),
            )

        assert await reservations(store, "o-1", "o-404") == {"o-1": stored}

    async def test_expired_reservations_are_those_held_past_their_deadline_longest_overdue_first(
        self, store: InventoryStore
    ) -> None:
        tea = StockLine(sku="TEA", quantity=1)
        await save(
            store,
            changes(
                created=[
                    reservation("late", tea, expires_at=-timedelta(minutes=1)),
                    reservation("not-yet", tea, expires_at=timedelta(seconds=1)),
                    reservation("latest", tea, expires_at=-timedelta(minutes=3)),
                    reservation("due-now", tea, expires_at=timedelta(0)),
                    reservation(
                        "released", tea, status=ReservationStatus.RELEASED, expires_at=-timedelta(hours=1)
                    ),
                    reservation("rejected", tea, status=ReservationStatus.REJECTED, expires_at=None),
                ]
            ),
        )

        async with store.transaction(CONSUMER) as tx:
            every_one = await tx.expired_reservations(T0, limit=10)
            first_two = await tx.expired_reservations(T0, limit=2)

        assert list(every_one) == ["latest", "late", "due-now"]
        assert every_one["late"] == reservation("late", tea, expires_at=-timedelta(minutes=1))
        assert list(first_two) == ["latest", "late"]

    # --- service slots ----------------------------------------------------------------------------

    async def test_slots_are_created_and_read_by_key_and_by_product_in_time_order(
        self, store: InventoryStore
    ) -> None:
        later, sooner, other = slot("tue-10", starts_in=2 * HOUR), slot("mon-10"), slot("x", sku="YOGA")
        async with store.transaction(CONSUMER) as tx:
            for each in (later, sooner, other):
                await tx.put_slot(each, None)

        async with store.transaction(CONSUMER) as tx:
            by_key = await tx.slots([sooner.key, ("LESSON", "sun-09"), other.key])
            of_lesson = await tx.slots_of(["LESSON"])

        assert by_key == {sooner.key: sooner, other.key: other}
        assert of_lesson == [sooner, later]
        assert await store.list_slots(["LESSON", "YOGA"]) == [sooner, later, other]
        assert await store.list_slots([]) == []

    async def test_creating_a_slot_that_exists_conflicts(self, store: InventoryStore) -> None:
        await put_slots(store, slot("mon-10", capacity=3))

        with pytest.raises(StockConflict):
            await put_slots(store, slot("mon-10", capacity=9))

        assert await store.list_slots(["LESSON"]) == [slot("mon-10", capacity=3)]

    async def test_a_slot_is_replaced_or_removed_only_as_it_was_read(self, store: InventoryStore) -> None:
        read = slot("mon-10", capacity=3)
        await put_slots(store, read)
        await save(store, changes(slots={read.key: StockDelta(-1, 1)}))
        booked = (await store.list_slots(["LESSON"]))[0]
        bigger = Slot("LESSON", "mon-10", read.starts_at, read.ends_at, capacity=5, available=4, reserved=1)

        with pytest.raises(StockConflict):
            async with store.transaction(CONSUMER) as tx:
                await tx.put_slot(bigger, read)  # decided before the booking: stale
        with pytest.raises(StockConflict):
            async with store.transaction(CONSUMER) as tx:
                await tx.remove_slot(read)
        async with store.transaction(CONSUMER) as tx:
            await tx.put_slot(bigger, booked)

        assert await store.list_slots(["LESSON"]) == [bigger]
        async with store.transaction(CONSUMER) as tx:
            await tx.remove_slot(bigger)
        assert await store.list_slots(["LESSON"]) == []

    async def test_saved_seat_deltas_add_to_the_slots_seats(self, store: InventoryStore) -> None:
        await put_slots(store, slot("mon-10", capacity=3), slot("tue-10", capacity=1))

        await save(
            store,
            changes(slots={("LESSON", "mon-10"): StockDelta(-3, 3), ("LESSON", "tue-10"): StockDelta(-1, 1)}),
        )
        await save(store, changes(slots={("LESSON", "mon-10"): StockDelta(1, -2)}))

        seats = [(s.slot_id, s.capacity, s.available, s.reserved) for s in await store.list_slots(["LESSON"])]
        assert seats == [("mon-10", 3, 1, 1), ("tue-10", 1, 0, 1)]

    @pytest.mark.parametrize(
        "delta",
        [
            pytest.param({("LESSON", "tue-10"): StockDelta(-2, 2)}, id="seats-below-zero"),
            pytest.param({("LESSON", "tue-10"): StockDelta(1, -1)}, id="reserved-below-zero"),
            pytest.param({("LESSON", "sun-09"): StockDelta(-1, 1)}, id="unknown-slot"),
        ],
    )
    async def test_a_seat_delta_the_slot_cannot_take_conflicts_and_nothing_is_written(
        self, store: InventoryStore, outbox: ReadOutbox, delta: dict[tuple[str, str], StockDelta]
    ) -> None:
        await put(store, product("TEA", available=5))
        await put_slots(store, slot("mon-10", capacity=3), slot("tue-10", capacity=1))
        cause = delivery(cancelled("o-1"))

        with pytest.raises(StockConflict):
            async with store.transaction(CONSUMER) as tx:
                tx.mark_applied([cause.envelope.id])
                tx.emit([announcement("TEA")])
                await tx.save(
                    changes(
                        {"TEA": StockDelta(-1, 1)},
                        created=[reservation("o-1", StockLine(sku="LESSON", quantity=1, slot_id="mon-10"))],
                        slots={("LESSON", "mon-10"): StockDelta(-1, 1), **delta},
                    )
                )

        assert await stock(store, "TEA") == (5, 0)
        assert [(s.available, s.reserved) for s in await store.list_slots(["LESSON"])] == [(3, 0), (1, 0)]
        assert await reservations(store, "o-1") == {}
        assert await store.unapplied(CONSUMER, [cause]) == [cause]
        assert await outbox() == []

    async def test_a_reservations_slot_lines_read_back_as_saved(self, store: InventoryStore) -> None:
        held = reservation(
            "o-1",
            StockLine(sku="LESSON", quantity=1, slot_id="mon-10"),
            StockLine(sku="LESSON", quantity=2, slot_id="tue-10"),
            StockLine(sku="TEA", quantity=1),
        )

        await save(store, changes(created=[held]))

        assert await reservations(store, "o-1") == {"o-1": held}

    async def test_bookings_racing_a_capacity_change_never_overbook_the_slot(
        self, store: InventoryStore, outbox: ReadOutbox
    ) -> None:
        service = Inventory(store=store, reservation_ttl=TTL, clock=lambda: T0)
        admin = Principal("admin-1", Role.ADMIN)
        async with store.transaction(CONSUMER) as tx:
            await tx.put_merchant(Merchant("m-1", "Tutor"))
            await tx.put_product(Product("LESSON", "Lesson", "m-1", 20000, 0, kind=ProductKind.SERVICE))
        first = slot("mon-10", capacity=3)
        await put_slots(store, first)
        orders = [delivery(placed(f"o-{n}", booking("mon-10"))) for n in range(6)]
        bigger = SlotPlan("mon-10", first.starts_at, first.ends_at, capacity=4)

        async def grow() -> None:
            await put_slot(service, admin, "LESSON", bigger, None)

        async def reserve(order: Delivery) -> None:
            await handle_batch(service, [order])

        await asyncio.gather(
            retry_transient(grow, attempts=12, backoff_s=0.005),
            *(retry_transient(partial(reserve, order), attempts=12, backoff_s=0.005) for order in orders),
        )

        [after] = await store.list_slots(["LESSON"])
        held = [e for e in await outbox() if e.type == StockReserved.TYPE]
        assert after.capacity == 4 and after.available >= 0
        assert after.available + after.reserved == 4
        assert after.reserved == len(held) >= 3

    # --- substitutes -------------------------------------------------------------------------------

    async def test_substitute_candidates_are_a_categorys_sellable_products_across_merchants(
        self, store: InventoryStore
    ) -> None:
        await put(
            store,
            product("LONGJING", category="tea/green", price_fen=16800),
            product("BILUO", category="tea/green", merchant_id="m-2", price_fen=12000),
            product("JASMINE", category="tea/green", merchant_id="m-3", price_fen=4500, available=3),
            product("SENCHA", category="tea/green", price_fen=9000, active=False),
            product("MAOFENG", category="tea/green", price_fen=9000, available=0),
            product("PUER", category="tea/dark", price_fen=9800),
            product("CUP", price_fen=9800),
        )

        async with store.transaction(CONSUMER) as tx:
            candidates = await tx.substitute_candidates(
                [SubstituteSearch("tea/green", "m-1", 10000)], exclude={"LONGJING"}
            )

        assert [p.sku for p in candidates] == ["BILUO", "JASMINE"]
        assert candidates[1] == product(
            "JASMINE", category="tea/green", merchant_id="m-3", price_fen=4500, available=3
        )

    async def test_a_search_without_a_category_finds_the_merchants_other_products(
        self, store: InventoryStore
    ) -> None:
        await put(
            store,
            product("CUP", price_fen=3900),
            product("POT", price_fen=25800, category="ware/pots"),
            product("SAUCE", merchant_id="m-2", price_fen=1590),
        )

        async with store.transaction(CONSUMER) as tx:
            candidates = await tx.substitute_candidates([SubstituteSearch("", "m-1", 2000)], exclude=set())

        assert [p.sku for p in candidates] == ["CUP", "POT"]

    async def test_substitute_candidates_are_the_nearest_in_price_on_either_side(
        self, store: InventoryStore
    ) -> None:
        # Prices 100, 200, ... 3000 around a search at 1550: the nearest CANDIDATES_PER_SIDE above
        # and below it, whatever their stock.
        await put(
            store,
            *(
                product(f"SKU-{n:02d}", price_fen=n * 100, available=100 - n, category="tea/green")
                for n in range(1, 31)
            ),
        )

        async with store.transaction(CONSUMER) as tx:
            candidates = await tx.substitute_candidates(
                [SubstituteSearch("tea/green", "m-1", 1550)], exclude=set()
            )

        below = [f"SKU-{n:02d}" for n in range(16 - CANDIDATES_PER_SIDE, 16)]
        above = [f"SKU-{n:02d}" for n in range(16, 16 + CANDIDATES_PER_SIDE)]
        assert [p.sku for p in candidates] == sorted(below + above)

    # --- back-in-stock subscriptions and low-stock flags ---------------------------------------------

    async def test_a_subscription_is_recorded_once_per_customer_and_product(
        self, store: InventoryStore
    ) -> None:
        await put(store, product("TEA", available=0), product("CUP", available=0))
        async with store.transaction(CONSUMER) as tx:
            first = await tx.subscribe(Subscription("TEA", "cust-2", "sub-1"))
            again = await tx.subscribe(Subscription("TEA", "cust-2", "sub-2"))
            await tx.subscribe(Subscription("TEA", "cust-1", "sub-3"))
            await tx.subscribe(Subscription("CUP", "cust-1", "sub-4"))

        async with store.transaction(CONSUMER) as tx:
            found = await tx.subscriptions("TEA")

        assert (first, again) == (True, False)
        assert found == [Subscription("TEA", "cust-1", "sub-3"), Subscription("TEA", "cust-2", "sub-1")]

    async def test_unsubscribing_and_ending_subscriptions_remove_them(self, store: InventoryStore) -> None:
        await put(store, product("TEA", available=0))
        async with store.transaction(CONSUMER) as tx:
            for n in range(1, 4):
                await tx.subscribe(Subscription("TEA", f"cust-{n}", f"sub-{n}"))

        async with store.transaction(CONSUMER) as tx:
            removed = await tx.unsubscribe("TEA", "cust-1")
            removed_again = await tx.unsubscribe("TEA", "cust-1")
            await tx.end_subscriptions([Subscription("TEA", "cust-2", "sub-2")])
        async with store.transaction(CONSUMER) as tx:
            left = await tx.subscriptions("TEA")

        assert (removed, removed_again) == (True, False)
        assert left == [Subscription("TEA", "cust-3", "sub-3")]

    async def test_a_subscription_written_in_a_failed_transaction_is_not_there(
        self, store: InventoryStore
    ) -> None:
        await put(store, product("TEA", available=0))
        with pytest.raises(RuntimeError):
            async with store.transaction(CONSUMER) as tx:
                await tx.subscribe(Subscription("TEA", "cust-1", "sub-1"))
                raise RuntimeError("boom")

        async with store.transaction(CONSUMER) as tx:
            assert await tx.subscriptions("TEA") == []

    async def test_the_low_stock_flag_is_stored_and_kept_by_an_edit(self, store: InventoryStore) -> None:
        await put(store, replace(product("TEA", available=2), low_stock_threshold=3))
        async with store.transaction(CONSUMER) as tx:
            await tx.mark_low_stock({"TEA": True})
        await put(
            store, replace(product("TEA", available=50), low_stock_threshold=5, low_stock_notified=False)
        )

        stored = await store.get_product("TEA")
        assert stored is not None
        assert (stored.available, stored.low_stock_threshold, stored.low_stock_notified) == (2, 5, True)

    async def test_catalog_details_read_back_as_put(self, store: InventoryStore) -> None:
        tea = replace(
            product("TEA", category="tea/green"),
            description="Picked before Qingming",
            attributes={"origin": "Hangzhou", "weight": "250g"},
            payment_methods=frozenset({PaymentMethod.ALIPAY}),
            low_stock_threshold=4,
        )
        await put(store, tea)

        assert await store.get_product("TEA") == tea

    # --- merchants ---------------------------------------------------------------------------------

    async def test_merchants_are_created_replaced_and_listed_by_id(self, store: InventoryStore) -> None:
        wallets = frozenset({PaymentMethod.WECHAT_PAY, PaymentMethod.ALIPAY})
        async with store.transaction(CONSUMER) as tx:
            await tx.put_merchant(Merchant("m-2", "Jingdezhen Porcelain", wallets))
            await tx.put_merchant(Merchant("m-1", "West Lake Tea"))

        async with store.transaction(CONSUMER) as tx:
            await tx.put_merchant(Merchant("m-1", "West Lake Tea House", frozenset({PaymentMethod.ALIPAY})))

        assert await store.list_merchants() == [
            Merchant("m-1", "West Lake Tea House", frozenset({PaymentMethod.ALIPAY})),
            Merchant("m-2", "Jingdezhen Porcelain", wallets),
        ]
        assert await store.get_merchant("m-2") == Merchant("m-2", "Jingdezhen Porcelain", wallets)
        assert await store.get_merchant("m-404") is None
        async with store.transaction(CONSUMER) as tx:
            assert await tx.merchant("m-2") == Merchant("m-2", "Jingdezhen Porcelain", wallets)
            assert await tx.merchant("m-404") is None

    async def test_a_merchants_vetting_reads_back_whole_and_merchants_are_found_by_status(
        self, store: InventoryStore
    ) -> None:
        history = (
            StatusChange(MerchantAction.REGISTER, MerchantStatus.PENDING, T0, "m-1"),
            StatusChange(MerchantAction.APPROVE, MerchantStatus.APPROVED, T0 + TTL, "admin-1", "checked"),
            StatusChange(MerchantAction.SUSPEND, MerchantStatus.SUSPENDED, T0 + 2 * TTL, "admin-1", "fakes"),
        )
        suspended = Merchant(
            "m-1",
            "West Lake Tea",
            status=MerchantStatus.SUSPENDED,
            reason="fakes",
            webhook_url="https://tea.example/hooks",
            licence_number="LIC-1",
            contact="tea@example.com",
            history=history,
        )
        pending = Merchant("m-2", "Pottery", status=MerchantStatus.PENDING, contact="13912345678")
        async with store.transaction(CONSUMER) as tx:
            await tx.put_merchant(suspended)
            await tx.put_merchant(pending)
            await tx.put_merchant(Merchant("m-3", "Pantry"))

        assert await store.get_merchant("m-1") == suspended
        assert await store.list_merchants(MerchantStatus.PENDING) == [pending]
        assert [m.merchant_id for m in await store.list_merchants(MerchantStatus.APPROVED)] == ["m-3"]
        assert [m.merchant_id for m in await store.list_merchants()] == ["m-1", "m-2", "m-3"]
        async with store.transaction(CONSUMER) as tx:
            assert await tx.merchants(["m-2", "m-1", "m-9"]) == {"m-1": suspended, "m-2": pending}

    async def test_a_merchants_products_are_read_by_sku_in_a_transaction(self, store: InventoryStore) -> None:
        await put(store, product("TEA"), product("CUP", merchant_id="m-2"), product("JAR", active=False))

        async with store.transaction(CONSUMER) as tx:
            assert [p.sku for p in await tx.products_of("m-1")] == ["JAR", "TEA"]
            assert await tx.products_of("m-9") == []

    async def test_a_merchant_written_in_a_failed_transaction_is_not_there(
        self, store: InventoryStore
    ) -> None:
        with pytest.raises(RuntimeError, match="decided badly"):
            async with store.transaction(CONSUMER) as tx:
                await tx.put_merchant(Merchant("m-1", "West Lake Tea"))
                raise RuntimeError("decided badly")

        assert await store.get_merchant("m-1") is None

    # --- apply once, all or nothing, the outbox ---------------------------------------------------

    async def test_an_applied_event_is_not_unapplied_again_for_that_consumer(
        self, store: InventoryStore
    ) -> None:
        first, second = delivery(cancelled("o-1")), delivery(cancelled("o-2"))
        assert await store.unapplied(CONSUMER, [first, second, first]) == [first, second]

        async with store.transaction(CONSUMER) as tx:
            tx.mark_applied([first.envelope.id])

        assert await store.unapplied(CONSUMER, [first, second]) == [second]
        assert await store.unapplied("another-consumer", [first]) == [first]

    async def test_a_second_apply_of_an_event_is_refused_with_everything_it_wrote(
        self, store: InventoryStore, outbox: ReadOutbox
    ) -> None:
        cause = delivery(cancelled("o-1"))
        async with store.transaction(CONSUMER) as tx:
            tx.mark_applied([cause.envelope.id])

        with pytest.raises(ConcurrentWrite):
            async with store.transaction(CONSUMER) as tx:
                await tx.put_product(product("TEA"))
                tx.emit([announcement("TEA")])
                tx.mark_applied([cause.envelope.id])

        assert await store.get_product("TEA") is None
        assert await outbox() == []

    async def test_one_event_marked_twice_in_a_transaction_is_refused(self, store: InventoryStore) -> None:
        cause = delivery(cancelled("o-1"))

        with pytest.raises(ConcurrentWrite):
            async with store.transaction(CONSUMER) as tx:
                tx.mark_applied([cause.envelope.id, cause.envelope.id])

        assert await store.unapplied(CONSUMER, [cause]) == [cause]

    async def test_a_transaction_whose_body_raises_writes_nothing(
        self, store: InventoryStore, outbox: ReadOutbox
    ) -> None:
        await put(store, product("CUP", available=2))
        cause = delivery(cancelled("o-1"))

        with pytest.raises(RuntimeError, match="decided badly"):
            async with store.transaction(CONSUMER) as tx:
                await tx.put_product(product("TEA"))
                await tx.save(
                    changes(
                        {"CUP": StockDelta(-1, 1)},
                        created=[reservation("o-1", StockLine(sku="CUP", quantity=1))],
                    )
                )
                tx.mark_applied([cause.envelope.id])
                tx.emit([announcement("TEA")])
                raise RuntimeError("decided badly")

        assert await store.get_product("TEA") is None
        assert await stock(store, "CUP") == (2, 0)
        assert await reservations(store, "o-1") == {}
        assert await store.unapplied(CONSUMER, [cause]) == [cause]
        assert await outbox() == []

    async def test_emitted_events_land_in_the_outbox_in_order_with_the_changes(
        self, store: InventoryStore, outbox: ReadOutbox
    ) -> None:
        tea, cup, pot = announcement("TEA"), announcement("CUP"), announcement("POT")

        async with store.transaction(CONSUMER) as tx:
            await tx.put_product(product("TEA"))
            tx.emit([tea, cup])
        async with store.transaction(CONSUMER) as tx:
            tx.emit([pot])

        assert await outbox() == [tea, cup, pot]
        assert await store.get_product("TEA") == product("TEA")

    # --- coupons ------------------------------------------------------------------------------------

    async def test_a_coupon_is_created_with_every_use_left_and_an_edit_keeps_its_uses(
        self, store: InventoryStore
    ) -> None:
        async with store.transaction(CONSUMER) as tx:
            created = await tx.put_coupon(Coupon.create("TEA10", coupon_terms(total_uses=5)), None)
        await save(store, coupon_changes(counts={"TEA10": CouponDelta(left=-3, held=2, used=1)}))
        read = await store.get_coupon("TEA10")
        assert read is not None
        async with store.transaction(CONSUMER) as tx:
            edited = await tx.put_coupon(read.edited(coupon_terms(total_uses=4, active=False)), read)

        assert created == Coupon("TEA10", coupon_terms(total_uses=5), left=5)
        assert edited == Coupon("TEA10", coupon_terms(total_uses=4, active=False), left=1, held=2, used=1)
        assert await store.get_coupon("TEA10") == edited
        async with store.transaction(CONSUMER) as tx:
            await tx.put_coupon(Coupon.create("POT5", coupon_terms(merchant_id="m-2")), None)
        assert [c.code for c in await store.list_coupons()] == ["POT5", "TEA10"]
        assert [c.code for c in await store.list_coupons("m-2")] == ["POT5"]
        async with store.transaction(CONSUMER) as tx:
            assert set(await tx.coupons(["TEA10", "NONE"])) == {"TEA10"}

    async def test_creating_a_coupon_that_exists_or_editing_one_changed_since_conflicts(
        self, store: InventoryStore
    ) -> None:
        async with store.transaction(CONSUMER) as tx:
            await tx.put_coupon(Coupon.create("TEA10", coupon_terms(total_uses=5)), None)
        stale = await store.get_coupon("TEA10")
        assert stale is not None
        async with store.transaction(CONSUMER) as tx:
            await tx.put_coupon(stale.edited(coupon_terms(total_uses=6)), stale)

        with pytest.raises(StockConflict):
            async with store.transaction(CONSUMER) as tx:
                await tx.put_coupon(Coupon.create("TEA10", coupon_terms()), None)
        with pytest.raises(StockConflict):
            async with store.transaction(CONSUMER) as tx:
                await tx.put_coupon(stale.edited(coupon_terms(total_uses=2)), stale)
        assert await store.get_coupon("TEA10") == Coupon("TEA10", coupon_terms(total_uses=6), left=6)

    async def test_a_count_the_coupon_cannot_take_conflicts_and_nothing_is_written(
        self, store: InventoryStore
    ) -> None:
        async with store.transaction(CONSUMER) as tx:
            await tx.put_coupon(Coupon.create("TEA10", coupon_terms(total_uses=1)), None)
        await put(store, product("TEA"))

        with pytest.raises(StockConflict):
            await save(
                store,
                Changes(
                    {"TEA": StockDelta(-1, 1)},
                    [],
                    [],
                    coupons=CouponChanges({"TEA10": CouponDelta(left=-2, held=2, used=0)}),
                ),
            )
        assert await store.get_coupon("TEA10") == Coupon("TEA10", coupon_terms(total_uses=1), left=1)
        assert await stock(store, "TEA") == (10, 0)

    async def test_coupon_uses_read_back_as_saved_and_move_on_from_the_status_read_once(
        self, store: InventoryStore
    ) -> None:
        held = coupon_use("o-1", "c-1")
        await save(store, coupon_changes(created=[held]))
        used = replace(held, status=CouponUseStatus.USED)
        await save(store, coupon_changes(moved=[CouponMove(used, CouponUseStatus.HELD)]))

        with pytest.raises(StockConflict):
            await save(store, coupon_changes(moved=[CouponMove(used, CouponUseStatus.HELD)]))
        with pytest.raises(StockConflict):
            await save(store, coupon_changes(created=[coupon_use("o-1", "c-2")]))
        async with store.transaction(CONSUMER) as tx:
            assert await tx.coupon_uses(["o-1", "o-2"]) == {"o-1": used}

    async def test_a_customer_holds_or_uses_a_once_per_customer_coupon_once_until_it_is_given_back(
        self, store: InventoryStore
    ) -> None:
        first = coupon_use("o-1", "c-1")
        await save(store, coupon_changes(created=[first, coupon_use("o-2", "c-2", once=False)]))
        async with store.transaction(CONSUMER) as tx:
            found = await tx.redeemed([("TEA10", "c-1"), ("TEA10", "c-2"), ("POT5", "c-1")])
        assert found == {("TEA10", "c-1")}

        with pytest.raises(StockConflict):
            await save(store, coupon_changes(created=[coupon_use("o-3", "c-1")]))
        released = replace(first, status=CouponUseStatus.RELEASED, reason=OrderEndReason.PAYMENT_DECLINED)
        await save(store, coupon_changes(moved=[CouponMove(released, CouponUseStatus.HELD)]))
        await save(store, coupon_changes(created=[coupon_use("o-3", "c-1")]))
        # Taking the given-back use again (a late payment) finds the customer has another now.
        with pytest.raises(StockConflict):
            used_again = replace(released, status=CouponUseStatus.USED, reason="")
            await save(store, coupon_changes(moved=[CouponMove(used_again, CouponUseStatus.RELEASED)]))
        async with store.transaction(CONSUMER) as tx:
            assert await tx.redeemed([("TEA10", "c-1")]) == {("TEA10", "c-1")}
            assert (await tx.coupon_uses(["o-1"]))["o-1"].status is CouponUseStatus.RELEASED

    async def test_concurrent_orders_for_a_coupons_last_uses_never_take_more_than_it_has(
        self, store: InventoryStore
    ) -> None:
        service = Inventory(store=store, reservation_ttl=TTL, clock=lambda: T0)
        async with store.transaction(CONSUMER) as tx:
            await tx.put_merchant(Merchant("m-1", "West Lake Tea"))
            await tx.put_coupon(Coupon.create("TEA10", coupon_terms(total_uses=3)), None)
        await put(store, product("TEA", available=100))
        orders = [
            delivery(placed_with_coupon(f"o-{n}", line("TEA", 1), code="TEA10", customer_id=f"c-{n % 6}"))
            for n in range(12)
        ]

        async def reserve(order: Delivery) -> None:
            await handle_batch(service, [order])

        await asyncio.gather(
            *(retry_transient(partial(reserve, order), attempts=30, backoff_s=0.005) for order in orders)
        )

        coupon = await store.get_coupon("TEA10")
        assert coupon is not None and (coupon.left, coupon.held, coupon.used) == (0, 3, 0)
        async with store.transaction(CONSUMER) as tx:
            uses = await tx.coupon_uses([f"o-{n}" for n in range(12)])
        assert len(uses) == 3
        assert len({use.customer_id for use in uses.values()}) == 3, "once per customer"
        assert await stock(store, "TEA") == (97, 3)

    # --- stock changes racing reservations, through the handlers -----------------------------------

    async def test_restocks_and_reservations_racing_on_one_product_lose_nothing(
        self, store: InventoryStore
    ) -> None:
        service = Inventory(store=store, reservation_ttl=TTL, clock=lambda: T0)
        admin = Principal("admin-1", Role.ADMIN)
        async with store.transaction(CONSUMER) as tx:
            await tx.put_merchant(Merchant("m-1", "West Lake Tea"))
        await put(store, product("TEA", available=10))
        orders = [delivery(placed(f"o-{n}", line("TEA", 2))) for n in range(5)]

        async def restock() -> None:
            await add_stock(service, admin, "TEA", 5)

        async def reserve(order: Delivery) -> None:
            await handle_batch(service, [order])

        # The loser of a race fails with a transient error and runs again, as an HTTP client or
        # the consumer loop would run it again; what matters is that no write is lost.
        await asyncio.gather(
            *(retry_transient(restock, attempts=12, backoff_s=0.005) for _ in range(5)),
            *(retry_transient(partial(reserve, order), attempts=12, backoff_s=0.005) for order in orders),
        )

        assert await stock(store, "TEA") == (10 + 5 * 5 - 5 * 2, 5 * 2)


def coupon_terms(**changes: Any) -> CouponTerms:
    fields: dict[str, Any] = {
        "merchant_id": "m-1",
        "discount": CouponDiscount.PERCENT,
        "value": 10,
        "valid_from": T0 - timedelta(days=1),
        "valid_until": T0 + timedelta(days=30),
        "total_uses": 5,
    }
    return CouponTerms(**{**fields, **changes})


def coupon_use(order_id: str, customer_id: str, *, once: bool = True) -> CouponUse:
    return CouponUse(order_id, "TEA10", customer_id, once, CouponUseStatus.HELD)


def coupon_changes(
    counts: Mapping[str, CouponDelta] | None = None,
    created: Sequence[CouponUse] = (),
    moved: Sequence[CouponMove] = (),
) -> Changes:
    return Changes({}, [], [], coupons=CouponChanges(counts or {}, list(created), list(moved)))


class TestInMemoryInventoryStore(InventoryStoreContract):
    @pytest.fixture
    def twin(self) -> InMemoryInventoryStore:
        return InMemoryInventoryStore()

    @pytest.fixture
    def store(self, twin: InMemoryInventoryStore) -> InventoryStore:
        return twin

    @pytest.fixture
    def outbox(self, twin: InMemoryInventoryStore) -> ReadOutbox:
        async def read() -> list[Envelope]:
            return list(twin.outbox)

        return read


class TestMongoInventoryStore(InventoryStoreContract):
    @pytest.fixture
    async def store(self, mongo_store: MongoStore) -> InventoryStore:
        store = MongoInventoryStore(mongo_store, PERSONAL)
        await store.ensure_indexes()
        return store

    async def test_documents_written_before_limits_and_payment_methods_read_with_the_defaults(
        self, store: InventoryStore, mongo_store: MongoStore
    ) -> None:
        await mongo_store.db[MERCHANTS].insert_one({"_id": "m-1", "name": "West Lake Tea"})
        await mongo_store.db[PRODUCTS].insert_one(
            {"_id": "TEA", "name": "Longjing", "merchant_id": "m-1", "price_fen": 8800, "available": 4}
        )

        assert await store.get_merchant("m-1") == Merchant("m-1", "West Lake Tea", frozenset(PaymentMethod))
        assert [m.merchant_id for m in await store.list_merchants(MerchantStatus.APPROVED)] == ["m-1"]
        assert await store.get_product("TEA") == Product(
            "TEA", "Longjing", "m-1", 8800, available=4, max_per_order=MAX_UNITS_PER_ORDER, price_tiers=()
        )
        stored = await store.get_product("TEA")
        assert stored is not None
        assert (stored.category, stored.attributes, stored.payment_methods) == ("", {}, frozenset())
        assert (stored.low_stock_threshold, stored.low_stock_notified) == (None, False)

    async def test_a_merchants_contact_is_sealed_at_rest(
        self, store: InventoryStore, mongo_store: MongoStore
    ) -> None:
        async with store.transaction(CONSUMER) as tx:
            await tx.put_merchant(Merchant("m-1", "Tea", contact="tea@example.com"))

        raw = await mongo_store.db[MERCHANTS].find_one({"_id": "m-1"})
        assert raw is not None and "tea@example.com" not in str(raw)
        assert PERSONAL.open(raw["sealed_contact"]) == "tea@example.com"

    async def test_a_coupon_users_customer_is_sealed_at_rest_and_found_by_a_blind_index(
        self, store: InventoryStore, mongo_store: MongoStore
    ) -> None:
        await save(store, coupon_changes(created=[coupon_use("o-1", "13800138000")]))

        raw = await mongo_store.db[COUPON_USES].find_one({"_id": "o-1"})
        assert raw is not None and "13800138000" not in str(raw)
        assert PERSONAL.open(raw["sealed_customer"]) == "13800138000"

    @pytest.fixture
    def outbox(self, mongo_store: MongoStore) -> ReadOutbox:
        async def read() -> list[Envelope]:
            documents = await mongo_store.db[OUTBOX].find().sort("_id", ASCENDING).to_list()
            return [decode(document["value"]) for document in documents]

        return read
