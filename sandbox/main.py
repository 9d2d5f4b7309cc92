"""Runs the sandbox provider: settings, its callback client and the HTTP server."""

from __future__ import annotations

import asyncio
import sys

import httpx
from pydantic import ValidationError

from sandbox.app import build_app
from sandbox.callbacks import http_sender
from sandbox.provider import Sandbox
from sandbox.settings import SandboxSettings
from shared.logging import configure_logging
from shared.runtime import serve


def load_settings() -> SandboxSettings:
    """The settings from the environment, or exit naming what is wrong (ENVIRONMENT=prod is)."""
    try:
        return SandboxSettings()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']).upper() or 'settings'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        )
        sys.stderr.write(f"refusing to start the sandbox provider: {problems}\n")
        raise SystemExit(2) from None


async def main() -> None:
    settings = load_settings()
    configure_logging("sandbox", settings.log_level)
    async with httpx.AsyncClient() as client:
        sandbox = Sandbox(settings, send=http_sender(client, settings.sandbox_callback_timeout_s))

        async def release_on_stop(stop: asyncio.Event) -> None:
            # Held tok_timeout requests would otherwise keep the server from stopping for minutes.
            await stop.wait()
            await sandbox.close()

        await serve(
            service="sandbox",
            app=build_app(sandbox),
            host=settings.sandbox_host,
            port=settings.sandbox_port,
            workers=[release_on_stop],
        )
