"""Driving the page in Debian's Chromium with Playwright: the browser's path and flags, the time any page state may
take, and the step slider."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]  # fmt: skip
TIMEOUT_MS = 120_000


def set_step(page, step: int) -> None:
    page.fill("#step input[type=range]", str(step))


def move_step(page) -> int:
    """Move the step slider away from the step the view opened at (where the runs part fastest): to step 1, or to
    the last step when it opened at step 1. Returns the new step."""
    shown = int(page.input_value("#step input[type=number]"))
    step = 1 if shown != 1 else int(page.get_attribute("#step input[type=range]", "max"))
    set_step(page, step)
    return step
