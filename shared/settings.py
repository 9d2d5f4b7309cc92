"""Settings every service reads from the environment; each service subclasses with its own.

Secrets are the fields typed `SecretStr`. In dev and test they may keep their sandbox defaults; with
`ENVIRONMENT=prod` each must be given in the environment and must not be a placeholder, or the
service refuses to start and names the variables to set.
"""

from __future__ import annotations

import hashlib
import sys
from enum import StrEnum
from typing import Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.crypto import (
    INDEX_KEY_SETTING,
    MAKE_INDEX_KEY,
    MAKE_TOKEN_KEYS,
    PUBLIC_KEY_SETTING,
    decode_key,
    encode_key,
    parse_key_ring,
    token_public_key,
)

# The dev and test stand-in for the payment service's token key pair, derived from a phrase so that
# anyone can reproduce it; prod refuses its public key (and, being a dev default, the private one).
DEV_PAYMENT_TOKEN_PRIVATE_KEY = encode_key(hashlib.sha256(b"dev-only payment token key").digest())
DEV_PAYMENT_TOKEN_PUBLIC_KEY = token_public_key(DEV_PAYMENT_TOKEN_PRIVATE_KEY)

PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev-secret", "placeholder", "todo"})
DAY_S = 24 * 3600.0


class Environment(StrEnum):
    DEV = "dev"
    TEST = "test"
    PROD = "prod"


class SharedSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    environment: Environment = Environment.DEV
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # A secret: in production the URL carries the service's database credentials.
    mongo_url: SecretStr = SecretStr("mongodb://127.0.0.1:27017")
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
    # How long a consumer's fetch waits for records to arrive. A broker that does not wake a waiting
    # fetch when records come (the embedded one) adds up to this much to every hop of an idle system.
    kafka_fetch_max_wait_ms: int = Field(default=50, ge=1)
    # How long the producer waits to fill a batch; small, because a saga hop waits for it.
    kafka_linger_ms: int = Field(default=2, ge=0)
    # How long the group coordinator waits for a silent consumer before handing its partitions to
    # another: the stall after a crash. Kafka's floor is 6 s; longer only delays failover.
    kafka_session_timeout_s: float = Field(default=6.0, ge=1.0)
    # How long the broker or the datastore may keep failing before the process exits for a restart.
    # Above the 60 s a crashed peer's transaction may hold its documents locked.
    dependency_outage_limit_s: float = Field(default=180.0, gt=0)
    # The event topics' retention (deploy/k8s/base/topics.yaml): a redelivery can come this late.
    topic_retention_s: float = Field(default=7 * DAY_S, gt=0)
    # How long the ids of applied events are kept (a TTL index), so a redelivery is recognised.
    processed_event_ttl_s: float = Field(default=8 * DAY_S, gt=0)

    # Identity (shared/auth.py). The platform signs its own tokens (accounts, guests, shopctl) with
    # this key; every service verifies them with it. An operator's OpenID Connect provider may issue
    # tokens too: its issuer, JWKS URL and the claims that carry the role and the merchant id.
    auth_signing_key: SecretStr = SecretStr("dev-only-signing-key-0123456789abcdef0123456789")
    auth_issuer: str = "order-platform"
    auth_audience: str = "order-platform"
    auth_access_token_ttl_s: float = Field(default=3600.0, gt=0)
    auth_refresh_token_ttl_s: float = Field(default=30 * DAY_S, gt=0)
    auth_oidc_issuer: str | None = None
    auth_oidc_jwks_url: str | None = None
    auth_oidc_audience: str | None = None
    auth_oidc_role_claim: str = "role"
    auth_oidc_merchant_claim: str = "merchant_id"
    # Keys sealing personal data at rest (shared/crypto.py): `kid:key[,kid:key...]`, 32-byte keys in
    # base64url (`shopctl keys pii`). The first seals, all open: to rotate, put a new key first and
    # keep the old ones until every value they sealed has been sealed again.
    pii_encryption_keys: SecretStr = SecretStr("dev1:ZGV2LW9ubHktcGlpLWtleS0wMTIzNDU2Nzg5YWJjZGU=")
    # The key of the blind indexes that find records by a personal value (`shopctl keys pii-index`).
    # It outlives rotations of PII_ENCRYPTION_KEYS: changing it orphans every stored index.
    pii_index_key: SecretStr = SecretStr("ZGV2LW9ubHktcGlpLWluZGV4LWtleS0wMTIzNDU2Nzg")
    # The payment service's X25519 public key: the gateway seals the provider token to it, so only
    # payment (PAYMENT_TOKEN_PRIVATE_KEY) can open it (`shopctl keys payment-token`). Not a secret.
    payment_token_public_key: str = DEV_PAYMENT_TOKEN_PUBLIC_KEY
    # Request bodies above this size are refused with 413 before they are read into memory.
    http_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    @property
    def kafka_heartbeat_interval_s(self) -> float:
        return self.kafka_session_timeout_s / 3

    @property
    def is_dev(self) -> bool:
        return self.environment is not Environment.PROD

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("pii_encryption_keys")
    @classmethod
    def _a_key_ring(cls, value: SecretStr) -> SecretStr:
        parse_key_ring(value.get_secret_value())
        return value

    @field_validator("pii_index_key")
    @classmethod
    def _an_index_key(cls, value: SecretStr) -> SecretStr:
        decode_key(value.get_secret_value(), INDEX_KEY_SETTING, MAKE_INDEX_KEY)
        return value

    @field_validator("payment_token_public_key")
    @classmethod
    def _a_public_key(cls, value: str) -> str:
        # Written one way (unpadded), so that a padded copy of the dev key is still recognised as it.
        return encode_key(decode_key(value, PUBLIC_KEY_SETTING, MAKE_TOKEN_KEYS))

    @model_validator(mode="after")
    def _processed_ids_outlive_the_topics(self) -> Self:
        if self.processed_event_ttl_s < self.topic_retention_s:
            raise ValueError(
                f"PROCESSED_EVENT_TTL_S ({self.processed_event_ttl_s:g}) must be at least "
                f"TOPIC_RETENTION_S ({self.topic_retention_s:g}): an event redelivered after its id "
                "expired would be applied twice"
            )
        return self

    @model_validator(mode="after")
    def _auth_is_usable(self) -> Self:
        if bool(self.auth_oidc_issuer) != bool(self.auth_oidc_jwks_url):
            raise ValueError("AUTH_OIDC_ISSUER and AUTH_OIDC_JWKS_URL go together: set both or neither")
        if len(self.auth_signing_key.get_secret_value().encode()) < 32:
            raise ValueError("AUTH_SIGNING_KEY must be at least 32 bytes (HS256 needs a 256-bit key)")
        return self

    @model_validator(mode="after")
    def _real_secrets_in_prod(self) -> Self:
        if self.is_dev:
            return self
        unset = [
            name.upper()
            for name, field in type(self).model_fields.items()
            if field.annotation is SecretStr
            and (
                name not in self.model_fields_set
                or getattr(self, name).get_secret_value().strip().lower() in PLACEHOLDER_SECRETS
                # The dev default given explicitly is no better than leaving it unset.
                or (
                    isinstance(field.default, SecretStr)
                    and getattr(self, name).get_secret_value() == field.default.get_secret_value()
                )
            )
        ]
        if self.payment_token_public_key == DEV_PAYMENT_TOKEN_PUBLIC_KEY:
            # Not a secret itself, but its private key is in the source: anyone could open the tokens.
            unset.append("PAYMENT_TOKEN_PUBLIC_KEY")
        if unset:
            raise ValueError(
                f"ENVIRONMENT={self.environment.value} needs real values for {', '.join(unset)} "
                "(missing or a placeholder)"
            )
        return self


S = TypeVar("S", bound=SharedSettings)


def load_settings(cls: type[S]) -> S:
    """The service's settings from the environment, or exit naming what is wrong with them."""
    try:
        return cls()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']).upper() or 'settings'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        )
        sys.stderr.write(f"refusing to start {cls.__name__}: {problems}\n")
        raise SystemExit(2) from None
