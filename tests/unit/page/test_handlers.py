"""The page's event functions (page/handlers.py) on the tiny pipelines, called directly (no server): streaming,
results, the step scrubber, errors, the model policy, links, the sweep, attention maps and the API's options."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qsl

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from negprompt_demo.page import handlers
from negprompt_demo.page.app import build_app
from negprompt_demo.page.app_config import AppConfig
from negprompt_demo.page.handlers import INPUT_NAMES, LINK_OUTPUTS, UI_OUTPUTS
from negprompt_demo.page.step_view import STEP_OUTPUTS
from negprompt_demo.settings import DEFAULTS
from tests.support.handler_calls import STEPS, Session, collect, inputs, is_skip, make, named, pixels


@pytest.fixture(scope="module")
def events(config, tmp_path_factory) -> handlers.Handlers:
    return make(config, tmp_path_factory)


@pytest.fixture(scope="module")
def ui_run(events, tiny_sd_folder) -> list[dict]:
    return [named(values) for values in collect(events.compare_ui(Session(), **inputs(tiny_sd_folder)))]


def test_compare_ui_streams_steps_then_the_full_result(ui_run):
    ready, *steps, final = ui_run
    assert ready["seed_used"] == 7 and "Sampling" in ready["status"] and ready["trace_id"] == ""
    assert steps, "no live step update was streamed"
    assert all(update["step"]["maximum"] == STEPS for update in steps)
    assert steps[-1]["step"]["value"] == STEPS and "status" not in steps[-1]  # Stop owns the status line
    assert pixels(steps[0]["image_without"]).shape == (32, 32, 3) and "x0_with" in steps[0]

    assert set(final) == set(UI_OUTPUTS)
    without, with_negative = pixels(final["image_without"]), pixels(final["image_with"])
    assert without.shape == with_negative.shape == (32, 32, 3)  # true size; the page enlarges with CSS
    assert not np.array_equal(without, with_negative)
    assert final["caption_with"] == "**negative\\: blue**"  # punctuation escaped: the caption is text (markdown_text)
    assert final["seed_used"] == 7 and "seed `7`" in final["status"]
    # the step view opens where the runs part fastest (not at the last step, where the branches look alike)
    assert final["step"]["maximum"] == STEPS and 1 <= final["step"]["value"] <= STEPS
    assert f"Step {final['step']['value']}," in final["branch_note"]
    assert final["push"] is not None and pixels(final["legend"]).shape[1] > 0
    assert "step" in final["reading"]


def test_every_picture_is_a_file_of_this_job_with_parameters_on_the_images(ui_run):
    final = ui_run[-1]
    pictures = [final[name] for name in ("image_without", "image_with", "difference", "x0_with", "push", "legend")]
    assert all(isinstance(path, str) and path.endswith(".png") for path in pictures)
    assert len({path.rsplit("/", 2)[-2] for path in pictures}) == 1  # one folder per job: no shared cache path
    for name, negative in (("image_without", ""), ("image_with", "blue")):
        with Image.open(final[name]) as image:
            assert image.text["parameters"].startswith(f"a red hat\nNegative prompt: {negative}\nSteps: 4")
    names = {path.rsplit("/", 1)[-1]: path for path in final["downloads"]}
    assert {"side_by_side.png", "steps.gif", "trace.json", "without_negative.png", "with_negative.png"} <= set(names)
    with Image.open(names["side_by_side.png"]) as image:
        assert image.format == "PNG" and "Negative prompt: blue" in image.text["parameters"]
    with Image.open(names["with_negative.png"]) as image:
        assert image.size == (32, 32)
    assert len(json.loads(open(names["trace.json"]).read())["steps"]) == STEPS


def test_step_scrubber_redraws_any_step_from_the_stored_trace(events, ui_run):
    trace_id = ui_run[-1]["trace_id"]
    first = named(events.show_step(trace_id, 1, None, Session()), STEP_OUTPUTS)
    last = named(events.show_step(trace_id, STEPS, None, Session()), STEP_OUTPUTS)
    assert set(first) == set(STEP_OUTPUTS)
    assert pixels(first["x0_with"]).tolist() != pixels(last["x0_with"]).tolist()
    assert pixels(named(events.show_step(trace_id, 99, None, Session()), STEP_OUTPUTS)["x0_with"]).shape == (
        256,
        256,
        3,
    )
    assert named(events.show_step(None, 1, None, Session()), STEP_OUTPUTS) == {}  # nothing compared yet


@pytest.mark.parametrize(
    "trace_id, session",
    [
        ("/nonexistent/trace.npz", "session-a"),  # a path: never read
        ("../../etc/passwd", "session-a"),
        ("run-" + "0" * 32, "session-a"),  # well formed, but not a trace this server wrote
        (None, "session-b"),  # a real id from another browser session
    ],
)
def test_step_scrubber_reads_only_traces_the_server_wrote_for_this_session(events, ui_run, trace_id, session):
    with pytest.raises(gr.Error, match="no longer stored"):
        events.show_step(trace_id or ui_run[-1]["trace_id"], 1, None, Session(session))


def test_bad_input_is_a_clear_message_not_a_traceback(events, tiny_sd_folder, caplog):
    """The page's and the API's wiring to the one validation (the matrix of bad values is in test_settings)."""
    (only,) = [named(values) for values in collect(events.compare_ui(Session(), **inputs(tiny_sd_folder, steps=0)))]
    assert only == {"status": "❌ **Could not compare.** steps must be between 1 and 150, got 0."}
    with pytest.raises(gr.Error, match="prompt is empty") as raised:
        asyncio.run(events.compare_api(**inputs(tiny_sd_folder, prompt="  ")))
    assert raised.value.print_exception is False  # one log line, no traceback
    with pytest.raises(gr.Error, match="push_map must be true or false, got 'false'"):
        asyncio.run(events.compare_api(**inputs(tiny_sd_folder, push_map="false")))
    with pytest.raises(gr.Error, match="Unknown scheduler '<b>'"):  # API clients get plain text, not HTML entities
        asyncio.run(events.compare_api(**inputs(tiny_sd_folder, scheduler="<b>")))
    assert "Traceback" not in caplog.text


def test_unloadable_model_is_a_clear_message(events, tiny_sd_folder, tmp_path):
    with pytest.raises(gr.Error, match="not a diffusers model folder"):
        asyncio.run(events.compare_api(**inputs(tiny_sd_folder, model=str(tmp_path))))
    info, *rest = events.model_selected(str(tmp_path))
    assert info.startswith("⚠️") and all(is_skip(value) for value in rest)


def test_model_selection_adopts_the_model_defaults(events, tiny_sd_folder):
    info, steps, guidance, scheduler, width, height = events.model_selected(str(tiny_sd_folder))
    assert "Native size 32 px" in info
    assert steps["value"] == 25 and scheduler["value"] == "Euler"
    # the box says the model's range; it has no widget bounds that would clamp a typed value silently
    assert width["value"] == 32 and "16 to 64 px" in width["info"] and "minimum" not in width


def test_sweep_shows_each_start_with_a_reading(events, tiny_sd_folder):
    picture, reading = asyncio.run(events.sweep_ui(**inputs(tiny_sd_folder, steps=10, push_map=False)))
    assert pixels(picture).shape[1] > 6 * 160  # no negative, then six starts side by side
    assert "step" in reading and "of 10" in reading
    with pytest.raises(gr.Error, match="starts at 0.8 of the steps but ends at 0.2"):
        asyncio.run(events.sweep_ui(**inputs(tiny_sd_folder, negative_start=0.8, negative_end=0.2)))


def test_warnings_are_shown_in_the_status(events, tiny_sd_folder):
    long_prompt = "a red hat " * 12  # the tiny tokenizer reads ~75 letters
    changes = {"guidance": 1, "steps": 1, "prompt": long_prompt}
    updates = [named(values) for values in collect(events.compare_ui(Session(), **inputs(tiny_sd_folder, **changes)))]
    for status in (updates[0]["status"], updates[-1]["status"]):
        assert "⚠️ Guidance scale 1 ≤ 1" in status and "The prompt is 84 tokens: read in 2 chunks of 75" in status


def embedding_upload(demo: gr.Blocks) -> gr.File:
    (upload,) = [block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "negative-embedding"]
    return upload


def test_negative_embedding_on_the_page_and_how_the_negative_was_read(events, config, tiny_sd_folder, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "badhand.safetensors"
    save_file({"emb_params": torch.randn(2, 32)}, str(path))
    upload = embedding_upload(build_app(config))
    assert upload.visible and upload.file_types == [".safetensors"]
    changes = {"negative": "(badhand:1.2), blue", "negative_embedding": str(path), "steps": 2}
    updates = [named(values) for values in collect(events.compare_ui(Session(), **inputs(tiny_sd_folder, **changes)))]
    assert updates[0]["negative_reading"] == ""  # the last result's reading goes while this one runs
    reading = updates[-1]["negative_reading"]
    assert reading.startswith("**How the negative prompt was read:** read A1111-style: 7 tokens in 1 chunk of 75")
    assert "**(`⟨badhand: 2 vectors⟩` ×1.2)**" in reading
    plain = [named(values) for values in collect(events.compare_ui(Session(), **inputs(tiny_sd_folder, steps=1)))]
    assert "read as plain text: 4 tokens, no weights" in plain[-1]["negative_reading"]


@pytest.fixture(scope="module")
def tiny_sdxl_folder(sdxl_pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_sdxl_model")
    sdxl_pipe.save_pretrained(folder)
    return folder


@pytest.mark.slow  # the page draws every output (~1 s); SDXL sampling itself is in test_engine
def test_sdxl_model_through_the_page(tiny_sdxl_folder, tmp_path_factory):
    config = AppConfig(default_model=str(tiny_sdxl_folder), models=[str(tiny_sdxl_folder)])
    page = make(config, tmp_path_factory)
    values = inputs(tiny_sdxl_folder, steps=3, guidance=5.0, width=48, height=24)
    *streamed, final = [named(update) for update in collect(page.compare_ui(Session(), **values))]
    assert streamed and "Sampling" in streamed[0]["status"]
    assert set(final) == set(UI_OUTPUTS), final.get("status")
    without, with_negative = pixels(final["image_without"]), pixels(final["image_with"])
    assert without.shape == with_negative.shape == (24, 48, 3)  # the requested size, not the native 32 px
    assert not np.array_equal(without, with_negative)
    assert final["trace_id"].startswith("run-") and "48×24 px" in final["status"]
    step_view = named(page.show_step(final["trace_id"], 1, None, Session()), STEP_OUTPUTS)
    assert set(step_view) == set(STEP_OUTPUTS) and step_view["push"] is not None


class LinkVisit(Session):
    """What gr.Request gives the page-load event: the session and the page URL's query parameters."""

    def __init__(self, query: str, session_hash: str = "session-a"):
        super().__init__(session_hash)
        self.query_params = dict(parse_qsl(query.lstrip("?"), keep_blank_values=True))


