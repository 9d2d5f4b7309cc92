"""Keeps a piece of infrastructure up until the services using it have stopped.

honcho signals every process at once on Ctrl-C; a broker or database that went first would make
the services' last commits and group leaves fail. Run under this, it outlives them.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from types import FrameType

from devstack.stack import port_open

SERVICES_GRACE_S = 10.0


def hold(argv: Sequence[str], *, host: str, service_ports: Sequence[int]) -> int:
    # Its own session, so the signal honcho sends to our process group does not reach it.
    child = subprocess.Popen(list(argv), start_new_session=True)
    stopping = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while child.poll() is None and not stopping.wait(0.2):
        pass
    if child.poll() is not None:
        return child.returncode
    until = time.monotonic() + SERVICES_GRACE_S
    while time.monotonic() < until and any(port_open(host, port) for port in service_ports):
        time.sleep(0.2)
    child.terminate()
    try:
        child.wait(5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    return 0
