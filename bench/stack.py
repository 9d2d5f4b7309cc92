"""The stack under test: started here from devstack's specs on ports of the bench's own, or a running
one given by URL in the environment (then nothing is started and its processes are not measured)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import httpx

from devstack.processes import LocalStack
from devstack.stack import (
    MONGO_SERVICES,
    ROOT,
    ProcessSpec,
    StackConfig,
    infrastructure,
    platform,
    port_open,
    ports_in_use,
    prepare_run_dir,
    redis_reachable,
    redis_server_spec,
)

# Apart from `make run` (8000-8005, 9092, 27017...) and the integration tests (18000..., 19092, 28017...).
BENCH_PORTS = {
    "order": 38000,
    "inventory": 38001,
    "payment": 38002,
    "fraud": 38003,
    "notification": 38004,
    "analytics": 38005,
}
BENCH_KAFKA_PORT = 39092
BENCH_SANDBOX_PORT = 38009
BENCH_MONGO_PORT = 38017  # one server per MONGO_SERVICES entry from here, then the datastore ceiling's
BENCH_REDIS_URL = "redis://127.0.0.1:6379/2"
RUN_DIR = ROOT / ".run" / "bench"
READY_DEADLINE_S = 180.0
PORT_DEADLINE_S = 30.0


class StackError(RuntimeError):
    """The stack could not be started or reached; the message says what and shows the logs."""


@dataclass(frozen=True)
class Endpoints:
    gateway: str
    inventory: str
    bootstrap: str
    mongo_url: str | None  # where the datastore ceiling writes; None: a fresh local server


def external_endpoints(env: Mapping[str, str]) -> Endpoints | None:
    """The running stack named by BENCH_GATEWAY_URL and BENCH_INVENTORY_URL, if they are set."""
    gateway, inventory = env.get("BENCH_GATEWAY_URL"), env.get("BENCH_INVENTORY_URL")
    if not gateway and not inventory:
        return None
    bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS")
    if not gateway or not inventory or not bootstrap:
        raise StackError(
            "a stack given by URL needs BENCH_GATEWAY_URL, BENCH_INVENTORY_URL and KAFKA_BOOTSTRAP_SERVERS "
            "(MONGO_URL too, for the datastore ceiling)"
        )
    return Endpoints(gateway.rstrip("/"), inventory.rstrip("/"), bootstrap, env.get("MONGO_URL") or None)


def bench_config() -> StackConfig:
    return StackConfig(
        ports=dict(BENCH_PORTS),
        kafka_port=BENCH_KAFKA_PORT,
        sandbox_port=BENCH_SANDBOX_PORT,
        mongo_port=BENCH_MONGO_PORT,
        kafka_bootstrap_servers=None,
        mongo_url=None,
        redis_url=BENCH_REDIS_URL,
        run_dir=RUN_DIR,
    )


@dataclass
class BenchStack:
    """The stack's processes (none when it is given by URL) and the bench's helper processes."""

    endpoints: Endpoints
    config: StackConfig
    processes: LocalStack | None  # the stack, when this run started it
    helpers: LocalStack  # relay hops and the datastore ceiling's server, never counted as the stack
    helper_env: dict[str, str] = field(default_factory=lambda: {**os.environ, "PYTHONUNBUFFERED": "1"})

    @classmethod
    def create(cls, env: Mapping[str, str]) -> BenchStack:
        config = bench_config()
        log_dir = config.run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        for old in log_dir.glob("*.log"):
            old.unlink()
        helpers = LocalStack(config=config, log_dir=log_dir)
        external = external_endpoints(env)
        if external is not None:
            return cls(endpoints=external, config=config, processes=None, helpers=helpers)
        endpoints = Endpoints(config.url("order"), config.url("inventory"), config.bootstrap, None)
        return cls(endpoints, config, LocalStack(config=config, log_dir=log_dir), helpers)

    @property
    def local(self) -> bool:
        return self.processes is not None

    async def start_infrastructure(self) -> None:
        """The broker and the services' datastores (and Redis if it is down), up and listening."""
        if self.processes is None:
            return
        specs = infrastructure(self.config)
        if not redis_reachable(self.config.redis_url):
            redis_spec = redis_server_spec(self.config.redis_url)
            if redis_spec is None:
                raise StackError(
                    f"Redis does not answer at {self.config.redis_url} and there is no redis-server"
                )
            specs.append(redis_spec)
        busy = ports_in_use(self.config, [*specs, *platform(self.config), self.datastore_spec()])
        if busy:
            raise StackError(f"ports already taken ({', '.join(busy)}): is another benchmark running?")
        prepare_run_dir(self.config)
        for spec in specs:
            self.processes.start(spec)
        await self._wait_for_ports(self.processes, specs)

    async def start_services(self) -> None:
        """The sandbox provider and every service, once each /readyz answers 200."""
        if self.processes is None:
            return
        specs = platform(self.config)
        for spec in specs:
            self.processes.start(spec)
        deadline = time.monotonic() + READY_DEADLINE_S
        pending = {spec.name: spec.ready_url for spec in specs if spec.ready_url}
        async with httpx.AsyncClient(timeout=2.0) as client:
            while pending:
                for name, url in list(pending.items()):
                    try:
                        if (await client.get(url)).status_code == 200:
                            del pending[name]
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    raise StackError(
                        f"not ready after {READY_DEADLINE_S:.0f}s: {', '.join(sorted(pending))}\n"
                        + self._tails(self.processes)
                    )
                await asyncio.sleep(0.25)

    def datastore_spec(self) -> ProcessSpec:
        """A fresh server of the kind the services use (devstack's spec), on the port after theirs."""
        port = BENCH_MONGO_PORT + len(MONGO_SERVICES)
        alone = replace(self.config, kafka_bootstrap_servers=self.config.bootstrap, mongo_port=port)
        first = next(spec for spec in infrastructure(alone) if spec.port == port)
        return replace(first, name="mongo-ceiling")

    async def start_datastore(self) -> str:
        """The datastore ceiling's server: MONGO_URL's when given, else a fresh one started here."""
        if self.endpoints.mongo_url is not None:
            return self.endpoints.mongo_url
        spec = self.datastore_spec()
        self.helpers.start(spec)
        await self._wait_for_ports(self.helpers, [spec])
        return f"mongodb://{self.config.host}:{spec.port}"

    def stop_datastore(self) -> None:
        if "mongo-ceiling" in self.helpers.running:
            self.helpers.stop("mongo-ceiling")

    def pids(self) -> dict[str, int]:
        if self.processes is None:
            return {}
        return {name: running.process.pid for name, running in self.processes.running.items()}

    def stop(self) -> None:
        self.helpers.stop_all()
        if self.processes is not None:
            self.processes.stop_all()

    async def _wait_for_ports(self, stack: LocalStack, specs: list[ProcessSpec]) -> None:
        deadline = time.monotonic() + PORT_DEADLINE_S
        waiting = [spec for spec in specs if spec.port is not None]
        while waiting:
            waiting = [spec for spec in waiting if not port_open(self.config.host, spec.port or 0)]
            if waiting and time.monotonic() > deadline:
                names = ", ".join(f"{spec.name} (port {spec.port})" for spec in waiting)
                raise StackError(f"not listening after {PORT_DEADLINE_S:.0f}s: {names}\n{self._tails(stack)}")
            await asyncio.sleep(0.05)

    @staticmethod
    def _tails(stack: LocalStack) -> str:
        return "\n".join(f"--- {name}\n{stack.log_tail(name, lines=15)}" for name in stack.running)
