"""`python -m devstack up`: the whole platform on this machine, under honcho; Ctrl-C stops it all.

`python -m devstack ready` is the stack's last process: it waits for every /readyz, seeds the demo
catalog and prints where the gateway listens, then stays up (honcho stops the stack when any of
its processes ends).
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys

import httpx

from devstack.hold import hold
from devstack.stack import (
    MONGO_SERVICES,
    StackConfig,
    infrastructure,
    platform,
    ports_in_use,
    prepare_run_dir,
    redis_reachable,
    redis_server_spec,
    wait_for_catalog,
    wait_until_ready,
)
from services.inventory.seed import MERCHANTS
from shared.auth import Principal, Role, TokenIssuer
from shared.contracts import PaymentMethod
from shared.settings import SharedSettings, load_settings


def up(config: StackConfig) -> int:
    import honcho.manager

    # Services finish the batch in hand and leave their consumer group on SIGTERM; give them time.
    honcho.manager.KILL_WAIT = 15
    specs = infrastructure(config)
    if not redis_reachable(config.redis_url):
        redis_spec = redis_server_spec(config.redis_url)
        if redis_spec is None:
            print(
                f"Redis does not answer at {config.redis_url} and no redis-server to start.", file=sys.stderr
            )
            print("Install it (apt-get install -y redis-server) or set REDIS_URL.", file=sys.stderr)
            return 1
        specs.append(redis_spec)
    specs += platform(config)
    busy = ports_in_use(config, specs)
    if busy:
        print(f"Ports already taken ({', '.join(busy)}): is another stack running?", file=sys.stderr)
        print("Stop it, or choose other ports (ORDER_PORT=..., KAFKA_PORT=..., see README).", file=sys.stderr)
        return 1
    prepare_run_dir(config)
    manager = honcho.manager.Manager()
    service_ports = ",".join(str(spec.port) for spec in specs if spec.ready_url)
    for spec in specs:
        argv = spec.argv
        if spec.ready_url is None:  # infrastructure outlives the services on Ctrl-C
            argv = [sys.executable, "-m", "devstack", "hold", "--ports", service_ports, "--", *argv]
        manager.add_process(spec.name, "exec " + shlex.join(argv), env=spec.env)
    manager.add_process(
        "ready", f"exec {shlex.quote(sys.executable)} -m devstack ready", env=config.service_env()
    )
    manager.loop()
    stopped_on_request = manager.returncode in (130, 143)  # Ctrl-C or SIGTERM
    return 0 if stopped_on_request else int(manager.returncode or 0)


def ready(config: StackConfig) -> int:
    wait_until_ready(platform(config))
    subprocess.run(
        [sys.executable, "-m", "services.inventory.seed", "--url", config.url("inventory")], check=True
    )
    products = httpx.get(f"{config.url('inventory')}/v1/products", timeout=5).json()["items"]
    wait_for_catalog(config, [product["sku"] for product in products])
    # The banner's example pays by card, so its product's merchant must accept cards.
    by_card = {merchant_id for merchant_id, _, methods in MERCHANTS if PaymentMethod.BANK_CARD in methods}
    in_stock = next(
        p for p in products if p["available"] > 0 and p["kind"] == "physical" and p["merchant_id"] in by_card
    )
    merchants = sorted({product["merchant_id"] for product in products})
    print(banner(config, in_stock["sku"], in_stock["merchant_id"], demo_tokens(merchants)), flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


def demo_tokens(merchants: list[str]) -> dict[str, str]:
    """Ready-made tokens for the demo: a shopper, each demo merchant, an analyst and an admin (as
    `shopctl token` makes them, with the stack's signing key)."""
    issuer = TokenIssuer(load_settings(SharedSettings))
    tokens = {"shopper cust-1": issuer.access_token(Principal("cust-1", Role.CUSTOMER))}
    for merchant_id in merchants:
        tokens[f"merchant {merchant_id}"] = issuer.access_token(
            Principal(merchant_id, Role.MERCHANT, merchant_id=merchant_id)
        )
    tokens["analyst"] = issuer.access_token(Principal("analyst", Role.ANALYST))
    tokens["admin"] = issuer.access_token(Principal("admin", Role.ADMIN))
    return tokens


def banner(config: StackConfig, sku: str, merchant_id: str, tokens: dict[str, str]) -> str:
    gateway = config.url("order")
    body = json.dumps(
        {
            "items": [{"sku": sku, "quantity": 1}],
            "shipping_address": {
                "name": "Li Lei",
                "phone": "13800138000",
                "province": "Zhejiang",
                "city": "Hangzhou",
                "district": "Xihu",
                "line1": "18 Wensan Rd",
                "postal_code": "310000",
            },
            "payment": {"method": "bank_card", "token": "tok_approve"},
        }
    )
    lines = [
        "",
        "=" * 72,
        f"  The order platform is up. Gateway: {gateway}  (API docs: {gateway}/docs)",
        *(f"    {name:<13} {config.url(name)}" for name in config.ports),
        f"    sandbox       {config.sandbox_url}  (payment provider: /ledger, pay pages)",
        f"    kafka         {config.bootstrap}",
        *(f"    mongodb       {config.mongo(name)}  ({name})" for name in MONGO_SERVICES),
        "",
        "  Tokens (valid one hour; more with .venv/bin/shopctl token --role ROLE --subject ID):",
        *(f"    {who:<28} {token}" for who, token in tokens.items()),
        "",
        "  Place a first order as the shopper:",
        f"    export SHOPPER='{tokens['shopper cust-1']}'",
        f"    curl -s -X POST {gateway}/v1/orders -H 'content-type: application/json' \\",
        '      -H "Authorization: Bearer $SHOPPER" \\',
        f"      -d '{body}'",
        "  Follow it (long-polls until confirmed, or streams every step):",
        f'    curl -s -H "Authorization: Bearer $SHOPPER" \\\n'
        f"      '{gateway}/v1/orders/ORDER_ID?wait_for=CONFIRMED'",
        f'    curl -sN -H "Authorization: Bearer $SHOPPER" {gateway}/v1/orders/ORDER_ID/events',
        '  Pay by Alipay or WeChat Pay instead: "payment": {"method": "alipay"}; the order then',
        "  shows payment.action.url, the sandbox's page where the shopper presses Pay.",
        f"  Products: curl -s {gateway}/v1/products   Stock: curl -s {config.url('inventory')}/v1/products",
        "  Its merchant's revenue per minute, as the analyst (topic analytics.merchant-revenue):",
        f"    curl -s -H 'Authorization: Bearer {tokens['analyst']}' \\\n"
        f"      {config.url('analytics')}/v1/analytics/merchants/{merchant_id}/revenue",
        "  Ctrl-C stops everything.",
        "=" * 72,
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("up", help="start the whole stack under honcho (the default)")
    commands.add_parser("ready", help="wait for the services, seed, print the banner")
    holder = commands.add_parser("hold", help="run infrastructure until the services have stopped")
    holder.add_argument("--ports", default="", help="service ports to outlive, comma-separated")
    holder.add_argument("argv", nargs=argparse.REMAINDER, help="-- the command to run")
    args = parser.parse_args()
    config = StackConfig.from_env()
    if args.command == "hold":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        ports = [int(port) for port in args.ports.split(",") if port]
        return hold(argv, host=config.host, service_ports=ports)
    return ready(config) if args.command == "ready" else up(config)


if __name__ == "__main__":
    sys.exit(main())
