"""The wire protocol between the payment service and its providers, both ends of it.

Modelled on WeChat Pay v3, Alipay and card acquirers, with one scheme for all three methods. The
adapters (services/payment/adapters.py) speak it; the sandbox provider (`python -m sandbox`) answers it.

Signing: every request to the provider and every callback from it carries

    X-Provider-Merchant   the merchant id the provider knows us by
    X-Provider-Timestamp  unix seconds
    X-Provider-Nonce      random, new on every request and every delivery of a callback
    X-Provider-Signature  hex HMAC-SHA256 over "METHOD\\npath\\ntimestamp\\nnonce\\nhex(sha256(body))"

keyed with the method's API key for requests and its callback key for callbacks, so a leaked callback
key cannot move money and a leaked API key cannot forge a payer's notice. The path is the URL path,
decoded, without the query string. A callback is signed as `POST /notify` whatever URL it is posted
to: like WeChat Pay's notices it binds the timestamp, nonce and body, not the receiver's address,
which a proxy in front of the payment service may rewrite. A signature is accepted only within
`max_skew_s` of the receiver's clock (the nonce, remembered that long, stops a replay inside it).

Money calls carry an `Idempotency-Key` header: the provider answers a repeated key with its first
answer and performs the operation once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.payment.providers import Outcome
from shared.contracts import PayActionType, PaymentMethod

MERCHANT_HEADER = "X-Provider-Merchant"
TIMESTAMP_HEADER = "X-Provider-Timestamp"
NONCE_HEADER = "X-Provider-Nonce"
SIGNATURE_HEADER = "X-Provider-Signature"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"

DEFAULT_MAX_SKEW_S = 300.0
CALLBACK_SIGNED_METHOD = "POST"
CALLBACK_SIGNED_PATH = "/notify"
_MAX_NONCE_LENGTH = 64

# The sandbox provider's address in a dev stack: where every method's endpoint points by default.
SANDBOX_ENDPOINT = "http://127.0.0.1:8009"

# Why a signature or a callback was refused (InvalidCallback carries these words).
MISSING_HEADERS = "missing or malformed signature headers"
UNKNOWN_MERCHANT = "unknown merchant"
BAD_SIGNATURE = "bad signature"
STALE_TIMESTAMP = "stale timestamp"
MALFORMED_BODY = "malformed body"

# What a callback may announce: the payer's decision or a card's authorization.
NOTICE_OUTCOMES = frozenset({Outcome.AUTHORIZED, Outcome.CAPTURED, Outcome.DECLINED})


@dataclass(frozen=True)
class MerchantCredentials:
    """What a merchant shares with its provider for one method."""

    merchant_id: str
    api_key: str = field(repr=False)
    callback_key: str = field(repr=False)


# The dev and test credentials, the same on both ends so a dev stack agrees with no configuration.
# Public by design: ENVIRONMENT=prod refuses every one of them.
DEV_CREDENTIALS: Mapping[PaymentMethod, MerchantCredentials] = {
    method: MerchantCredentials(
        merchant_id=f"sandbox-{method.value.replace('_', '-')}-merchant",
        api_key=f"dev-only-{method.value}-api-key-0123456789abcdef",
        callback_key=f"dev-only-{method.value}-callback-key-0123456789abcdef",
    )
    for method in PaymentMethod
}


class ProviderCredentials(BaseSettings):
    """Each method's merchant id, API key and callback key, from the environment (`WECHAT_PAY_API_KEY`,
    `ALIPAY_CALLBACK_KEY`, `BANK_CARD_MERCHANT_ID`...): the payment service and the sandbox read the
    same variables, with the same dev defaults."""

    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    wechat_pay_merchant_id: str = DEV_CREDENTIALS[PaymentMethod.WECHAT_PAY].merchant_id
    wechat_pay_api_key: SecretStr = SecretStr(DEV_CREDENTIALS[PaymentMethod.WECHAT_PAY].api_key)
    wechat_pay_callback_key: SecretStr = SecretStr(DEV_CREDENTIALS[PaymentMethod.WECHAT_PAY].callback_key)
    alipay_merchant_id: str = DEV_CREDENTIALS[PaymentMethod.ALIPAY].merchant_id
    alipay_api_key: SecretStr = SecretStr(DEV_CREDENTIALS[PaymentMethod.ALIPAY].api_key)
    alipay_callback_key: SecretStr = SecretStr(DEV_CREDENTIALS[PaymentMethod.ALIPAY].callback_key)
    bank_card_merchant_id: str = DEV_CREDENTIALS[PaymentMethod.BANK_CARD].merchant_id
    bank_card_api_key: SecretStr = SecretStr(DEV_CREDENTIALS[PaymentMethod.BANK_CARD].api_key)
    bank_card_callback_key: SecretStr = SecretStr(DEV_CREDENTIALS[PaymentMethod.BANK_CARD].callback_key)

    def credentials(self, method: PaymentMethod) -> MerchantCredentials:
        api_key: SecretStr = getattr(self, f"{method.value}_api_key")
        callback_key: SecretStr = getattr(self, f"{method.value}_callback_key")
        return MerchantCredentials(
            merchant_id=str(getattr(self, f"{method.value}_merchant_id")),
            api_key=api_key.get_secret_value(),
            callback_key=callback_key.get_secret_value(),
        )


# --- signing -------------------------------------------------------------------------------------


class SignatureRejected(Exception):
    """A request or callback whose signature headers do not prove it came from the key's holder."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Signed:
    """What a verified signature vouches for besides the body."""

    merchant_id: str
    timestamp: int
    nonce: str

    @property
    def sent_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)


