"""The page's event functions on the tiny pipelines, called directly (no server): streaming, results, the step
scrubber, Stop, errors, the model policy, examples and the API surface."""

from __future__ import annotations

import asyncio
import copy
import json
from urllib.parse import parse_qsl

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from negprompt_demo.models.loading import load_pipeline, pipeline_lock
from negprompt_demo.models.previews import fill_previews
from negprompt_demo.page import examples as example_module
from negprompt_demo.page import handlers
from negprompt_demo.page.app import build_app
from negprompt_demo.page.app_config import AppConfig, config_from_args
from negprompt_demo.page.examples import EXAMPLES_FILE, example_cache_folder, example_rows
from negprompt_demo.page.handlers import EXAMPLE_NAMES, INPUT_NAMES, LINK_OUTPUTS, UI_OUTPUTS
from negprompt_demo.page.launch import build_parser
from negprompt_demo.page.step_view import STEP_OUTPUTS
from negprompt_demo.page.tracefile import TraceNotFound, TraceStore
from negprompt_demo.runner import Step, astream
from negprompt_demo.sampling.engine import compare
from negprompt_demo.settings import DEFAULTS, CompareSettings, InputError
from negprompt_demo.views.visualize import curves_picture
from tests.support.handler_calls import STEPS, Session, collect, inputs, is_skip, make, named, pixels
from tests.support.paths import EMBEDDED_PRESENT


@pytest.fixture(scope="module")
def config(tiny_sd_folder) -> AppConfig:
    return AppConfig(default_model=str(tiny_sd_folder), models=[str(tiny_sd_folder)])


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


def test_stored_trace_reads_one_step_and_every_scalar(sd_pipe, tmp_path):
    comparison = compare(sd_pipe, CompareSettings("a cat", "dog", seed=1, steps=3, push_map=True))
    fill_previews(sd_pipe, comparison.trace.steps)
    store = TraceStore(tmp_path / "runs")
    curves = curves_picture(comparison.trace)
    trace_id = store.save(comparison.trace, curves, owner="me")
    for index, original in enumerate(comparison.trace.steps):
        trace, stored_curves = store.load(trace_id, index, owner="me")
        assert np.array_equal(np.asarray(stored_curves.image), np.asarray(curves.image))
        assert trace.to_json() == comparison.trace.to_json()  # every step's scalars, for the curves
        loaded = trace.steps[index]
        assert np.array_equal(loaded.previews, original.previews)
        assert np.array_equal(loaded.guidance_map.numpy(), original.guidance_map.numpy())
        assert np.array_equal(loaded.push_map.numpy(), original.push_map.numpy())
        assert all(step.previews is None for i, step in enumerate(trace.steps) if i != index)  # read one step only
    with pytest.raises(TraceNotFound):
        store.load(trace_id, 0, owner="someone else")


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


def test_locked_deployment_refuses_unlisted_models(tiny_sd_folder, tmp_path_factory):
    locked = AppConfig(default_model=str(tiny_sd_folder), models=[], lock_models=True)
    assert locked.check_model("") == str(tiny_sd_folder)
    refusals = set()
    for name in ("someone/any-model", str(tmp_path_factory.getbasetemp()), "/nonexistent", ["a/b"], "../.."):
        with pytest.raises(InputError) as raised:
            locked.check_model(name)
        refusals.add(str(raised.value) if not isinstance(name, list) else "list")
    refusals.discard("list")
    assert len(refusals) == 1 and "only offers these models" in refusals.pop()  # one message: nothing is probed
    with pytest.raises(gr.Error, match="only offers these models"):
        asyncio.run(make(locked, tmp_path_factory).compare_api(**inputs(tiny_sd_folder, model="someone/any-model")))


def test_unloadable_model_is_a_clear_message(events, tiny_sd_folder, tmp_path):
    with pytest.raises(gr.Error, match="not a diffusers model folder"):
        asyncio.run(events.compare_api(**inputs(tiny_sd_folder, model=str(tmp_path))))
    info, *rest = events.model_selected(str(tmp_path))
    assert info.startswith("⚠️") and all(is_skip(value) for value in rest)


