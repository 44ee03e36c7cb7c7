"""The many-seeds view: the grid's columns equal single comparisons and plain runs, chunks and streaming, the rates
with their intervals, the page's section (rows as they finish, click-to-count) and its input checks."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from negprompt_demo.models.loading import load_pipeline
from negprompt_demo.page.app_config import AppConfig
from negprompt_demo.page.seeds_view import SEEDS_OUTPUTS, SeedsHandlers
from negprompt_demo.sampling.engine import GenerationCancelled, compare, prepare
from negprompt_demo.sampling.many_seeds import (
    MAX_BATCH_LATENT_PIXELS,
    new_grid,
    phrased_by_default,
    sample_grid,
    seed_chunks,
)
from negprompt_demo.settings import CompareSettings, InputError, resolve_grid
from negprompt_demo.views.attributes import Rate, difference_interval, grid_reading
from tests.support.handler_calls import collect, make
from tests.support.paths import EMBEDDED_PRESENT

SETTINGS = CompareSettings("a red hat", "blue", seed=11, steps=4, width=32, height=32)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_every_column_equals_its_own_run(sd_pipe):
    resolved, _ = prepare(sd_pipe, SETTINGS)
    rows = []
    grid = sample_grid(sd_pipe, new_grid(resolved, "tiny", None), 4, on_rows=lambda seeds, images: rows.append(seeds))
    assert rows == [[11], [12, 13, 14]] and grid.seeds == [11, 12, 13, 14]
    assert grid.columns == ("without", "with", "phrased")
    assert grid.prompts["phrased"] == ("a red hat without blue", "")
    for i, seed in enumerate(grid.seeds):
        single = compare(sd_pipe, SETTINGS.replace(seed=seed), trace=False)
        assert np.abs(pixels(grid.images["without"][i]) - pixels(single.without_negative)).max() <= 2
        assert np.abs(pixels(grid.images["with"][i]) - pixels(single.with_negative)).max() <= 2
        phrased = compare(sd_pipe, SETTINGS.replace(seed=seed, prompt="a red hat without blue", negative=""))
        assert np.abs(pixels(grid.images["phrased"][i]) - pixels(phrased.without_negative)).max() <= 2
    assert np.abs(pixels(grid.images["phrased"][0]) - pixels(grid.images["without"][0])).max() > 10


def test_the_grid_uses_the_negatives_window_and_strength(sd_pipe):
    settings = SETTINGS.replace(negative_start=0.5, negative_strength=2.0)
    resolved, _ = prepare(sd_pipe, settings)
    grid = sample_grid(sd_pipe, new_grid(resolved, "tiny", False), 4)
    assert grid.columns == ("without", "with")
    single = compare(sd_pipe, settings.replace(seed=13), trace=False)
    assert np.abs(pixels(grid.images["with"][2]) - pixels(single.with_negative)).max() <= 2


def test_chunks_start_with_one_seed_and_respect_the_memory_bound():
    seeds = list(range(64))
    assert seed_chunks(seeds, 3, 8 * 8) == [[0], seeds[1:]]  # tiny latents: all the rest in one call
    sdxl = seed_chunks(seeds, 3, 128 * 128)  # SDXL at 1024 px: 3 runs a seed
    assert sdxl[0] == [0] and sum(map(len, sdxl)) == 64 and sorted(sum(sdxl, [])) == seeds
    assert all(len(chunk) * 3 * 128 * 128 <= MAX_BATCH_LATENT_PIXELS for chunk in sdxl[1:])
    assert max(map(len, sdxl[1:])) - min(map(len, sdxl[1:])) <= 1


def test_stop_ends_the_grid_between_steps(sd_pipe):
    resolved, _ = prepare(sd_pipe, SETTINGS)
    stop, steps = threading.Event(), []

    def on_step(done, total, record):
        steps.append(done)
        if done == 2:
            stop.set()

    with pytest.raises(GenerationCancelled):
        sample_grid(sd_pipe, new_grid(resolved, "tiny", None), 8, on_step=on_step, stop=stop)
    assert steps == [1, 2]


@pytest.mark.parametrize(
    ("count", "phrased", "message"),
    [
        (3, None, "seeds must be between 4 and 64, got 3"),
        (65, None, "seeds must be between 4 and 64, got 65"),
        ("many", None, "seeds must be a whole number, got 'many'"),
        (4.5, None, "seeds must be a whole number, got 4.5"),
        (True, None, "seeds must be a whole number, got True"),
        (8, "yes", "phrased must be true or false, got 'yes'"),
    ],
)
def test_bad_grid_inputs_get_a_message(count, phrased, message):
    with pytest.raises(InputError, match=message):
        resolve_grid(count, phrased)


def test_grid_inputs_and_the_phrased_default():
    assert resolve_grid(None, None) == (16, None) and resolve_grid("8", True) == (8, True)
    assert phrased_by_default("mustache") and phrased_by_default("a red hat")
    assert not phrased_by_default("") and not phrased_by_default("blurry, lowres, bad anatomy, worst quality")


@pytest.mark.parametrize(
    ("present", "total", "low", "high"),  # reference values: scipy.stats.binomtest(k, n).proportion_ci("wilson")
    [(0, 16, 0.0, 0.1936), (7, 16, 0.231, 0.6682), (16, 16, 0.8064, 1.0), (45, 96, 0.3721, 0.5678)],
)
def test_wilson_intervals(present, total, low, high):
    got = Rate(present, total).interval()
    assert got == pytest.approx((low, high), abs=1e-4)


def test_a_change_is_marked_only_when_its_interval_excludes_zero():
    low, high = difference_interval(Rate(7, 16), Rate(0, 16))
    assert high < 0 and low > -1
    low, high = difference_interval(Rate(7, 16), Rate(9, 16))
    assert low < 0 < high


@pytest.fixture(scope="module")
def seeds_events(tiny_sd_folder, tmp_path_factory) -> SeedsHandlers:
    config = AppConfig(default_model=str(tiny_sd_folder), models=[str(tiny_sd_folder)])
    return SeedsHandlers(make(config, tmp_path_factory))


def page_inputs(folder, **changes) -> dict:
    values = {"prompt": "a red hat", "negative": "blue", "seed": 5, "steps": 3, "width": 32, "height": 32}
    return {**values, "model": str(folder), "seed_count": 4, "phrased": True, **changes}


def named(values: tuple) -> dict:
    return {name: value for name, value in zip(SEEDS_OUTPUTS, values, strict=True) if not _skip(value)}


def _skip(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


def test_the_page_streams_rows_then_counts_clicks(seeds_events, tiny_sd_folder):
    ready, first, rest, final = (named(v) for v in collect(seeds_events.seeds_ui(**page_inputs(tiny_sd_folder))))
    assert "first seed" in ready["seeds_status"]
    assert len(first["grid_without"]["value"]) == 1 and len(rest["grid_with"]["value"]) == 4  # rows as they finish
    assert "1 seeds done" in first["seeds_status"]
    gallery = final["grid_with"]["value"]
    assert [caption for _, caption in gallery] == [f"seed {seed} ✗" for seed in (5, 6, 7, 8)]
    with Image.open(gallery[0][0]) as image:
        assert image.size == (32, 32)
    assert final["space"] is None  # no probe for this model: the user counts
    assert "blue**: no negative 0/4" in final["seeds_status"] and "Click each image" in final["seeds_status"]

    class Click:  # what Gradio passes for a click on the gallery's third image
        index = 2

    shown = final["marks"]
    gallery_update, status, space, effects, shown = seeds_events.toggler("with")(shown, Click())
    assert gallery_update["value"][2][1] == "seed 7 ✓"
    assert 'negative "blue" 1/4 (25 %' in status
    assert _skip(space) and _skip(effects)  # no probe: no plot or table to redraw
    _, status, *_ = seeds_events.toggler("with")(shown, Click())
    assert 'negative "blue" 0/4' in status
    assert seeds_events.toggler("with")(None, Click())[0].get("__type__") == "update"  # nothing shown yet: no-op


def test_bad_input_keeps_the_section_usable(seeds_events, tiny_sd_folder):
    (update,) = collect(seeds_events.seeds_ui(**page_inputs(tiny_sd_folder, seed_count=100)))[-1:]
    assert (
        "Could not run the seeds" in named(update)["seeds_status"]
        and "between 4 and 64" in named(update)["seeds_status"]
    )
    last = named(collect(seeds_events.seeds_ui(**page_inputs(tiny_sd_folder)))[-1])
    assert len(last["grid_with"]["value"]) == 4


@pytest.mark.skipif(not EMBEDDED_PRESENT, reason="embedded model not built")
def test_the_embedded_model_reads_rates_the_space_and_side_effects(tmp_path_factory):
    events = SeedsHandlers(make(AppConfig(), tmp_path_factory))
    values = {"prompt": "portrait photo of a man", "negative": "mustache", "seed": 0, "model": "embedded"}
    final = named(collect(events.seeds_ui(**values, steps=4, seed_count=4, phrased=None))[-1])
    status = final["seeds_status"]
    assert status.startswith("**mustache**: no negative") and '"…without mustache" in the prompt' in status
    assert final["space"].endswith(".png") and "| beard |" in final["effects"]
    assert [c for _, c in final["grid_with"]["value"]][0] in ("seed 0 ✓", "seed 0 ✗")

    class Click:
        index = 0

    # a click's mark moves the rate line, the sampling space and the side-effects table together
    before = final["marks"]["reading"].rate("with", "mustache").present
    _, status, space, effects, shown = events.toggler("with")(final["marks"], Click())
    after = shown["reading"].rate("with", "mustache").present
    assert abs(after - before) == 1 and f'negative "mustache" {after}/4' in status
    assert f"| mustache | {shown['reading'].rate('without', 'mustache').text()} | {after}/4" in effects
    assert space.endswith(".png") and space != final["space"]


@pytest.mark.slow
@pytest.mark.skipif(not EMBEDDED_PRESENT, reason="embedded model not built")
def test_many_seeds_rates_equal_the_evaluate_tool_on_seeds_0_to_63():
    """Same engine, same numbers: the page's grid (three columns, chunked) and `embedded_tools evaluate`."""
    from negprompt_demo.embedded_tools.evaluate import evaluate

    pipe = load_pipeline(None)
    resolved, _ = prepare(pipe, CompareSettings("portrait photo of a man", "mustache", seed=0))
    reading = grid_reading(sample_grid(pipe, new_grid(resolved, "embedded", None), 64))
    tool = evaluate("portrait photo of a man", "mustache", "mustache", list(range(64)))
    assert reading.rate("without", "mustache").share == pytest.approx(tool["rate_empty_negative"], abs=1e-4)
    assert reading.rate("with", "mustache").share == pytest.approx(tool["rate_with_negative"], abs=1e-4)
