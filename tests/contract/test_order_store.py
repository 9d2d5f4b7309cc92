"""The order store's contract, run against the in-memory twin and MongoDB, so the twin cannot drift."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from services.order.domain import (
    MAX_QUANTITY,
    CatalogItem,
    CouponTerms,
    Deadlines,
    MerchantTerms,
    Order,
    OrderStatus,
    PayAction,
    PaymentStatus,
)
from services.order.numbers import order_day
from services.order.store import (
    CATALOG,
    IDEMPOTENCY,
    ORDERS,
    ConcurrentUpdate,
    IdempotencyConflict,
    IdempotencyKey,
    InvalidCursor,
    KeyRecord,
    MongoOrderStore,
    NewOrder,
    OrderNumberTaken,
    OrderQuery,
    OrderStore,
    Scope,
    scan_budget,
)
from shared.contracts import (
    AssignedCodes,
    CouponApplied,
    CouponDiscount,
    DeclineReason,
    Envelope,
    FraudDecision,
    MerchantStatus,
    OrderLine,
    OrderPlaced,
    PayActionType,
    PaymentMethod,
    PriceTier,
    ProductKind,
    RefundReason,
    StockReserved,
)
from shared.crypto import (
    PersonalData,
    TokenOpener,
    TokenSealer,
    UnreadableData,
    generate_pii_key,
    generate_token_keypair,
)
from shared.errors import ConcurrentWrite
from shared.kafka import decode, new_envelope
from shared.mongo import OUTBOX, Document, MongoStore
from tests.twins.order import InMemoryOrderStore
from tests.unit.samples import ADDRESS, T0, delivery

ReadOutbox = Callable[[], Awaitable[list[Envelope]]]
DEADLINES = Deadlines()
LEASE = timedelta(seconds=30)
CHECKS_DUE = T0 + DEADLINES.checks
_numbers = itertools.count(1)
# The payment service's key pair: the store seals clear tokens it finds to the public key; the
# tests open what it sealed with the private one.
_TOKEN_PRIVATE_KEY, _TOKEN_PUBLIC_KEY = generate_token_keypair()
TOKEN_SEALER = TokenSealer(_TOKEN_PUBLIC_KEY)
TOKEN_OPENER = TokenOpener(SecretStr(_TOKEN_PRIVATE_KEY))
CLEAR_TOKEN = "tok_approve"


def placed(
    order_id: str,
    *,
    customer_id: str = "c-1",
    after: timedelta = timedelta(0),
    merchants: Sequence[str] = ("m-1",),
    contact: str | None = None,
    method: PaymentMethod = PaymentMethod.ALIPAY,
) -> Order:
    """A PENDING order placed `after` T0 (its checks deadline follows), with a line of each of
    `merchants`, numbered uniquely on the day it was placed (so numbers follow placement)."""
    now = T0 + after
    order, _ = Order.place(
        order_id=order_id,
        order_no=f"{order_day(now)}-{next(_numbers):06d}",
        customer_id=customer_id,
        lines=[
            OrderLine(sku=f"TEA-{i}", name="Longjing", merchant_id=m, quantity=1, unit_price_fen=8800)
            for i, m in enumerate(merchants)
        ],
        shipping_address=ADDRESS,
        payment_method=method,
        payment_token=TOKEN_SEALER.seal(CLEAR_TOKEN) if method is PaymentMethod.BANK_CARD else None,
        now=now,
        deadlines=DEADLINES,
        correlation_id=f"corr-{order_id}",
        contact=contact,
    )
    return order


def envelope_for(order: Order) -> Envelope:
    event = OrderPlaced(
        order_id=order.order_id,
        order_no=order.order_no,
        customer_id=order.customer_id,
        lines=order.lines,
        total_fen=order.total_fen,
        payment_method=order.payment_method,
        shipping_address=order.shipping_address,
        placed_at=order.placed_at,
    )
    return new_envelope(event, source="order", correlation_id=order.correlation_id)


def product(
    sku: str, price_fen: int = 1000, *, active: bool = True, max_per_order: int = MAX_QUANTITY
) -> CatalogItem:
    return CatalogItem(sku, f"name of {sku}", "m-1", ProductKind.PHYSICAL, price_fen, active, max_per_order)


def terms(merchant_id: str, *methods: PaymentMethod) -> MerchantTerms:
    return MerchantTerms(merchant_id, frozenset(methods))


async def insert(store: OrderStore, *orders: Order) -> None:
    async with store.transaction("order") as tx:
        for order in orders:
            await tx.insert_new([NewOrder(order)])


async def save(store: OrderStore, *orders: Order) -> None:
    async with store.transaction("order") as tx:
        await tx.save_changed(orders)


async def walk(store: OrderStore, query: OrderQuery) -> list[list[str]]:
    """The order ids of every page of `query`, following the cursors to the last page."""
    pages: list[list[str]] = []
    cursor = query.cursor
    for _ in range(100):
        page = await store.page(replace(query, cursor=cursor))
        pages.append([order.order_id for order in page.orders])
        if page.next_cursor is None:
            return pages
        assert page.next_cursor != cursor, "a cursor moves on"
        cursor = page.next_cursor
    raise AssertionError(f"no last page after 100 pages: {pages}")


def listing(scope: Scope, **filters: Any) -> OrderQuery:
    """`scope`'s query of the orders `placed()` makes by default: customer c-1's, merchant m-1's."""
    owner = {Scope.CUSTOMER: "c-1", Scope.MERCHANT: "m-1", Scope.ALL: None}[scope]
    return OrderQuery(scope, owner, **filters)


class Boom(Exception):
    pass


