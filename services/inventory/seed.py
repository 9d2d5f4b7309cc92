"""Loads a demo catalog through the HTTP API: `python -m services.inventory.seed --url http://127.0.0.1:8001`.

A dev tool: it signs its own admin token with the local key (AUTH_SIGNING_KEY from the environment)
and refuses to run with ENVIRONMENT=prod. Safe to run again: the merchants an admin creates are
written again (and announced again); the merchants that register themselves are registered once and
approved once (an approved one is left as it is, the pending one stays pending); new products are
created with their demo stock, existing products get their demo details but keep the stock they
have. The bookable service products get a few slots in the days ahead (relative to now, so each run
adds the days that came into range); the slots they already have are left as they are. It prints
what it did (never a merchant's contact: that is personal data).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, time, timedelta, timezone
from typing import TextIO

import httpx

from shared.auth import Principal, Role, TokenIssuer
from shared.contracts import MAX_UNITS_PER_ORDER, PaymentMethod
from shared.settings import SharedSettings, load_settings

EVERY_METHOD = list(PaymentMethod)
# Created by an admin with PUT, which vouches for them: approved from the start.
MERCHANTS = [
    ("m-westlake-tea", "西湖茶庄 West Lake Tea House", EVERY_METHOD),
    ("m-jingdezhen", "景德镇瓷器坊 Jingdezhen Porcelain", [PaymentMethod.WECHAT_PAY, PaymentMethod.ALIPAY]),
    ("m-sichuan-pantry", "川味小铺 Sichuan Pantry", EVERY_METHOD),
]

# Merchants that go through vetting: registered (PENDING), then approved by the admin or not.
# merchant id, name, payment methods, licence number, contact (fictional), approved
REGISTRATIONS = [
    (
        "m-suzhou-silk",
        "苏州丝绸坊 Suzhou Silk House",
        EVERY_METHOD,
        "91320500MA1W2X3Y4Z",
        "shop@suzhou-silk.example",
        True,
    ),
    (
        "m-yunnan-coffee",
        "云南咖啡园 Yunnan Coffee Estate",
        [PaymentMethod.ALIPAY, PaymentMethod.BANK_CARD],
        "91530100MA6K7L8M9N",
        "+86 871 6543 2100",
        True,
    ),
    (
        "m-harbin-furs",
        "哈尔滨皮草行 Harbin Furs",
        [PaymentMethod.WECHAT_PAY],
        "91230100MA1P2Q3R4S",
        "hello@harbin-furs.example",
        False,
    ),
]
APPROVAL_REASON = "demo seed: licence checked"

# sku, name, merchant, price in fen, stock when created, most units per order
PRODUCTS = [
    ("SKU-TEA-LONGJING", "明前龙井 Longjing green tea 250g", "m-westlake-tea", 16800, 120, 10),
    ("SKU-TEA-PUER", "普洱熟茶饼 Pu'er tea cake 357g", "m-westlake-tea", 9800, 60, 20),
    ("SKU-TEA-JASMINE", "茉莉花茶 Jasmine tea 100g", "m-westlake-tea", 4500, 200, MAX_UNITS_PER_ORDER),
    ("SKU-CUP-CELADON", "青瓷茶杯 Celadon tea cup", "m-jingdezhen", 3900, 80, 24),
    ("SKU-POT-BLUEWHITE", "青花瓷茶壶 Blue-and-white teapot", "m-jingdezhen", 25800, 20, 4),
    ("SKU-BOWL-RICE", "手绘饭碗 Hand-painted rice bowl", "m-jingdezhen", 2800, 150, 24),
    ("SKU-SAUCE-DOUBAN", "郫县豆瓣酱 Pixian chili bean paste 500g", "m-sichuan-pantry", 1590, 180, 50),
    ("SKU-PEPPER-HUAJIAO", "汉源花椒 Hanyuan Sichuan pepper 100g", "m-sichuan-pantry", 2990, 90, 50),
    ("SKU-SOLDOUT-1", "限量腊肉礼盒 Limited cured pork gift box", "m-sichuan-pantry", 19900, 0, 2),
    ("SKU-SILK-SCARF", "真丝围巾 Mulberry silk scarf", "m-suzhou-silk", 29900, 40, 5),
    ("SKU-COFFEE-PUER", "普洱小粒咖啡豆 Pu'er arabica beans 500g", "m-yunnan-coffee", 8800, 70, 10),
]
# The pending merchant has no products: the gateway lists only approved merchants' products, and
# the stack's start-up waits for the gateway to list every product the seed made.

# Bookable services (kind `service`): a unit is a seat in one of the product's time slots.
# sku, name, merchant, price in fen, most seats per order
SERVICES = [
    ("SKU-TEA-CEREMONY", "茶艺体验课 Tea ceremony lesson (1 h)", "m-westlake-tea", 12800, 2),
]
# Each service's demo timetable, in China time: (days from today, hour), an hour long, SLOT_SEATS each.
CHINA = timezone(timedelta(hours=8), "CST")
SLOT_TIMES = [(1, 10), (1, 15), (2, 10), (3, 15)]
SLOT_SEATS = 3

SEED_TOKEN_TTL = timedelta(minutes=10)


def seed(client: httpx.Client, out: TextIO, now: datetime | None = None) -> None:
    """Write the demo merchants, products and services through `client` (which carries an admin
    token); the services' slots are laid out from `now` (the current time when not given)."""
    for merchant_id, name, methods in MERCHANTS:
        response = _checked(
            client.put(f"/v1/merchants/{merchant_id}", json={"name": name, "payment_methods": methods})
        )
        merchant = response.json()
        done = "created" if response.status_code == 201 else "updated"
        out.write(
            f"merchant {merchant['merchant_id']:<18} {done:<20} accepts "
            f"{', '.join(merchant['payment_methods'])}  {merchant['name']}\n"
        )
    for merchant_id, name, methods, licence_number, contact, approved in REGISTRATIONS:
        response = _checked(
            client.post(
                "/v1/merchants",
                json={
                    "merchant_id": merchant_id,
                    "name": name,
                    "payment_methods": methods,
                    "licence_number": licence_number,
                    "contact": contact,
                },
            )
        )
        merchant = response.json()
        done = "registered" if response.status_code == 201 else "already registered"
        if approved and merchant["status"] == "PENDING":
            merchant = _checked(
                client.post(f"/v1/merchants/{merchant_id}/approve", json={"reason": APPROVAL_REASON})
            ).json()
            done += ", approved"
        out.write(f"merchant {merchant_id:<18} {done:<20} {merchant['status']:<9} {merchant['name']}\n")
    for sku, name, merchant_id, price_fen, available, max_per_order in PRODUCTS:
        response = _checked(
            client.put(
                f"/v1/products/{sku}",
                json={
                    "name": name,
                    "merchant_id": merchant_id,
                    "price_fen": price_fen,
                    "kind": "physical",
                    "available": available,
                    "max_per_order": max_per_order,
                },
            )
        )
        product = response.json()
        done = "created" if response.status_code == 201 else "updated (stock kept)"
        out.write(
            f"product  {product['sku']:<18} {done:<20} {product['price_fen']:>7} fen  "
            f"stock {product['available']:>4}  max {product['max_per_order']:>3}/order  "
            f"{product['merchant_id']:<18} {product['name']}\n"
        )
    _seed_services(client, out, now or datetime.now(UTC))


