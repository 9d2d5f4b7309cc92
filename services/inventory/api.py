"""The catalog API: merchants and products (price and sellable stock)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from services.inventory.domain import Merchant, Product
from services.inventory.handlers import (
    Inventory,
    MerchantConflict,
    PutProduct,
    UnknownMerchant,
    register_merchant,
    upsert_product,
)
from shared.contracts import ProductKind
from shared.http import Problem

ID_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class MerchantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    merchant_id: Identifier
    name: Name


class MerchantOut(BaseModel):
    merchant_id: str
    name: str


class MerchantList(BaseModel):
    items: list[MerchantOut]


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Name
    merchant_id: Identifier
    price_fen: int = Field(ge=0)
    kind: ProductKind = ProductKind.PHYSICAL
    available: int = Field(ge=0, description="Sellable units; setting it is a restock.")
    active: bool = True


class ProductOut(BaseModel):
    sku: str
    name: str
    price_fen: int
    currency: str
    available: int
    reserved: int
    merchant_id: str
    kind: ProductKind
    active: bool

    @classmethod
    def of(cls, product: Product) -> ProductOut:
        return cls(
            sku=product.sku,
            name=product.name,
            price_fen=product.price_fen,
            currency=product.currency,
            available=product.available,
            reserved=product.reserved,
            merchant_id=product.merchant_id,
            kind=product.kind,
            active=product.active,
        )


class ProductList(BaseModel):
    items: list[ProductOut]


Sku = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]


def build_router(service: Inventory) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["inventory"])

    @router.get("/products")
    async def list_products(
        merchant_id: Annotated[str | None, Query(max_length=64)] = None,
    ) -> ProductList:
        """The catalog with sellable stock, optionally one merchant's."""
        products = await service.store.list_products(merchant_id)
        return ProductList(items=[ProductOut.of(p) for p in products])

    @router.get("/products/{sku}")
    async def get_product(sku: Sku) -> ProductOut:
        """One product."""
        product = await service.store.get_product(sku)
        if product is None:
            raise Problem(404, "Product not found", f"no product {sku}", code="product-not-found")
        return ProductOut.of(product)

    @router.put("/products/{sku}")
    async def put_product(
        sku: Sku,
        body: ProductIn,
        x_correlation_id: Annotated[str | None, Header(max_length=128)] = None,
    ) -> ProductOut:
        """Create or replace a product and announce it (ProductUpserted)."""
        command = PutProduct(sku=sku, **body.model_dump())
        try:
            product = await upsert_product(service, command, x_correlation_id)
        except UnknownMerchant as error:
            raise Problem(422, "Unknown merchant", str(error), code="unknown-merchant") from None
        return ProductOut.of(product)

    @router.post("/merchants", status_code=status.HTTP_201_CREATED)
    async def create_merchant(body: MerchantIn, response: Response) -> MerchantOut:
        """Register a merchant (200 when the same merchant already exists)."""
        try:
            created = await register_merchant(service, Merchant(body.merchant_id, body.name))
        except MerchantConflict as error:
            raise Problem(409, "Merchant exists", str(error), code="merchant-exists") from None
        if not created:
            response.status_code = status.HTTP_200_OK
        return MerchantOut(merchant_id=body.merchant_id, name=body.name)

    @router.get("/merchants")
    async def list_merchants() -> MerchantList:
        """Every registered merchant."""
        merchants = await service.store.list_merchants()
        return MerchantList(items=[MerchantOut(merchant_id=m.merchant_id, name=m.name) for m in merchants])

    return router
