"""The many-seeds view: the grid's columns equal single comparisons and plain runs, chunks and streaming, the rates
with their intervals and the grid's input checks (the page's section is in tests/unit/page/test_seeds_view.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from negprompt_demo.models.loading import load_pipeline
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
from tests.support.paths import EMBEDDED_PRESENT

SETTINGS = CompareSettings("a red hat", "blue", seed=11, steps=4, width=32, height=32)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_every_column_equals_its_own_run(sd_pipe):
    prepared = prepare(sd_pipe, SETTINGS)
    resolved = prepared.settings
    rows = []
    grid = sample_grid(
        sd_pipe, prepared, new_grid(resolved, "tiny", None), 4, on_rows=lambda seeds, images: rows.append(seeds)
    )
    assert rows == [[11], [12, 13, 14]] and grid.seeds == [11, 12, 13, 14]
    assert grid.columns == ("without", "phrased", "with")
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
    prepared = prepare(sd_pipe, settings)
    resolved = prepared.settings
    grid = sample_grid(sd_pipe, prepared, new_grid(resolved, "tiny", False), 4)
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
    prepared = prepare(sd_pipe, SETTINGS)
    resolved = prepared.settings
    stop, steps = threading.Event(), []

    def on_step(done, total, record):
        steps.append(done)
        if done == 2:
            stop.set()

    with pytest.raises(GenerationCancelled):
        sample_grid(sd_pipe, prepared, new_grid(resolved, "tiny", None), 8, on_step=on_step, stop=stop)
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


@pytest.mark.slow
@pytest.mark.skipif(not EMBEDDED_PRESENT, reason="embedded model not built")
def test_many_seeds_rates_equal_the_evaluate_tool_on_seeds_0_to_63():
    """Same engine, same numbers: the page's grid (three columns, chunked) and `embedded_tools evaluate`."""
    from negprompt_demo.embedded_tools.evaluate import evaluate

    pipe = load_pipeline(None)
    prepared = prepare(pipe, CompareSettings("portrait photo of a man", "mustache", seed=0))
    resolved = prepared.settings
    reading = grid_reading(sample_grid(pipe, prepared, new_grid(resolved, "embedded", None), 64))
    tool = evaluate("portrait photo of a man", "mustache", "mustache", list(range(64)))
    assert reading.rate("without", "mustache").share == pytest.approx(tool["rate_empty_negative"], abs=1e-4)
    assert reading.rate("with", "mustache").share == pytest.approx(tool["rate_with_negative"], abs=1e-4)
