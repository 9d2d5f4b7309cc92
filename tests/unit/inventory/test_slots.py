"""Service products' time slots: a slot's capacity is its stock, held and settled per slot."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.inventory.domain import (
    MAX_SLOT_CAPACITY,
    MAX_UPCOMING_SLOTS,
    InvalidSlot,
    Ledger,
    Merchant,
    Product,
    Reservation,
    ReservationStatus,
    Slot,
    SlotConflict,
    SlotPlan,
    StockDelta,
    check_room_for_a_slot,
    stock_lines,
    upcoming,
)
from shared.contracts import (
    OrderEndReason,
    OrderLine,
    ProductKind,
    ReservationEndReason,
    ServiceSlot,
    Shortage,
    StockCommitted,
    StockLine,
    StockRejected,
    StockRejectReason,
    StockReleased,
    StockReserved,
)
from tests.unit.samples import T0

pytestmark = pytest.mark.unit

TTL = timedelta(minutes=15)
HOUR = timedelta(hours=1)
SELLING = {"m-1": Merchant("m-1", "Tutor")}
LESSON = Product("LESSON", "Piano lesson", "m-1", 20000, available=0, kind=ProductKind.SERVICE)
TEA = Product("TEA", "Longjing", "m-1", 8800, available=5)


def slot(slot_id: str, *, available: int = 3, capacity: int = 3, starts_in: timedelta = HOUR) -> Slot:
    starts_at = T0 + starts_in
    return Slot("LESSON", slot_id, starts_at, starts_at + HOUR, capacity, available)


def booking(quantity: int = 1, slot_id: str | None = "mon-10", sku: str = "LESSON") -> OrderLine:
    return OrderLine(
        sku=sku,
        name=sku,
        merchant_id="m-1",
        kind=ProductKind.SERVICE if sku == "LESSON" else ProductKind.PHYSICAL,
        quantity=quantity,
        unit_price_fen=20000,
        slot_id=slot_id,
    )


def ledger(*slots: Slot, reservations: dict[str, Reservation] | None = None) -> Ledger:
    return Ledger.open(
        {"LESSON": LESSON, "TEA": TEA},
        reservations or {},
        now=T0,
        ttl=TTL,
        merchants=SELLING,
        slots={s.key: s for s in slots or (slot("mon-10"), slot("mon-11"))},
    )


def held(order_id: str, *lines: StockLine) -> Reservation:
    return Reservation(order_id, list(lines), ReservationStatus.HELD, "corr", expires_at=T0 + TTL)


def seat(quantity: int = 1, slot_id: str = "mon-10") -> StockLine:
    return StockLine(sku="LESSON", quantity=quantity, slot_id=slot_id)


# --- stock lines -----------------------------------------------------------------------------------


def test_stock_lines_keep_the_slots_of_one_service_apart_and_merge_each_slots_repeats() -> None:
    lines = [booking(1, "mon-10"), booking(2, "mon-11"), booking(1, "mon-10"), booking(1, None, "TEA")]

    assert stock_lines(lines) == [
        StockLine(sku="LESSON", quantity=2, slot_id="mon-10"),
        StockLine(sku="LESSON", quantity=2, slot_id="mon-11"),
        StockLine(sku="TEA", quantity=1),
    ]


# --- reserving ---------------------------------------------------------------------------------------


def test_a_slot_with_capacity_three_takes_three_bookings_and_refuses_the_fourth() -> None:
    book = ledger(slot("mon-10"))

    outcomes = [book.reserve(f"o-{n}", [booking()], f"corr-{n}") for n in range(4)]

    assert [type(event) for [event] in outcomes] == [StockReserved] * 3 + [StockRejected]
    [rejection] = outcomes[3]
    assert isinstance(rejection, StockRejected)
    assert rejection.reason is StockRejectReason.OUT_OF_STOCK
    assert rejection.shortages == [Shortage(sku="LESSON", slot_id="mon-10", quantity=1, available=0)]
    changes = book.changes()
    assert changes.slots == {("LESSON", "mon-10"): StockDelta(-3, 3)}
    assert changes.stock == {}, "a service's seats are counted on its slots, never on the product"


def test_a_booking_takes_its_slot_and_the_orders_other_lines_all_together() -> None:
    book = ledger()

    [event] = book.reserve("o-1", [booking(2, "mon-11"), booking(1, None, "TEA")], "corr")

    assert event == StockReserved(
        order_id="o-1",
        lines=[seat(2, "mon-11"), StockLine(sku="TEA", quantity=1)],
        expires_at=T0 + TTL,
    )
    changes = book.changes()
    assert changes.slots == {("LESSON", "mon-11"): StockDelta(-2, 2)}
    assert changes.stock == {"TEA": StockDelta(-1, 1)}


def test_a_full_slot_holds_nothing_of_the_orders_other_lines() -> None:
    book = ledger(slot("mon-10", available=1))

    [event] = book.reserve("o-1", [booking(1, None, "TEA"), booking(2)], "corr")

    assert isinstance(event, StockRejected)
    assert event.shortages == [Shortage(sku="LESSON", slot_id="mon-10", quantity=2, available=1)]
    assert (book.changes().stock, book.changes().slots) == ({}, {})


@pytest.mark.parametrize(
    ("slot_id", "why"),
    [
        ("sun-09", "unknown slot"),
        ("past", "a slot that has started"),
        ("now", "a slot starting this very moment"),
        (None, "no slot named"),
    ],
)
def test_a_slot_that_cannot_be_booked_is_a_shortage_with_nothing_available(
    slot_id: str | None, why: str
) -> None:
    book = ledger(slot("past", starts_in=-HOUR), slot("now", starts_in=timedelta(0)))

    [event] = book.reserve("o-1", [booking(1, slot_id)], "corr")

    assert isinstance(event, StockRejected), why
    assert event.shortages == [Shortage(sku="LESSON", slot_id=slot_id, quantity=1, available=0)]


def test_a_slot_id_on_a_product_that_is_not_a_service_is_a_shortage() -> None:
    [event] = ledger().reserve("o-1", [booking(1, "mon-10", "TEA")], "corr")

    assert isinstance(event, StockRejected)
    assert event.shortages == [Shortage(sku="TEA", slot_id="mon-10", quantity=1, available=0)]


def test_a_delisted_service_or_a_merchant_that_does_not_sell_books_nothing() -> None:
    delisted = Ledger.open(
        {"LESSON": Product("LESSON", "x", "m-1", 1, available=0, kind=ProductKind.SERVICE, active=False)},
        {},
        now=T0,
        ttl=TTL,
        merchants=SELLING,
        slots={slot("mon-10").key: slot("mon-10")},
    )
    unapproved = Ledger.open(
        {"LESSON": LESSON}, {}, now=T0, ttl=TTL, merchants={}, slots={slot("mon-10").key: slot("mon-10")}
    )

    for book in (delisted, unapproved):
        [event] = book.reserve("o-1", [booking()], "corr")
        assert isinstance(event, StockRejected)
        assert event.shortages[0].available == 0


# --- settling ----------------------------------------------------------------------------------------


def test_a_cancelled_booking_gives_its_seat_back_to_its_slot() -> None:
    full = slot("mon-10", available=0, capacity=1)
    full.reserved = 1
    book = ledger(full, reservations={"o-1": held("o-1", seat(1))})

    [event] = book.release("o-1", OrderEndReason.PAYMENT_DECLINED)

    assert event == StockReleased(order_id="o-1", lines=[seat(1)], reason=OrderEndReason.PAYMENT_DECLINED)
    assert book.changes().slots == {("LESSON", "mon-10"): StockDelta(1, -1)}
    [again] = book.reserve("o-2", [booking()], "corr")
    assert isinstance(again, StockReserved)


def test_a_paid_booking_leaves_its_slots_reserved_seats_for_good() -> None:
    taken = slot("mon-10", available=2)
    taken.reserved = 1
    book = ledger(taken, reservations={"o-1": held("o-1", seat(1))})

    [event] = book.confirm("o-1", [booking()], "corr")

    assert event == StockCommitted(order_id="o-1", lines=[seat(1)])
    assert book.changes().slots == {("LESSON", "mon-10"): StockDelta(0, -1)}


def test_an_expired_booking_gives_its_seat_back() -> None:
    taken = slot("mon-10", available=2)
    taken.reserved = 1
    book = Ledger.open(
        {"LESSON": LESSON},
        {"o-1": held("o-1", seat(1))},
        now=T0 + TTL,
        ttl=TTL,
        slots={taken.key: taken},
    )

    [(_, event)] = book.expire()

    assert event == StockReleased(order_id="o-1", lines=[seat(1)], reason=ReservationEndReason.EXPIRED)
    assert book.changes().slots == {("LESSON", "mon-10"): StockDelta(1, -1)}


def expired(order_id: str, *lines: StockLine) -> Reservation:
    return Reservation(
        order_id, list(lines), ReservationStatus.RELEASED, "corr", reason=ReservationEndReason.EXPIRED
    )


def test_a_booking_paid_after_its_hold_expired_takes_a_free_seat_of_its_slot_again() -> None:
    book = ledger(slot("mon-10", available=1), reservations={"o-1": expired("o-1", seat(1))})

    [event] = book.confirm("o-1", [booking()], "corr")

    assert event == StockCommitted(order_id="o-1", lines=[seat(1)])
    assert book.changes().slots == {("LESSON", "mon-10"): StockDelta(-1, 0)}


@pytest.mark.parametrize(
    "gone",
    [slot("mon-10", available=0), slot("mon-10", starts_in=-timedelta(minutes=5))],
    ids=["full", "started"],
)
def test_a_booking_paid_after_its_hold_expired_is_lost_when_its_slot_is_full_or_started(gone: Slot) -> None:
    book = ledger(gone, reservations={"o-1": expired("o-1", seat(1))})

    [event] = book.confirm("o-1", [booking()], "corr")

    assert isinstance(event, StockRejected)
    assert event.reason is StockRejectReason.RESERVATION_LOST
    assert event.shortages == [Shortage(sku="LESSON", slot_id="mon-10", quantity=1, available=0)]
    assert book.changes().slots == {}


# --- the merchant's slots ------------------------------------------------------------------------------


def plan(
    slot_id: str = "mon-10",
    *,
    starts_in: timedelta = HOUR,
    lasts: timedelta = HOUR,
    capacity: int = 3,
) -> SlotPlan:
    return SlotPlan(slot_id, T0 + starts_in, T0 + starts_in + lasts, capacity)


def test_a_new_slot_has_every_seat_free() -> None:
    offered = Slot.offered("LESSON", plan(capacity=4), T0)

    assert (offered.capacity, offered.available, offered.reserved, offered.taken) == (4, 4, 0, 0)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (plan(lasts=timedelta(0)), "ends_at"),
        (plan(lasts=-HOUR), "ends_at"),
        (plan(starts_in=-HOUR), "starts_at"),
        (plan(starts_in=timedelta(0)), "starts_at"),
        (plan(starts_in=timedelta(days=400)), "starts_at"),
        (plan(lasts=timedelta(days=8)), "ends_at"),
        (plan(capacity=-1), "capacity"),
        (plan(capacity=MAX_SLOT_CAPACITY + 1), "capacity"),
    ],
)
def test_a_slot_nobody_could_book_is_refused_naming_the_field(bad: SlotPlan, field: str) -> None:
    with pytest.raises(InvalidSlot) as refused:
        Slot.offered("LESSON", bad, T0)

    assert refused.value.field == field


def test_capacity_moves_the_free_seats_and_never_goes_below_those_taken() -> None:
    taken = slot("mon-10", available=1, capacity=3)
    taken.reserved = 1  # one held, one paid

    bigger = taken.replanned(plan(capacity=5), T0)
    closed = taken.replanned(plan(capacity=2), T0)
    with pytest.raises(SlotConflict, match="2 seat\\(s\\) taken.*cannot go below 2"):
        taken.replanned(plan(capacity=1), T0)

    assert (bigger.capacity, bigger.available, bigger.reserved) == (5, 3, 1)
    assert (closed.capacity, closed.available, closed.reserved) == (2, 0, 1)


def test_a_slot_with_seats_taken_keeps_its_times_and_a_started_slot_does_not_change() -> None:
    taken = slot("mon-10", available=2)
    free = slot("mon-10")

    with pytest.raises(SlotConflict, match="times cannot move"):
        taken.replanned(plan(starts_in=2 * HOUR), T0)
    moved = free.replanned(plan(starts_in=2 * HOUR), T0)
    with pytest.raises(SlotConflict, match="has started"):
        slot("mon-10", starts_in=-HOUR).replanned(plan(), T0)

    assert moved.starts_at == T0 + 2 * HOUR


def test_only_a_slot_nobody_booked_may_be_removed() -> None:
    slot("mon-10").check_removable()
    with pytest.raises(SlotConflict, match="set its capacity to 1"):
        slot("mon-10", available=2).check_removable()


def test_a_product_offers_a_bounded_number_of_upcoming_slots_and_announces_them() -> None:
    many = [slot(f"s-{n}", starts_in=HOUR * (n + 1)) for n in range(MAX_UPCOMING_SLOTS)]
    check_room_for_a_slot([*many[1:], slot("old", starts_in=-HOUR)], T0)
    with pytest.raises(SlotConflict, match=f"at most {MAX_UPCOMING_SLOTS}"):
        check_room_for_a_slot(many, T0)

    later, sooner = slot("b", starts_in=2 * HOUR), slot("a", starts_in=HOUR)
    announced = LESSON.upserted(
        merchant_sells=True, slots=upcoming([later, slot("old", starts_in=-HOUR), sooner], T0)
    )

    assert announced.slots == [
        ServiceSlot(slot_id="a", starts_at=T0 + HOUR, ends_at=T0 + 2 * HOUR),
        ServiceSlot(slot_id="b", starts_at=T0 + 2 * HOUR, ends_at=T0 + 3 * HOUR),
    ]
