"""The page's event functions on the tiny pipelines, called directly (no server): streaming, results, the step
scrubber, Stop, errors, the model policy, examples and the API surface."""

from __future__ import annotations

import asyncio
import json
import time

import gradio as gr
import numpy as np
import pytest
from conftest import EMBEDDED_PRESENT
from PIL import Image

from negprompt_demo import handlers
from negprompt_demo.app import EXAMPLES_FILE, build_app, config_from_args, load_examples
from negprompt_demo.engine import compare, pipeline_lock
from negprompt_demo.handlers import INPUT_NAMES, STEP_OUTPUTS, UI_OUTPUTS, AppConfig
from negprompt_demo.launch import build_parser
from negprompt_demo.loading import load_pipeline
from negprompt_demo.previews import fill_previews
from negprompt_demo.settings import CompareSettings, InputError
from negprompt_demo.tracefile import load_trace, save_trace

STEPS = 4


def inputs(folder, **changes) -> tuple:
    values = {
        "prompt": "a red hat",
        "negative": "blue",
        "seed": 7,
        "steps": STEPS,
        "guidance": 7.5,
        "scheduler": "Euler",
        "width": 32,
        "height": 32,
        "model": str(folder),
        "push_map": True,
    }
    values.update(changes)
    return tuple(values[name] for name in INPUT_NAMES)


def collect(agen) -> list:
    async def run():
        return [item async for item in agen]

    return asyncio.run(run())


def named(values: tuple, names=UI_OUTPUTS) -> dict:
    """Outputs by name, without the ones left unchanged."""
    return {name: value for name, value in zip(names, values, strict=True) if not is_skip(value)}


