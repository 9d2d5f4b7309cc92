"""Integration fixtures: one real stack per test run, driven over HTTP and Kafka."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.auth import Principal, Role, TokenIssuer
from shared.contracts import Envelope
from shared.kafka import decode
from shared.settings import SharedSettings
from tests.integration.harness import LocalStack, eventually, start_local_stack

ROOT = Path(__file__).resolve().parents[2]
FINAL = {"CONFIRMED", "REJECTED", "CANCELLED"}
# Signs tokens with the key the test stack's services verify with (the dev default).
ISSUER = TokenIssuer(SharedSettings())
ADDRESS = {
    "name": "Han Meimei",
    "phone": "13912345678",
    "province": "Guangdong",
    "city": "Shenzhen",
    "district": "Nanshan",
    "line1": "9 Keyuan Rd",
    "postal_code": "518000",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's report carries the services' last log lines: CI keeps no log files."""
    report: pytest.TestReport = yield
    platform = getattr(item, "funcargs", {}).get("platform")
    if report.failed and isinstance(platform, Platform):
        for name in [*platform.stack.config.ports, "sandbox", "broker"]:
            report.sections.append((f"{name} log (last lines)", platform.stack.log_tail(name, lines=40)))
    return report


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    running = start_local_stack(ROOT)
    try:
        yield running
    finally:
        running.stop_all()