class OrderStoreContract:
    """Subclasses provide the fixtures `store` (an empty OrderStore) and `read_outbox`."""

    async def test_an_inserted_order_reads_back_as_it_was_at_version_1(self, store: OrderStore) -> None:
        order = placed("o-1")
        await insert(store, order)
        assert order.version == 1
        assert await store.get("o-1") == order
        assert await store.get("o-2") is None
        assert await store.get_many(["o-1", "o-2", "o-1"]) == {"o-1": order}

    async def test_a_second_order_with_a_used_number_is_refused(self, store: OrderStore) -> None:
        first = placed("o-1")
        await insert(store, first)
        second = placed("o-2")
        second.order_no = first.order_no
        with pytest.raises(OrderNumberTaken):
            await insert(store, second)
        assert await store.get("o-2") is None
        assert await store.get("o-1") == first

    async def test_a_used_idempotency_key_names_the_first_order_and_its_fingerprint(
        self, store: OrderStore
    ) -> None:
        async with store.transaction("order") as tx:
            await tx.insert_new([NewOrder(placed("o-1"), IdempotencyKey("c-1:key", "fingerprint-1"))])
        with pytest.raises(IdempotencyConflict) as conflict:
            async with store.transaction("order") as tx:
                await tx.insert_new([NewOrder(placed("o-2"), IdempotencyKey("c-1:key", "fingerprint-2"))])
        assert (conflict.value.order_id, conflict.value.fingerprint) == ("o-1", "fingerprint-1")
        assert await store.get("o-2") is None

    async def test_orders_inserted_together_are_stored_together_or_not_at_all(
        self, store: OrderStore
    ) -> None:
        first, second = placed("o-1"), placed("o-2")
        async with store.transaction("order") as tx:
            await tx.insert_new([NewOrder(first), NewOrder(second, IdempotencyKey("c-2:key", "f-2"))])
        assert await store.get_many(["o-1", "o-2"]) == {"o-1": first, "o-2": second}

        fresh, reused_number, reused_key = placed("o-3"), placed("o-4"), placed("o-5")
        reused_number.order_no = first.order_no
        with pytest.raises(OrderNumberTaken) as taken:
            async with store.transaction("order") as tx:
                await tx.insert_new([NewOrder(fresh), NewOrder(reused_number)])
        assert taken.value.args == (first.order_no,), "the error names the order that failed"
        with pytest.raises(IdempotencyConflict) as conflict:
            async with store.transaction("order") as tx:
                await tx.insert_new(
                    [
                        NewOrder(fresh, IdempotencyKey("c-3:key", "f-3")),
                        NewOrder(reused_key, IdempotencyKey("c-2:key", "f-5")),
                    ]
                )
        assert conflict.value.order_id == "o-2"
        assert await store.get_many(["o-3", "o-4", "o-5"]) == {}, "nothing of a failed batch is stored"

    async def test_a_save_bumps_the_version_and_a_save_from_a_stale_read_is_refused(
        self, store: OrderStore
    ) -> None:
        await insert(store, placed("o-1"))
        first, stale = await store.get("o-1"), await store.get("o-1")
        assert first is not None and stale is not None
        first.stock_reserved(T0, DEADLINES)
        await save(store, first)
        assert first.version == 2
        stale.fraud_scored(T0, FraudDecision.APPROVE, 1, [], DEADLINES)
        with pytest.raises(ConcurrentUpdate):
            await save(store, stale)
        assert await store.get("o-1") == first

    async def test_one_stale_order_in_a_save_keeps_the_others_unchanged(self, store: OrderStore) -> None:
        await insert(store, placed("o-1"), placed("o-2"))
        fresh, stale, concurrent = await store.get("o-1"), await store.get("o-2"), await store.get("o-2")
        assert fresh is not None and stale is not None and concurrent is not None
        await save(store, concurrent)
        fresh.stock_reserved(T0, DEADLINES)
        with pytest.raises(ConcurrentWrite):
            await save(store, fresh, stale)
        stored = await store.get("o-1")
        assert stored is not None and (stored.version, stored.status) == (1, OrderStatus.PENDING)
        assert len(stored.timeline) == 1

    async def test_an_error_inside_a_transaction_stores_nothing(
        self, store: OrderStore, read_outbox: ReadOutbox
    ) -> None:
        await insert(store, placed("o-1"))
        changed = await store.get("o-1")
        assert changed is not None
        changed.stock_reserved(T0, DEADLINES)
        new = placed("o-2")
        cause = delivery(StockReserved(order_id="o-1", lines=[], expires_at=T0))
        with pytest.raises(Boom):
            async with store.transaction("order") as tx:
                await tx.insert_new([NewOrder(new, IdempotencyKey("c-1:key", "fingerprint"))])
                await tx.save_changed([changed])
                await tx.upsert_catalog([product("TEA")])
                await tx.upsert_merchants([terms("m-1", PaymentMethod.ALIPAY)])
                tx.mark_applied([cause.envelope.id])
                tx.emit([envelope_for(new)])
                raise Boom
        assert await store.get("o-2") is None
        stored = await store.get("o-1")
        assert stored is not None and (stored.version, stored.status) == (1, OrderStatus.PENDING)
        assert await store.catalog_items(["TEA"]) == {}
        assert await store.merchant_terms(["m-1"]) == {}
        assert await store.unapplied("order", [cause]) == [cause]
        assert await read_outbox() == []
        async with store.transaction("order") as tx:  # the key was not taken either
            await tx.insert_new([NewOrder(placed("o-3"), IdempotencyKey("c-1:key", "fingerprint"))])

    async def test_an_event_is_applied_once_per_consumer(self, store: OrderStore) -> None:
        first = delivery(StockReserved(order_id="o-1", lines=[], expires_at=T0))
        other = delivery(StockReserved(order_id="o-2", lines=[], expires_at=T0))
        assert await store.unapplied("order", [first, first, other]) == [first, other]
        async with store.transaction("order") as tx:
            tx.mark_applied([first.envelope.id])
        assert await store.unapplied("order", [first, other]) == [other]
        assert await store.unapplied("audit", [first]) == [first]

    async def test_a_second_apply_of_an_event_is_refused_with_all_its_writes(self, store: OrderStore) -> None:
        event = delivery(StockReserved(order_id="o-1", lines=[], expires_at=T0))
        async with store.transaction("order") as tx:
            tx.mark_applied([event.envelope.id])
        with pytest.raises(ConcurrentWrite):
            async with store.transaction("order") as tx:
                await tx.insert_new([NewOrder(placed("o-1"))])
                tx.mark_applied([event.envelope.id])
        assert await store.get("o-1") is None

    async def test_emitted_events_land_in_the_outbox_in_order(
        self, store: OrderStore, read_outbox: ReadOutbox
    ) -> None:
        orders = [placed("o-1"), placed("o-2")]
        envelopes = [envelope_for(order) for order in orders]
        async with store.transaction("order") as tx:
            tx.emit(envelopes[:1])
            tx.emit(envelopes[1:])
        assert [env.id for env in await read_outbox()] == [env.id for env in envelopes]

    async def test_an_order_keeps_its_guests_contact_and_each_steps_internal_detail(
        self, store: OrderStore
    ) -> None:
        order = placed("o-1", contact="email:li@example.com")
        await insert(store, order)
        changed = await store.get("o-1")
        assert changed is not None and changed.contact == "email:li@example.com"
        changed.fraud_scored(T0, FraudDecision.REVIEW, 70, ["new device"], DEADLINES)
        await save(store, changed)
        stored = await store.get("o-1")
        assert stored == changed
        assert stored.timeline[-1].detail == "sent to manual review (risk score 70: new device)"
        assert await store.get_many(["o-1"]) == {"o-1": changed}

    async def test_an_order_keeps_its_sealed_codes_as_they_came(self, store: OrderStore) -> None:
        order = placed("o-1")
        await insert(store, order)
        changed = await store.get("o-1")
        assert changed is not None
        codes = AssignedCodes(sku="GIFT", sealed_codes=["v1.k1.c2VhbGVkLTE", "v1.k1.c2VhbGVkLTI"])
        changed.codes_assigned(T0, [codes])
        await save(store, changed)

        stored = await store.get("o-1")
        assert stored is not None and stored.codes == [codes]
        assert stored == changed

    async def test_an_order_is_found_by_its_number(self, store: OrderStore) -> None:
        first, second = placed("o-1"), placed("o-2")
        await insert(store, first, second)
        assert await store.by_number(second.order_no) == second
        assert await store.by_number("20261125-999999") is None

    async def test_a_used_idempotency_key_reads_back_with_its_order_and_fingerprint(
        self, store: OrderStore
    ) -> None:
        async with store.transaction("order") as tx:
            await tx.insert_new([NewOrder(placed("o-1"), IdempotencyKey("c-1:key", "fingerprint-1"))])
        assert await store.idempotency_key("c-1:key") == KeyRecord("o-1", "fingerprint-1")
        assert await store.idempotency_key("c-1:other") is None

    async def test_the_merchant_replica_keeps_the_latest_terms_of_each_merchant(
        self, store: OrderStore
    ) -> None:
        async with store.transaction("order") as tx:
            await tx.upsert_merchants([terms("m-1", PaymentMethod.ALIPAY), terms("m-2", *PaymentMethod)])
        async with store.transaction("order") as tx:
            await tx.upsert_merchants(
                [
                    terms("m-1", PaymentMethod.WECHAT_PAY, PaymentMethod.BANK_CARD),
                    terms("m-3", PaymentMethod.ALIPAY),
                    terms("m-3", PaymentMethod.BANK_CARD),
                ]
            )
        assert await store.merchant_terms(["m-1", "m-2", "m-3", "m-9", "m-1"]) == {
            "m-1": terms("m-1", PaymentMethod.WECHAT_PAY, PaymentMethod.BANK_CARD),
            "m-2": terms("m-2", *PaymentMethod),
            "m-3": terms("m-3", PaymentMethod.BANK_CARD),
        }
        assert await store.merchant_terms([]) == {}

    async def test_the_merchant_replica_keeps_each_merchants_status_and_reason(
        self, store: OrderStore
    ) -> None:
        suspended = MerchantTerms(
            "m-1", frozenset({PaymentMethod.ALIPAY}), MerchantStatus.SUSPENDED, "fake tea"
        )
        pending = MerchantTerms("m-2", frozenset(PaymentMethod), MerchantStatus.PENDING)
        async with store.transaction("order") as tx:
            await tx.upsert_merchants([suspended, pending])

        assert await store.merchant_terms(["m-1", "m-2"]) == {"m-1": suspended, "m-2": pending}

    async def test_an_order_keeps_its_coupon_and_its_discounted_total(self, store: OrderStore) -> None:
        order = replace(
            placed("o-1"), coupon=CouponApplied(code="TEA10", merchant_id="m-1", discount_fen=880)
        )
        await insert(store, order)

        stored = await store.get("o-1")
        assert stored == order
        assert stored is not None and (stored.lines_total_fen, stored.total_fen) == (8800, 7920)

    async def test_the_coupon_replica_keeps_the_latest_terms_of_each_coupon(self, store: OrderStore) -> None:
        tea = CouponTerms("TEA10", "m-1", CouponDiscount.PERCENT, 10, T0, T0 + timedelta(days=1))
        switched_off = replace(tea, min_spend_fen=5000, active=False)
        async with store.transaction("order") as tx:
            await tx.upsert_coupons([tea])
        async with store.transaction("order") as tx:
            await tx.upsert_coupons([tea, switched_off])

        assert await store.coupon("TEA10") == switched_off
        assert await store.coupon("POT5") is None

    @pytest.mark.parametrize("scope", list(Scope))
    async def test_pages_walk_every_order_of_the_listing_once_newest_first(
        self, store: OrderStore, scope: Scope
    ) -> None:
        # Placed in time order, as orders are, so numbers follow placement too.
        mine = [placed(f"o-{i}", after=timedelta(minutes=i)) for i in range(5)]
        others = placed("o-other", customer_id="c-2", merchants=["m-2"], after=timedelta(minutes=9))
        await insert(store, *mine, others)
        everything = ["o-other"] if scope is Scope.ALL else []
        newest_first = [*everything, "o-4", "o-3", "o-2", "o-1", "o-0"]
        pages = await walk(store, listing(scope, limit=2))
        assert pages == [newest_first[i : i + 2] for i in range(0, len(newest_first), 2)]
        assert await walk(store, listing(scope, limit=len(newest_first))) == [newest_first]
        assert await walk(store, listing(scope, limit=100)) == [newest_first]

    async def test_a_page_holds_whole_orders_and_the_last_full_page_has_no_cursor(
        self, store: OrderStore
    ) -> None:
        orders = [placed(f"o-{i}", after=timedelta(minutes=i), contact="phone:13800138000") for i in range(4)]
        await insert(store, *orders)
        first = await store.page(listing(Scope.CUSTOMER, limit=2))
        assert first.orders == [orders[3], orders[2]] and first.next_cursor is not None
        last = await store.page(listing(Scope.CUSTOMER, limit=2, cursor=first.next_cursor))
        assert last.orders == [orders[1], orders[0]] and last.next_cursor is None

    async def test_orders_placed_while_a_client_pages_do_not_shift_its_later_pages(
        self, store: OrderStore
    ) -> None:
        await insert(store, *(placed(f"o-{i}", after=timedelta(minutes=i)) for i in range(4)))
        first = await store.page(listing(Scope.CUSTOMER, limit=2))
        await insert(store, placed("o-new", after=timedelta(minutes=10)))
        assert await walk(store, listing(Scope.CUSTOMER, limit=2, cursor=first.next_cursor)) == [
            ["o-1", "o-0"]
        ]

    async def test_a_merchant_lists_each_order_holding_its_products_once(self, store: OrderStore) -> None:
        await insert(
            store,
            placed("o-0", merchants=["m-1"]),
            placed("o-1", merchants=["m-2"], customer_id="c-2", after=timedelta(minutes=1)),
            placed("o-2", merchants=["m-2", "m-1"], after=timedelta(minutes=2)),
            placed("o-3", merchants=["m-1", "m-1"], customer_id="c-3", after=timedelta(minutes=3)),
        )
        m1 = OrderQuery(Scope.MERCHANT, "m-1", limit=1)
        m2 = OrderQuery(Scope.MERCHANT, "m-2", limit=1)
        assert await walk(store, m1) == [["o-3"], ["o-2"], ["o-0"]]
        assert await walk(store, m2) == [["o-2"], ["o-1"]]
        assert await walk(store, OrderQuery(Scope.MERCHANT, "m-9")) == [[]]
        assert await walk(store, OrderQuery(Scope.CUSTOMER, "c-9")) == [[]]

    @pytest.mark.parametrize("scope", list(Scope))
    async def test_a_status_filter_keeps_the_orders_in_those_states(
        self, store: OrderStore, scope: Scope
    ) -> None:
        orders = [placed(f"o-{i}", after=timedelta(minutes=i)) for i in range(6)]
        await insert(store, *orders)
        for order in orders[1::2]:
            order.stock_rejected(T0, ["TEA-0"], "none left")
        orders[4].stock_reserved(T0, DEADLINES)
        await save(store, *orders[1::2], orders[4])

        rejected = await walk(store, listing(scope, statuses=frozenset({OrderStatus.REJECTED}), limit=2))
        assert rejected == [["o-5", "o-3"], ["o-1"]]
        pending = frozenset({OrderStatus.PENDING, OrderStatus.UNDER_REVIEW})
        assert await walk(store, listing(scope, statuses=pending, limit=5)) == [["o-4", "o-2", "o-0"]]
        assert await walk(store, listing(scope, statuses=frozenset({OrderStatus.CONFIRMED}))) == [[]]
        assert await walk(store, listing(scope, statuses=frozenset())) == [[]]

    async def test_a_page_scans_a_bounded_number_of_orders_and_points_past_them(
        self, store: OrderStore
    ) -> None:
        # One rejected order under more pending ones than a page may scan: the first page comes back
        # empty with a cursor rather than reading the whole history in one request.
        rejected = placed("o-rejected")
        pending = [placed(f"o-{i:03d}", after=timedelta(seconds=i + 1)) for i in range(scan_budget(1))]
        await insert(store, rejected, *pending)
        rejected.stock_rejected(T0, ["TEA-0"], "none left")
        await save(store, rejected)
        query = listing(Scope.CUSTOMER, statuses=frozenset({OrderStatus.REJECTED}), limit=1)
        first = await store.page(query)
        assert first.orders == [] and first.next_cursor is not None
        assert await walk(
            store, listing(Scope.CUSTOMER, statuses=query.statuses, cursor=first.next_cursor)
        ) == [["o-rejected"]]

    @pytest.mark.parametrize("scope", list(Scope))
    async def test_a_time_range_keeps_orders_placed_from_its_start_until_before_its_end(
        self, store: OrderStore, scope: Scope
    ) -> None:
        # T0 is 20:00 in China: the orders span two days of order numbers.
        orders = [placed(f"o-{h}", after=timedelta(hours=h)) for h in (0, 3, 4, 5, 6)]
        await insert(store, *orders)
        since, before = T0 + timedelta(hours=3), T0 + timedelta(hours=5)
        ranged = await walk(store, listing(scope, placed_from=since, placed_before=before, limit=1))
        assert ranged == [["o-4"], ["o-3"]]
        assert await walk(store, listing(scope, placed_from=since, limit=10)) == [
            ["o-6", "o-5", "o-4", "o-3"]
        ]
        assert await walk(store, listing(scope, placed_before=before, limit=10)) == [["o-4", "o-3", "o-0"]]
        in_between = listing(
            scope, placed_from=since + timedelta(seconds=1), placed_before=before - timedelta(hours=1)
        )
        assert await walk(store, in_between) == [[]]
        assert await walk(store, listing(scope, placed_from=before, placed_before=since)) == [[]]

    @pytest.mark.parametrize("scope", list(Scope))
    async def test_a_cursor_this_listing_did_not_hand_out_is_refused(
        self, store: OrderStore, scope: Scope
    ) -> None:
        await insert(
            store,
            placed("o-1"),
            placed("o-2", customer_id="c-2", merchants=["m-2"], after=timedelta(minutes=1)),
            placed("o-3", customer_id="c-2", merchants=["m-2"], after=timedelta(minutes=2)),
        )
        foreign = [OrderQuery(Scope.CUSTOMER, "c-2", limit=1), OrderQuery(Scope.MERCHANT, "m-2", limit=1)]
        if scope is not Scope.ALL:  # an admin's cursor is an order number, no customer's or merchant's
            foreign.append(OrderQuery(Scope.ALL, limit=1))
        for other in foreign:
            handed_out = await store.page(other)
            assert handed_out.next_cursor is not None
            with pytest.raises(InvalidCursor):
                await store.page(listing(scope, cursor=handed_out.next_cursor))
        made_up = base64.urlsafe_b64encode(b"c-1|20261125T120000.000000|o-1").decode().rstrip("=")
        not_text = base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode()
        for cursor in ("", "not a cursor!", "%%%", not_text, "A" * 2000):
            with pytest.raises(InvalidCursor) as refused:
                await store.page(listing(scope, cursor=cursor))
            assert isinstance(refused.value, ValueError), "the API answers it with 422"
        if scope is not Scope.CUSTOMER:
            with pytest.raises(InvalidCursor):
                await store.page(listing(scope, cursor=made_up))

    async def test_a_query_without_an_owner_or_room_for_an_order_is_refused(self, store: OrderStore) -> None:
        for query in (
            OrderQuery(Scope.CUSTOMER, None),
            OrderQuery(Scope.MERCHANT, ""),
            OrderQuery(Scope.CUSTOMER, "c-1|20261125"),
            OrderQuery(Scope.ALL, limit=0),
            OrderQuery(Scope.ALL, placed_from=T0.replace(tzinfo=None)),
        ):
            with pytest.raises(ValueError) as refused:
                await store.page(query)
            assert not isinstance(refused.value, InvalidCursor)

    async def test_only_waiting_orders_past_their_deadline_are_claimed_earliest_first(
        self, store: OrderStore
    ) -> None:
        late = placed("o-late", after=timedelta(seconds=10))
        early = placed("o-early")
        not_due = placed("o-not-due", after=timedelta(minutes=5))
        ended = placed("o-ended")
        await insert(store, late, early, not_due, ended)
        ended.stock_rejected(T0, ["TEA-0"], "none left")
        await save(store, ended)
        now = T0 + timedelta(minutes=1)
        assert [o.order_id for o in await store.claim_overdue(now, 1, "a", LEASE)] == ["o-early"]
        claimed = await store.claim_overdue(now, 10, "a", LEASE)
        assert [o.order_id for o in claimed] == ["o-early", "o-late"]
        assert claimed[0] == early
        assert await store.claim_overdue(CHECKS_DUE - timedelta(milliseconds=1), 10, "b", LEASE) == []

    async def test_two_owners_never_share_a_claim_while_it_lasts(self, store: OrderStore) -> None:
        await insert(store, placed("o-1"), placed("o-2"), placed("o-3"))
        now = CHECKS_DUE
        by_a = {o.order_id for o in await store.claim_overdue(now, 2, "a", LEASE)}
        by_b = {o.order_id for o in await store.claim_overdue(now, 10, "b", LEASE)}
        assert len(by_a) == 2 and len(by_b) == 1 and not by_a & by_b
        later = now + LEASE - timedelta(seconds=1)
        assert await store.claim_overdue(later, 10, "c", LEASE) == []
        assert {o.order_id for o in await store.claim_overdue(later, 10, "a", LEASE)} == by_a

    async def test_a_claim_expires_after_its_lease(self, store: OrderStore) -> None:
        await insert(store, placed("o-1"))
        assert len(await store.claim_overdue(CHECKS_DUE, 10, "a", LEASE)) == 1
        assert await store.claim_overdue(CHECKS_DUE + timedelta(seconds=29), 10, "b", LEASE) == []
        taken_over = await store.claim_overdue(CHECKS_DUE + LEASE, 10, "b", LEASE)
        assert [o.order_id for o in taken_over] == ["o-1"]
        assert await store.claim_overdue(CHECKS_DUE + LEASE, 10, "a", LEASE) == []

    async def test_the_catalog_replica_keeps_the_latest_upsert_and_pages_active_products_by_sku(
        self, store: OrderStore
    ) -> None:
        async with store.transaction("order") as tx:
            await tx.upsert_catalog([product("TEA", 100), product("CUP"), product("OLD", active=False)])
        async with store.transaction("order") as tx:
            await tx.upsert_catalog([product("TEA", 8800, max_per_order=5), product("BOWL")])
        found = await store.catalog_items(["TEA", "OLD", "NOPE"])
        assert found == {"TEA": product("TEA", 8800, max_per_order=5), "OLD": product("OLD", active=False)}
        assert [i.sku for i in await store.catalog_page(10)] == ["BOWL", "CUP", "TEA"]
        assert [i.sku for i in await store.catalog_page(2)] == ["BOWL", "CUP"]

    async def test_the_catalog_replica_keeps_price_tiers_in_order_and_a_later_upsert_replaces_them(
        self, store: OrderStore
    ) -> None:
        tiers = (
            PriceTier(min_quantity=3, unit_price_fen=900),
            PriceTier(min_quantity=10, unit_price_fen=800),
        )
        tiered = replace(product("TEA"), price_tiers=tiers)
        async with store.transaction("order") as tx:
            await tx.upsert_catalog([tiered])
        kept = await store.catalog_items(["TEA"])
        async with store.transaction("order") as tx:
            await tx.upsert_catalog([product("TEA")])

        assert kept == {"TEA": tiered}
        assert await store.catalog_page(10) == [product("TEA")]

    async def test_a_rejected_orders_substitutes_read_back_in_their_order(self, store: OrderStore) -> None:
        order = placed("o-1")
        await insert(store, order)
        order.stock_rejected(T0, ["TEA-0"], "none left", ["CUP", "BOWL"])
        await save(store, order)

        stored = await store.get("o-1")
        assert stored is not None and stored.substitutes == ["CUP", "BOWL"]

    async def test_the_catalog_replica_keeps_a_products_details_and_payment_methods(
        self, store: OrderStore
    ) -> None:
        detailed = replace(
            product("TEA"),
            description="Picked before Qingming",
            category="tea/green",
            attributes={"origin": "Hangzhou"},
            payment_methods=frozenset({PaymentMethod.ALIPAY, PaymentMethod.WECHAT_PAY}),
        )
        async with store.transaction("order") as tx:
            await tx.upsert_catalog([detailed])

        assert await store.catalog_items(["TEA"]) == {"TEA": detailed}

    async def test_a_sealed_token_is_kept_until_payment_is_requested_and_then_saved_as_none(
        self, store: OrderStore
    ) -> None:
        order = placed("o-1", method=PaymentMethod.BANK_CARD)
        await insert(store, order)
        read = await store.get("o-1")
        assert read is not None and read.payment_token is not None
        assert read.payment_token == order.payment_token
        assert TOKEN_OPENER.open(read.payment_token) == CLEAR_TOKEN
        read.stock_reserved(T0, DEADLINES)
        read.fraud_scored(T0, FraudDecision.APPROVE, 1, [], DEADLINES)
        await save(store, read)
        after = await store.get("o-1")
        assert after is not None and after.payment_token is None and after == read

    async def test_the_payment_view_reads_back_as_it_was_saved(self, store: OrderStore) -> None:
        await insert(store, placed("o-1"), placed("o-2"))
        pending, refunded = await store.get("o-1"), await store.get("o-2")
        assert pending is not None and refunded is not None
        assert (pending.payment_status, pending.pay_action, pending.refunded_fen) == (
            PaymentStatus.NOT_REQUESTED,
            None,
            0,
        )
        action = PayAction(PayActionType.REDIRECT, "https://pay.example/alipay/1")
        for order in (pending, refunded):
            order.stock_reserved(T0, DEADLINES)
            order.fraud_scored(T0, FraudDecision.APPROVE, 1, [], DEADLINES)
            order.payment_pending(T0, "pay-1", 8800, action)
        refunded.payment_authorized(T0, "pay-1")
        refunded.payment_captured(T0, "pay-1", 8800)
        refunded.payment_refunded(
            T0, "pay-1", "rf-1", 800, refunded_total_fen=800, captured_fen=8800, reason=RefundReason.REQUESTED
        )
        await save(store, pending, refunded)
        assert await store.get_many(["o-1", "o-2"]) == {"o-1": pending, "o-2": refunded}
        read = await store.get("o-1")
        assert read is not None and (read.payment_status, read.pay_action) == (PaymentStatus.PENDING, action)
        read_refund = await store.get("o-2")
        assert read_refund is not None
        assert (read_refund.payment_status, read_refund.pay_action, read_refund.refunded_fen) == (
            PaymentStatus.CAPTURED,
            None,
            800,
        )

    async def test_the_latest_order_number_is_the_days_highest(self, store: OrderStore) -> None:
        numbers = ["20261125-000002", "20261125-000010", "20261126-000001", "20261124-000099"]
        orders = [placed(f"o-{i}") for i in range(len(numbers))]
        for order, number in zip(orders, numbers, strict=True):
            order.order_no = number
        await insert(store, *orders)
        assert await store.latest_order_no("20261125") == "20261125-000010"
        assert await store.latest_order_no("20261127") is None