def _seed_services(client: httpx.Client, out: TextIO, now: datetime) -> None:
    today = now.astimezone(CHINA).date()
    for sku, name, merchant_id, price_fen, max_per_order in SERVICES:
        response = _checked(
            client.put(
                f"/v1/products/{sku}",
                json={
                    "name": name,
                    "merchant_id": merchant_id,
                    "price_fen": price_fen,
                    "kind": "service",
                    "max_per_order": max_per_order,
                },
            )
        )
        done = "created" if response.status_code == 201 else "updated (slots kept)"
        listed = _checked(client.get(f"/v1/products/{sku}/slots")).json()["items"]
        existing = {slot["slot_id"] for slot in listed}
        added = 0
        for days, hour in SLOT_TIMES:
            starts_at = datetime.combine(today + timedelta(days=days), time(hour), tzinfo=CHINA)
            slot_id = f"{starts_at:%Y%m%d-%H%M}"
            if slot_id in existing:
                continue
            body = {
                "starts_at": starts_at.isoformat(),
                "ends_at": (starts_at + timedelta(hours=1)).isoformat(),
                "capacity": SLOT_SEATS,
            }
            _checked(client.put(f"/v1/products/{sku}/slots/{slot_id}", json=body))
            added += 1
        out.write(
            f"service  {sku:<18} {done:<20} {price_fen:>7} fen  "
            f"slots {len(existing) + added:>4}  ({added} added)  {merchant_id:<18} {name}\n"
        )


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise SystemExit(f"{response.request.method} {response.request.url}: {response.status_code} {detail}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Create the demo merchants and products.")
    parser.add_argument("--url", default="http://127.0.0.1:8001", help="the inventory service's base URL")
    url = parser.parse_args().url
    settings = load_settings(SharedSettings)
    if not settings.is_dev:
        sys.exit("the demo seed mints its own admin token; it does not run with ENVIRONMENT=prod")
    admin = TokenIssuer(settings).access_token(Principal("inventory-seed", Role.ADMIN), ttl=SEED_TOKEN_TTL)
    with httpx.Client(base_url=url, timeout=10.0, headers={"Authorization": f"Bearer {admin}"}) as client:
        seed(client, sys.stdout)


if __name__ == "__main__":
    main()
