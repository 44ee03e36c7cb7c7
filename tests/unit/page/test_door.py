"""The shared instance's door (page/door.py): who counts as one visitor, and Gradio's own errors cut before they echo a
forged value."""

from __future__ import annotations

from types import SimpleNamespace

from negprompt_demo.page.app_config import AppConfig
from negprompt_demo.page.door import Door, capped_message


def door(trusted_proxy: bool) -> Door:
    demo = SimpleNamespace(_queue=SimpleNamespace(push=None))
    return Door(demo, AppConfig(shared=True, trusted_proxy=trusted_proxy))


def test_a_forwarded_address_counts_only_behind_a_trusted_proxy():
    request = SimpleNamespace(headers={"x-forwarded-for": "6.6.6.6, 10.0.0.7"})
    assert door(False).visitor("abc", request) == {"session:abc"}
    assert door(True).visitor("abc", request) == {"session:abc", "address:10.0.0.7"}  # the proxy's own entry


def test_gradio_errors_are_cut():
    """Gradio's own range and choice errors (a forged request's value) quote at most MAX_ECHO_CHARS of it."""
    huge = "9" * 4000
    for message in (
        f"Value {huge} is greater than maximum value 150.",
        f"Value: {huge!r} (type: <class 'str'>) is not in the list of choices: ['Euler', 'DDIM']",
    ):
        cut = capped_message(message)
        assert len(cut) < 140 and "9" * 40 not in cut and ("greater than" in cut or "not in the list" in cut)
    assert capped_message("steps must be between 1 and 150, got 0.") == "steps must be between 1 and 150, got 0."
