"""Topic names: one per owning service, each with a dead-letter twin."""

ORDER_EVENTS = "order.events"
INVENTORY_EVENTS = "inventory.events"
PAYMENT_EVENTS = "payment.events"
FRAUD_EVENTS = "fraud.events"
NOTIFICATION_EVENTS = "notification.events"
# Derived data for analysts: per-merchant, per-minute totals (services/analytics).
ANALYTICS_MERCHANT_REVENUE = "analytics.merchant-revenue"

ALL = (
    ORDER_EVENTS,
    INVENTORY_EVENTS,
    PAYMENT_EVENTS,
    FRAUD_EVENTS,
    NOTIFICATION_EVENTS,
    ANALYTICS_MERCHANT_REVENUE,
)


def dead_letter(topic: str) -> str:
    return f"{topic}.dlq"
