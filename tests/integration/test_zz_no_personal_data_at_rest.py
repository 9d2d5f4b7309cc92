"""Runs last: after the whole suite, a raw dump of every service's database and every process's log
hold no phone number, address, e-mail, payment token, provider reference or virtual product's code
in clear text."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from bson import json_util
from pymongo import AsyncMongoClient

from devstack.stack import MONGO_SERVICES
from tests.integration.conftest import ADDRESS, Platform
from tests.integration.test_virtual_codes import CODE_PREFIX

SYSTEM_DATABASES = frozenset({"admin", "config", "local"})
# Everything personal the suite sends: the shipping address (and its phone), the guests' and
# accounts' e-mails and phones (made up under example.com and the 139/138 prefixes), card tokens.
ADDRESS_VALUES = [ADDRESS["phone"], ADDRESS["line1"], ADDRESS["name"], "13700001111"]
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@example\.(?:com|cn|org)")
CARD_TOKEN = re.compile(r"\btok_[a-z_]+\b")
# The codes tests/integration/test_virtual_codes.py uploads, and the demo seed's: secrets like a card.
VIRTUAL_CODE = re.compile(rf"\b{CODE_PREFIX}[0-9A-F]{{16}}\b|\bDEMO-WLT-GIFT-[0-9]{{4}}\b")


async def database_dump(platform: Platform) -> dict[str, str]:
    """Every document of every service database, as extended JSON text, by service."""
    dumps = {}
    for service in MONGO_SERVICES:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(platform.stack.config.mongo(service))
        try:
            lines = []
            for name in await client.list_database_names():
                if name in SYSTEM_DATABASES:
                    continue
                database = client[name]
                for collection in await database.list_collection_names():
                    async for document in database[collection].find():
                        lines.append(f"{name}.{collection} {json_util.dumps(document)}")
            dumps[service] = "\n".join(lines)
        finally:
            await client.close()
    return dumps


async def provider_references(platform: Platform) -> set[str]:
    """The provider references the sandbox handed out during the run (they travel on payment.events)."""
    return {
        str(envelope.data["provider_ref"])
        for envelope in await platform.events("payment.events")
        if envelope.data.get("provider_ref")
    }


def personal_values_in(text: str, references: set[str]) -> list[str]:
    found = [value for value in ADDRESS_VALUES if value in text]
    found += sorted(set(EMAIL.findall(text)))
    found += sorted(set(CARD_TOKEN.findall(text)))
    found += sorted(set(VIRTUAL_CODE.findall(text)))
    found += sorted(reference for reference in references if reference in text)
    return found


async def an_account_with_a_saved_address(platform: Platform) -> None:
    """The suite's other personal data: an account's login and its address book."""
    login = f"shopper-{uuid.uuid4().hex[:8]}@example.com"
    password = "correct horse battery"
    registered = await platform.gateway.post("/v1/auth/register", json={"login": login, "password": password})
    assert registered.status_code == 201, registered.text
    token = await platform.gateway.post(
        "/v1/auth/token", data={"grant_type": "password", "username": login, "password": password}
    )
    assert token.status_code == 200, token.text
    saved = await platform.gateway.post(
        "/v1/me/addresses",
        json={"label": "home", **ADDRESS},
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
    )
    assert saved.status_code == 201, saved.text


async def test_no_database_holds_personal_data_in_clear(platform: Platform) -> None:
    await an_account_with_a_saved_address(platform)
    references = await provider_references(platform)
    assert references, "the suite placed paid orders, so provider references must exist"
    dumps = await database_dump(platform)
    assert all(dumps.values()), f"a service database is empty: {[s for s, d in dumps.items() if not d]}"
    leaks = {service: personal_values_in(dump, references) for service, dump in dumps.items()}
    assert not any(leaks.values()), f"personal data in clear at rest: {json.dumps(leaks)}"


async def test_no_log_holds_personal_data(platform: Platform) -> None:
    references = await provider_references(platform)
    log_dir = platform.stack.log_dir
    logs = {path.name: path.read_text(errors="replace") for path in sorted(log_dir.glob("*.log"))}
    assert {"order.log", "payment.log", "sandbox.log"} <= set(logs), sorted(logs)
    leaks = {name: personal_values_in(text, references) for name, text in logs.items()}
    assert not any(leaks.values()), f"personal data in the logs: {json.dumps(leaks)}"
