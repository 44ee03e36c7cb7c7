"""The shared instance's door (page/door.py): who counts as one visitor, and Gradio's own errors cut before they echo a
forged value."""

from __future__ import annotations

from types import SimpleNamespace

from negprompt_demo.page.app_config import AppConfig
from negprompt_demo.page.door import Door, capped_message, keep_sessions_small
from tests.support.live_server import free_port


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


# --- memory: nothing piles up in a visitor's session ------------------------------------------------------------


def test_a_session_keeps_no_component_copies_between_events():
    """Gradio files a copy of a component in the session after each `gr.skip()` (or update) followed by a plain
    value; they are dropped as the session's next event joins the queue (behind a Door too, as on a shared
    instance), so a session that streams partial updates for many events stays the app's size."""
    import gradio as gr
    from gradio_client import Client

    calls = []

    def skip_or_value(text: str):
        calls.append(text)
        return (gr.skip() if len(calls) % 2 else f"value {len(calls)}"), text

    with gr.Blocks() as demo:
        box, shown, echo = gr.Textbox(), gr.Markdown(), gr.Textbox()
        box.submit(skip_or_value, box, [shown, echo], api_name="echo")
    demo.queue(api_open=False)
    keep_sessions_small(demo)
    Door(demo, AppConfig(shared=True))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        answers = [client.predict(f"call {n}", api_name="/echo") for n in range(10)]
        (session,) = demo.state_holder.session_data.values()
        stale = [key for key in session.blocks_config.blocks if key not in demo.blocks]
    finally:
        demo.close()
    assert answers[-1] == ("value 10", "call 9")
    assert len(stale) <= 1  # at most the last event's copy, dropped when the next event comes; without: 5
