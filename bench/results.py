"""What one run measured, in the shape the report prints and the JSON file keeps."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.checks import Check
from bench.plan import Plan
from bench.stats import Latency


@dataclass(frozen=True)
class MessagingCeiling:
    """Records of the real payload size through one path: at full blast, then at a fixed rate."""

    path: str
    payload_bytes: int
    blast_messages: int
    msgs_per_s: float
    probe_rate: float
    latency: Latency


@dataclass(frozen=True)
class DatastoreRate:
    operation: str
    clients: int
    ops_per_s: float
    docs_per_s: float
    errors: int
    first_error: str | None = None


@dataclass
class Ceilings:
    broker: MessagingCeiling | None = None
    relay: MessagingCeiling | None = None
    datastore: list[DatastoreRate] = field(default_factory=list)


@dataclass(frozen=True)
class StepResult:
    offered_per_s: float
    load_s: float
    sent: int
    answers: dict[str, int]  # HTTP status ("0" = no answer) -> count
    accepted: int
    confirmed: int
    rejected: int
    cancelled: int
    still_open: int
    # The rate at which the step's confirmations came out (their interdecile span, the drain included).
    confirmed_per_s: float | None
    post: Latency
    generator_late_p99_ms: float | None
    placed_to_confirmed: Latency
    settled_after_answers_s: float | None  # from the last answer until every order settled
    # Stack CPU (every process, user + system) from the step's start until its orders settled.
    cpu_ms_per_order: float | None
    cpu_ms_per_order_by_process: dict[str, float] | None
    bench_cpu_ms_per_order: float | None  # the load generator and event tap, not in the figure above
    peak_rss_mb: dict[str, float] | None
    max_lag: dict[str, int]
    checks: list[Check]
    saturated: str | None

    @property
    def shed(self) -> int:
        return self.answers.get("429", 0) + self.answers.get("503", 0)


@dataclass
class SagaResult:
    sku: str | None = None
    steps: list[StepResult] = field(default_factory=list)
    stopped_because: str = ""
    checks: list[Check] = field(default_factory=list)


@dataclass(frozen=True)
class Ratios:
    """The saga against the relay chain of the same run."""

    confirmed_per_s_over_relay_msgs_per_s: float | None
    p50_over_relay_p50: float | None
    p50_step_offered_per_s: float | None  # the step whose p50 is compared: the lightest load


@dataclass
class RunResult:
    mode: str  # "full" or "quick"
    stack: str  # "local" (started by the bench) or "external" (given by URL)
    started_at: str
    cpus: int
    plan: Plan
    duration_s: float = 0.0
    ceilings: Ceilings = field(default_factory=Ceilings)
    saga: SagaResult = field(default_factory=SagaResult)
    ratios: Ratios | None = None
    failures: list[str] = field(default_factory=list)  # sections that produced no numbers, and why
