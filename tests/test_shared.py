"""A shared instance's bounds, piece by piece: weights checked before sampling, the chunk cap and device-time budget
per request, the step view's pictures written once per step, the run folder's size cap, who counts as one visitor,
which deployments get these bounds, and memory (a session keeps no component copies; a run gives the free heap
back). The live attacks are in test_load.py."""

from __future__ import annotations

import html
import os
import stat
import time
from types import SimpleNamespace

import numpy as np
import pytest

from negprompt_demo.page.app import launch_options
from negprompt_demo.page.app_config import MAX_UPLOAD, AppConfig, config_from_args
from negprompt_demo.page.door import Door, capped_message, keep_sessions_small
from negprompt_demo.page.jobs import JobFiles, StepFiles
from negprompt_demo.page.launch import build_parser
from negprompt_demo.page.tracefile import trim_folders
from negprompt_demo.sampling import cost
from negprompt_demo.sampling.cost import (
    CostLimits,
    Request,
    check_request,
    estimate_seconds,
    text_chunks,
)
from negprompt_demo.settings import CompareSettings, InputError, check_weights


def resolved(**changes) -> CompareSettings:
    values = dict(prompt="a man", negative="mustache", seed=1, steps=20, guidance=7.5, scheduler="Euler")
    return CompareSettings(**{**values, "width": 32, "height": 32, **changes})


# --- weights, before any sampling ------------------------------------------------------------------------------


def test_500_nested_brackets_are_refused_naming_the_weight():
    with pytest.raises(InputError, match=r"gives “face” a weight of 4.97e\+20; weights must be between −100 and 100"):
        check_weights("(" * 500 + "face", "negative prompt")


def test_a_400_digit_weight_is_refused_as_too_large_not_blamed_on_fp16():
    with pytest.raises(InputError, match="The prompt gives “face” a weight of too large to be a number") as caught:
        check_weights("(face:" + "9" * 400 + ")", "prompt")
    assert "fp16" not in str(caught.value) and len(str(caught.value)) < 300


@pytest.mark.parametrize("text", ["(face:1.5)", "[face]", "((((face))))", "(face:-1)", "a plain prompt", ""])
def test_ordinary_weights_pass(text):
    check_weights(text, "prompt")


# --- chunks and the device-time budget ---------------------------------------------------------------------------


