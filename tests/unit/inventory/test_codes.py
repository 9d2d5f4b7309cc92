"""Virtual products: a code pool as stock, uploaded all or nothing, each code given to one paid order."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from services.inventory.domain import (
    MAX_CODE_LENGTH,
    MAX_CODES_PER_UPLOAD,
    Changes,
    CodeStatus,
    DuplicateCodes,
    InvalidCodes,
    NotVirtual,
    Product,
    ProductDetails,
    Reservation,
    ReservationStatus,
    UploadedCode,
    already_pooled,
    committed_virtual_lines,
    parse_codes,
)
from services.inventory.handlers import (
    Inventory,
    NotPermitted,
    PutProduct,
    Registration,
    UnknownProduct,
    add_codes,
    add_stock,
    handle_batch,
    register_merchant,
    release_expired,
    upsert_product,
)
from shared.auth import Principal, Role
from shared.contracts import (
    CodesAssigned,
    PaymentMethod,
    ProductKind,
    StockCommitted,
    StockLine,
    decode_data,
)
from tests.twins.inventory import TWIN_PERSONAL_DATA, InMemoryInventoryStore
from tests.unit.inventory.factories import confirmed, line, placed
from tests.unit.samples import T0
from tests.unit.samples import delivery as deliver

pytestmark = pytest.mark.unit

TTL = timedelta(minutes=15)
ADMIN = Principal("admin-1", Role.ADMIN)
GIFT_SHOP = Principal("m-1", Role.MERCHANT, merchant_id="m-1")
OTHER_SHOP = Principal("m-2", Role.MERCHANT, merchant_id="m-2")


# --- the upload, as text ---------------------------------------------------------------------------


def test_one_code_per_line_trimmed_with_blank_lines_skipped_and_numbered_as_sent() -> None:
    codes = parse_codes("  GIFT-1 \n\n\tGIFT-2\r\n   \nGIFT 3\n")

    assert codes == [UploadedCode(1, "GIFT-1"), UploadedCode(3, "GIFT-2"), UploadedCode(5, "GIFT 3")]


def test_a_code_repeated_in_the_upload_is_refused_naming_the_lines_that_repeat_it() -> None:
    with pytest.raises(DuplicateCodes) as refused:
        parse_codes("A\nB\nA\n\nB\nC")

    assert refused.value.lines == [3, 5]
    assert "A" not in str(refused.value).split(), "the message names lines, never codes"


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        pytest.param("", [], id="empty"),
        pytest.param(" \n\n\t\n", [], id="only-blank-lines"),
        pytest.param("\n".join(f"C{n}" for n in range(MAX_CODES_PER_UPLOAD + 1)), [], id="too-many"),
        pytest.param("OK\n" + "X" * (MAX_CODE_LENGTH + 1), [2], id="too-long"),
        pytest.param("OK\nBAD\x00CODE", [2], id="control-character"),
    ],
)
def test_an_upload_that_is_no_list_of_codes_is_refused(text: str, lines: list[int]) -> None:
    with pytest.raises(InvalidCodes) as refused:
        parse_codes(text)

    assert not isinstance(refused.value, DuplicateCodes)
    assert refused.value.lines == lines


def test_the_most_codes_of_the_longest_length_are_accepted() -> None:
    text = "\n".join(f"{n:0{MAX_CODE_LENGTH}d}" for n in range(MAX_CODES_PER_UPLOAD))

    assert len(parse_codes(text)) == MAX_CODES_PER_UPLOAD


def test_codes_in_the_pool_already_are_refused_by_line() -> None:
    codes = parse_codes("A\nB\nC")

    already_pooled(codes, set())
    with pytest.raises(DuplicateCodes) as refused:
        already_pooled(codes, {"C", "A"})

    assert refused.value.lines == [1, 3]


def test_only_committed_reservations_ask_for_codes_and_only_for_virtual_lines() -> None:
    products = {
        "GIFT": Product("GIFT", "Gift card", "m-1", 100, available=0, kind=ProductKind.VIRTUAL),
        "TEA": Product("TEA", "Tea", "m-1", 100, available=5),
    }
    both = [StockLine(sku="GIFT", quantity=2), StockLine(sku="TEA", quantity=1)]
    committed = Reservation("o-1", both, ReservationStatus.COMMITTED, "c")
    taken_again = Reservation("o-2", [StockLine(sku="GIFT", quantity=1)], ReservationStatus.COMMITTED, "c")
    released = Reservation("o-3", both, ReservationStatus.RELEASED, "c")
    physical_only = Reservation("o-4", [StockLine(sku="TEA", quantity=1)], ReservationStatus.COMMITTED, "c")

    wanted = committed_virtual_lines(
        Changes(
            stock={},
            created=[physical_only],
            moved_from_held=[committed, released],
            moved_from_expired=[taken_again],
        ),
        products,
    )

    assert wanted == {"o-1": [StockLine(sku="GIFT", quantity=2)], "o-2": [StockLine(sku="GIFT", quantity=1)]}


# --- the pool through the handlers -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def service() -> Inventory:
    inventory = Inventory(store=InMemoryInventoryStore(), reservation_ttl=TTL, clock=Clock())
    methods = frozenset(PaymentMethod)
    await register_merchant(inventory, ADMIN, Registration("m-1", "Gift Shop", methods), None)
    await register_merchant(inventory, ADMIN, Registration("m-2", "Other Shop", methods), None)
    gift = ProductDetails("Gift card 100", "m-1", 10000, kind=ProductKind.VIRTUAL)
    await upsert_product(inventory, ADMIN, PutProduct("GIFT", gift), None)
    await upsert_product(inventory, ADMIN, PutProduct("TEA", ProductDetails("Tea", "m-1", 100), 5), None)
    store_of(inventory).outbox.clear()
    return inventory


def store_of(service: Inventory) -> InMemoryInventoryStore:
    assert isinstance(service.store, InMemoryInventoryStore)
    return service.store


async def available(service: Inventory, sku: str = "GIFT") -> tuple[int, int]:
    product = await service.store.get_product(sku)
    assert product is not None
    return product.available, product.reserved


def assigned_to(service: Inventory) -> dict[str, list[str]]:
    """Each order's codes, opened."""
    by_order: dict[str, list[str]] = {}
    for code in store_of(service).state.codes:
        if code.order_id is not None:
            by_order.setdefault(code.order_id, []).append(TWIN_PERSONAL_DATA.open(code.sealed_code))
    return by_order


