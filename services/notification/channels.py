"""How a notification reaches its recipient; merchant webhooks and customer SMS plug in here later."""

from __future__ import annotations

from typing import Protocol

from services.notification.domain import INBOX, Notification


class Channel(Protocol):
    async def send(self, notification: Notification) -> None:
        """Deliver the notification; raise if it did not get through."""
        ...


class InboxChannel:
    """The recipient reads the stored notification log, so storing it is the delivery."""

    async def send(self, notification: Notification) -> None:
        """Nothing to do: the batch that delivers it also stores it."""


def default_channels() -> dict[str, Channel]:
    return {INBOX: InboxChannel()}
