"""Topic names: one per owning service, each with a dead-letter twin."""

ORDER_EVENTS = "order.events"
INVENTORY_EVENTS = "inventory.events"
# The catalog as tables: compacted topics keyed by SKU and by merchant id, so the latest state of
# every product and merchant stays on them for good and a replica can always be rebuilt from them.
INVENTORY_PRODUCTS = "inventory.products"
INVENTORY_MERCHANTS = "inventory.merchants"
# Merchants' coupons as a table keyed by code, which the gateway prices orders from.
INVENTORY_COUPONS = "inventory.coupons"
PAYMENT_EVENTS = "payment.events"
FRAUD_EVENTS = "fraud.events"
NOTIFICATION_EVENTS = "notification.events"
# Derived data for analysts: per-merchant, per-minute totals (services/analytics).
ANALYTICS_MERCHANT_REVENUE = "analytics.merchant-revenue"

ALL = (
    ORDER_EVENTS,
    INVENTORY_EVENTS,
    INVENTORY_PRODUCTS,
    INVENTORY_MERCHANTS,
    INVENTORY_COUPONS,
    PAYMENT_EVENTS,
    FRAUD_EVENTS,
    NOTIFICATION_EVENTS,
    ANALYTICS_MERCHANT_REVENUE,
)


def dead_letter(topic: str) -> str:
    return f"{topic}.dlq"
