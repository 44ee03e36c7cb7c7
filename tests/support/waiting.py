"""Waiting on state that no event announces (a server's queue, a stop flag, a process that starts): poll it."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120.0, every: float = 0.02) -> None:
    """Return as soon as `condition()` holds; fail naming `what` after `timeout` seconds. The timeout only turns a
    hang into a failure: nothing here depends on how fast the machine is."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(every)
