"""Loads a demo catalog through the HTTP API: `python -m services.inventory.seed --url http://127.0.0.1:8001`.

A dev tool: it signs its own admin token with the local key (AUTH_SIGNING_KEY from the environment)
and refuses to run with ENVIRONMENT=prod. Safe to run again: the merchants an admin creates are
written again (and announced again); the merchants that register themselves are registered once and
approved once (an approved one is left as it is, the pending one stays pending); new products are
created with their demo stock, existing products get their demo details but keep the stock they
have; the demo coupons get their terms again, valid from now on for a year, and keep their uses; a
virtual product's demo codes are uploaded once (run again, the upload is refused as duplicates and
the pool kept). It prints what it did (never a merchant's contact: that is personal data).
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
# Virtual products, sold from a pool of codes: sku, name, merchant, price in fen, most per order,
# and the demo codes (fictional) uploaded when the pool is first filled.
VIRTUAL_PRODUCTS = [
    (
        "SKU-GIFT-TEA-100",
        "西湖茶庄礼品卡 ¥100 West Lake Tea House gift card",
        "m-westlake-tea",
        10000,
        5,
        [f"DEMO-WLT-GIFT-{n:04d}" for n in range(1, 21)],
    ),
]
# What a shopper browses by, per sku: description, category (substitutes for a sold-out product come
# from its category), attributes, the payment methods the product takes (empty: its merchant's) and
# the stock at which its merchant is warned (None: never). SKU-SOLDOUT-1 has no stock: order it to
# see substitutes from food/sichuan, or subscribe to be told when it is back.
DETAILS: dict[str, tuple[str, str, dict[str, str], list[PaymentMethod], int | None]] = {
    "SKU-TEA-CEREMONY": (
        "西湖畔学习龙井冲泡，一小时，小班三人。Brew Longjing by the West Lake: an hour, three seats.",
        "classes/tea",
        {"duration": "1 h", "language": "中文 / English"},
        [],
        None,
    ),
    "SKU-GIFT-TEA-100": (
        "西湖茶庄百元礼品卡，付款后即刻发放兑换码。A 100-yuan gift card, its code delivered once paid.",
        "gift-cards/tea",
        {"value": "¥100", "delivery": "code, at once"},
        [],
        5,
    ),
    "SKU-TEA-LONGJING": (
        "西湖龙井，清明前采摘，豆香清爽。Picked before Qingming on the West Lake hills.",
        "tea/green",
        {"origin": "杭州 Hangzhou", "weight": "250g", "harvest": "2026 spring"},
        [],
        20,
    ),
    "SKU-TEA-PUER": (
        "云南勐海熟普洱，陈香醇厚。A ripe Pu'er cake from Menghai, Yunnan.",
        "tea/dark",
        {"origin": "勐海 Menghai", "weight": "357g", "year": "2019"},
        [],
        10,
    ),
    "SKU-TEA-JASMINE": (
        "福州茉莉花茶，七窨一提。Fuzhou green tea scented seven times with jasmine.",
        "tea/green",
        {"origin": "福州 Fuzhou", "weight": "100g"},
        [],
        30,
    ),
    "SKU-CUP-CELADON": (
        "龙泉青瓷品茗杯。A Longquan celadon tasting cup.",
        "ware/cups",
        {"capacity": "60ml", "glaze": "celadon"},
        [],
        10,
    ),
    "SKU-POT-BLUEWHITE": (
        "手绘青花瓷茶壶，每件独一无二。A hand-painted blue-and-white teapot, each one unique.",
        "ware/teapots",
        {"capacity": "300ml", "painted": "by hand"},
        [PaymentMethod.ALIPAY],
        3,
    ),
    "SKU-BOWL-RICE": (
        "手绘釉下彩饭碗。A hand-painted rice bowl, underglaze colours.",
        "ware/bowls",
        {"diameter": "11.5cm"},
        [],
        20,
    ),
    "SKU-SAUCE-DOUBAN": (
        "郫县豆瓣，三年发酵。Pixian broad-bean chili paste, fermented for three years.",
        "food/sichuan",
        {"weight": "500g", "spice": "hot"},
        [],
        30,
    ),
    "SKU-PEPPER-HUAJIAO": (
        "汉源贡椒，麻香浓郁。Hanyuan red Sichuan peppercorns.",
        "food/sichuan",
        {"weight": "100g", "spice": "numbing"},
        [],
        15,
    ),
    "SKU-SOLDOUT-1": (
        "限量手工腊肉礼盒，售完即止。A limited gift box of hand-cured Sichuan pork.",
        "food/sichuan",
        {"weight": "1kg"},
        [],
        None,
    ),
    "SKU-SILK-SCARF": (
        "苏州桑蚕丝围巾。A mulberry silk scarf woven in Suzhou.",
        "fashion/scarves",
        {"material": "100% mulberry silk", "size": "180 x 55cm"},
        [],
        5,
    ),
    "SKU-COFFEE-PUER": (
        "普洱小粒咖啡，中度烘焙。Arabica beans from Pu'er, Yunnan, medium roast.",
        "coffee/beans",
        {"origin": "普洱 Pu'er", "weight": "500g", "roast": "medium"},
        [],
        10,
    ),
}
# The pending merchant has no products: the gateway lists only approved merchants' products, and
# the stack's start-up waits for the gateway to list every product the seed made.

# code, merchant, discount, value (per cent or fen), minimum spend in fen, uses in all
COUPONS = [
    ("WESTLAKE10", "m-westlake-tea", "percent", 10, 10000, 1000),
]
# The demo coupons are valid from a day before the seed runs for this long.
COUPON_VALIDITY = timedelta(days=365)

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
    """Write the demo merchants, products, coupons and services through `client` (which carries an
    admin token); the coupons' validity and the services' slots are laid out from `now` (the current
    time when not given)."""
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
                    **_details(sku),
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
    now = now or datetime.now(UTC)
    for code, merchant_id, discount, value, min_spend_fen, total_uses in COUPONS:
        response = _checked(
            client.put(
                f"/v1/coupons/{code}",
                json={
                    "merchant_id": merchant_id,
                    "discount": discount,
                    "value": value,
                    "min_spend_fen": min_spend_fen,
                    "valid_from": (now - timedelta(days=1)).isoformat(),
                    "valid_until": (now + COUPON_VALIDITY).isoformat(),
                    "total_uses": total_uses,
                    "once_per_customer": True,
                },
            )
        )
        coupon = response.json()
        done = "created" if response.status_code == 201 else "updated (uses kept)"
        out.write(
            f"coupon   {coupon['code']:<18} {done:<20} {coupon['discount']} {coupon['value']}  "
            f"min spend {coupon['min_spend_fen']} fen  {coupon['left']} of {coupon['total_uses']} uses left  "
            f"{coupon['merchant_id']}\n"
        )
    for sku, name, merchant_id, price_fen, max_per_order, codes in VIRTUAL_PRODUCTS:
        response = _checked(
            client.put(
                f"/v1/products/{sku}",
                json={
                    "name": name,
                    "merchant_id": merchant_id,
                    "price_fen": price_fen,
                    "kind": "virtual",
                    "max_per_order": max_per_order,
                    **_details(sku),
                },
            )
        )
        done = "created" if response.status_code == 201 else "updated"
        uploaded = client.post(
            f"/v1/products/{sku}/codes",
            content="\n".join(codes).encode(),
            headers={"Content-Type": "text/plain"},
        )
        # Run again, the demo codes are in the pool already: the upload is refused whole, as it should.
        if uploaded.status_code == 409 and uploaded.json().get("lines"):
            done += " (codes kept)"
        else:
            done += f" + {_checked(uploaded).json()['added']} codes"
        product = _checked(client.get(f"/v1/products/{sku}")).json()
        out.write(
            f"product  {sku:<18} {done:<20} {product['price_fen']:>7} fen  "
            f"stock {product['available']:>4}  max {product['max_per_order']:>3}/order  "
            f"{product['merchant_id']:<18} {product['name']}\n"
        )

    _seed_services(client, out, now)


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
                    **_details(sku),
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


def _details(sku: str) -> dict[str, object]:
    if sku not in DETAILS:
        return {}
    description, category, attributes, methods, threshold = DETAILS[sku]
    return {
        "description": description,
        "category": category,
        "attributes": attributes,
        "payment_methods": [method.value for method in methods],
        "low_stock_threshold": threshold,
    }


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
