"""Callbacks to the merchant: signed with the method's callback key, retried with backoff, recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import httpx
from pydantic import BaseModel

from services.payment.protocol import (
    CallbackBody,
    MerchantCredentials,
    callback_headers,
    new_nonce,
    unix_seconds,
)
from shared.clock import Clock, utc_now
from shared.contracts import PaymentMethod
from shared.logging import get_logger

log = get_logger(__name__)

# Posts one callback and answers the receiver's status code; raises httpx.HTTPError or OSError when
# nothing answered. Injected, so unit tests deliver without a network.
Sender = Callable[[str, Mapping[str, str], bytes], Awaitable[int]]


def http_sender(client: httpx.AsyncClient, timeout_s: float) -> Sender:
    async def send(url: str, headers: Mapping[str, str], body: bytes) -> int:
        response = await client.post(url, content=body, headers=dict(headers), timeout=timeout_s)
        return response.status_code

    return send


class SentCallback(BaseModel):
    """One delivery of a callback, as sent: a test may replay it byte for byte or tamper with it."""

    payment_id: str
    notification_id: str
    url: str
    headers: dict[str, str]
    body: str
    # None when nothing answered (connection refused, timeout).
    status_code: int | None


class Notifier:
    def __init__(
        self,
        *,
        credentials: Callable[[PaymentMethod], MerchantCredentials],
        send: Sender,
        attempts: int,
        backoff_s: float,
        clock: Clock = utc_now,
    ) -> None:
        self._credentials = credentials
        self._send = send
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._clock = clock
        self.sent: list[SentCallback] = []

    async def deliver(self, method: PaymentMethod, url: str, notice: CallbackBody) -> None:
        """Deliver until the merchant answers 2xx or the attempts run out, as real providers do."""
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
            status = await self.deliver_once(method, url, notice)
            if status is not None and 200 <= status < 300:
                return
        log.warning(
            "callback_abandoned", method=method.value, payment_id=notice.payment_id, attempts=self._attempts
        )

    async def deliver_once(
        self, method: PaymentMethod, url: str, notice: CallbackBody, timestamp_offset_s: float = 0.0
    ) -> int | None:
        """One delivery: a fresh nonce and timestamp, the notice's same notification_id."""
        body = notice.model_dump_json().encode()
        timestamp = unix_seconds(self._clock()) + round(timestamp_offset_s)
        headers = {
            "Content-Type": "application/json",
            **callback_headers(self._credentials(method), body, timestamp=timestamp, nonce=new_nonce()),
        }
        status: int | None
        try:
            status = await self._send(url, headers, body)
        except (httpx.HTTPError, OSError) as error:
            status = None
            log.info(
                "callback_unanswered",
                method=method.value,
                payment_id=notice.payment_id,
                error=type(error).__name__,
            )
        else:
            log.info("callback_delivered", method=method.value, payment_id=notice.payment_id, status=status)
        self.sent.append(
            SentCallback(
                payment_id=notice.payment_id,
                notification_id=notice.notification_id,
                url=url,
                headers=headers,
                body=body.decode(),
                status_code=status,
            )
        )
        return status
