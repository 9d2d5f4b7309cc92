"""The client gateway: place and follow orders, browse the catalog replica."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from services.order.domain import (
    MAX_LINES,
    MAX_QUANTITY,
    CatalogItem,
    Order,
    OrderError,
    RequestedItem,
    UnknownProducts,
)
from services.order.handlers import (
    IdempotencyKeyReused,
    OrderService,
    PlaceOrder,
    place_order,
)
from shared.contracts import PaymentMethod, ShippingAddress
from shared.http import Problem

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Identifier
    quantity: int = Field(ge=1, le=MAX_QUANTITY)


class PaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: PaymentMethod
    token: str = Field(min_length=1, max_length=256, description="The payment provider's token.")


class PlaceOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: Identifier
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_LINES)
    shipping_address: ShippingAddress
    payment: PaymentIn


class OrderAccepted(BaseModel):
    order_id: str
    order_no: str
    status: str


class LineOut(BaseModel):
    sku: str
    name: str
    merchant_id: str
    kind: str
    quantity: int
    unit_price_fen: int
    line_total_fen: int


class TimelineOut(BaseModel):
    status: str
    at: datetime
    cause: str
    note: str


class OrderOut(BaseModel):
    order_id: str
    order_no: str
    customer_id: str
    status: str
    reason: str | None
    lines: list[LineOut]
    total_fen: int
    currency: str
    payment_method: str
    payment_id: str | None
    shipping_address: ShippingAddress
    placed_at: datetime
    deadline_at: datetime | None
    timeline: list[TimelineOut]


class OrderList(BaseModel):
    items: list[OrderOut]


class ProductOut(BaseModel):
    sku: str
    name: str
    merchant_id: str
    kind: str
    price_fen: int


class ProductList(BaseModel):
    items: list[ProductOut]


def order_out(order: Order) -> OrderOut:
    return OrderOut(
        order_id=order.order_id,
        order_no=order.order_no,
        customer_id=order.customer_id,
        status=order.status.value,
        reason=order.reason,
        lines=[
            LineOut(**line.model_dump(mode="json"), line_total_fen=line.line_total_fen)
            for line in order.lines
        ],
        total_fen=order.total_fen,
        currency=order.currency,
        payment_method=order.payment_method.value,
        payment_id=order.payment_id,
        shipping_address=order.shipping_address,
        placed_at=order.placed_at,
        deadline_at=order.deadline_at,
        timeline=[
            TimelineOut(status=e.status.value, at=e.at, cause=e.cause, note=e.note) for e in order.timeline
        ],
    )


def product_out(item: CatalogItem) -> ProductOut:
    return ProductOut(
        sku=item.sku,
        name=item.name,
        merchant_id=item.merchant_id,
        kind=item.kind.value,
        price_fen=item.price_fen,
    )


def build_router(service: OrderService) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/orders", status_code=status.HTTP_202_ACCEPTED, response_model=OrderAccepted)
    async def create_order(
        body: PlaceOrderIn,
        request: Request,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
        x_correlation_id: Annotated[str | None, Header(max_length=128)] = None,
    ) -> OrderAccepted:
        """Accept an order; it is processed asynchronously, follow it with GET /v1/orders/{id}."""
        command = PlaceOrder(
            customer_id=body.customer_id,
            items=[RequestedItem(item.sku, item.quantity) for item in body.items],
            shipping_address=body.shipping_address,
            payment_method=body.payment.method,
            payment_token=body.payment.token,
            idempotency_key=idempotency_key,
            correlation_id=x_correlation_id,
        )
        try:
            placed = await place_order(service, command)
        except UnknownProducts as error:
            raise Problem(
                422, "Unknown product", str(error), code="unknown-product", skus=error.skus
            ) from None
        except IdempotencyKeyReused as error:
            raise Problem(422, "Idempotency key reused", str(error), code="idempotency-key-reused") from None
        except OrderError as error:
            raise Problem(422, "Invalid order", str(error), code="invalid-order") from None
        order = placed.order
        response.headers["Location"] = str(request.url_for("get_order", order_id=order.order_id))
        if not placed.created:
            response.headers["Idempotent-Replayed"] = "true"
        return OrderAccepted(order_id=order.order_id, order_no=order.order_no, status=order.status.value)

    @router.get("/orders/{order_id}", response_model=OrderOut, name="get_order")
    async def get_order(order_id: str) -> OrderOut:
        """An order with its lines, totals and the timeline of every transition."""
        order = await service.store.get(order_id)
        if order is None:
            raise Problem(404, "Order not found", f"no order {order_id}", code="order-not-found")
        return order_out(order)

    @router.get("/orders", response_model=OrderList)
    async def list_orders(
        customer_id: Identifier, limit: Annotated[int, Query(ge=1, le=100)] = 20
    ) -> OrderList:
        """A customer's most recent orders, newest first."""
        orders = await service.store.for_customer(customer_id, limit)
        return OrderList(items=[order_out(order) for order in orders])

    @router.get("/products", response_model=ProductList)
    async def list_products(limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> ProductList:
        """The products clients can order (the gateway's replica of inventory's catalog)."""
        items = await service.store.catalog_page(limit)
        return ProductList(
            items=[
                ProductOut(
                    sku=i.sku,
                    name=i.name,
                    merchant_id=i.merchant_id,
                    kind=i.kind.value,
                    price_fen=i.price_fen,
                )
                for i in items
            ]
        )

    @router.get("/products/{sku}", response_model=ProductOut)
    async def get_product(sku: str) -> ProductOut:
        """One orderable product from the replica."""
        found = (await service.store.catalog_items([sku])).get(sku)
        if found is None or not found.active:
            raise Problem(404, "Product not found", f"no product {sku}", code="product-not-found")
        return product_out(found)

    return router
