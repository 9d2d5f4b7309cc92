"""Reservation decisions on an in-memory view of stock, event by event."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from services.inventory.domain import (
    DEFAULT_MAX_HOLD,
    MAX_PRICE_TIERS,
    MAX_STOCK,
    InvalidPriceTiers,
    Ledger,
    Merchant,
    Product,
    ProductDetails,
    Reservation,
    ReservationStatus,
    StockDelta,
    StockOutOfRange,
    SubstituteSearch,
    hold_deadline,
    rank_substitutes,
    stock_lines,
)
from shared.contracts import (
    MAX_UNITS_PER_ORDER,
    MerchantStatus,
    MerchantUpserted,
    OrderEndReason,
    PaymentMethod,
    PriceTier,
    ProductKind,
    ProductUpserted,
    ReservationEndReason,
    Shortage,
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
SELLING = {m: Merchant(m, m) for m in ("m-1", "m-2")}


def catalog() -> dict[str, Product]:
    return {
        p.sku: p
        for p in [
            Product("TEA", "Longjing", "m-1", 8800, available=5),
            Product("CUP", "Celadon cup", "m-1", 3900, available=2),
            Product("POT", "Teapot", "m-1", 25800, available=9),
            Product("BOWL", "Bowl", "m-1", 2800, available=1),
            Product("JAR", "Jar", "m-1", 1200, available=30, active=False),
            Product("SPOON", "Spoon", "m-1", 500, available=0),
            Product("SAUCE", "Bean paste", "m-2", 1590, available=50),
        ]
    }


def ledger(
    products: dict[str, Product] | None = None, reservations: dict[str, Reservation] | None = None
) -> Ledger:
    return Ledger.open(products or catalog(), reservations or {}, now=T0, ttl=TTL, merchants=SELLING)


def held(order_id: str, *lines: StockLine) -> Reservation:
    return Reservation(order_id, list(lines), ReservationStatus.HELD, "corr", expires_at=T0 + TTL)


def test_reserving_holds_every_line_until_the_deadline() -> None:
    book = ledger()

    events = book.reserve("o-1", [line("TEA", 2), line("CUP", 1), line("TEA", 1)], "corr-1")

    assert events == [
        StockReserved(
            order_id="o-1",
            lines=[StockLine(sku="TEA", quantity=3), StockLine(sku="CUP", quantity=1)],
            expires_at=T0 + TTL,
        )
    ]
    changes = book.changes()
    assert changes.stock == {"TEA": StockDelta(-3, 3), "CUP": StockDelta(-1, 1)}
    [reservation] = changes.created
    assert (reservation.status, reservation.correlation_id) == (ReservationStatus.HELD, "corr-1")
    assert changes.moved_from_held == []


def test_a_short_line_holds_nothing_and_names_shortages_and_substitutes() -> None:
    book = ledger()

    [event] = book.reserve("o-1", [line("TEA", 1), line("CUP", 3), line("GHOST", 1)], "corr")

    assert isinstance(event, StockRejected)
    assert event.shortages == [
        Shortage(sku="CUP", quantity=3, available=2),
        Shortage(sku="GHOST", quantity=1, available=0),
    ]
    # Without categories: the same merchant's products, active, in stock, not already in the order,
    # closest to a short product's price first (BOWL 2800 is 1100 from CUP's 3900).
    assert event.substitutes == ["BOWL", "POT"]
    assert book.wanted_substitutes == {
        SubstituteSearch("", "m-1", 3900),
        SubstituteSearch("", "m-1", 1000),  # GHOST: unknown here, as the order priced it
    }
    changes = book.changes()
    assert changes.stock == {}
    assert [r.status for r in changes.created] == [ReservationStatus.REJECTED]


def test_inactive_products_are_not_sellable() -> None:
    [event] = ledger().reserve("o-1", [line("JAR", 1)], "corr")

    assert isinstance(event, StockRejected)
    assert event.shortages == [Shortage(sku="JAR", quantity=1, available=0)]


def test_without_a_category_substitutes_come_from_the_short_products_merchant_closest_price_first() -> None:
    [event] = ledger().reserve("o-1", [line("SPOON", 1, merchant_id="m-1")], "corr")

    assert isinstance(event, StockRejected)
    assert event.substitutes == ["BOWL", "CUP", "TEA"]
    assert "SAUCE" not in event.substitutes


def green_teas() -> dict[str, Product]:
    return {
        p.sku: p
        for p in [
            Product("LONGJING", "Longjing", "m-1", 16800, available=0, category="tea/green"),
            Product("BILUO", "Biluochun", "m-2", 16000, available=3, category="tea/green"),
            Product("MAOFENG", "Maofeng", "m-3", 18600, available=9, category="tea/green"),
            Product("SENCHA", "Sencha", "m-2", 18600, available=40, category="tea/green"),
            Product("GUNPOWDER", "Gunpowder", "m-4", 16700, available=99, category="tea/green"),
            Product("JASMINE", "Jasmine", "m-1", 4500, available=200, category="tea/green"),
            Product("ANJI", "Anji white", "m-1", 16800, available=0, category="tea/green"),
            Product(
                "HOUKUI", "Taiping Houkui", "m-1", 16800, available=5, category="tea/green", active=False
            ),
            Product("PUER", "Pu'er", "m-1", 16800, available=60, category="tea/dark"),
        ]
    }


def test_substitutes_come_from_the_category_across_merchants_closest_price_first() -> None:
    merchants = {m: Merchant(m, m) for m in ("m-1", "m-2", "m-3")}
    merchants["m-4"] = Merchant("m-4", "m-4", status=MerchantStatus.SUSPENDED)
    book = Ledger.open(green_teas(), {}, now=T0, ttl=TTL, merchants=merchants)

    [event] = book.reserve("o-1", [line("LONGJING", 1)], "corr")

    # GUNPOWDER is closest but its merchant is suspended; ANJI has nothing, HOUKUI is inactive,
    # PUER is another category. SENCHA and MAOFENG are as far (1800): more stock first.
    assert isinstance(event, StockRejected)
    assert event.substitutes == ["BILUO", "SENCHA", "MAOFENG"]
    assert book.wanted_substitutes == {SubstituteSearch("tea/green", "m-1", 16800)}


def test_substitutes_leave_out_the_orders_own_products_and_equal_ties_go_by_sku() -> None:
    products = green_teas()
    products["MAOFENG"].available = 40
    book = Ledger.open(
        products, {}, now=T0, ttl=TTL, merchants={m: Merchant(m, m) for m in ("m-1", "m-2", "m-3", "m-4")}
    )

    [event] = book.reserve("o-1", [line("LONGJING", 1), line("GUNPOWDER", 1)], "corr")

    assert isinstance(event, StockRejected)
    assert event.substitutes == ["BILUO", "MAOFENG", "SENCHA"]


def test_rank_substitutes_takes_the_nearest_price_among_every_short_product_it_stands_in_for() -> None:
    searches = [SubstituteSearch("tea/green", "m-1", 16800), SubstituteSearch("ware/cups", "m-1", 3900)]
    on_sale = [
        Product("CUP", "Cup", "m-2", 4000, available=1, category="ware/cups"),
        Product("BILUO", "Biluochun", "m-2", 15000, available=3, category="tea/green"),
        Product("BOWL", "Bowl", "m-2", 3950, available=1, category="ware/bowls"),
    ]

    assert rank_substitutes(searches, on_sale) == ["CUP", "BILUO"]


def test_two_orders_in_one_batch_compete_for_the_last_unit() -> None:
    book = ledger()

    first = book.reserve("o-1", [line("BOWL", 1)], "c1")
    second = book.reserve("o-2", [line("BOWL", 1)], "c2")

    assert isinstance(first[0], StockReserved)
    assert isinstance(second[0], StockRejected)
    assert second[0].shortages == [Shortage(sku="BOWL", quantity=1, available=0)]
    assert book.changes().stock == {"BOWL": StockDelta(-1, 1)}


def test_a_release_earlier_in_the_batch_frees_stock_for_a_later_order() -> None:
    products = catalog()
    products["BOWL"].available, products["BOWL"].reserved = 0, 1
    book = ledger(products, {"o-1": held("o-1", StockLine(sku="BOWL", quantity=1))})

    book.release("o-1", OrderEndReason.PAYMENT_DECLINED)
    [event] = book.reserve("o-2", [line("BOWL", 1)], "c2")

    assert isinstance(event, StockReserved)
    assert book.changes().stock == {}  # back and out again: the row is unchanged


def test_a_duplicate_order_placed_in_one_batch_reserves_once() -> None:
    book = ledger()

    first = book.reserve("o-1", [line("TEA", 2)], "c1")
    again = book.reserve("o-1", [line("TEA", 2)], "c1")

    assert len(first) == 1
    assert again == []
    assert book.changes().stock == {"TEA": StockDelta(-2, 2)}


def test_an_order_already_decided_earlier_is_not_decided_again() -> None:
    rejected = Reservation("o-1", [StockLine(sku="TEA", quantity=1)], ReservationStatus.REJECTED, "c")
    book = ledger(reservations={"o-1": rejected})

    assert book.reserve("o-1", [line("TEA", 1)], "c") == []
    assert not book.changes()


def test_release_gives_held_stock_back() -> None:
    products = catalog()
    products["TEA"].available, products["TEA"].reserved = 3, 2
    book = ledger(products, {"o-1": held("o-1", StockLine(sku="TEA", quantity=2))})

    events = book.release("o-1", OrderEndReason.FRAUD)

    assert events == [
        StockReleased(order_id="o-1", lines=[StockLine(sku="TEA", quantity=2)], reason=OrderEndReason.FRAUD)
    ]
    changes = book.changes()
    assert changes.stock == {"TEA": StockDelta(2, -2)}
    [moved] = changes.moved_from_held
    assert (moved.status, moved.reason) == (ReservationStatus.RELEASED, OrderEndReason.FRAUD)


@pytest.mark.parametrize(
    "status", [ReservationStatus.RELEASED, ReservationStatus.COMMITTED, ReservationStatus.REJECTED]
)
def test_release_and_commit_only_touch_held_reservations(status: ReservationStatus) -> None:
    reservation = Reservation("o-1", [StockLine(sku="TEA", quantity=2)], status, "c")

    book = ledger(reservations={"o-1": reservation})

    assert book.release("o-1", OrderEndReason.PAYMENT_TIMEOUT) == []
    assert book.commit("o-1") == []
    assert book.release("unknown", OrderEndReason.PAYMENT_TIMEOUT) == []
    assert book.commit("unknown") == []
    assert not book.changes()


def test_commit_lets_reserved_stock_leave_for_good() -> None:
    products = catalog()
    products["TEA"].reserved = 2
    book = ledger(products, {"o-1": held("o-1", StockLine(sku="TEA", quantity=2))})

    assert book.commit("o-1") == [StockCommitted(order_id="o-1", lines=[StockLine(sku="TEA", quantity=2)])]
    assert book.changes().stock == {"TEA": StockDelta(0, -2)}
    assert book.release("o-1", OrderEndReason.PAYMENT_TIMEOUT) == []  # committed stock never comes back


def test_reserved_then_released_in_one_batch_is_one_new_released_reservation() -> None:
    book = ledger()
    book.reserve("o-1", [line("TEA", 1)], "c")
    book.release("o-1", OrderEndReason.FRAUD)

    changes = book.changes()
    assert [r.status for r in changes.created] == [ReservationStatus.RELEASED]
    assert changes.moved_from_held == []
    assert changes.stock == {}


def test_expire_releases_only_reservations_past_their_deadline() -> None:
    products = catalog()
    products["TEA"].reserved = 3
    late = held("late", StockLine(sku="TEA", quantity=2))
    late.expires_at = T0 - timedelta(seconds=1)
    fresh = held("fresh", StockLine(sku="TEA", quantity=1))
    book = ledger(products, {"late": late, "fresh": fresh})

    released = book.expire()

    assert [(r.order_id, e) for r, e in released] == [
        (
            "late",
            StockReleased(
                order_id="late", lines=[StockLine(sku="TEA", quantity=2)], reason=ReservationEndReason.EXPIRED
            ),
        )
    ]
    assert book.changes().stock == {"TEA": StockDelta(2, -2)}


def test_the_callers_view_is_not_mutated() -> None:
    products = catalog()
    ledger(products).reserve("o-1", [line("TEA", 2)], "c")

    assert products["TEA"].available == 5


def test_stock_lines_merge_repeated_skus_in_first_seen_order() -> None:
    assert stock_lines([line("B", 1), line("A", 2), line("B", 3)]) == [
        StockLine(sku="B", quantity=4),
        StockLine(sku="A", quantity=2),
    ]


# --- catalog -------------------------------------------------------------------------------------


def test_an_edit_changes_every_detail_and_no_stock() -> None:
    sold = Product("TEA", "Longjing", "m-1", 8800, available=7, reserved=2)

    edited = sold.edited(
        ProductDetails(
            name="Longjing 2026",
            merchant_id="m-2",
            price_fen=9900,
            kind=ProductKind.VIRTUAL,
            active=False,
            max_per_order=3,
        )
    )

    assert edited == Product(
        "TEA",
        "Longjing 2026",
        "m-2",
        9900,
        available=7,
        reserved=2,
        kind=ProductKind.VIRTUAL,
        active=False,
        max_per_order=3,
    )
    assert (sold.name, sold.price_fen) == ("Longjing", 8800), "the product edited is left as it was"


def test_a_new_product_starts_with_its_stock_nothing_reserved_and_no_lower_limit_than_asked() -> None:
    created = Product.create("BOX", ProductDetails("Gift box", "m-3", 19900, max_per_order=2), available=4)

    assert (created.available, created.reserved, created.max_per_order) == (4, 0, 2)
    assert Product.create("JAR", ProductDetails("Jar", "m-3", 100), 0).max_per_order == MAX_UNITS_PER_ORDER


@pytest.mark.parametrize(
    ("available", "add", "delta"),
    [
        pytest.param(7, 5, StockDelta(5, 0), id="restock"),
        pytest.param(7, -7, StockDelta(-7, 0), id="correction-to-zero"),
        pytest.param(0, MAX_STOCK, StockDelta(MAX_STOCK, 0), id="up-to-the-limit"),
    ],
)
def test_a_stock_change_moves_sellable_units_only(available: int, add: int, delta: StockDelta) -> None:
    assert Product("TEA", "Tea", "m-1", 100, available=available, reserved=3).stock_change(add) == delta


@pytest.mark.parametrize(
    ("available", "add", "message"),
    [
        pytest.param(7, -8, "cannot take 8 unit.* only 7 are sellable \\(3 more are held", id="below-zero"),
        pytest.param(1, MAX_STOCK, "above the limit of 10000000000", id="above-the-limit"),
    ],
)
def test_a_stock_change_out_of_range_is_refused(available: int, add: int, message: str) -> None:
    with pytest.raises(StockOutOfRange, match=message):
        Product("TEA", "Tea", "m-1", 100, available=available, reserved=3).stock_change(add)


def test_a_product_announces_its_details_and_limit() -> None:
    product = Product("BOX", "Gift box", "m-3", 19900, available=4, reserved=1, max_per_order=2)

    assert product.upserted(merchant_sells=True) == ProductUpserted(
        sku="BOX", name="Gift box", merchant_id="m-3", price_fen=19900, max_per_order=2
    )
    assert product.upserted(merchant_sells=False).active is False


def tier(min_quantity: int, unit_price_fen: int) -> PriceTier:
    return PriceTier(min_quantity=min_quantity, unit_price_fen=unit_price_fen)


def test_a_product_keeps_and_announces_its_price_tiers_and_an_edit_replaces_them() -> None:
    tiers = (tier(3, 900), tier(10, 800))
    created = Product.create("TEA", ProductDetails("Tea", "m-1", 1000, price_tiers=tiers), available=20)

    edited = created.edited(ProductDetails("Tea", "m-1", 1000, price_tiers=(tier(5, 850),)))

    assert created.price_tiers == tiers
    assert created.upserted(merchant_sells=True).price_tiers == list(tiers)
    assert edited.price_tiers == (tier(5, 850),)
    assert edited.edited(ProductDetails("Tea", "m-1", 1000)).upserted(merchant_sells=True).price_tiers == []


def test_tiers_may_reach_up_to_the_per_order_limit_down_to_free_and_number_the_maximum() -> None:
    at_limit = ProductDetails("Tea", "m-1", 1000, max_per_order=10, price_tiers=(tier(2, 999), tier(10, 0)))
    many = tuple(tier(2 + n, 1000 - 10 * (n + 1)) for n in range(MAX_PRICE_TIERS))

    assert at_limit.price_tiers[-1] == tier(10, 0)
    assert len(ProductDetails("Tea", "m-1", 1000, price_tiers=many).price_tiers) == MAX_PRICE_TIERS


@pytest.mark.parametrize(
    ("tiers", "field", "message"),
    [
        pytest.param(
            tuple(tier(2 + n, 900 - n) for n in range(MAX_PRICE_TIERS + 1)),
            "price_tiers",
            "at most 10 price tiers \\(got 11\\)",
            id="too-many",
        ),
        pytest.param(
            (tier(3, 1000),), "price_tiers.0.unit_price_fen", "cheaper than the price", id="not-cheaper"
        ),
        pytest.param((tier(3, 1200),), "price_tiers.0.unit_price_fen", "cheaper than the price", id="dearer"),
        pytest.param(
            (tier(3, 900), tier(3, 800)), "price_tiers.1.min_quantity", "strictly rising", id="same-quantity"
        ),
        pytest.param(
            (tier(5, 900), tier(3, 800)),
            "price_tiers.1.min_quantity",
            "strictly rising",
            id="falling-quantity",
        ),
        pytest.param(
            (tier(3, 900), tier(5, 900)),
            "price_tiers.1.unit_price_fen",
            "cheaper than the one",
            id="same-price",
        ),
        pytest.param(
            (tier(3, 800), tier(5, 900)),
            "price_tiers.1.unit_price_fen",
            "cheaper than the one",
            id="rising-price",
        ),
        pytest.param(
            (tier(11, 900),), "price_tiers.0.min_quantity", "beyond the limit of 10", id="unreachable"
        ),
    ],
)
def test_tiers_that_do_not_make_a_price_list_are_refused_naming_the_field(
    tiers: tuple[PriceTier, ...], field: str, message: str
) -> None:
    with pytest.raises(InvalidPriceTiers, match=message) as refused:
        ProductDetails("Tea", "m-1", 1000, max_per_order=10, price_tiers=tiers)

    assert refused.value.field == field


def test_a_merchant_announces_the_methods_it_accepts_in_a_stable_order() -> None:
    merchant = Merchant("m-1", "Tea", frozenset({PaymentMethod.ALIPAY, PaymentMethod.WECHAT_PAY}))

    assert merchant.upserted() == MerchantUpserted(
        merchant_id="m-1", name="Tea", payment_methods=[PaymentMethod.WECHAT_PAY, PaymentMethod.ALIPAY]
    )
    assert Merchant("m-2", "Anything goes").accepted_methods == list(PaymentMethod)


# --- how long a reservation holds, and an order paid after it ran out ------------------------------

CAP = timedelta(hours=2)


@pytest.mark.parametrize(
    ("ttl", "hold_until", "until"),
    [
        pytest.param(TTL, None, T0 + TTL, id="no-order-deadline-holds-the-ttl"),
        pytest.param(TTL, T0 + timedelta(minutes=5), T0 + TTL, id="an-early-deadline-still-holds-the-ttl"),
        pytest.param(TTL, T0 + timedelta(hours=1), T0 + timedelta(hours=1), id="the-orders-deadline"),
        pytest.param(TTL, T0 + timedelta(hours=5), T0 + CAP, id="never-past-the-cap"),
        pytest.param(timedelta(hours=3), None, T0 + CAP, id="a-ttl-past-the-cap-is-capped-too"),
    ],
)
def test_a_reservation_holds_as_long_as_its_order_may_be_paid_within_the_cap(
    ttl: timedelta, hold_until: datetime | None, until: datetime
) -> None:
    assert hold_deadline(T0, ttl, hold_until, CAP) == until


def test_the_default_cap_is_two_hours() -> None:
    assert DEFAULT_MAX_HOLD == timedelta(hours=2)


def test_reserving_holds_until_the_orders_own_deadline_bounded_by_the_ledgers_cap() -> None:
    book = Ledger.open(catalog(), {}, now=T0, ttl=TTL, max_hold=timedelta(minutes=50), merchants=SELLING)

    [within] = book.reserve("o-1", [line("TEA", 1)], "c", hold_until=T0 + timedelta(minutes=40))
    [beyond] = book.reserve("o-2", [line("TEA", 1)], "c", hold_until=T0 + timedelta(hours=1))

    assert isinstance(within, StockReserved) and within.expires_at == T0 + timedelta(minutes=40)
    assert isinstance(beyond, StockReserved) and beyond.expires_at == T0 + timedelta(minutes=50)
    assert [r.expires_at for r in book.changes().created] == [within.expires_at, beyond.expires_at]


def expired(order_id: str, *lines: StockLine) -> Reservation:
    reservation = held(order_id, *lines)
    reservation.status, reservation.reason = ReservationStatus.RELEASED, ReservationEndReason.EXPIRED
    return reservation


def test_confirming_a_held_reservation_commits_it() -> None:
    products = catalog()
    products["TEA"].reserved = 2
    book = ledger(products, {"o-1": held("o-1", StockLine(sku="TEA", quantity=2))})

    assert book.confirm("o-1", [line("TEA", 2)], "c") == [
        StockCommitted(order_id="o-1", lines=[StockLine(sku="TEA", quantity=2)])
    ]
    changes = book.changes()
    assert changes.stock == {"TEA": StockDelta(0, -2)}
    assert [r.status for r in changes.moved_from_held] == [ReservationStatus.COMMITTED]
    assert changes.moved_from_expired == []


def test_an_order_paid_after_its_reservation_expired_takes_every_line_again_and_commits_at_once() -> None:
    book = ledger(reservations={"o-1": expired("o-1", StockLine(sku="TEA", quantity=2))})

    events = book.confirm("o-1", [line("TEA", 1), line("CUP", 2), line("TEA", 1)], "c")

    taken = [StockLine(sku="TEA", quantity=2), StockLine(sku="CUP", quantity=2)]
    assert events == [StockCommitted(order_id="o-1", lines=taken)]
    changes = book.changes()
    # Straight from available to sold: nothing stays reserved for it.
    assert changes.stock == {"TEA": StockDelta(-2, 0), "CUP": StockDelta(-2, 0)}
    [moved] = changes.moved_from_expired
    assert (moved.order_id, moved.status, moved.reason, moved.lines) == (
        "o-1",
        ReservationStatus.COMMITTED,
        "",
        taken,
    )
    assert changes.created == [] and changes.moved_from_held == []


def test_an_order_paid_with_no_reservation_at_all_takes_its_stock_and_records_it() -> None:
    book = ledger()

    [committed] = book.confirm("o-1", [line("TEA", 2)], "corr-1")

    assert committed == StockCommitted(order_id="o-1", lines=[StockLine(sku="TEA", quantity=2)])
    changes = book.changes()
    assert changes.stock == {"TEA": StockDelta(-2, 0)}
    [created] = changes.created
    assert (created.status, created.correlation_id) == (ReservationStatus.COMMITTED, "corr-1")


@pytest.mark.parametrize("reservation", [None, "expired"])
def test_a_paid_order_whose_stock_went_meanwhile_takes_nothing_and_says_the_reservation_was_lost(
    reservation: str | None,
) -> None:
    reservations = {} if reservation is None else {"o-1": expired("o-1", StockLine(sku="TEA", quantity=1))}
    book = ledger(reservations=reservations)

    # TEA is there, CUP is short: all or nothing, so not even the TEA is taken.
    [lost] = book.confirm("o-1", [line("TEA", 1), line("CUP", 3)], "c")

    assert lost == StockRejected(
        order_id="o-1",
        reason=StockRejectReason.RESERVATION_LOST,
        shortages=[Shortage(sku="CUP", quantity=3, available=2)],
    )
    changes = book.changes()
    assert changes.stock == {}
    [recorded] = [*changes.created, *changes.moved_from_expired]
    assert (recorded.status, recorded.reason) == (
        ReservationStatus.REJECTED,
        StockRejectReason.RESERVATION_LOST,
    )
    assert book.wanted_substitutes == set()  # no substitutes for an order already paid


def test_two_paid_orders_whose_reservations_expired_compete_for_the_last_unit() -> None:
    book = ledger(
        reservations={
            "o-1": expired("o-1", StockLine(sku="BOWL", quantity=1)),
            "o-2": expired("o-2", StockLine(sku="BOWL", quantity=1)),
        }
    )

    [first] = book.confirm("o-1", [line("BOWL", 1)], "c")
    [second] = book.confirm("o-2", [line("BOWL", 1)], "c")

    assert isinstance(first, StockCommitted)
    assert isinstance(second, StockRejected) and second.reason is StockRejectReason.RESERVATION_LOST
    assert second.shortages == [Shortage(sku="BOWL", quantity=1, available=0)]
    assert book.changes().stock == {"BOWL": StockDelta(-1, 0)}
    assert book.products["BOWL"].available == 0


def test_a_repeated_confirmation_neither_commits_nor_takes_stock_twice() -> None:
    book = ledger(reservations={"o-1": expired("o-1", StockLine(sku="TEA", quantity=2))})

    assert len(book.confirm("o-1", [line("TEA", 2)], "c")) == 1
    assert book.confirm("o-1", [line("TEA", 2)], "c") == []

    assert book.changes().stock == {"TEA": StockDelta(-2, 0)}
    assert book.release("o-1", OrderEndReason.RESERVATION_LOST) == []  # sold stock never comes back


def test_a_lost_reservation_is_never_taken_again_even_once_stock_is_back() -> None:
    products = catalog()
    book = ledger(products, {"o-1": expired("o-1", StockLine(sku="BOWL", quantity=3))})
    [lost] = book.confirm("o-1", [line("BOWL", 3)], "c")
    assert isinstance(lost, StockRejected)
    book.products["BOWL"].available += 9  # restocked before the confirmation is told again

    assert book.confirm("o-1", [line("BOWL", 3)], "c") == []
    # The cancellation that follows the loss gives nothing back: nothing was held.
    assert book.release("o-1", OrderEndReason.RESERVATION_LOST) == []
    assert book.changes().stock == {"BOWL": StockDelta(9, 0)}


@pytest.mark.parametrize(
    "reservation",
    [
        pytest.param(
            Reservation("o-1", [StockLine(sku="TEA", quantity=1)], ReservationStatus.COMMITTED, "c"),
            id="committed",
        ),
        pytest.param(
            Reservation(
                "o-1",
                [StockLine(sku="TEA", quantity=1)],
                ReservationStatus.REJECTED,
                "c",
                reason=StockRejectReason.RESERVATION_LOST,
            ),
            id="lost",
        ),
        pytest.param(
            Reservation("o-1", [StockLine(sku="TEA", quantity=1)], ReservationStatus.REJECTED, "c"),
            id="rejected-out-of-stock",
        ),
        pytest.param(
            Reservation(
                "o-1",
                [StockLine(sku="TEA", quantity=1)],
                ReservationStatus.RELEASED,
                "c",
                reason=OrderEndReason.CUSTOMER_CANCELLED,
            ),
            id="released-because-the-order-ended",
        ),
    ],
)
def test_a_confirmation_for_a_reservation_settled_otherwise_changes_nothing(
    reservation: Reservation,
) -> None:
    book = ledger(reservations={"o-1": reservation})

    assert book.confirm("o-1", [line("TEA", 1)], "c") == []
    assert not book.changes()


def test_taking_stock_again_needs_only_the_units_not_a_listing_or_approved_merchant() -> None:
    # The sale was agreed while the product was listed; a held reservation would commit as well.
    book = Ledger.open(catalog(), {"o-1": expired("o-1", StockLine(sku="JAR", quantity=2))}, now=T0, ttl=TTL)

    assert book.confirm("o-1", [line("JAR", 2)], "c") == [
        StockCommitted(order_id="o-1", lines=[StockLine(sku="JAR", quantity=2)])
    ]
    assert book.changes().stock == {"JAR": StockDelta(-2, 0)}
