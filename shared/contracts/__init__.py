"""Event contracts: the only code that crosses service boundaries."""

from shared.contracts import fraud, inventory, notification, order, payment, topics
from shared.contracts.base import (
    REGISTRY,
    Envelope,
    Event,
    OrderEvent,
    UndecodableEvent,
    UnknownEventType,
    decode_data,
)
from shared.contracts.common import (
    CURRENCY,
    OrderLine,
    PaymentMethod,
    ProductKind,
    ShippingAddress,
    StockLine,
)
from shared.contracts.fraud import FraudDecision, FraudReason, FraudScored
from shared.contracts.inventory import (
    ProductUpserted,
    ReservationEndReason,
    Shortage,
    StockCommitted,
    StockRejected,
    StockRejectReason,
    StockReleased,
    StockReserved,
)
from shared.contracts.notification import NotificationSent, Role
from shared.contracts.order import (
    OrderCancelled,
    OrderConfirmed,
    OrderEndReason,
    OrderPlaced,
    OrderRejected,
    PaymentRequested,
)
from shared.contracts.payment import DeclineReason, PaymentAuthorized, PaymentFailed, PaymentVoided

__all__ = [
    "CURRENCY",
    "DeclineReason",
    "Envelope",
    "Event",
    "FraudDecision",
    "FraudReason",
    "FraudScored",
    "NotificationSent",
    "OrderCancelled",
    "OrderConfirmed",
    "OrderEndReason",
    "OrderEvent",
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
    "REGISTRY",
    "ReservationEndReason",
    "Role",
    "ShippingAddress",
    "Shortage",
    "StockCommitted",
    "StockLine",
    "StockRejectReason",
    "StockRejected",
    "StockReleased",
    "StockReserved",
    "UndecodableEvent",
    "UnknownEventType",
    "decode_data",
    "fraud",
    "inventory",
    "notification",
    "order",
    "payment",
    "topics",
]