def test_a_link_fills_the_inputs_and_runs_the_same_comparison(events, ui_run, config):
    link = ui_run[-1]["link"]
    assert link.startswith("?prompt=a+red+hat&negative=blue&seed=7&steps=4&") and "push_map" not in link
    assert "model=" not in link  # the page's default model
    opened = named(events.open_link(LinkVisit(link, "session-b")), LINK_OUTPUTS)
    assert opened["link_run"] == "1" and "link_example" not in opened  # starts the Compare button's event
    assert "negative_embedding" not in opened  # the upload is left as it is: a link never names a file
    filled = {name: opened[name] for name in INPUT_NAMES if name not in ("width", "height", "negative_embedding")}
    filled |= {name: opened[name]["value"] for name in ("width", "height")}
    assert filled["model"] == config.default_model and filled["seed"] == 7 and filled["push_map"] is True
    assert "16 to 64 px" in opened["width"]["info"] and "Native size 32 px" in opened["model_info"]
    # What that event then gets from the filled inputs: the same comparison, pixel for pixel, and the same link.
    final = named(collect(events.compare_ui(LinkVisit(link, "session-b"), **filled))[-1])
    assert final["link"] == link
    assert np.array_equal(pixels(final["image_with"]), pixels(ui_run[-1]["image_with"]))


