"""Event contracts: the only code that crosses service boundaries."""

from shared.contracts import fraud, inventory, notification, order, payment, topics
from shared.contracts.base import REGISTRY, Envelope, Event, UnknownEventType, decode_data
from shared.contracts.common import (
    CURRENCY,
    OrderLine,
    PaymentMethod,
    ProductKind,
    ShippingAddress,
    StockLine,
)
from shared.contracts.fraud import FraudDecision, FraudScored
from shared.contracts.inventory import (
    ProductUpserted,
    Shortage,
    StockCommitted,
    StockRejected,
    StockReleased,
    StockReserved,
)
from shared.contracts.notification import NotificationSent, Role
from shared.contracts.order import (
    OrderCancelled,
    OrderConfirmed,
    OrderPlaced,
    OrderRejected,
    PaymentRequested,
)
from shared.contracts.payment import PaymentAuthorized, PaymentFailed, PaymentVoided

__all__ = [
    "CURRENCY",
    "REGISTRY",
    "Envelope",
    "Event",
    "FraudDecision",
    "FraudScored",
    "NotificationSent",
    "OrderCancelled",
    "OrderConfirmed",
    "OrderLine",
    "OrderPlaced",
    "OrderRejected",
    "PaymentAuthorized",
    "PaymentFailed",
    "PaymentMethod",
    "PaymentRequested",
    "PaymentVoided",
    "ProductKind",
    "ProductUpserted",
    "Role",
    "ShippingAddress",
    "Shortage",
    "StockCommitted",
    "StockLine",
    "StockRejected",
    "StockReleased",
    "StockReserved",
    "UnknownEventType",
    "decode_data",
    "fraud",
    "inventory",
    "notification",
    "order",
    "payment",
    "topics",
]
