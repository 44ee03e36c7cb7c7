"""Calling the live app's public API with gradio_client: a comparison's inputs and how long one job may take."""

from __future__ import annotations

TIMEOUT = 120  # seconds any single job may take before the test fails (a hang, not a speed check)


def request(folder, **changes) -> dict:
    values = {
        "prompt": "portrait photo of a man",
        "negative": "mustache",
        "seed": 5,
        "steps": 3,
        "guidance": 7.5,
        "scheduler": "Euler",
        "width": 32,
        "height": 32,
        "model": str(folder),
        "push_map": False,
    }
    values.update(changes)
    return values