def test_a_plain_visit_changes_nothing(events):
    for query in ("", "?__theme=dark&view=api"):
        assert named(events.open_link(LinkVisit(query)), LINK_OUTPUTS) == {}


BAD_LINKS = {
    "out of range": ("?prompt=a+cat&steps=0", "steps must be between 1 and 150, got 0."),
    "html": (
        "?prompt=a+cat&scheduler=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E",
        "Unknown scheduler '&lt;img src=x onerror",
    ),
    "huge number": ("?prompt=a+cat&seed=" + "9" * 6000, "seed must be a whole number, got inf."),
    "long text": ("?prompt=" + "x" * 50_000, "The prompt is 50000 characters long; the limit is 2000."),
    "control characters": ("?prompt=%00%1b%07&negative=a", "The prompt is empty"),
    "no prompt": ("?negative=javascript:alert(1)", "The prompt is empty"),
    "unlisted model": ("?prompt=a+cat&model=someone/any-model", "only offers these models"),
    "folder as model": ("?prompt=a+cat&model=../..", "only offers these models"),
}


@pytest.mark.parametrize("case", BAD_LINKS)
def test_a_bad_link_shows_the_typed_input_message_and_changes_nothing_else(case, tiny_sd_folder, tmp_path_factory):
    query, message = BAD_LINKS[case]
    locked = make(AppConfig(default_model=str(tiny_sd_folder), models=[], lock_models=True), tmp_path_factory)
    opened = named(locked.open_link(LinkVisit(query)), LINK_OUTPUTS)
    assert set(opened) == {"status"}  # no input filled, nothing started: the page is as it was
    assert opened["status"].startswith("❌ **Could not open the link.** ") and message in opened["status"]


