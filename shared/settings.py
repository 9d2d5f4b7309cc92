"""Settings every service reads from the environment; each service subclasses with its own."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "secret", "dev-secret"}


class SharedSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    environment: str = Field(default="dev", description="dev | test | prod")
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    mongo_url: str = "mongodb://127.0.0.1:27017"
    redis_url: str = "redis://127.0.0.1:6379/0"
    http_host: str = "127.0.0.1"
    log_level: str = "INFO"
    # Partitions for topics a service creates when they do not exist yet (dev/test brokers).
    topic_partitions: int = 3
    consumer_max_records: int = 500
    consumer_poll_timeout_ms: int = 200
    # A batch that keeps failing is retried this many times before its events are dead-lettered.
    handler_max_attempts: int = Field(default=3, ge=1)
    outbox_poll_interval_s: float = 0.25
    # How long the group coordinator waits for a silent consumer before handing its partitions to
    # another: the stall after a crash. Kafka's floor is 6 s; longer only delays failover.
    kafka_session_timeout_s: float = Field(default=6.0, ge=1.0)

    @property
    def kafka_heartbeat_interval_s(self) -> float:
        return self.kafka_session_timeout_s / 3

    @property
    def is_dev(self) -> bool:
        return self.environment in {"dev", "test"}

    def require_secret(self, name: str, value: str) -> str:
        """A secret must be real outside dev; dev may run on the documented sandbox value."""
        if not self.is_dev and value.strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError(f"{name} must be set to a real secret when ENVIRONMENT={self.environment}")
        return value

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()
