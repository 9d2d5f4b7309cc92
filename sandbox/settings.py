"""The sandbox's settings: where it listens and how it behaves, and the merchants' credentials, read
from the same variables (and with the same dev defaults) as the payment service's."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from services.payment.protocol import ProviderCredentials
from shared.settings import Environment


class SandboxSettings(ProviderCredentials):
    environment: Environment = Environment.DEV
    log_level: str = "INFO"
    sandbox_host: str = "127.0.0.1"
    sandbox_port: int = Field(default=8009, ge=1, le=65535)
    # The address payers' browsers reach the pay page at; http://SANDBOX_HOST:SANDBOX_PORT when unset.
    sandbox_public_url: str | None = None
    # How long a tok_delay authorization takes.
    sandbox_delay_s: float = Field(default=3.0, ge=0)
    # How long a tok_timeout request is held before the sandbox gives up on it (504).
    sandbox_timeout_hold_s: float = Field(default=120.0, ge=0)
    # A callback is delivered up to this many times, waiting backoff, 2x backoff, 4x... in between.
    sandbox_callback_attempts: int = Field(default=5, ge=1)
    sandbox_callback_backoff_s: float = Field(default=1.0, ge=0)
    sandbox_callback_timeout_s: float = Field(default=5.0, gt=0)

    @property
    def public_url(self) -> str:
        return (self.sandbox_public_url or f"http://{self.sandbox_host}:{self.sandbox_port}").rstrip("/")

    @model_validator(mode="after")
    def _never_in_prod(self) -> Self:
        if self.environment is Environment.PROD:
            raise ValueError(
                "the sandbox payment provider is for dev and test only: refusing ENVIRONMENT=prod "
                "(point WECHAT_PAY_ENDPOINT, ALIPAY_ENDPOINT and BANK_CARD_ENDPOINT at the real providers)"
            )
        return self