class TestInMemoryOrderStore(OrderStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryOrderStore:
        return InMemoryOrderStore()

    @pytest.fixture
    def read_outbox(self, store: InMemoryOrderStore) -> ReadOutbox:
        async def read() -> list[Envelope]:
            return list(store.outbox)

        return read


def personal_data() -> PersonalData:
    return PersonalData(SecretStr(generate_pii_key()))


def mongo_order_store(mongo_store: MongoStore) -> MongoOrderStore:
    return MongoOrderStore(mongo_store, personal_data(), TOKEN_SEALER)


def as_stored_before_sealing(store: MongoOrderStore, order: Order, token: str = CLEAR_TOKEN) -> Document:
    """`order` as documents were written before personal data and tokens were sealed, contacts
    were kept, timeline entries had an internal detail and the order kept a payment view."""
    doc = store.documents.to_doc(order)
    doc["shipping_address"] = order.shipping_address.model_dump(mode="json")
    del doc["contact"], doc["sealed_payment_token"], doc["payment"]
    doc["payment_token"] = token
    for entry in doc["timeline"]:
        del entry["detail"]
    return doc


def ended_as(order: Order, status: OrderStatus) -> Order:
    """`order` driven to `status` the way the saga drives it."""
    if status is OrderStatus.PENDING:
        return order
    if status is OrderStatus.UNDER_REVIEW:
        order.fraud_scored(T0, FraudDecision.REVIEW, 60, [], DEADLINES)
        return order
    order.stock_reserved(T0, DEADLINES)
    if status is OrderStatus.REJECTED:
        order.fraud_scored(T0, FraudDecision.REJECT, 99, [], DEADLINES)
        return order
    order.fraud_scored(T0, FraudDecision.APPROVE, 1, [], DEADLINES)
    if status is OrderStatus.CONFIRMED:
        order.payment_authorized(T0, "pay-1")
    elif status is OrderStatus.CANCELLED:
        order.payment_failed(T0, "pay-1", DeclineReason.CARD_DECLINED)
    assert order.status is status
    return order


class TestMongoOrderStore(OrderStoreContract):
    @pytest.fixture
    async def store(self, mongo_store: MongoStore) -> MongoOrderStore:
        store = mongo_order_store(mongo_store)
        await store.ensure_indexes(idempotency_key_ttl_s=3600)
        return store

    @pytest.fixture
    def read_outbox(self, mongo_store: MongoStore) -> ReadOutbox:
        async def read() -> list[Envelope]:
            docs = await mongo_store.db[OUTBOX].find().sort("_id", 1).to_list()
            return [decode(doc["value"]) for doc in docs]

        return read

    async def test_no_token_is_ever_stored_in_clear(
        self, store: MongoOrderStore, mongo_store: MongoStore
    ) -> None:
        order = placed("o-1", method=PaymentMethod.BANK_CARD)
        await insert(store, order)
        raw = await mongo_store.db[ORDERS].find_one({"_id": "o-1"})
        assert raw is not None and CLEAR_TOKEN not in repr(raw) and "payment_token" not in raw
        assert raw["sealed_payment_token"] == order.payment_token

    @pytest.mark.parametrize(
        ("status", "kept", "payment"),
        [
            (OrderStatus.PENDING, True, PaymentStatus.NOT_REQUESTED),
            (OrderStatus.UNDER_REVIEW, True, PaymentStatus.NOT_REQUESTED),
            (OrderStatus.AWAITING_PAYMENT, False, PaymentStatus.REQUESTED),
            (OrderStatus.CONFIRMED, False, PaymentStatus.AUTHORIZED),
            (OrderStatus.CANCELLED, False, PaymentStatus.FAILED),
            (OrderStatus.REJECTED, False, PaymentStatus.NOT_REQUESTED),
        ],
    )
    async def test_stored_clear_tokens_are_sealed_while_payment_is_to_come_and_dropped_after(
        self, mongo_store: MongoStore, status: OrderStatus, kept: bool, payment: PaymentStatus
    ) -> None:
        store = mongo_order_store(mongo_store)
        old = ended_as(placed("o-1", method=PaymentMethod.BANK_CARD), status)
        await mongo_store.db[ORDERS].insert_one(as_stored_before_sealing(store, old))

        await store.ensure_indexes(idempotency_key_ttl_s=3600)

        raw = await mongo_store.db[ORDERS].find_one({"_id": "o-1"})
        assert raw is not None and CLEAR_TOKEN not in repr(raw) and "payment_token" not in raw
        read = await store.get("o-1")
        assert read is not None and read.status is status
        if kept:
            assert read.payment_token is not None and TOKEN_OPENER.open(read.payment_token) == CLEAR_TOKEN
        else:
            assert read.payment_token is None and raw.get("sealed_payment_token") is None
        assert (read.payment_status, read.pay_action, read.refunded_fen) == (payment, None, 0)

    async def test_a_clear_token_written_after_the_migration_is_sealed_as_read_and_gone_at_the_next_save(
        self, store: MongoOrderStore, mongo_store: MongoStore
    ) -> None:
        # As a replica of the previous release writes during a rolling deploy.
        await mongo_store.db[ORDERS].insert_one(as_stored_before_sealing(store, placed("o-1")))
        read = await store.get("o-1")
        assert read is not None and read.payment_token is not None
        assert TOKEN_OPENER.open(read.payment_token) == CLEAR_TOKEN
        read.stock_reserved(T0, DEADLINES)
        await save(store, read)
        raw = await mongo_store.db[ORDERS].find_one({"_id": "o-1"})
        assert raw is not None and CLEAR_TOKEN not in repr(raw) and "payment_token" not in raw
        assert await store.get("o-1") == read

    async def test_idempotency_keys_expire_through_a_ttl_index(
        self, store: MongoOrderStore, mongo_store: MongoStore
    ) -> None:
        indexes = [index async for index in await mongo_store.db[IDEMPOTENCY].list_indexes()]
        ttl = [i for i in indexes if dict(i["key"]) == {"created_at": 1}]
        assert [i.get("expireAfterSeconds") for i in ttl] == [3600]

    async def test_an_idempotency_key_records_when_it_was_used(
        self, store: MongoOrderStore, mongo_store: MongoStore
    ) -> None:
        order = placed("o-1")
        async with store.transaction("order") as tx:
            await tx.insert_new([NewOrder(order, IdempotencyKey("c-1:key", "fingerprint"))])
        doc = await mongo_store.db[IDEMPOTENCY].find_one({"_id": "c-1:key"})
        assert doc is not None and doc["created_at"] == order.placed_at

    async def test_an_order_update_maintains_no_index_but_its_deadline(
        self, store: MongoOrderStore, mongo_store: MongoStore
    ) -> None:
        # Every secondary index on orders is rewritten at each of the saga's updates; lookups that
        # never change live in insert-only collections instead.
        indexes = [dict(index["key"]) async for index in await mongo_store.db[ORDERS].list_indexes()]
        assert indexes == [{"_id": 1}, {"deadline_at": 1}]

    async def test_the_address_and_contact_are_never_stored_in_clear(
        self, store: MongoOrderStore, mongo_store: MongoStore
    ) -> None:
        order = placed("o-1", contact="email:li@example.com")
        await insert(store, order)
        changed = await store.get("o-1")
        assert changed is not None
        changed.stock_reserved(T0, DEADLINES)
        await save(store, changed)
        raw = await mongo_store.db[ORDERS].find_one({"_id": "o-1"})
        assert raw is not None
        for personal in (ADDRESS.phone, ADDRESS.line1, ADDRESS.name, "li@example.com"):
            assert personal not in repr(raw)
        assert await store.get("o-1") == changed

    async def test_orders_sealed_with_another_key_do_not_open(
        self, store: MongoOrderStore, mongo_store: MongoStore
    ) -> None:
        await insert(store, placed("o-1"))
        elsewhere = mongo_order_store(mongo_store)
        with pytest.raises(UnreadableData):
            await elsewhere.get("o-1")

    async def test_documents_stored_before_sealing_contacts_and_details_still_read(
        self, store: MongoOrderStore, mongo_store: MongoStore
    ) -> None:
        order = placed("o-1")
        order.stock_rejected(T0, ["TEA-0"], "none left")
        await mongo_store.db[ORDERS].insert_one(as_stored_before_sealing(store, order))
        await mongo_store.db[CATALOG].insert_one(
            {
                "_id": "TEA",
                "name": "Longjing",
                "merchant_id": "m-1",
                "kind": "physical",
                "price_fen": 1,
                "active": True,
            }
        )
        stored = await store.get("o-1")
        assert stored is not None
        assert (stored.shipping_address, stored.contact) == (ADDRESS, None)
        assert [entry.detail for entry in stored.timeline] == ["", ""]
        assert stored.timeline[-1].note == order.timeline[-1].note
        assert (await store.catalog_items(["TEA"]))["TEA"].max_per_order == MAX_QUANTITY
        assert (await store.catalog_items(["TEA"]))["TEA"].price_tiers == ()
        assert (await store.catalog_items(["TEA"]))["TEA"].payment_methods == frozenset()
        assert stored.substitutes == []

    async def test_orders_stored_before_the_lookups_existed_get_them_and_lose_the_old_indexes(
        self, mongo_store: MongoStore
    ) -> None:
        store = mongo_order_store(mongo_store)
        older = placed("o-1", merchants=["m-1", "m-2"])
        newer = placed("o-2", after=timedelta(minutes=1))
        orders = mongo_store.db[ORDERS]
        await orders.create_index([("order_no", 1)], unique=True)
        await orders.create_index([("customer_id", 1), ("placed_at", -1)])
        await orders.insert_many(
            [as_stored_before_sealing(store, older), as_stored_before_sealing(store, newer)]
        )

        await store.ensure_indexes(idempotency_key_ttl_s=3600)

        assert await walk(store, OrderQuery(Scope.CUSTOMER, older.customer_id)) == [["o-2", "o-1"]]
        assert await walk(store, OrderQuery(Scope.MERCHANT, "m-1")) == [["o-2", "o-1"]]
        assert await walk(store, OrderQuery(Scope.MERCHANT, "m-2")) == [["o-1"]]
        assert await walk(store, OrderQuery(Scope.ALL)) == [["o-2", "o-1"]]
        assert await store.latest_order_no(older.order_no.split("-")[0]) == max(
            older.order_no, newer.order_no
        )
        reused = placed("o-3")
        reused.order_no = older.order_no
        with pytest.raises(OrderNumberTaken):
            await insert(store, reused)
        indexes = [dict(index["key"]) async for index in await orders.list_indexes()]
        assert indexes == [{"_id": 1}, {"deadline_at": 1}]

    async def test_stored_orders_get_merchant_listings_and_sealed_addresses(
        self, mongo_store: MongoStore
    ) -> None:
        store = mongo_order_store(mongo_store)
        stored = placed("o-1", merchants=["m-1", "m-2"])
        await insert(store, stored)  # a customer_orders and order_numbers key, as before
        await mongo_store.db[ORDERS].replace_one({"_id": "o-1"}, as_stored_before_sealing(store, stored))
        await mongo_store.db["merchant_orders"].delete_many({})

        await store.ensure_indexes(idempotency_key_ttl_s=3600)

        assert await walk(store, OrderQuery(Scope.MERCHANT, "m-2")) == [["o-1"]]
        raw = await mongo_store.db[ORDERS].find_one({"_id": "o-1"})
        assert raw is not None and ADDRESS.line1 not in repr(raw)
        read = await store.get("o-1")
        assert read is not None and read.shipping_address == ADDRESS
