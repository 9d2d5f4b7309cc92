"""One realistic example of each event type, for the schemas, the AsyncAPI document and docs/events.md.

A model that carries its own example (`model_config = ConfigDict(json_schema_extra={"examples": [...]})`)
needs none here; every other registered type must have one, or the catalog refuses to generate. The
values are made up but shaped like the platform's own (uuid order ids, `pay_...` payment ids, order
numbers `YYYYMMDD-NNNNNN`), and every field the record key is taken from has a value no other field
shares, so the catalog can tell which field the key is.
"""

from __future__ import annotations

from datetime import UTC, datetime

from shared.contracts import (
    AfterSalesKind,
    AfterSalesRequested,
    AssignedCodes,
    BackInStock,
    CodesAssigned,
    CouponApplied,
    CouponDiscount,
    CouponUpserted,
    DeclineReason,
    Event,
    FraudDecision,
    FraudReason,
    FraudScored,
    LowStock,
    MerchantStatus,
    MerchantUpserted,
    NotificationSent,
    OrderCancelled,
    OrderConfirmed,
    OrderEndReason,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    OrderReviewed,
    PayActionType,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentMethod,
    PaymentPending,
    PaymentRefunded,
    PaymentRequested,
    PaymentVoided,
    PriceTier,
    ProductKind,
    ProductUpserted,
    RefundReason,
    RefundRequested,
    ReservationEndReason,
    Role,
    ServiceSlot,
    ShippingAddress,
    Shortage,
    StockCommitted,
    StockLine,
    StockRejected,
    StockReleased,
    StockReserved,
)

ORDER_ID = "0b6f2d3e-5c1a-4f7e-9a58-2e4d1c7b9f10"
ORDER_NO = "20261125-000042"
CUSTOMER_ID = "cust-7f3a91"
MERCHANT_ID = "m-teahouse"
PAYMENT_ID = "pay_3d9c5e0a7b2f4e61a8c4d2b9e7f01a35"
PLACED_AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

_TEA = OrderLine(
    sku="TEA-LONGJING-250G",
    name="Longjing green tea, 250 g",
    merchant_id=MERCHANT_ID,
    kind=ProductKind.PHYSICAL,
    quantity=2,
    unit_price_fen=12800,
)
_GIFT_CARD = OrderLine(
    sku="GIFT-CARD-100",
    name="Teahouse gift card, 100 yuan",
    merchant_id=MERCHANT_ID,
    kind=ProductKind.VIRTUAL,
    quantity=1,
    unit_price_fen=10000,
)
_LINES = [_TEA, _GIFT_CARD]
_COUPON = CouponApplied(code="TEA-AUTUMN-10", merchant_id=MERCHANT_ID, discount_fen=1000)
_TOTAL_FEN = sum(line.line_total_fen for line in _LINES) - _COUPON.discount_fen
_HELD = [StockLine(sku=line.sku, quantity=line.quantity) for line in _LINES]