def is_skip(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


@pytest.fixture(scope="module")
def config(tiny_sd_folder) -> AppConfig:
    return AppConfig(default_model=str(tiny_sd_folder), models=[str(tiny_sd_folder)])


@pytest.fixture(scope="module")
def ui_run(config, tiny_sd_folder) -> list[dict]:
    compare_ui = handlers.make_handlers(config).compare_ui
    return [named(values) for values in collect(compare_ui(*inputs(tiny_sd_folder)))]


def test_compare_ui_streams_steps_then_the_full_result(ui_run):
    ready, *steps, final = ui_run
    assert ready["seed_used"] == 7 and "Sampling" in ready["status"] and ready["trace_file"] is None
    assert steps, "no live step update was streamed"
    assert all(update["step"]["maximum"] == STEPS for update in steps)
    assert steps[-1]["step"]["value"] == STEPS and "status" not in steps[-1]  # Stop owns the status line
    assert isinstance(steps[0]["image_without"], np.ndarray) and "x0_with" in steps[0]

    assert set(final) == set(UI_OUTPUTS)
    without, with_negative = final["image_without"], final["image_with"]
    assert without.size == with_negative.size == (32, 32)  # true size; the page enlarges with CSS
    assert not np.array_equal(np.asarray(without), np.asarray(with_negative))
    assert final["caption_with"] == "**negative: blue**"
    assert final["seed_used"] == 7 and "seed `7`" in final["status"]
    assert final["step"]["maximum"] == STEPS and final["step"]["value"] == STEPS
    assert final["push"] is not None and final["legend"].width > 0
    assert "step" in final["reading"]


def test_downloads_are_lossless_files_with_parameters(ui_run):
    final = ui_run[-1]
    names = {path.rsplit("/", 1)[-1]: path for path in final["downloads"]}
    assert {"side_by_side.png", "steps.gif", "trace.json", "without_negative.png", "with_negative.png"} <= set(names)
    with Image.open(names["side_by_side.png"]) as image:
        assert image.format == "PNG" and "Negative prompt: blue" in image.text["parameters"]
    with Image.open(names["with_negative.png"]) as image:
        assert image.size == (32, 32)
    assert len(json.loads(open(names["trace.json"]).read())["steps"]) == STEPS


def test_step_scrubber_redraws_any_step_from_the_trace_file(ui_run):
    trace_path = ui_run[-1]["trace_file"]
    first = named(handlers.show_step(trace_path, 1), STEP_OUTPUTS)
    last = named(handlers.show_step(trace_path, STEPS), STEP_OUTPUTS)
    assert set(first) == set(STEP_OUTPUTS)
    assert np.asarray(first["x0_with"]).tolist() != np.asarray(last["x0_with"]).tolist()
    assert named(handlers.show_step(trace_path, 99), STEP_OUTPUTS)["x0_with"].size == last["x0_with"].size
    assert named(handlers.show_step(None, 1), STEP_OUTPUTS) == {}  # nothing compared yet
    with pytest.raises(gr.Error, match="no longer stored"):
        handlers.show_step("/nonexistent/trace.npz", 1)


def test_trace_file_round_trip(sd_pipe, tmp_path):
    comparison = compare(sd_pipe, CompareSettings("a cat", "dog", seed=1, steps=3, push_map=True))
    fill_previews(sd_pipe, comparison.trace.steps)
    trace, negative = load_trace(save_trace(comparison.trace, tmp_path / "t.npz", "dog"))
    assert negative == "dog" and len(trace.steps) == 3
    assert trace.to_json() == comparison.trace.to_json()
    for loaded, original in zip(trace.steps, comparison.trace.steps, strict=True):
        assert np.array_equal(loaded.previews, original.previews)
        assert np.array_equal(loaded.guidance_map.numpy(), original.guidance_map.numpy())
        assert np.array_equal(loaded.push_map.numpy(), original.push_map.numpy())


def test_bad_input_is_a_clear_message_not_a_traceback(config, tiny_sd_folder):
    events = handlers.make_handlers(config)
    compare_ui, compare_api = events.compare_ui, events.compare_api
    (only,) = [named(values) for values in collect(compare_ui(*inputs(tiny_sd_folder, steps=0)))]
    assert only == {"status": "❌ **Could not compare.** steps must be between 1 and 150, got 0."}
    with pytest.raises(gr.Error, match="prompt is empty"):
        asyncio.run(compare_api(*inputs(tiny_sd_folder, prompt="  ")))
    with pytest.raises(gr.Error, match="multiple of 8"):
        asyncio.run(compare_api(*inputs(tiny_sd_folder, width=30)))


def test_locked_deployment_refuses_unlisted_models(tiny_sd_folder):
    locked = AppConfig(default_model=str(tiny_sd_folder), models=[], lock_models=True)
    assert locked.check_model("") == str(tiny_sd_folder)
    with pytest.raises(InputError, match="only offers these models"):
        locked.check_model("someone/any-model")
    compare_api = handlers.make_handlers(locked).compare_api
    with pytest.raises(gr.Error, match="only offers these models"):
        asyncio.run(compare_api(*inputs(tiny_sd_folder, model="someone/any-model")))


def test_unloadable_model_is_a_clear_message(config, tiny_sd_folder, tmp_path):
    compare_api = handlers.make_handlers(config).compare_api
    with pytest.raises(gr.Error, match="not a diffusers model folder"):
        asyncio.run(compare_api(*inputs(tiny_sd_folder, model=str(tmp_path))))
    info, *rest = handlers.make_handlers(config).model_selected(str(tmp_path))
    assert info.startswith("⚠️") and all(is_skip(value) for value in rest)


def test_leaving_the_stream_stops_sampling_within_a_step(tiny_sd_folder):
    pipe = load_pipeline(str(tiny_sd_folder))
    settings = CompareSettings("a red hat", "blue", seed=1, steps=150, width=64, height=64)

    async def first_step_then_leave() -> float:
        stream = handlers.stream_comparison(str(tiny_sd_folder), settings)
        async for event in stream:
            if event[0] == "step":
                started = time.perf_counter()
                await stream.aclose()  # what Gradio does when Stop cancels the event
                return time.perf_counter() - started
        raise AssertionError("no step was streamed")

    seconds_to_stop = asyncio.run(first_step_then_leave())
    assert not pipeline_lock(pipe).locked(), "the run still holds the pipeline after the stream was left"
    full_run = compare(pipe, settings.replace(steps=10), trace=False).seconds * 15
    assert seconds_to_stop < full_run / 3


def test_model_selection_adopts_the_model_defaults(config, tiny_sd_folder):
    info, steps, guidance, scheduler, width, height = handlers.make_handlers(config).model_selected(str(tiny_sd_folder))
    assert "Native size 32 px" in info
    assert steps["value"] == 25 and scheduler["value"] == "Euler"
    assert (width["minimum"], width["maximum"], width["value"]) == (16, 64, 32)


def test_examples_file_starts_with_the_articles_case():
    rows, labels = load_examples(
        EXAMPLES_FILE, {"steps": 25, "guidance": 7.5, "scheduler": "Euler", "width": 64, "height": 64}, "embedded"
    )
    first, second = (dict(zip(INPUT_NAMES, row, strict=True)) for row in rows[:2])
    assert (first["prompt"], first["negative"]) == ("Portrait photo of a man.", "mustache")
    assert "without mustache" in second["prompt"]
    assert len(rows) == len(labels) >= 4 and all(row[INPUT_NAMES.index("model")] == "embedded" for row in rows)


def test_only_compare_is_public_api(config):
    demo = build_app(config)
    api = demo.get_api_info()
    assert set(api["named_endpoints"]) == {"/compare"}
    assert not api.get("unnamed_endpoints")
    parameters = [parameter["parameter_name"] for parameter in api["named_endpoints"]["/compare"]["parameters"]]
    assert parameters == list(INPUT_NAMES)


def test_command_line_defaults_and_public_lock(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("NEGPROMPT_MODEL", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.model) == ("127.0.0.1", None, "embedded")
    assert not config_from_args(args).lock_models
    assert config_from_args(build_parser().parse_args(["--share"])).lock_models
    assert not config_from_args(build_parser().parse_args(["--share", "--no-lock-models"])).lock_models
    monkeypatch.setenv("SPACE_ID", "someone/negprompt")
    monkeypatch.setenv("NEGPROMPT_MODEL", "a/b")
    space = config_from_args(build_parser().parse_args(["--models", "a/b,c/d"]))
    assert space.lock_models and space.models == ["a/b", "c/d"] and space.default_model == "a/b"


@pytest.mark.skipif(not EMBEDDED_PRESENT, reason="the embedded model has not been trained into the package yet")
def test_first_example_on_the_embedded_model_shows_two_different_images(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path))
    config = AppConfig()
    build_app(config)
    pipe = load_pipeline(None)
    from negprompt_demo.loading import model_defaults, native_size

    defaults = {"width": native_size(pipe), "height": native_size(pipe), **model_defaults(pipe)}
    rows, _ = load_examples(EXAMPLES_FILE, defaults, config.default_model)
    final = named(asyncio.run(handlers.make_handlers(config).compare_example(*rows[0])))
    assert not np.array_equal(np.asarray(final["image_without"]), np.asarray(final["image_with"]))
    assert final["x0_with"] is not None and "step" in final["reading"]


def test_warnings_are_shown_in_the_status(config, tiny_sd_folder):
    compare_ui = handlers.make_handlers(config).compare_ui
    long_prompt = "a red hat " * 12  # the tiny tokenizer reads ~75 letters
    updates = [
        named(values)
        for values in collect(compare_ui(*inputs(tiny_sd_folder, guidance=1, steps=1, prompt=long_prompt)))
    ]
    for status in (updates[0]["status"], updates[-1]["status"]):
        assert "⚠️ Guidance scale 1 ≤ 1" in status and "these words were cut" in status
