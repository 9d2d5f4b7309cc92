"""Topic names: one per owning service, each with a dead-letter twin."""

ORDER_EVENTS = "order.events"
INVENTORY_EVENTS = "inventory.events"
PAYMENT_EVENTS = "payment.events"
FRAUD_EVENTS = "fraud.events"
NOTIFICATION_EVENTS = "notification.events"

ALL = (ORDER_EVENTS, INVENTORY_EVENTS, PAYMENT_EVENTS, FRAUD_EVENTS, NOTIFICATION_EVENTS)


def dead_letter(topic: str) -> str:
    return f"{topic}.dlq"
