"""The gateway's catalog replica can always be rebuilt: dropping it and restarting the order service
restores every product, with nobody doing anything else (issue 9, point 8)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from services.order.main import OrderSettings
from services.order.store import CATALOG
from tests.integration.conftest import Platform
from tests.integration.harness import eventually

# The most products one GET /v1/products lists.
LIST_LIMIT = 1000


async def listed(platform: Platform) -> dict[str, dict[str, Any]]:
    """The products the gateway lists, by SKU."""
    response = await platform.gateway.get("/v1/products", params={"limit": LIST_LIMIT})
    assert response.status_code == 200, response.text
    return {product["sku"]: product for product in response.json()["items"]}


async def drop_the_gateways_catalog(platform: Platform) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(platform.stack.config.mongo("order"))
    try:
        database = client[OrderSettings.model_fields["order_db"].default]
        await database.drop_collection(CATALOG)
        assert await database[CATALOG].count_documents({}) == 0
    finally:
        await client.close()


async def test_dropping_the_catalog_and_restarting_the_gateway_restores_every_product(
    platform: Platform,
) -> None:
    merchant_id = await platform.merchant()
    skus = [
        await platform.product(available=3, price_fen=1000 + n, merchant_id=merchant_id) for n in range(5)
    ]
    before = await eventually(
        lambda: listed(platform),
        lambda products: set(skus) <= set(products),
        what="the new products in the gateway's listing",
    )
    assert len(before) < LIST_LIMIT, "the listing must show the whole catalog for the comparison to hold"

    await drop_the_gateways_catalog(platform)
    assert (await platform.gateway.get(f"/v1/products/{skus[0]}")).status_code == 404
    platform.stack.restart("order")

    after = await eventually(
        lambda: listed(platform),
        lambda products: products == before,
        what="every product back in the gateway's listing, as it was before the drop",
        timeout_s=60,
    )
    assert {sku: after[sku]["price_fen"] for sku in skus} == {sku: 1000 + n for n, sku in enumerate(skus)}
    for sku in skus:
        assert (await platform.gateway.get(f"/v1/products/{sku}")).status_code == 200
    # And the restored catalog sells: an order for a restored product goes all the way through,
    # once the restarted gateway's saga consumer is back in its group.
    await platform.rejoined("order")
    accepted = await platform.place([(skus[0], 1)])
    confirmed = await platform.settled(accepted["order_id"], timeout_s=60)
    assert confirmed["status"] == "CONFIRMED", confirmed
