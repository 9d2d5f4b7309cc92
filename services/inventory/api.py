"""The catalog API: merchants and products (price and sellable stock).

Reads are public; writes need the token of the merchant concerned or an admin's.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, field_validator

from services.inventory.domain import (
    MAX_PRICE_FEN,
    MAX_STOCK,
    Merchant,
    Product,
    ProductDetails,
    StockOutOfRange,
)
from services.inventory.handlers import (
    Inventory,
    MerchantConflict,
    NotPermitted,
    ProductMoveRefused,
    PutProduct,
    UnknownMerchant,
    UnknownProduct,
    add_stock,
    register_merchant,
    upsert_merchant,
    upsert_product,
)
from shared.auth import Caller
from shared.contracts import MAX_UNITS_PER_ORDER, PaymentMethod, ProductKind
from shared.http import Problem, problem_responses

ID_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
# Strict: a JSON `true` or `"12"` is a mistake, not 1 or 12.
PriceFen = Annotated[
    int, Field(strict=True, ge=0, le=MAX_PRICE_FEN, description="Unit price in fen (CNY 0.01).")
]
StockUnits = Annotated[int, Field(strict=True, ge=0, le=MAX_STOCK)]
MaxPerOrder = Annotated[
    int,
    Field(
        strict=True,
        ge=1,
        le=MAX_UNITS_PER_ORDER,
        description="The most units of this product one order may hold.",
    ),
]
CorrelationId = Annotated[str | None, Header(max_length=128)]

WECHAT_AND_ALIPAY: list[JsonValue] = [PaymentMethod.WECHAT_PAY.value, PaymentMethod.ALIPAY.value]
EVERY_METHOD: list[JsonValue] = [method.value for method in PaymentMethod]


def _each_once(methods: list[PaymentMethod]) -> list[PaymentMethod]:
    repeated = sorted({method.value for method in methods if methods.count(method) > 1})
    if repeated:
        raise ValueError(f"each payment method may be listed once; repeated: {', '.join(repeated)}")
    return methods


PaymentMethods = Annotated[
    list[PaymentMethod],
    Field(
        min_length=1,
        description="The payment methods the merchant accepts: at least one, each once.",
    ),
    AfterValidator(_each_once),
]


class MerchantIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {
                    "merchant_id": "m-westlake-tea",
                    "name": "West Lake Tea House",
                    "payment_methods": WECHAT_AND_ALIPAY,
                }
            ]
        },
    )

    merchant_id: Identifier
    name: Name
    payment_methods: PaymentMethods = Field(default_factory=lambda: list(PaymentMethod))


class MerchantChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [{"name": "West Lake Tea House", "payment_methods": WECHAT_AND_ALIPAY}]
        },
    )

    name: Name
    payment_methods: PaymentMethods = Field(default_factory=lambda: list(PaymentMethod))


class MerchantOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "merchant_id": "m-westlake-tea",
                    "name": "West Lake Tea House",
                    "payment_methods": WECHAT_AND_ALIPAY,
                }
            ]
        }
    )

    merchant_id: str
    name: str
    payment_methods: list[PaymentMethod]

    @classmethod
    def of(cls, merchant: Merchant) -> MerchantOut:
        return cls(
            merchant_id=merchant.merchant_id, name=merchant.name, payment_methods=merchant.accepted_methods
        )


class MerchantList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "merchant_id": "m-jingdezhen",
                            "name": "Jingdezhen Porcelain",
                            "payment_methods": EVERY_METHOD,
                        }
                    ]
                }
            ]
        }
    )

    items: list[MerchantOut]


_PRODUCT_EXAMPLE: dict[str, JsonValue] = {
    "name": "Longjing green tea 250g",
    "merchant_id": "m-westlake-tea",
    "price_fen": 16800,
    "kind": "physical",
    "active": True,
    "max_per_order": 10,
}


class ProductIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{**_PRODUCT_EXAMPLE, "available": 120}]},
    )

    name: Name
    merchant_id: Identifier
    price_fen: PriceFen
    kind: ProductKind = ProductKind.PHYSICAL
    available: StockUnits | None = Field(
        default=None,
        description="Sellable units a new product starts with (default 0). Ignored when the product "
        "exists: an edit never changes stock; use POST /v1/products/{sku}/stock.",
    )
    active: bool = True
    max_per_order: MaxPerOrder = MAX_UNITS_PER_ORDER

    def details(self) -> ProductDetails:
        return ProductDetails(
            name=self.name,
            merchant_id=self.merchant_id,
            price_fen=self.price_fen,
            kind=self.kind,
            active=self.active,
            max_per_order=self.max_per_order,
        )


class StockChange(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"add": 50}, {"add": -3}]})

    add: int = Field(
        strict=True,
        ge=-MAX_STOCK,
        le=MAX_STOCK,
        description="Units to add to the sellable stock (a restock), or to take away when negative "
        "(a correction, which cannot take away units orders hold). Not zero.",
    )

    @field_validator("add")
    @classmethod
    def _not_zero(cls, add: int) -> int:
        if add == 0:
            raise ValueError("add must not be zero: a stock change adds or takes away at least one unit")
        return add


class ProductOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_PRODUCT_EXAMPLE,
                    "sku": "SKU-TEA-LONGJING",
                    "currency": "CNY",
                    "available": 117,
                    "reserved": 3,
                }
            ]
        }
    )

    sku: str
    name: str
    price_fen: int
    currency: str
    available: int = Field(description="Units that can still be ordered (those held by orders excluded).")
    reserved: int = Field(description="Units held by orders that are not settled yet.")
    merchant_id: str
    kind: ProductKind
    active: bool
    max_per_order: int

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
            max_per_order=product.max_per_order,
        )


class ProductList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            **_PRODUCT_EXAMPLE,
                            "sku": "SKU-TEA-LONGJING",
                            "currency": "CNY",
                            "available": 117,
                            "reserved": 3,
                        }
                    ]
                }
            ]
        }
    )

    items: list[ProductOut]


Sku = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
MerchantId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]


def _forbidden(error: NotPermitted) -> Problem:
    return Problem(403, "Forbidden", str(error), code="forbidden")


def _unknown_merchant(error: UnknownMerchant) -> Problem:
    return Problem(
        422,
        "Unknown merchant",
        str(error),
        code="unknown-merchant",
        errors=[{"field": "merchant_id", "message": str(error), "location": "body"}],
    )


def _product_not_found(sku: str) -> Problem:
    return Problem(404, "Product not found", f"no product {sku}", code="product-not-found")


def build_router(service: Inventory) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["inventory"])

    @router.get("/products", responses=problem_responses(422))
    async def list_products(
        merchant_id: Annotated[str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)] = None,
    ) -> ProductList:
        """The catalog with sellable stock, optionally one merchant's. Public."""
        products = await service.store.list_products(merchant_id)
        return ProductList(items=[ProductOut.of(p) for p in products])

    @router.get("/products/{sku}", responses=problem_responses(404, 422))
    async def get_product(sku: Sku) -> ProductOut:
        """One product. Public."""
        product = await service.store.get_product(sku)
        if product is None:
            raise _product_not_found(sku)
        return ProductOut.of(product)

    @router.put(
        "/products/{sku}",
        responses={
            201: {"model": ProductOut, "description": "Created"},
            **problem_responses(401, 403, 409, 422),
        },
    )
    async def put_product(
        sku: Sku,
        body: ProductIn,
        caller: Caller,
        response: Response,
        x_correlation_id: CorrelationId = None,
    ) -> ProductOut:
        """Create a product (201), or change an existing one's details (200), and announce it
        (ProductUpserted).

        A new product starts with `available` sellable units (default 0). On an existing product
        `available` is ignored and its stock stays as it is, so an edit made from an earlier read
        cannot undo the sales made since: change stock with `POST /v1/products/{sku}/stock`.

        Needs the token of the product's merchant (for a new product, the merchant named in the
        body) or an admin's. Moving a product to another merchant is for an admin only (409)."""
        command = PutProduct(sku=sku, details=body.details(), available=body.available or 0)
        try:
            put = await upsert_product(service, caller, command, x_correlation_id)
        except NotPermitted as error:
            raise _forbidden(error) from None
        except ProductMoveRefused as error:
            raise Problem(409, "Product move refused", str(error), code="product-move-refused") from None
        except UnknownMerchant as error:
            raise _unknown_merchant(error) from None
        if put.created:
            response.status_code = status.HTTP_201_CREATED
        return ProductOut.of(put.product)

    @router.post("/products/{sku}/stock", responses=problem_responses(401, 403, 404, 409, 422))
    async def change_stock(sku: Sku, body: StockChange, caller: Caller) -> ProductOut:
        """Add sellable units (`{"add": 50}`, a restock) or take some away (`{"add": -3}`, a
        correction); answers the product as it is after the change.

        Units held by orders cannot be taken away: a correction that would leave fewer than zero
        sellable units is refused (409) and changes nothing. Needs the token of the product's
        merchant or an admin's."""
        try:
            product = await add_stock(service, caller, sku, body.add)
        except UnknownProduct:
            raise _product_not_found(sku) from None
        except NotPermitted as error:
            raise _forbidden(error) from None
        except StockOutOfRange as error:
            raise Problem(409, "Stock out of range", str(error), code="stock-out-of-range") from None
        return ProductOut.of(product)

    @router.post(
        "/merchants",
        status_code=status.HTTP_201_CREATED,
        responses={
            200: {"model": MerchantOut, "description": "The very same merchant was already registered"},
            **problem_responses(401, 403, 409, 422),
        },
    )
    async def create_merchant(
        body: MerchantIn, caller: Caller, response: Response, x_correlation_id: CorrelationId = None
    ) -> MerchantOut:
        """Register a merchant (201; 200 when the very same merchant already exists, 409 when the id
        is taken with other details) and announce it (MerchantUpserted).

        Needs an admin's token, or the token of the merchant being registered."""
        merchant = Merchant(body.merchant_id, body.name, frozenset(body.payment_methods))
        try:
            created = await register_merchant(service, caller, merchant, x_correlation_id)
        except NotPermitted as error:
            raise _forbidden(error) from None
        except MerchantConflict as error:
            raise Problem(409, "Merchant exists", str(error), code="merchant-exists") from None
        if not created:
            response.status_code = status.HTTP_200_OK
        return MerchantOut.of(merchant)

    @router.put(
        "/merchants/{merchant_id}",
        responses={
            201: {"model": MerchantOut, "description": "Created"},
            **problem_responses(401, 403, 422),
        },
    )
    async def put_merchant(
        merchant_id: MerchantId,
        body: MerchantChange,
        caller: Caller,
        response: Response,
        x_correlation_id: CorrelationId = None,
    ) -> MerchantOut:
        """Create (201) or change (200) a merchant: its name and the payment methods it accepts;
        announced every time (MerchantUpserted). Needs the merchant's own token or an admin's."""
        merchant = Merchant(merchant_id, body.name, frozenset(body.payment_methods))
        try:
            created = await upsert_merchant(service, caller, merchant, x_correlation_id)
        except NotPermitted as error:
            raise _forbidden(error) from None
        if created:
            response.status_code = status.HTTP_201_CREATED
        return MerchantOut.of(merchant)

    @router.get("/merchants/{merchant_id}", responses=problem_responses(404, 422))
    async def get_merchant(merchant_id: MerchantId) -> MerchantOut:
        """One merchant and the payment methods it accepts. Public."""
        merchant = await service.store.get_merchant(merchant_id)
        if merchant is None:
            raise Problem(404, "Merchant not found", f"no merchant {merchant_id}", code="merchant-not-found")
        return MerchantOut.of(merchant)

    @router.get("/merchants")
    async def list_merchants() -> MerchantList:
        """Every registered merchant. Public."""
        return MerchantList(items=[MerchantOut.of(m) for m in await service.store.list_merchants()])

    return router
