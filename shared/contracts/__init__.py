"""Event contracts: the only code that crosses service boundaries."""

from shared.contracts import analytics, fraud, inventory, notification, order, payment, topics
from shared.contracts.analytics import MerchantRevenue
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
    MAX_UNITS_PER_ORDER,
    MerchantUpserted,
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
    "MAX_UNITS_PER_ORDER",
    "MerchantRevenue",
    "MerchantUpserted",
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
    "analytics",
    "decode_data",
    "fraud",
    "inventory",
    "notification",
    "order",
    "payment",
    "topics",
]