def test_leaving_the_stream_stops_sampling_after_the_step_it_is_on(tiny_sd_folder, monkeypatch):
    """Leaving `astream` (what Gradio does when Stop cancels the event) ends sampling after the current step and
    frees the pipeline before `aclose` returns; counted in steps, not seconds."""
    pipe = load_pipeline(str(tiny_sd_folder))
    settings = CompareSettings("a red hat", "blue", seed=1, steps=150)
    sampled = []
    original = pipe.unet.forward
    monkeypatch.setattr(pipe.unet, "forward", lambda *a, **k: sampled.append(1) or original(*a, **k))

    async def first_step_then_leave() -> int:
        stream = astream(str(tiny_sd_folder), settings)
        async for event in stream:
            if isinstance(event, Step):
                await stream.aclose()
                return event.done
        raise AssertionError("no step was streamed")

    seen = asyncio.run(first_step_then_leave())
    assert not pipeline_lock(pipe).locked(), "the run still holds the pipeline after the stream was left"
    assert len(sampled) <= seen + 2, f"sampling went on for {len(sampled) - seen} steps after the consumer left"


def test_model_selection_adopts_the_model_defaults(events, tiny_sd_folder):
    info, steps, guidance, scheduler, width, height = events.model_selected(str(tiny_sd_folder))
    assert "Native size 32 px" in info
    assert steps["value"] == 25 and scheduler["value"] == "Euler"
    # the box says the model's range; it has no widget bounds that would clamp a typed value silently
    assert width["value"] == 32 and "16 to 64 px" in width["info"] and "minimum" not in width


def test_examples_file_starts_with_the_articles_case():
    rows, labels = example_rows(
        EXAMPLES_FILE, {"steps": 25, "guidance": 7.5, "scheduler": "Euler", "width": 64, "height": 64}, "embedded"
    )
    first, second = (dict(zip(EXAMPLE_NAMES, row, strict=True)) for row in rows[:2])
    assert (first["prompt"], first["negative"]) == ("Portrait photo of a man.", "mustache")
    assert "without mustache" in second["prompt"]
    assert len(rows) == len(labels) >= 4 and all(row[EXAMPLE_NAMES.index("model")] == "embedded" for row in rows)


def test_only_compare_sweep_and_seeds_are_public_api(config):
    demo = build_app(config)
    api = demo.get_api_info()
    assert set(api["named_endpoints"]) == {"/compare", "/sweep", "/seeds"}
    assert not api.get("unnamed_endpoints")
    for endpoint in ("/compare", "/sweep", "/seeds"):  # named like the settings fields, declared once
        parameters = [parameter["parameter_name"] for parameter in api["named_endpoints"][endpoint]["parameters"]]
        extra = ["seed_count", "phrased"] if endpoint == "/seeds" else []
        assert parameters == [*INPUT_NAMES, *extra]


def test_sweep_shows_each_start_with_a_reading(events, tiny_sd_folder):
    picture, reading = asyncio.run(events.sweep_ui(**inputs(tiny_sd_folder, steps=10, push_map=False)))
    assert pixels(picture).shape[1] > 6 * 160  # no negative, then six starts side by side
    assert "step" in reading and "of 10" in reading
    with pytest.raises(gr.Error, match="starts at 0.8 of the steps but ends at 0.2"):
        asyncio.run(events.sweep_ui(**inputs(tiny_sd_folder, negative_start=0.8, negative_end=0.2)))