def test_a_link_to_an_example_shows_its_cached_result(events, tiny_sd_folder, config):
    example = {"prompt": "a red hat", "negative": "blue", "seed": 3, "steps": 4, "guidance": 7.5, "width": 32}
    events.examples = [{**DEFAULTS, "model": str(tiny_sd_folder), "scheduler": "Euler", "height": 32, **example}]
    try:
        opened = named(events.open_link(LinkVisit("?prompt=a+red+hat&negative=blue&seed=3&steps=4")), LINK_OUTPUTS)
        assert opened["link_example"] == "0" and "link_run" not in opened
        assert "link_run" in named(events.open_link(LinkVisit("?prompt=a+red+hat&seed=3&steps=4")), LINK_OUTPUTS)
    finally:
        events.examples = []


# --- attention maps on the page and through the API --------------------------------------------------------------


@pytest.fixture(scope="module")
def page(config, tiny_sd_folder, tmp_path_factory):
    events = make(config, tmp_path_factory)
    run = [named(v) for v in collect(events.compare_ui(Session(), **inputs(tiny_sd_folder, attention_maps=True)))]
    return events, run[-1]


def test_page_shows_word_chips_the_overlay_and_the_strip(page):
    events, final = page
    radio = final["attention_word"]
    assert radio["choices"] == [("− blue", 0), ("+ a", 1), ("+ red", 2), ("+ hat", 3)] and radio["value"] == 0
    assert pixels(final["attention"]).shape == (256, 256, 3)
    assert pixels(final["attention_strip"]).shape[1] > 4 * 40  # one tile per step
    assert "**blue** (negative" in final["attention_reading"]
    assert "down and up blocks (as DAAM)" in final["attention_reading"]  # the page says which layers
    step_one = named(events.show_step(final["trace_id"], 1, 3, Session()), STEP_OUTPUTS)
    assert "**hat** (prompt" in step_one["attention_reading"]
    assert not np.array_equal(pixels(step_one["attention"]), pixels(final["attention"]))
    for bad in ("hat", 99, -1, None, 2.5, True):  # anything else a client sends: the first word, no error
        shown = named(events.show_step(final["trace_id"], 1, bad, Session()), STEP_OUTPUTS)
        assert "**blue**" in shown["attention_reading"], bad
    with pytest.raises(gr.Error, match="no longer stored"):
        events.show_step(final["trace_id"], 1, 0, Session("session-b"))


def test_page_says_how_to_turn_the_maps_on(config, tiny_sd_folder, tmp_path_factory):
    events = make(config, tmp_path_factory)
    final = named(collect(events.compare_ui(Session(), **inputs(tiny_sd_folder, steps=1, push_map=False)))[-1])
    assert final["attention_word"]["choices"] == [] and final["attention"] is None
    assert "record attention maps" in final["attention_reading"]


def test_api_option_returns_the_words_and_maps(page, tiny_sd_folder):
    events, _ = page
    *_, document = asyncio.run(events.compare_api(**inputs(tiny_sd_folder, attention_maps=True)))
    assert [word["word"] for word in document["attention"]["words"]] == ["blue", "a", "red", "hat"]
    assert np.array(document["attention"]["maps"]).shape == (STEPS, 4, 16, 16)
    json.dumps(document)  # plain JSON
    *_, plain = asyncio.run(events.compare_api(**inputs(tiny_sd_folder)))
    assert "attention" not in plain
    with pytest.raises(gr.Error, match="attention_maps must be true or false"):
        asyncio.run(events.compare_api(**inputs(tiny_sd_folder, attention_maps="yes")))