@dataclass
class Platform:
    """The running platform as a client sees it: one HTTP client per service and the broker."""

    stack: LocalStack
    gateway: httpx.AsyncClient
    inventory: httpx.AsyncClient
    payment: httpx.AsyncClient
    fraud: httpx.AsyncClient
    notification: httpx.AsyncClient
    analytics: httpx.AsyncClient
    # The sandbox payment provider, as its test hooks and ledger show it.
    sandbox: httpx.AsyncClient

    @property
    def bootstrap(self) -> str:
        return self.stack.config.bootstrap

    @property
    def services(self) -> list[httpx.AsyncClient]:
        return [self.gateway, self.inventory, self.payment, self.fraud, self.notification, self.analytics]

    @staticmethod
    def bearer(role: Role, subject: str, **claims: str) -> dict[str, str]:
        token = ISSUER.access_token(Principal(subject=subject, role=role, **claims))
        return {"Authorization": f"Bearer {token}"}

    @classmethod
    def customer(cls, customer_id: str) -> dict[str, str]:
        return cls.bearer(Role.CUSTOMER, customer_id)

    @classmethod
    def admin(cls) -> dict[str, str]:
        return cls.bearer(Role.ADMIN, "test-admin")

    async def merchant(self) -> str:
        merchant_id = f"m-{uuid.uuid4().hex[:8]}"
        response = await self.inventory.post(
            "/v1/merchants",
            json={"merchant_id": merchant_id, "name": "Test Teahouse"},
            headers=self.admin(),
        )
        assert response.status_code in (200, 201), response.text
        return merchant_id

    async def product(
        self, *, available: int, price_fen: int = 1999, merchant_id: str | None = None, **extra: Any
    ) -> str:
        """A new product with its own stock, once the gateway's catalog replica lists it."""
        sku = f"SKU-{uuid.uuid4().hex[:10].upper()}"
        response = await self.inventory.put(
            f"/v1/products/{sku}",
            json={
                "name": f"Test product {sku}",
                "merchant_id": merchant_id or await self.merchant(),
                "price_fen": price_fen,
                "kind": "physical",
                "available": available,
                **extra,
            },
            headers=self.admin(),
        )
        assert response.status_code in (200, 201), response.text

        async def replica() -> int:
            return (await self.gateway.get(f"/v1/products/{sku}")).status_code

        await eventually(replica, lambda code: code == 200, what=f"{sku} in the gateway's catalog")
        return sku

    async def stock(self, sku: str) -> dict[str, Any]:
        response = await self.inventory.get(f"/v1/products/{sku}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def place(
        self,
        items: list[tuple[str, int]],
        *,
        token: str | None = "tok_approve",
        customer_id: str | None = None,
        method: str = "bank_card",
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """An order placed with the customer's own token (a new customer unless named)."""
        customer_id = customer_id or f"cust-{uuid.uuid4().hex[:8]}"
        body = {
            "items": [{"sku": sku, "quantity": quantity} for sku, quantity in items],
            "shipping_address": ADDRESS,
            "payment": {"method": method, **({"token": token} if token is not None else {})},
        }
        response = await self.gateway.post(
            "/v1/orders", json=body, headers={**self.customer(customer_id), **(headers or {})}
        )
        assert response.status_code == 202, response.text
        return {**response.json(), "customer_id": customer_id}

    async def order(self, order_id: str) -> dict[str, Any]:
        """The order as an admin sees it (internal detail included)."""
        response = await self.gateway.get(f"/v1/orders/{order_id}", headers=self.admin())
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def settled(self, order_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """The order once it reached CONFIRMED, REJECTED or CANCELLED."""
        return await eventually(
            lambda: self.order(order_id),
            lambda order: order["status"] in FINAL,
            what=f"order {order_id} to reach a final status",
            timeout_s=timeout_s,
        )

    async def payments(self, order_id: str) -> list[dict[str, Any]]:
        """The order's payments as an admin sees them."""
        response = await self.payment.get("/v1/payments", params={"order_id": order_id}, headers=self.admin())
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def payment_of(self, order_id: str) -> dict[str, Any]:
        """The order's one payment, once payment has recorded it."""
        found = await eventually(
            lambda: self.payments(order_id), bool, what=f"a payment for order {order_id}"
        )
        return found[0]

    async def status(self, order_id: str, wanted: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """The order once it reached status `wanted`."""
        return await eventually(
            lambda: self.order(order_id),
            lambda order: order["status"] == wanted,
            what=f"order {order_id} to reach {wanted}",
            timeout_s=timeout_s,
        )

    async def ledger(self, payment_id: str) -> list[dict[str, Any]]:
        """What the sandbox provider performed for one payment: authorize, capture, void, refund."""
        response = await self.sandbox.get("/ledger", params={"payment_id": payment_id})
        assert response.status_code == 200, response.text
        return list(response.json()["entries"])

    async def operations(self, payment_id: str) -> list[tuple[str, str]]:
        return [(entry["operation"], entry["outcome"]) for entry in await self.ledger(payment_id)]

    async def sent_callbacks(self, payment_id: str) -> list[dict[str, Any]]:
        """Every callback the sandbox sent for a payment, byte for byte, with the answer it got."""
        response = await self.sandbox.get("/sandbox/callbacks", params={"payment_id": payment_id})
        assert response.status_code == 200, response.text
        return list(response.json())

    async def notifications(self, order_id: str) -> list[dict[str, Any]]:
        response = await self.notification.get(
            "/v1/notifications", params={"order_id": order_id}, headers=self.admin()
        )
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def metric(self, client: httpx.AsyncClient, name: str, **labels: str) -> float:
        """A Prometheus sample's value (0 when the series does not exist yet)."""
        text = (await client.get("/metrics")).text
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and line.split(" ")[0] != name:
                continue
            series, value = line.rsplit(" ", 1)
            series_labels = ",".join(sorted(series[len(name) + 1 : -1].split(","))) if "{" in series else ""
            if all(part in series_labels.split(",") for part in wanted.split(",") if part):
                total += float(value)
        return total

    async def events(self, topic: str, subject: str | None = None) -> list[Envelope]:
        """Every event on `topic` from the beginning (optionally one key's), as a plain consumer sees them."""
        return [envelope for envelope, _ in await self.records(topic, subject)]

    async def records(self, topic: str, subject: str | None = None) -> list[tuple[Envelope, Any]]:
        found = []
        for record in await self.raw_records(topic):
            try:
                envelope = decode(record.value)
            except ValueError:
                continue  # the dead-letter test's deliberate garbage
            if subject is None or envelope.subject == subject:
                found.append((envelope, record))
        return found

    async def raw_records(self, topic: str) -> list[Any]:
        """Every record on `topic` up to its current end, read with a plain consumer (no group)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()
            partitions = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
            ]
            assert partitions, f"topic {topic} does not exist"
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            found: list[Any] = []
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    found.extend(batch)
            return found
        finally:
            await consumer.stop()

    async def positions(self, group: str, topic: str) -> dict[int, tuple[int, int]]:
        """Per partition of `topic`: the consumer group's committed offset and the partition's end."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await consumer.start()
        await admin.start()
        try:
            await consumer.topics()
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
            ends = await consumer.end_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            return {
                tp.partition: (committed[tp].offset if tp in committed else -1, end)
                for tp, end in ends.items()
            }
        finally:
            await admin.close()
            await consumer.stop()

    async def group_stable(self, group: str) -> bool:
        """Whether consumer group `group` has members and no rebalance under way."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            [response] = await admin.describe_consumer_groups([group])
            described = response.to_object()["groups"]
            return bool(described) and all(g["state"] == "Stable" and g["members"] for g in described)
        finally:
            await admin.close()

    async def rejoined(self, group: str, timeout_s: float = 60.0) -> None:
        """Wait until a restarted service's consumer group has settled on its members again."""
        await eventually(
            lambda: self.group_stable(group),
            bool,
            what=f"consumer group {group} to be stable (members, no rebalance) after the restart",
            timeout_s=timeout_s,
            interval_s=0.5,
        )

    async def caught_up(self, group: str, topic: str, timeout_s: float = 30.0) -> None:
        """Wait until `group` has worked through everything on `topic` so far."""
        await eventually(
            lambda: self.positions(group, topic),
            lambda positions: all(committed >= end for committed, end in positions.values()),
            what=f"consumer group {group} to commit all of {topic} (partition: (committed, end))",
            timeout_s=timeout_s,
        )

    async def produce_raw(self, topic: str, value: bytes, key: bytes | None, headers: list[Any]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
        finally:
            await producer.stop()


@pytest.fixture
async def platform(stack: LocalStack) -> AsyncIterator[Platform]:
    config = stack.config
    clients = {
        name: httpx.AsyncClient(base_url=config.url(name), timeout=10.0)
        for name in ("order", "inventory", "payment", "fraud", "notification", "analytics")
    }
    sandbox = httpx.AsyncClient(base_url=config.sandbox_url, timeout=10.0)
    try:
        yield Platform(
            stack=stack,
            gateway=clients["order"],
            inventory=clients["inventory"],
            payment=clients["payment"],
            fraud=clients["fraud"],
            notification=clients["notification"],
            analytics=clients["analytics"],
            sandbox=sandbox,
        )
    finally:
        for client in clients.values():
            await client.aclose()
        await sandbox.aclose()