def new_nonce() -> str:
    return secrets.token_hex(16)


def unix_seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def string_to_sign(method: str, path: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    return "\n".join((method.upper(), path, str(timestamp), nonce, hashlib.sha256(body).hexdigest())).encode()


def signature(key: str, method: str, path: str, timestamp: int, nonce: str, body: bytes) -> str:
    return hmac.new(
        key.encode(), string_to_sign(method, path, timestamp, nonce, body), hashlib.sha256
    ).hexdigest()


def _headers(
    merchant_id: str, key: str, method: str, path: str, body: bytes, timestamp: int, nonce: str
) -> dict[str, str]:
    return {
        MERCHANT_HEADER: merchant_id,
        TIMESTAMP_HEADER: str(timestamp),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: signature(key, method, path, timestamp, nonce, body),
    }


def _verify(
    headers: Mapping[str, str],
    *,
    merchant_id: str,
    key: str,
    method: str,
    path: str,
    body: bytes,
    now: datetime,
    max_skew_s: float,
) -> Signed:
    # Header names are case-insensitive, whatever mapping the caller hands over.
    lowered = {name.lower(): value for name, value in headers.items()}
    given = [
        lowered.get(name.lower(), "").strip() for name in (MERCHANT_HEADER, TIMESTAMP_HEADER, NONCE_HEADER)
    ]
    sent_by, raw_timestamp, nonce = given
    claimed = lowered.get(SIGNATURE_HEADER.lower(), "").strip()
    well_formed = raw_timestamp.isascii() and raw_timestamp.isdigit() and len(nonce) <= _MAX_NONCE_LENGTH
    if not all(given) or not claimed or not well_formed:
        raise SignatureRejected(MISSING_HEADERS)
    if not hmac.compare_digest(sent_by.encode(), merchant_id.encode()):
        raise SignatureRejected(UNKNOWN_MERCHANT)
    timestamp = int(raw_timestamp)
    expected = signature(key, method, path, timestamp, nonce, body)
    if not hmac.compare_digest(expected.encode(), claimed.lower().encode()):
        raise SignatureRejected(BAD_SIGNATURE)
    if abs(now.timestamp() - timestamp) > max_skew_s:
        raise SignatureRejected(STALE_TIMESTAMP)
    return Signed(merchant_id=sent_by, timestamp=timestamp, nonce=nonce)


def request_headers(
    credentials: MerchantCredentials, method: str, path: str, body: bytes, *, timestamp: int, nonce: str
) -> dict[str, str]:
    """The signature headers of a request to the provider (signed with the API key)."""
    return _headers(credentials.merchant_id, credentials.api_key, method, path, body, timestamp, nonce)


def verify_request(
    headers: Mapping[str, str],
    credentials: MerchantCredentials,
    method: str,
    path: str,
    body: bytes,
    *,
    now: datetime,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
) -> Signed:
    """The provider's check of a request; raises SignatureRejected."""
    return _verify(
        headers,
        merchant_id=credentials.merchant_id,
        key=credentials.api_key,
        method=method,
        path=path,
        body=body,
        now=now,
        max_skew_s=max_skew_s,
    )


def callback_headers(
    credentials: MerchantCredentials, body: bytes, *, timestamp: int, nonce: str
) -> dict[str, str]:
    """The signature headers of a callback from the provider (signed with the callback key)."""
    return _headers(
        credentials.merchant_id,
        credentials.callback_key,
        CALLBACK_SIGNED_METHOD,
        CALLBACK_SIGNED_PATH,
        body,
        timestamp,
        nonce,
    )


def verify_callback_signature(
    headers: Mapping[str, str],
    credentials: MerchantCredentials,
    body: bytes,
    *,
    now: datetime,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
) -> Signed:
    """The merchant's check of a callback; raises SignatureRejected."""
    return _verify(
        headers,
        merchant_id=credentials.merchant_id,
        key=credentials.callback_key,
        method=CALLBACK_SIGNED_METHOD,
        path=CALLBACK_SIGNED_PATH,
        body=body,
        now=now,
        max_skew_s=max_skew_s,
    )


# --- the API's paths -----------------------------------------------------------------------------


def payments_path(method: PaymentMethod) -> str:
    """POST: authorize (Idempotency-Key: the payment id)."""
    return f"/v1/{method.value}/payments"


def payment_path(method: PaymentMethod, payment_id: str) -> str:
    """GET: query."""
    return f"{payments_path(method)}/{quote(payment_id, safe='')}"


def capture_path(method: PaymentMethod, payment_id: str) -> str:
    """POST (Idempotency-Key: `<payment id>:capture`)."""
    return f"{payment_path(method, payment_id)}/capture"


def void_path(method: PaymentMethod, payment_id: str) -> str:
    """POST (Idempotency-Key: `<payment id>:void`)."""
    return f"{payment_path(method, payment_id)}/void"


def refunds_path(method: PaymentMethod) -> str:
    """POST (Idempotency-Key: the refund id)."""
    return f"/v1/{method.value}/refunds"


# --- bodies --------------------------------------------------------------------------------------

_Id = Field(min_length=1, max_length=128)


class WireModel(BaseModel):
    # An answer may grow fields: the older end ignores them rather than failing the call.
    model_config = ConfigDict(extra="ignore", frozen=True)


class AuthorizeRequest(WireModel):
    payment_id: str = _Id
    amount_fen: int = Field(gt=0)
    currency: str = Field(min_length=3, max_length=3)
    # A card's provider token; wallets have none (the payer pays on the provider's page).
    token: str | None = Field(default=None, max_length=256)
    notify_url: str = Field(max_length=2048)
    description: str = Field(default="", max_length=256)


class CaptureRequest(WireModel):
    provider_ref: str = _Id
    amount_fen: int = Field(gt=0)


class VoidRequest(WireModel):
    provider_ref: str | None = Field(default=None, min_length=1, max_length=128)


class RefundRequest(WireModel):
    refund_id: str = _Id
    payment_id: str = _Id
    provider_ref: str = _Id
    amount_fen: int = Field(gt=0)


class WireAction(WireModel):
    type: PayActionType
    url: str


class PaymentAnswer(WireModel):
    """The provider's answer to authorize, capture, void, refund and query."""

    payment_id: str
    outcome: Outcome
    provider_ref: str | None = None
    action: WireAction | None = None
    # What the provider holds, took or gave back in this answer.
    amount_fen: int | None = None
    decline_code: str | None = None
    message: str = ""
    refund_id: str | None = None


class CallbackBody(WireModel):
    """A provider's notification. `notification_id` is the same on every resend of one notice."""

    notification_id: str = _Id
    payment_id: str = _Id
    provider_ref: str = _Id
    outcome: Outcome
    amount_fen: int = Field(ge=0)
    decline_code: str | None = None
    message: str = ""

    @field_validator("outcome")
    @classmethod
    def _announceable(cls, outcome: Outcome) -> Outcome:
        if outcome not in NOTICE_OUTCOMES:
            raise ValueError(f"a notice announces {', '.join(sorted(NOTICE_OUTCOMES))}, not {outcome}")
        return outcome


class ErrorCode(StrEnum):
    """Why the provider refused a request (4xx) or could not answer it (5xx)."""

    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    INVALID_REQUEST = "INVALID_REQUEST"
    CARD_NUMBER_REFUSED = "CARD_NUMBER_REFUSED"
    IDEMPOTENCY_KEY_REQUIRED = "IDEMPOTENCY_KEY_REQUIRED"
    # The key was used before with a different request.
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    NOT_FOUND = "NOT_FOUND"
    # The payment is not in a state that allows the operation (capturing a voided payment...).
    INVALID_STATE = "INVALID_STATE"
    UNAVAILABLE = "UNAVAILABLE"
    TIMEOUT = "TIMEOUT"


class ProviderError(WireModel):
    code: str
    message: str = ""