def test_command_line_defaults_and_public_lock(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("NEGPROMPT_MODEL", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.model) == ("127.0.0.1", None, "embedded")
    assert not config_from_args(args).lock_models
    assert config_from_args(build_parser().parse_args(["--share"])).lock_models
    for host, locked in (("0.0.0.0", True), ("192.168.1.5", True), ("::", True), ("localhost", False), ("::1", False)):
        assert config_from_args(build_parser().parse_args(["--host", host])).lock_models is locked, host
    assert not config_from_args(build_parser().parse_args(["--host", "0.0.0.0", "--no-lock-models"])).lock_models
    assert not config_from_args(build_parser().parse_args(["--share", "--no-lock-models"])).lock_models
    monkeypatch.setenv("SPACE_ID", "someone/negprompt")
    monkeypatch.setenv("NEGPROMPT_MODEL", "a/b")
    space = config_from_args(build_parser().parse_args(["--models", "a/b,c/d"]))
    assert space.lock_models and space.models == ["a/b", "c/d"] and space.default_model == "a/b"


@pytest.mark.slow
@pytest.mark.skipif(not EMBEDDED_PRESENT, reason="the embedded model has not been trained into the package yet")
def test_first_example_on_the_embedded_model_shows_two_different_images(tmp_path, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path))
    config = AppConfig()
    build_app(config)
    pipe = load_pipeline(None)
    from negprompt_demo.models.loading import model_defaults, native_size

    defaults = {"width": native_size(pipe), "height": native_size(pipe), **model_defaults(pipe)}
    rows, _ = example_rows(EXAMPLES_FILE, defaults, config.default_model)
    final = named(asyncio.run(make(config, tmp_path_factory).compare_example(*rows[0])))
    assert not np.array_equal(pixels(final["image_without"]), pixels(final["image_with"]))
    assert final["trace_id"].startswith("example-")  # stored beside the example cache, readable by every session
    assert final["x0_with"] is not None and "step" in final["reading"]


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


def test_locked_deployment_takes_no_embedding(tiny_sd_folder, tmp_path_factory):
    """A shared instance never opens a file a client names: no upload on the page, and the API refuses a path."""
    locked = AppConfig(default_model=str(tiny_sd_folder), models=[], lock_models=True)
    assert not embedding_upload(build_app(locked)).visible
    events = make(locked, tmp_path_factory)
    with pytest.raises(gr.Error, match="does not take negative embeddings"):
        asyncio.run(events.compare_api(**inputs(tiny_sd_folder, negative_embedding="/etc/passwd.safetensors")))
    (only,) = [
        named(values)
        for values in collect(
            events.compare_ui(Session(), **inputs(tiny_sd_folder, negative_embedding="x.safetensors"))
        )
    ]
    assert "does not take negative embeddings" in only["status"]
    assert asyncio.run(events.compare_api(**inputs(tiny_sd_folder, steps=1, negative_embedding="")))[2] == 7


def test_example_cache_folder_follows_the_weights_and_the_examples_file(sd_pipe, tmp_path, monkeypatch):
    """A retrained model or edited examples get a fresh example cache; nothing else moves it."""
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "cache"))
    examples = tmp_path / "examples.json"
    examples.write_bytes(EXAMPLES_FILE.read_bytes())
    monkeypatch.setattr(example_module, "EXAMPLES_FILE", examples)
    pipe = copy.deepcopy(sd_pipe)
    original = example_cache_folder(pipe)
    assert original.parent == tmp_path / "cache"
    assert example_cache_folder(pipe) == original
    assert example_cache_folder(sd_pipe) == original  # equal weights in another object: the same cache

    for component in ("unet", "vae", "text_encoder"):
        parameter = list(getattr(pipe, component).parameters())[-1]  # not the first tensor: every one counts
        with torch.no_grad():
            kept = parameter.view(-1)[0].item()
            parameter.view(-1)[0] += 0.25
            try:
                assert example_cache_folder(pipe) != original, f"a changed {component} weight"
            finally:
                parameter.view(-1)[0] = kept
        assert example_cache_folder(pipe) == original

    text = examples.read_text(encoding="utf-8")
    examples.write_text(text.replace("mustache", "beard", 1), encoding="utf-8")
    assert example_cache_folder(pipe) != original, "edited examples"
    examples.write_text(text, encoding="utf-8")
    assert example_cache_folder(pipe) == original


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
