"""Coupon uses held with an order's stock, all or nothing, decided in memory like the stock itself."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from services.inventory.domain import (
    Coupon,
    CouponBook,
    CouponClaim,
    CouponDelta,
    CouponMove,
    CouponTerms,
    CouponUse,
    CouponUsesConflict,
    CouponUseStatus,
    InvalidCoupon,
    Ledger,
    Merchant,
    Product,
    Reservation,
    ReservationStatus,
)
from shared.contracts import (
    CouponDiscount,
    OrderEndReason,
    ReservationEndReason,
    StockCommitted,
    StockLine,
    StockRejected,
    StockRejectReason,
    StockReleased,
    StockReserved,
)
from tests.unit.inventory.factories import line
from tests.unit.samples import T0

pytestmark = pytest.mark.unit

TTL = timedelta(minutes=15)
SELLING = {"m-1": Merchant("m-1", "Tea"), "m-2": Merchant("m-2", "Pots")}


def terms(**changes: object) -> CouponTerms:
    fields: dict[str, object] = {
        "merchant_id": "m-1",
        "discount": CouponDiscount.PERCENT,
        "value": 10,
        "valid_from": T0 - timedelta(days=1),
        "valid_until": T0 + timedelta(days=1),
        "total_uses": 2,
    }
    return CouponTerms(**{**fields, **changes})  # type: ignore[arg-type]


def claim(customer_id: str = "c-1", code: str = "TEA10", merchant_id: str = "m-1") -> CouponClaim:
    return CouponClaim(code, merchant_id, customer_id)


def ledger(
    coupons: dict[str, Coupon] | None = None,
    uses: dict[str, CouponUse] | None = None,
    redeemed: set[tuple[str, str]] | None = None,
    reservations: dict[str, Reservation] | None = None,
    available: int = 10,
) -> Ledger:
    products = {"TEA": Product("TEA", "Longjing", "m-1", 1000, available=available)}
    book = CouponBook.open(
        coupons if coupons is not None else {"TEA10": Coupon.create("TEA10", terms())},
        uses or {},
        redeemed or set(),
    )
    return Ledger.open(products, reservations or {}, now=T0, ttl=TTL, merchants=SELLING, coupons=book)


def held_with_coupon(order_id: str, code: str = "TEA10") -> Reservation:
    return Reservation(
        order_id, [StockLine(sku="TEA", quantity=1)], ReservationStatus.HELD, "corr", T0 + TTL, coupon=code
    )


def rejection(events: Sequence[object]) -> StockRejected:
    [event] = events
    assert isinstance(event, StockRejected)
    assert event.reason is StockRejectReason.COUPON_UNAVAILABLE
    return event


# --- terms -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"value": 0}, "value"),
        ({"value": 101}, "value"),
        ({"discount": CouponDiscount.AMOUNT, "value": 0}, "value"),
        ({"valid_until": T0 - timedelta(days=1)}, "valid_until"),
        ({"total_uses": 0}, "total_uses"),
        ({"min_spend_fen": -1}, "min_spend_fen"),
    ],
)
def test_terms_that_make_no_coupon_are_refused_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidCoupon) as refused:
        terms(**changes)
    assert refused.value.field == field


def test_an_amount_coupon_may_take_more_than_a_hundred_fen_off() -> None:
    assert terms(discount=CouponDiscount.AMOUNT, value=5000).value == 5000


def test_an_edit_keeps_the_uses_and_moves_what_is_left_by_the_change_in_total() -> None:
    coupon = Coupon("TEA10", terms(total_uses=10), left=6, held=1, used=3)

    assert coupon.edited(terms(total_uses=5)) == Coupon("TEA10", terms(total_uses=5), left=1, held=1, used=3)
    with pytest.raises(CouponUsesConflict, match="3 are used and 1 held"):
        coupon.edited(terms(total_uses=3))


# --- holding a use with the stock ------------------------------------------------------------------


def test_an_order_holds_a_use_of_its_coupon_with_its_stock() -> None:
    book = ledger()

    events = book.reserve("o-1", [line("TEA", 1)], "corr", coupon=claim())

    assert [type(e) for e in events] == [StockReserved]
    assert book.reservations["o-1"].coupon == "TEA10"
    changes = book.changes()
    assert changes.coupons.counts == {"TEA10": CouponDelta(left=-1, held=1, used=0)}
    assert changes.coupons.created == [CouponUse("o-1", "TEA10", "c-1", True, CouponUseStatus.HELD)]
    assert changes.stock["TEA"].reserved == 1


def test_two_orders_in_one_batch_compete_for_the_last_use_and_the_loser_holds_nothing() -> None:
    book = ledger({"TEA10": Coupon("TEA10", terms(), left=1, held=1)})

    won = book.reserve("o-1", [line("TEA", 1)], "corr", coupon=claim("c-1"))
    lost = book.reserve("o-2", [line("TEA", 2)], "corr", coupon=claim("c-2"))

    assert [type(e) for e in won] == [StockReserved]
    assert "no use left" in rejection(lost).detail
    assert book.reservations["o-2"].status is ReservationStatus.REJECTED
    changes = book.changes()
    assert changes.stock["TEA"].reserved == 1, "the loser's stock is not held"
    assert changes.coupons.counts == {"TEA10": CouponDelta(left=-1, held=1, used=0)}
    assert [use.order_id for use in changes.coupons.created] == ["o-1"]


def test_a_repeated_order_placed_is_not_decided_again() -> None:
    book = ledger({"TEA10": Coupon("TEA10", terms(), left=1)})
    book.reserve("o-1", [line("TEA", 1)], "corr", coupon=claim("c-1"))

    assert book.reserve("o-1", [line("TEA", 1)], "corr", coupon=claim("c-1")) == []
    assert book.coupons.coupons["TEA10"].held == 1


def test_a_customer_holding_or_having_used_a_once_per_customer_coupon_is_refused_another_use() -> None:
    in_batch = ledger()
    in_batch.reserve("o-1", [line("TEA", 1)], "corr", coupon=claim("c-1"))
    from_before = ledger(redeemed={("TEA10", "c-1")})

    assert (
        "once per customer"
        in rejection(in_batch.reserve("o-2", [line("TEA", 1)], "corr", coupon=claim("c-1"))).detail
    )
    assert (
        "once per customer"
        in rejection(from_before.reserve("o-2", [line("TEA", 1)], "corr", coupon=claim("c-1"))).detail
    )


def test_a_coupon_for_many_uses_per_customer_lets_a_customer_use_it_again() -> None:
    book = ledger({"TEA10": Coupon.create("TEA10", terms(once_per_customer=False))}, redeemed=set())

    book.reserve("o-1", [line("TEA", 1)], "corr", coupon=claim("c-1"))
    events = book.reserve("o-2", [line("TEA", 1)], "corr", coupon=claim("c-1"))

    assert [type(e) for e in events] == [StockReserved]
    assert book.changes().coupons.created[1].redemption is None


@pytest.mark.parametrize(
    ("coupon", "asked", "why"),
    [
        (None, claim(), "there is no coupon TEA10"),
        (Coupon.create("TEA10", terms(active=False)), claim(), "switched off"),
        (Coupon.create("TEA10", terms(valid_until=T0)), claim(), "expired at"),
        (Coupon.create("TEA10", terms(valid_from=T0 + timedelta(seconds=1))), claim(), "valid from"),
        (Coupon.create("TEA10", terms()), claim(merchant_id="m-2"), "not a coupon of merchant m-2"),
    ],
)
def test_an_unknown_inactive_expired_or_other_merchants_coupon_holds_nothing_and_says_why(
    coupon: Coupon | None, asked: CouponClaim, why: str
) -> None:
    book = ledger({} if coupon is None else {"TEA10": coupon})

    assert why in rejection(book.reserve("o-1", [line("TEA", 1)], "corr", coupon=asked)).detail
    assert not book.changes().stock and not book.changes().coupons


def test_a_short_order_is_rejected_for_its_stock_and_holds_no_use() -> None:
    book = ledger(available=0)

    [event] = book.reserve("o-1", [line("TEA", 1)], "corr", coupon=claim())

    assert isinstance(event, StockRejected) and event.reason is StockRejectReason.OUT_OF_STOCK
    assert not book.changes().coupons


# --- settling the use with the order ---------------------------------------------------------------


def test_a_released_order_gives_its_use_back_to_the_coupon_and_the_customer_once() -> None:
    book = ledger(
        {"TEA10": Coupon("TEA10", terms(), left=0, held=2)},
        uses={"o-1": CouponUse("o-1", "TEA10", "c-1", True, CouponUseStatus.HELD)},
        redeemed={("TEA10", "c-1")},
        reservations={"o-1": held_with_coupon("o-1")},
    )

    assert [type(e) for e in book.release("o-1", OrderEndReason.PAYMENT_DECLINED)] == [StockReleased]
    assert book.release("o-1", OrderEndReason.PAYMENT_DECLINED) == []
    again = book.reserve("o-2", [line("TEA", 1)], "corr", coupon=claim("c-1"))

    assert [type(e) for e in again] == [StockReserved], "the customer may use it again"
    changes = book.changes().coupons
    assert not changes.counts, "one use given back, one held again"
    assert [use.order_id for use in changes.created] == ["o-2"]
    [move] = changes.moved
    assert (move.use.status, move.use.reason, move.was) == (
        CouponUseStatus.RELEASED,
        OrderEndReason.PAYMENT_DECLINED,
        CouponUseStatus.HELD,
    )


def test_a_confirmed_order_uses_its_held_use_for_good_once() -> None:
    book = ledger(
        {"TEA10": Coupon("TEA10", terms(), left=1, held=1)},
        uses={"o-1": CouponUse("o-1", "TEA10", "c-1", True, CouponUseStatus.HELD)},
        reservations={"o-1": held_with_coupon("o-1")},
    )

    assert [type(e) for e in book.confirm("o-1", [line("TEA", 1)], "corr")] == [StockCommitted]
    assert book.confirm("o-1", [line("TEA", 1)], "corr") == []

    changes = book.changes().coupons
    assert changes.counts == {"TEA10": CouponDelta(left=0, held=-1, used=1)}
    assert [(m.use.status, m.was) for m in changes.moved] == [(CouponUseStatus.USED, CouponUseStatus.HELD)]


def test_an_expired_reservation_gives_its_use_back() -> None:
    reservation = held_with_coupon("o-1")
    reservation.expires_at = T0
    book = ledger(
        {"TEA10": Coupon("TEA10", terms(), left=1, held=1)},
        uses={"o-1": CouponUse("o-1", "TEA10", "c-1", True, CouponUseStatus.HELD)},
        reservations={"o-1": reservation},
    )

    assert len(book.expire()) == 1
    assert book.changes().coupons.counts == {"TEA10": CouponDelta(left=1, held=-1, used=0)}
    assert book.coupons.uses["o-1"].reason == ReservationEndReason.EXPIRED


def _expired_with_coupon(left: int) -> Ledger:
    reservation = held_with_coupon("o-1")
    reservation.status, reservation.reason = ReservationStatus.RELEASED, ReservationEndReason.EXPIRED
    use = CouponUse("o-1", "TEA10", "c-1", True, CouponUseStatus.RELEASED, ReservationEndReason.EXPIRED)
    return ledger(
        {"TEA10": Coupon("TEA10", terms(), left=left, held=0, used=2 - left)},
        uses={"o-1": use},
        reservations={"o-1": reservation},
    )


def test_an_order_paid_after_its_reservation_expired_takes_its_coupon_use_again_as_used() -> None:
    book = _expired_with_coupon(left=1)

    assert [type(e) for e in book.confirm("o-1", [line("TEA", 1)], "corr")] == [StockCommitted]
    changes = book.changes().coupons
    assert changes.counts == {"TEA10": CouponDelta(left=-1, held=0, used=1)}
    assert changes.moved == [CouponMove(book.coupons.uses["o-1"], CouponUseStatus.RELEASED)]
    assert book.coupons.uses["o-1"].status is CouponUseStatus.USED


def test_an_order_paid_after_its_coupons_uses_went_meanwhile_is_lost_and_takes_nothing() -> None:
    book = _expired_with_coupon(left=0)

    [event] = book.confirm("o-1", [line("TEA", 1)], "corr")

    assert isinstance(event, StockRejected) and event.reason is StockRejectReason.RESERVATION_LOST
    assert "no use left" in event.detail
    assert not book.changes().stock and not book.changes().coupons
