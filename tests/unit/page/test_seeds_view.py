"""The many-seeds section of the page (page/seeds_view.py): rows streamed as they finish, a click marks an image and
moves the rates, bad input keeps the section usable; on the embedded model the probe reads the rates, the sampling
space and the side effects."""

from __future__ import annotations

import pytest
from PIL import Image

from negprompt_demo.page.app_config import AppConfig
from negprompt_demo.page.seeds_view import SEEDS_OUTPUTS, SeedsHandlers
from tests.support.handler_calls import collect, make
from tests.support.paths import EMBEDDED_PRESENT


@pytest.fixture(scope="module")
def seeds_events(config, tmp_path_factory) -> SeedsHandlers:
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
    before = final["marks"].reading.rate("with", "mustache").present
    _, status, space, effects, shown = events.toggler("with")(final["marks"], Click())
    after = shown.reading.rate("with", "mustache").present
    assert abs(after - before) == 1 and f'negative "mustache" {after}/4' in status
    assert f"| mustache | {shown.reading.rate('without', 'mustache').text()} | {after}/4" in effects
    assert space.endswith(".png") and space != final["space"]
