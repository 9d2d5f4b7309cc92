"""Malformed orders get a 4xx problem+json answer and create nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.integration.conftest import ADDRESS, Platform


def body(customer_id: str, **changes: Any) -> dict[str, Any]:
    valid: dict[str, Any] = {
        "customer_id": customer_id,
        "items": [{"sku": "SKU-DOES-NOT-MATTER", "quantity": 1}],
        "shipping_address": ADDRESS,
        "payment": {"method": "bank_card", "token": "tok_approve"},
    }
    valid.update(changes)
    return {key: value for key, value in valid.items() if value is not None}


CASES: dict[str, dict[str, Any]] = {
    "missing items": {"items": None},
    "missing address": {"shipping_address": None},
    "address without phone": {"shipping_address": {k: v for k, v in ADDRESS.items() if k != "phone"}},
    "negative quantity": {"items": [{"sku": "{sku}", "quantity": -1}]},
    "zero quantity": {"items": [{"sku": "{sku}", "quantity": 0}]},
    "no items": {"items": []},
    "ten thousand lines": {"items": [{"sku": "{sku}", "quantity": 1}] * 10_000},
    "unknown payment method": {"payment": {"method": "cash", "token": "x"}},
    "unknown sku": {"items": [{"sku": "SKU-NO-SUCH-THING", "quantity": 1}]},
    "known and unknown sku": {"items": [{"sku": "{sku}", "quantity": 1}, {"sku": "NOPE", "quantity": 1}]},
    "quantity as text": {"items": [{"sku": "{sku}", "quantity": "many"}]},
    "unexpected field": {"coupon": "FREE"},
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_bad_order_is_refused_with_a_problem_and_changes_nothing(platform: Platform, case: str) -> None:
    sku = await platform.product(available=5)
    customer_id = f"cust-bad-{uuid.uuid4().hex[:8]}"
    changes = {key: _fill(value, sku) for key, value in CASES[case].items()}

    response = await platform.gateway.post(
        "/v1/orders", json=body(customer_id, **changes), headers=platform.customer(customer_id)
    )

    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == response.status_code and problem["title"] and problem["detail"]
    listed = (await platform.gateway.get("/v1/orders", headers=platform.customer(customer_id))).json()
    assert listed["items"] == []
    assert (await platform.stock(sku))["available"] == 5


async def test_body_that_is_not_json_is_a_problem(platform: Platform) -> None:
    response = await platform.gateway.post(
        "/v1/orders",
        content=b"{not json",
        headers={"content-type": "application/json", **platform.customer("cust-json")},
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_unknown_order_is_a_404_problem(platform: Platform) -> None:
    response = await platform.gateway.get(f"/v1/orders/{uuid.uuid4()}", headers=platform.admin())
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def _fill(value: Any, sku: str) -> Any:
    if isinstance(value, list):
        return [_fill(item, sku) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, sku) for key, item in value.items()}
    return sku if value == "{sku}" else value