def test_chunks_are_counted_as_a1111_counts_them(sd_pipe):
    assert text_chunks(sd_pipe, "a man") == 1
    assert text_chunks(sd_pipe, "a man BREAK a man BREAK a man") == 3
    long = text_chunks(sd_pipe, "word " * 200)
    assert long == -(-len(sd_pipe.tokenizer("word " * 200, add_special_tokens=False).input_ids) // 75) >= 2


@pytest.fixture
def fixed_rates(sd_pipe, monkeypatch):
    """The device rates of the tiny pipeline fixed (1 µs per UNet item per latent pixel, 1 µs per decoded one)."""
    monkeypatch.setitem(cost._rates, sd_pipe, (1e-6, 1e-6, 1e-6))
    return sd_pipe


def test_the_estimate_grows_with_steps_seeds_pixels_and_chunks(fixed_rates):
    pipe, base = fixed_rates, estimate_seconds(fixed_rates, resolved(), Request())
    assert estimate_seconds(pipe, resolved(steps=40), Request()) == pytest.approx(2 * base)
    assert estimate_seconds(pipe, resolved(width=64, height=64), Request()) == pytest.approx(4 * base)
    assert estimate_seconds(pipe, resolved(), Request(), chunks=5) > base
    seeds = estimate_seconds(pipe, resolved(), Request("seeds", runs=3, seeds=64))
    assert seeds > 30 * base


def test_a_shared_instance_refuses_a_request_over_budget_up_front(fixed_rates):
    limits = CostLimits(max_seconds=0.05)
    check_request(fixed_rates, resolved(), Request(), limits)  # a small comparison passes
    with pytest.raises(
        InputError, match=r"about \d+ s of device time \(64 seeds × 150 steps at 32×32 px\).*at most 0 s"
    ):
        check_request(fixed_rates, resolved(steps=150), Request("seeds", runs=3, seeds=64), limits)
    check_request(fixed_rates, resolved(steps=150), Request("seeds", runs=3, seeds=64), None)  # local: today's limits


def test_a_shared_instance_caps_prompt_chunks(fixed_rates):
    with pytest.raises(InputError, match="The negative prompt fills 4 chunks of 75 tokens; .* at most 3 "):
        check_request(fixed_rates, resolved(negative="x BREAK x BREAK x BREAK x"), Request(), CostLimits())
    check_request(fixed_rates, resolved(negative="x BREAK x BREAK x BREAK x"), Request(), None)


def test_device_rates_are_measured_once_per_pipeline(sd_pipe):
    cost._rates.pop(sd_pipe, None)
    first = cost.device_rates(sd_pipe)
    assert all(rate > 0 for rate in first) and cost.device_rates(sd_pipe) is first


# --- disk: pictures written once, results 0600, the folder capped -----------------------------------------------


def test_step_pictures_are_written_once_per_step(tmp_path):
    picture = np.zeros((8, 8, 3), np.uint8)
    first = StepFiles(tmp_path / "pictures", "3-None").png(picture, "x0_with")
    written = os.stat(first).st_mtime_ns
    time.sleep(0.01)
    again = StepFiles(tmp_path / "pictures", "3-None").png(picture + 1, "x0_with")
    assert again == first and os.stat(first).st_mtime_ns == written
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o600
    assert len(list((tmp_path / "pictures").iterdir())) == 1


def test_job_files_are_readable_by_this_user_only(tmp_path):
    path = JobFiles(tmp_path).png(np.zeros((8, 8, 3), np.uint8), "image")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_run_folder_is_trimmed_oldest_first(tmp_path):
    jobs, cache = tmp_path / "jobs", tmp_path / "gradio"
    for number, root in enumerate([jobs, cache, jobs, cache]):
        folder = root / f"entry{number}"
        folder.mkdir(parents=True)
        (folder / "data").write_bytes(b"x" * 1000)
        os.utime(folder, (number * 100, number * 100))
    assert trim_folders([jobs, cache, tmp_path / "absent"], cap=2500) == 2000
    assert sorted(p.name for root in (jobs, cache) for p in root.iterdir()) == ["entry2", "entry3"]


# --- who a visitor is, and which deployments are shared ---------------------------------------------------------


def door(trusted_proxy: bool) -> Door:
    demo = SimpleNamespace(_queue=SimpleNamespace(push=None))
    return Door(demo, AppConfig(shared=True, trusted_proxy=trusted_proxy))


def test_a_forwarded_address_counts_only_behind_a_trusted_proxy():
    request = SimpleNamespace(headers={"x-forwarded-for": "6.6.6.6, 10.0.0.7"})
    assert door(False).visitor("abc", request) == {"session:abc"}
    assert door(True).visitor("abc", request) == {"session:abc", "address:10.0.0.7"}  # the proxy's own entry


def test_shared_deployments_get_the_bounds_and_local_keeps_todays():
    parse = build_parser().parse_args
    assert not config_from_args(parse([])).shared
    assert config_from_args(parse(["--host", "0.0.0.0"])).shared
    assert config_from_args(parse(["--share"])).shared
    assert not config_from_args(parse(["--share", "--no-shared"])).shared
    assert config_from_args(parse(["--shared", "--trust-proxy"])).trusted_proxy
    assert launch_options(AppConfig(shared=True))["max_file_size"] == 0
    assert launch_options(AppConfig())["max_file_size"] == launch_options()["max_file_size"] == MAX_UPLOAD


# --- what a client reads back ------------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "negative",
    ["[click here](https://evil.example/login?next=1)", "**bold** _it_ # head", "<img src=x onerror=alert(1)>"],
)
def test_captions_render_user_text_as_text(negative):
    """The caption over the with-negative image, rendered as CommonMark: no link, emphasis,
    heading or tag from the user's text, and the text itself still readable."""
    import markdown_it

    from negprompt_demo.page.messages import caption_for

    rendered = markdown_it.MarkdownIt("commonmark").render(caption_for(negative))
    inner = rendered.removeprefix("<p><strong>").removesuffix("</strong></p>\n")
    assert "<a " not in inner and "<em>" not in inner and "<strong>" not in inner and "<img" not in inner
    assert html.unescape(inner) == "negative: " + (negative if len(negative) <= 40 else negative[:37] + "...")


# --- memory: nothing piles up in a visitor's session ------------------------------------------------------------


def test_a_session_keeps_no_component_copies_between_events():
    """Gradio files a copy of a component in the session after each `gr.skip()` (or update) followed by a plain
    value; they are dropped as the session's next event joins the queue (behind a Door too, as on a shared
    instance), so a session that streams partial updates for many events stays the app's size."""
    import gradio as gr
    from gradio_client import Client

    from tests.conftest import free_port

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


def test_a_run_gives_the_free_heap_back_when_it_ends(tiny_sd_folder, monkeypatch):
    """After each run the C heap's free pages go back to the system (glibc malloc_trim), once, after the last
    step: a long-lived server's RSS is then what it holds, not the free memory of the largest runs it served."""
    from negprompt_demo import runner

    trims = []
    monkeypatch.setattr(runner, "_malloc_trim", lambda: trims.append)
    seen = []
    for event in runner.stream(str(tiny_sd_folder), resolved(steps=2, width=32, height=32)):
        seen.append((type(event).__name__, len(trims)))
    assert seen[-1] == ("Done", 0) and all(count == 0 for _, count in seen)
    assert trims == [0]
