"""The one cheap product every benchmark order buys, created through the inventory API."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from devstack.processes import eventually
from shared.auth import Principal, Role, TokenIssuer
from shared.settings import SharedSettings

INITIAL_STOCK = 1_000_000
PRICE_FEN = 100


@dataclass(frozen=True)
class Stock:
    available: int
    reserved: int


async def create_product(inventory_url: str, gateway_url: str, run_id: str) -> str:
    """A product with a million units, once the gateway's catalog replica lists it."""
    merchant_id = f"bench-m-{run_id}"
    sku = f"BENCH-{run_id.upper()}"
    admin = TokenIssuer(SharedSettings()).access_token(Principal("bench", Role.ADMIN))
    async with httpx.AsyncClient(
        base_url=inventory_url, timeout=10.0, headers={"Authorization": f"Bearer {admin}"}
    ) as inventory:
        response = await inventory.post(
            "/v1/merchants", json={"merchant_id": merchant_id, "name": f"Benchmark merchant {run_id}"}
        )
        response.raise_for_status()
        response = await inventory.put(
            f"/v1/products/{sku}",
            json={
                "name": f"Benchmark tea bag {run_id}",
                "merchant_id": merchant_id,
                "price_fen": PRICE_FEN,
                "kind": "physical",
                "available": INITIAL_STOCK,
            },
        )
        response.raise_for_status()
    async with httpx.AsyncClient(base_url=gateway_url, timeout=5.0) as gateway:

        async def listed() -> int:
            return (await gateway.get(f"/v1/products/{sku}")).status_code

        await eventually(
            listed, lambda code: code == 200, what=f"{sku} in the gateway's catalog", timeout_s=60
        )
    return sku


async def stock(inventory_url: str, sku: str) -> Stock:
    async with httpx.AsyncClient(base_url=inventory_url, timeout=10.0) as inventory:
        response = await inventory.get(f"/v1/products/{sku}")
        response.raise_for_status()
        body = response.json()
        return Stock(available=int(body["available"]), reserved=int(body["reserved"]))
