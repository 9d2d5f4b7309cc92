"""Starts the local stack for the integration tests and gives them handles on its processes."""

from __future__ import annotations

import os
from pathlib import Path

from devstack.processes import LocalStack, eventually
from devstack.stack import StackConfig, infrastructure, platform, prepare_run_dir, wait_until_ready

# Re-exported: the tests take their process handles and polling helper from here.
__all__ = [
    "CHECKS_TIMEOUT_S",
    "PROVIDER_DEADLINE_S",
    "QUALITY_MAX_REFUND_RATE",
    "QUALITY_MIN_ORDERS",
    "TEST_PORTS",
    "LocalStack",
    "eventually",
    "start_local_stack",
]

# Ports apart from `make run`'s defaults, so the tests can run beside a running stack.
TEST_PORTS = {
    "order": 18000,
    "inventory": 18001,
    "payment": 18002,
    "fraud": 18003,
    "notification": 18004,
    "analytics": 18005,
}
# Short saga deadlines so the "service down" tests end in seconds, not minutes.
CHECKS_TIMEOUT_S = 8
# How long payment waits for a provider's answer before it fails with PROVIDER_TIMEOUT.
PROVIDER_DEADLINE_S = 8
# A merchant with 3 confirmed orders is suspended at its second refunded one (67% > 50%).
QUALITY_MIN_ORDERS = 3
QUALITY_MAX_REFUND_RATE = 0.5


def start_local_stack(root: Path) -> LocalStack:
    env = os.environ
    config = StackConfig.from_env(
        env,
        ports={name: int(env.get(f"TEST_{name.upper()}_PORT", port)) for name, port in TEST_PORTS.items()},
        kafka_port=int(env.get("TEST_KAFKA_PORT", 19092)),
        sandbox_port=int(env.get("TEST_SANDBOX_PORT", 18009)),
        mongo_port=int(env.get("TEST_MONGO_PORT", 28017)),
        redis_url=env.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/1"),
        run_dir=root / ".run" / "test",
        extra_env={
            "ENVIRONMENT": "test",
            "ORDER_CHECKS_TIMEOUT_S": str(CHECKS_TIMEOUT_S),
            "ORDER_DEADLINE_SCAN_INTERVAL_S": "0.5",
            "FRAUD_BLOCKED_CUSTOMERS": "cust-blocked-demo",
            # The tests poll orders as one admin far faster than a client would; the guest lookup's
            # own limits stay at their defaults, and a test shows them answering 429.
            "ORDER_RATE_LIMIT": "100000/minute",
            # Payment deadlines short enough for a test to see a silent provider time out: the
            # sandbox's tok_delay (3 s) outlasts one call but not the retries within the deadline.
            "PROVIDER_CALL_TIMEOUT_S": "2",
            "PAYMENT_PROVIDER_DEADLINE_S": str(PROVIDER_DEADLINE_S),
            "SANDBOX_DELAY_S": "3",
            # Reconciliation soon enough for a test to see a lost callback settled.
            "PAYMENT_RECONCILE_AFTER_S": "4",
            "PAYMENT_RECONCILE_INTERVAL_S": "1",
            # Merchant quality limits a test reaches in a few orders. Nothing else in the suite
            # requests refunds, opens after-sales cases or reviews, so no other merchant crosses them.
            "INVENTORY_QUALITY_MIN_ORDERS": str(QUALITY_MIN_ORDERS),
            "INVENTORY_QUALITY_MAX_REFUND_RATE": str(QUALITY_MAX_REFUND_RATE),
        },
    )
    prepare_run_dir(config)
    log_dir = config.run_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("*.log"):
        old.unlink()
    stack = LocalStack(config=config, log_dir=log_dir)
    try:
        for spec in infrastructure(config):
            stack.start(spec)
        for spec in platform(config):
            stack.start(spec)
        wait_until_ready(platform(config), deadline_s=180)
    except BaseException:  # noqa: BLE001 - stop what started, then re-raise with the logs
        tails = "\n".join(f"--- {name}\n{stack.log_tail(name)}" for name in list(stack.running))
        stack.stop_all()
        raise RuntimeError(f"the local stack did not come up; last log lines:\n{tails}") from None
    return stack
