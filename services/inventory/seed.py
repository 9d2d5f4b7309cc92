"""Loads a demo catalog through the HTTP API: `python -m services.inventory.seed --url http://127.0.0.1:8001`.

Safe to run again: merchants answer 200 when they exist and products are replaced (restocked).
"""

from __future__ import annotations

import argparse
import sys

import httpx

MERCHANTS = [
    ("m-westlake-tea", "西湖茶庄 West Lake Tea House"),
    ("m-jingdezhen", "景德镇瓷器坊 Jingdezhen Porcelain"),
    ("m-sichuan-pantry", "川味小铺 Sichuan Pantry"),
]

# sku, name, merchant, price in fen, stock
PRODUCTS = [
    ("SKU-TEA-LONGJING", "明前龙井 Longjing green tea 250g", "m-westlake-tea", 16800, 120),
    ("SKU-TEA-PUER", "普洱熟茶饼 Pu'er tea cake 357g", "m-westlake-tea", 9800, 60),
    ("SKU-TEA-JASMINE", "茉莉花茶 Jasmine tea 100g", "m-westlake-tea", 4500, 200),
    ("SKU-CUP-CELADON", "青瓷茶杯 Celadon tea cup", "m-jingdezhen", 3900, 80),
    ("SKU-POT-BLUEWHITE", "青花瓷茶壶 Blue-and-white teapot", "m-jingdezhen", 25800, 20),
    ("SKU-BOWL-RICE", "手绘饭碗 Hand-painted rice bowl", "m-jingdezhen", 2800, 150),
    ("SKU-SAUCE-DOUBAN", "郫县豆瓣酱 Pixian chili bean paste 500g", "m-sichuan-pantry", 1590, 180),
    ("SKU-PEPPER-HUAJIAO", "汉源花椒 Hanyuan Sichuan pepper 100g", "m-sichuan-pantry", 2990, 90),
    ("SKU-SOLDOUT-1", "限量腊肉礼盒 Limited cured pork gift box", "m-sichuan-pantry", 19900, 0),
]


def seed(url: str) -> None:
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for merchant_id, name in MERCHANTS:
            client.post("/v1/merchants", json={"merchant_id": merchant_id, "name": name}).raise_for_status()
        for sku, name, merchant_id, price_fen, available in PRODUCTS:
            response = client.put(
                f"/v1/products/{sku}",
                json={
                    "name": name,
                    "merchant_id": merchant_id,
                    "price_fen": price_fen,
                    "kind": "physical",
                    "available": available,
                },
            )
            response.raise_for_status()
            product = response.json()
            sys.stdout.write(
                f"{product['sku']:<20} {product['price_fen']:>7} fen  stock {product['available']:>4}"
                f"  {product['merchant_id']:<18} {product['name']}\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description="Create the demo merchants and products.")
    parser.add_argument("--url", default="http://127.0.0.1:8001", help="the inventory service's base URL")
    seed(parser.parse_args().url)


if __name__ == "__main__":
    main()
