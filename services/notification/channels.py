"""How a notification reaches its recipient. The inbox is the only channel: recipients read the stored
notification log over the API."""

from __future__ import annotations

from typing import Protocol

from services.notification.domain import INBOX, Notification


class Channel(Protocol):
    async def send(self, notification: Notification) -> None:
        """Deliver the notification; raise if it did not get through (it is then recorded as failed)."""
        ...


class InboxChannel:
    """The recipient reads the stored notification log, so storing it is the delivery."""

    async def send(self, notification: Notification) -> None:
        """Nothing to do: the batch that delivers it also stores it."""


def default_channels() -> dict[str, Channel]:
    return {INBOX: InboxChannel()}