def codes_events(service: Inventory) -> list[CodesAssigned]:
    events = [decode_data(env) for env in store_of(service).outbox]
    return [event for event in events if isinstance(event, CodesAssigned)]


async def test_uploaded_codes_are_sealed_in_the_pool_and_each_is_a_unit_of_stock(service: Inventory) -> None:
    added = await add_codes(service, GIFT_SHOP, "GIFT", "G-1\nG-2\n\nG-3\n")

    assert (added.added, added.product.available) == (3, 3)
    assert await available(service) == (3, 0)
    pool = store_of(service).state.codes
    assert [TWIN_PERSONAL_DATA.open(c.sealed_code) for c in pool] == ["G-1", "G-2", "G-3"]
    assert not any("G-" in c.sealed_code for c in pool), "codes are stored sealed"
    assert {c.status for c in pool} == {CodeStatus.UNASSIGNED}


async def test_an_upload_with_a_code_already_pooled_adds_nothing(service: Inventory) -> None:
    await add_codes(service, GIFT_SHOP, "GIFT", "G-1\nG-2")

    with pytest.raises(DuplicateCodes) as refused:
        await add_codes(service, GIFT_SHOP, "GIFT", "G-3\nG-2\nG-4")

    assert refused.value.lines == [2]
    assert await available(service) == (2, 0)
    assert len(store_of(service).state.codes) == 2


async def test_codes_are_for_a_known_virtual_product_of_the_callers_merchant(service: Inventory) -> None:
    with pytest.raises(UnknownProduct):
        await add_codes(service, GIFT_SHOP, "GHOST", "G-1")
    with pytest.raises(NotVirtual):
        await add_codes(service, GIFT_SHOP, "TEA", "G-1")
    with pytest.raises(NotPermitted):
        await add_codes(service, OTHER_SHOP, "GIFT", "G-1")

    assert await add_codes(service, ADMIN, "GIFT", "G-1") is not None
    assert await available(service) == (1, 0)


