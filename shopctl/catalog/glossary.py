"""Meanings for the catalog where a model does not give its own.

An event model's docstring wins over these; a field's `Field(description=...)` (often its unit) is
added after them. They fill the gaps, so that docs/events.md and the AsyncAPI document say what
every event and field means. Keys are
`Model.field` for a name that means different things in different models, else the bare field name.
"""

from __future__ import annotations

EVENT_MEANINGS = {
    "fraud.scored": "Fraud scored an order: approve (the saga goes on), review (the order waits for a "
    "person's decision) or reject (the order is rejected with reason FRAUD).",
    "payment.authorized": "The provider authorized the payment: the order is confirmed.",
}

FIELD_MEANINGS = {
    "order_id": "The order's id (a uuid).",
    "order_no": "The order's human-readable number, `YYYYMMDD-NNNNNN` (the day in China time).",
    "customer_id": "Who placed the order: a customer account, or a guest.",
    "merchant_id": "The merchant's id.",
    "sku": "The product's stock-keeping unit, unique across the platform.",
    "currency": "The ISO 4217 code of every amount in the event.",
    "lines": "The order's lines.",
    "StockReserved.lines": "What is held, per SKU.",
    "StockReleased.lines": "What went back to available stock, per SKU.",
    "StockCommitted.lines": "What left stock for good, per SKU.",
    "reason": "Why, as a stable code (see its enumeration).",
    "detail": "A human-readable explanation; for people, not for parsing.",
    "payment_id": "The payment's id: one per order, `pay_` and 32 hex digits.",
    "method": "The payment method.",
    "payment_method": "The payment method the customer chose.",
    "placed_at": "When the gateway accepted the order.",
    "total_fen": "The order's total: the sum of its lines' quantity × unit price.",
    "amount_fen": "The amount in question.",
    "shipping_address": "Where to ship. Personal data: keep it out of shared datasets.",
    "expires_at": "When the hold lapses unless the order is confirmed first "
    "(then inventory.stock_released with reason EXPIRED).",
    "shortages": "The lines inventory could not hold, with what it had.",
    "substitutes": "In-stock SKUs of the same merchant a client may offer instead.",
    "decision": "What the saga does next.",
    "reasons": "The rules that fired.",
    "provider_ref": "The payment provider's reference for the authorization.",
    "ProductUpserted.name": "The product's name as shown to shoppers.",
    "ProductUpserted.price_fen": "The product's current unit price.",
    "ProductUpserted.active": "Whether the product can be ordered.",
    "ProductUpserted.kind": "Physical goods ship; virtual goods are a code delivered at once.",
    "ProductUpserted.max_per_order": "The most units of the product one order may hold.",
    "MerchantUpserted.name": "The merchant's name.",
    "MerchantUpserted.payment_methods": "The payment methods the merchant accepts.",
    "NotificationSent.notification_id": "The notification's id; the same cause, recipient and template "
    "always give the same id.",
    "NotificationSent.recipient": "Who it went to: a customer id or a merchant id (see role).",
    "NotificationSent.role": "Whether the recipient is the customer or the merchant.",
    "NotificationSent.channel": "How it was delivered (`inbox`).",
    "NotificationSent.template": "Which message it was, such as `customer.order_confirmed`.",
    "NotificationSent.status": "`sent`, or `failed` when its one delivery attempt failed.",
    "OrderLine.name": "The product's name when the order was placed.",
    "OrderLine.kind": "Physical goods ship; virtual goods are a code delivered at once.",
    "OrderLine.quantity": "Units ordered.",
    "OrderLine.unit_price_fen": "The unit price when the order was placed.",
    "StockLine.quantity": "Units.",
    "Shortage.quantity": "Units asked for.",
    "Shortage.available": "Units on hand at the time.",
    "ShippingAddress.name": "The addressee.",
}


def field_meaning(model_title: str, field: str, described: str) -> str:
    """The glossary's meaning of a field, followed by its own description (such as its unit)."""
    glossary = FIELD_MEANINGS.get(f"{model_title}.{field}") or FIELD_MEANINGS.get(field, "")
    return " ".join(part for part in (glossary, described) if part)


def event_meaning(event_type: str, described: str) -> str:
    return described or EVENT_MEANINGS.get(event_type, "")