EXAMPLES: tuple[Event, ...] = (
    OrderPlaced(
        order_id=ORDER_ID,
        order_no=ORDER_NO,
        customer_id=CUSTOMER_ID,
        lines=_LINES,
        total_fen=_TOTAL_FEN,
        payment_method=PaymentMethod.BANK_CARD,
        shipping_address=ShippingAddress(
            name="Li Lei",
            phone="+86 138 0000 0000",
            province="Zhejiang",
            city="Hangzhou",
            district="Xihu",
            line1="1 Longjing Road",
            postal_code="310000",
        ),
        placed_at=PLACED_AT,
        coupon=_COUPON,
    ),
    PaymentRequested(
        order_id=ORDER_ID,
        customer_id=CUSTOMER_ID,
        amount_fen=_TOTAL_FEN,
        method=PaymentMethod.BANK_CARD,
        sealed_token="x25519.k1.Qm9hcmRpbmcgcGFzcyBmb3IgcGF5bWVudCBvbmx5",  # noqa: S106 - made up
    ),
    RefundRequested(
        order_id=ORDER_ID,
        refund_id="rfd_8e2c4a6b0d1f4a3c9b7e5d2f1a0c8b6e",
        customer_id=CUSTOMER_ID,
        amount_fen=4900,
        reason="One gift card arrived already used",
    ),
    OrderConfirmed(
        order_id=ORDER_ID,
        order_no=ORDER_NO,
        customer_id=CUSTOMER_ID,
        lines=_LINES,
        total_fen=_TOTAL_FEN,
        payment_id=PAYMENT_ID,
    ),
    OrderRejected(
        order_id=ORDER_ID,
        order_no=ORDER_NO,
        customer_id=CUSTOMER_ID,
        reason=OrderEndReason.OUT_OF_STOCK,
        detail="TEA-LONGJING-250G: 2 asked, 1 available",
    ),
    AfterSalesRequested(
        order_id=ORDER_ID,
        case_id="as_4c2e9a7b1d3f",
        customer_id=CUSTOMER_ID,
        merchant_id=MERCHANT_ID,
        kind=AfterSalesKind.REFUND_ONLY,
        reason="One gift card arrived already used",
    ),
    OrderReviewed(
        order_id=ORDER_ID,
        customer_id=CUSTOMER_ID,
        merchant_id=MERCHANT_ID,
        skus=["TEA-LONGJING-250G"],
        rating=5,
    ),
    OrderCancelled(
        order_id=ORDER_ID,
        order_no=ORDER_NO,
        customer_id=CUSTOMER_ID,
        reason=OrderEndReason.PAYMENT_DECLINED,
        detail="CARD_DECLINED: sandbox bank_card",
    ),
    ProductUpserted(
        sku="TEA-LONGJING-250G",
        name="Longjing green tea, 250 g",
        merchant_id=MERCHANT_ID,
        kind=ProductKind.PHYSICAL,
        price_fen=12800,
        max_per_order=10,
        price_tiers=[PriceTier(min_quantity=5, unit_price_fen=11800)],
        description="Pre-Qingming Longjing from the West Lake hills, picked by hand.",
        category="tea/green",
        attributes={"weight": "250 g", "harvest": "2026 spring"},
        payment_methods=[PaymentMethod.BANK_CARD, PaymentMethod.ALIPAY],
    ),
    ProductUpserted(
        sku="CLASS-TEA-CEREMONY",
        name="Tea ceremony class, 90 minutes",
        merchant_id=MERCHANT_ID,
        kind=ProductKind.SERVICE,
        price_fen=29800,
        category="classes/tea",
        slots=[
            ServiceSlot(
                slot_id="2026-11-28T10:00",
                starts_at=datetime(2026, 11, 28, 10, 0, tzinfo=UTC),
                ends_at=datetime(2026, 11, 28, 11, 30, tzinfo=UTC),
            )
        ],
    ),
    CouponUpserted(
        code=_COUPON.code,
        merchant_id=MERCHANT_ID,
        discount=CouponDiscount.AMOUNT,
        value=1000,
        min_spend_fen=20000,
        valid_from=datetime(2026, 11, 1, tzinfo=UTC),
        valid_until=datetime(2026, 12, 1, tzinfo=UTC),
        total_uses=500,
    ),
    CodesAssigned(
        order_id=ORDER_ID,
        customer_id=CUSTOMER_ID,
        lines=[AssignedCodes(sku="GIFT-CARD-100", sealed_codes=["v1.dev1.c2VhbGVkIGdpZnQgY2FyZCBjb2Rl"])],
    ),
    BackInStock(
        sku="TEA-BILUOCHUN-250G",
        name="Biluochun green tea, 250 g",
        merchant_id=MERCHANT_ID,
        available=40,
        customer_ids=[CUSTOMER_ID, "cust-20c4e8"],
    ),
    LowStock(
        sku="TEA-DAHONGPAO-100G",
        name="Da Hong Pao oolong, 100 g",
        merchant_id=MERCHANT_ID,
        available=3,
        threshold=5,
    ),
    MerchantUpserted(
        merchant_id=MERCHANT_ID,
        name="West Lake Teahouse",
        payment_methods=[PaymentMethod.BANK_CARD, PaymentMethod.ALIPAY],
        status=MerchantStatus.APPROVED,
        webhook_url="https://teahouse.example.com/hooks/orders",
    ),
    StockReserved(order_id=ORDER_ID, lines=_HELD, expires_at=datetime(2026, 11, 25, 12, 15, tzinfo=UTC)),
    StockRejected(
        order_id=ORDER_ID,
        shortages=[Shortage(sku="TEA-LONGJING-250G", quantity=2, available=1)],
        substitutes=["TEA-BILUOCHUN-250G"],
    ),
    StockReleased(order_id=ORDER_ID, lines=_HELD, reason=ReservationEndReason.EXPIRED),
    StockCommitted(order_id=ORDER_ID, lines=_HELD),
    FraudScored(
        order_id=ORDER_ID,
        decision=FraudDecision.REVIEW,
        score=55,
        reasons=[FraudReason.AMOUNT_HIGH],
    ),
    NotificationSent(
        order_id=ORDER_ID,
        notification_id="6a1f0c7e-2b3d-5e4f-8a9b-0c1d2e3f4a5b",
        recipient=CUSTOMER_ID,
        role=Role.CUSTOMER,
        channel="inbox",
        template="customer.order_confirmed",
        status="sent",
    ),
    PaymentAuthorized(
        order_id=ORDER_ID,
        payment_id=PAYMENT_ID,
        amount_fen=_TOTAL_FEN,
        method=PaymentMethod.BANK_CARD,
        provider_ref="sbx_bank_card_5b1e9c0d2a7f4e3b8c6d1a0f",
    ),
    PaymentFailed(
        order_id=ORDER_ID,
        payment_id=PAYMENT_ID,
        method=PaymentMethod.BANK_CARD,
        reason=DeclineReason.CARD_DECLINED,
        detail="sandbox bank_card",
    ),
    PaymentPending(
        order_id=ORDER_ID,
        payment_id=PAYMENT_ID,
        method=PaymentMethod.ALIPAY,
        amount_fen=_TOTAL_FEN,
        action_type=PayActionType.REDIRECT,
        action_url="https://pay.example.com/pay/sbx_alipay_5b1e9c0d2a7f4e3b8c6d1a0f",
    ),
    PaymentCaptured(order_id=ORDER_ID, payment_id=PAYMENT_ID, amount_fen=_TOTAL_FEN),
    PaymentVoided(
        order_id=ORDER_ID,
        payment_id=PAYMENT_ID,
        amount_fen=_TOTAL_FEN,
        reason=OrderEndReason.CUSTOMER_CANCELLED,
        customer_id=CUSTOMER_ID,
    ),
    PaymentRefunded(
        order_id=ORDER_ID,
        payment_id=PAYMENT_ID,
        refund_id="rfd_8e2c4a6b0d1f4a3c9b7e5d2f1a0c8b6e",
        customer_id=CUSTOMER_ID,
        amount_fen=4900,
        refunded_total_fen=4900,
        captured_fen=_TOTAL_FEN,
        reason=RefundReason.REQUESTED,
        detail="One gift card arrived already used",
    ),
)