async def test_a_virtual_products_stock_grows_by_codes_only(service: Inventory) -> None:
    await add_codes(service, GIFT_SHOP, "GIFT", "G-1\nG-2")

    with pytest.raises(NotVirtual):
        await add_stock(service, GIFT_SHOP, "GIFT", 5)
    with pytest.raises(NotVirtual):
        gift = ProductDetails("Gift card 200", "m-1", 20000, kind=ProductKind.VIRTUAL)
        await upsert_product(service, ADMIN, PutProduct("GIFT-200", gift, available=10), None)
    await add_stock(service, GIFT_SHOP, "GIFT", -1)  # withdrawn from sale: the code stays unsold

    assert await available(service) == (1, 0)


async def test_a_paid_order_is_given_one_code_per_unit_once(service: Inventory) -> None:
    await add_codes(service, GIFT_SHOP, "GIFT", "G-1\nG-2\nG-3")
    await handle_batch(service, [deliver(placed("o-1", line("GIFT", 2), line("TEA", 1)))])
    assert assigned_to(service) == {}, "a reservation holds units, not codes"

    confirmation = deliver(confirmed("o-1", line("GIFT", 2), line("TEA", 1)), correlation_id="corr-o-1")
    await handle_batch(service, [confirmation])
    await handle_batch(service, [confirmation, deliver(confirmed("o-1", line("GIFT", 2), line("TEA", 1)))])

    assert assigned_to(service) == {"o-1": ["G-1", "G-2"]}
    [event] = codes_events(service)
    assert (event.order_id, event.customer_id) == ("o-1", "c-1")
    [gift] = event.lines
    assert gift.sku == "GIFT"
    assert [TWIN_PERSONAL_DATA.open(sealed) for sealed in gift.sealed_codes] == ["G-1", "G-2"]
    [envelope] = [env for env in store_of(service).outbox if env.type == CodesAssigned.TYPE]
    assert (envelope.correlation_id, envelope.causation_id) == ("corr-o-1", confirmation.envelope.id)
    assert await available(service) == (1, 0)


async def test_orders_in_one_batch_get_distinct_codes(service: Inventory) -> None:
    await add_codes(service, GIFT_SHOP, "GIFT", "G-1\nG-2\nG-3\nG-4")
    orders = [f"o-{n}" for n in range(1, 5)]
    await handle_batch(service, [deliver(placed(order, line("GIFT", 1))) for order in orders])
    await handle_batch(service, [deliver(confirmed(order, line("GIFT", 1))) for order in orders])

    codes = assigned_to(service)
    assert sorted(code for order in orders for code in codes[order]) == ["G-1", "G-2", "G-3", "G-4"]
    assert len(codes_events(service)) == 4
    assert await available(service) == (0, 0)


async def test_an_order_without_virtual_lines_gets_no_codes(service: Inventory) -> None:
    await handle_batch(service, [deliver(placed("o-1", line("TEA", 1)))])
    await handle_batch(service, [deliver(confirmed("o-1", line("TEA", 1)))])

    assert codes_events(service) == []


async def test_an_order_paid_after_its_reservation_expired_is_given_codes_when_taken_again(
    service: Inventory,
) -> None:
    await add_codes(service, GIFT_SHOP, "GIFT", "G-1\nG-2")
    await handle_batch(service, [deliver(placed("o-1", line("GIFT", 1)))])
    clock = service.clock
    assert isinstance(clock, Clock)
    clock.now += TTL
    assert await release_expired(service) == 1

    await handle_batch(service, [deliver(confirmed("o-1", line("GIFT", 1)))])

    assert assigned_to(service) == {"o-1": ["G-1"]}
    events = [decode_data(env) for env in store_of(service).outbox]
    assert [type(e) for e in events if isinstance(e, StockCommitted | CodesAssigned)] == [
        StockCommitted,
        CodesAssigned,
    ]
    assert await available(service) == (1, 0)
