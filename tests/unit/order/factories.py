"""Builders the order service's unit tests share: a catalog, a settable clock, commands, the
other services' answers, and a watch that tells when someone waits on it."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta

from pydantic import SecretStr

from services.order.domain import TOKEN_METHODS, CatalogItem, Deadlines, Order, RequestedItem
from services.order.handlers import OrderService, OrderWatch, PlaceOrder
from shared.contracts import (
    FraudDecision,
    FraudReason,
    FraudScored,
    PaymentAuthorized,
    PaymentMethod,
    ProductKind,
    ShippingAddress,
    StockLine,
    StockReserved,
)
from shared.crypto import TokenOpener, TokenSealer, generate_token_keypair
from tests.twins.order import InMemoryOrderNumbers, InMemoryOrderStore
from tests.unit.samples import ADDRESS, T0

# The payment service's key pair as the tests play it: the gateway seals to the public key, and a
# test opens with the private one what only the payment service could.
_TOKEN_PRIVATE_KEY, TOKEN_PUBLIC_KEY = generate_token_keypair()
CLEAR_TOKEN = "tok_approve"  # the sandbox provider's token that approves
TOKEN_OPENER = TokenOpener(SecretStr(_TOKEN_PRIVATE_KEY))
DEADLINES = Deadlines(checks=timedelta(seconds=30), review=timedelta(hours=1), payment=timedelta(minutes=2))
LEASE = timedelta(seconds=30)
PUER_LIMIT = 2
CATALOG = [
    CatalogItem("TEA", "Longjing tea", "m-1", ProductKind.PHYSICAL, 8800),
    CatalogItem("CUP", "Celadon cup", "m-2", ProductKind.PHYSICAL, 4550),
    CatalogItem("OLD", "Retired", "m-1", ProductKind.PHYSICAL, 100, active=False),
    CatalogItem("PUER", "Pu'er cake", "m-1", ProductKind.PHYSICAL, 12800, max_per_order=PUER_LIMIT),
]


class Clock:
    """The service's clock, set by the test."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class ObservedWatch(OrderWatch):
    """An OrderWatch that lets a test wait until a request waits on an order, so the test changes
    the order only once the request can see the change come (no sleeping on a guess)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: Counter[str] = Counter()
        self._began = asyncio.Event()

    async def next_change(self, order_id: str, timeout_s: float) -> None:
        waiting = super().next_change(order_id, timeout_s)
        self.waits[order_id] += 1
        self._began.set()
        # The test resumes only once this task suspends inside `waiting`, which registers its
        # waiter before it first suspends: a change the test makes then is seen.
        await waiting

    async def waited(self, order_id: str, times: int = 1, within_s: float = 5.0) -> None:
        """Return once `times` waits on `order_id` have begun; TimeoutError past `within_s`."""
        async with asyncio.timeout(within_s):
            while self.waits[order_id] < times:
                self._began.clear()
                await self._began.wait()


async def seeded_store(catalog: list[CatalogItem] = CATALOG) -> InMemoryOrderStore:
    store = InMemoryOrderStore()
    async with store.transaction("seed") as tx:
        await tx.upsert_catalog(catalog)
    return store


def order_service(
    store: InMemoryOrderStore, numbers: InMemoryOrderNumbers, owner: str = "sweeper-a"
) -> OrderService:
    return OrderService(
        store=store,
        numbers=numbers,
        deadlines=DEADLINES,
        sweeper_id=owner,
        token_sealer=TokenSealer(TOKEN_PUBLIC_KEY),
        sweep_lease=LEASE,
        clock=Clock(),
    )


def clock_of(service: OrderService) -> Clock:
    assert isinstance(service.clock, Clock)
    return service.clock


def command(
    *items: tuple[str, int],
    customer_id: str = "c-1",
    key: str | None = None,
    method: PaymentMethod = PaymentMethod.WECHAT_PAY,
    address: ShippingAddress = ADDRESS,
    contact: str | None = None,
) -> PlaceOrder:
    return PlaceOrder(
        customer_id=customer_id,
        items=[RequestedItem(sku, quantity) for sku, quantity in items or [("TEA", 1)]],
        shipping_address=address,
        payment_method=method,
        payment_token=CLEAR_TOKEN if method in TOKEN_METHODS else None,
        key_scope=f"customer:{customer_id}",
        idempotency_key=key,
        contact=contact,
    )


async def stored(service: OrderService, order_id: str) -> Order:
    order = await service.store.get(order_id)
    assert order is not None
    return order


def reserved(order_id: str, sku: str = "TEA") -> StockReserved:
    return StockReserved(order_id=order_id, lines=[StockLine(sku=sku, quantity=1)], expires_at=T0)


def scored(
    order_id: str,
    decision: FraudDecision = FraudDecision.APPROVE,
    score: int = 3,
    reasons: list[FraudReason] | None = None,
) -> FraudScored:
    return FraudScored(order_id=order_id, decision=decision, score=score, reasons=reasons or [])


def authorized(order_id: str, amount_fen: int = 8800) -> PaymentAuthorized:
    return PaymentAuthorized(
        order_id=order_id,
        payment_id="pay-1",
        amount_fen=amount_fen,
        method=PaymentMethod.WECHAT_PAY,
        provider_ref="wx-1",
    )
