"""The attention-map evidence on the embedded model (docs/ATTENTION.md), on the first 8 held-out seeds that show a
mustache without the negative prompt: where the negative word "mustache" looks vs where the mustache is drawn, with
DAAM's layers (the page's default) and with the mid block added (the option)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.paths import EMBEDDED_PRESENT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not EMBEDDED_PRESENT, reason="the embedded model is not in this checkout"),
]

# The study's first 8 seeds for "mustache" (`attention_study.present_seeds`: from 7000 on, a mustache without the
# negative prompt); listed here to spare the test the 32-seed search, and checked with the probe below.
SEEDS = (7000, 7001, 7004, 7006, 7007, 7009, 7012, 7013)


@pytest.fixture(scope="module")
def mustache():
    """The study's numbers on these seeds, by layer set ("daam", "with_mid_block")."""
    from negprompt_demo.embedded.probe import Probe
    from negprompt_demo.embedded_tools.attention_study import LAYER_SETS, seed_maps, summarize
    from negprompt_demo.embedded_tools.evaluate import sampling_settings
    from negprompt_demo.models.loading import load_pipeline

    pipe = load_pipeline(None)
    sampling = sampling_settings(pipe)
    numbers = {}
    for key, mid_block in LAYER_SETS.items():
        runs = [seed_maps(pipe, "mustache", seed, sampling, mid_block) for seed in SEEDS]
        assert Probe().predict([run.without for run in runs])["mustache"].all(), "a seed shows no mustache without it"
        numbers[key] = summarize("mustache", runs)
    return numbers


def test_the_mustache_word_looks_at_the_mustache_on_daams_layers(mustache):
    """What DAAM's maps show (64 seeds in docs/ATTENTION.md): the map's peak lies on the mustache, its mass is well
    above uniform there and specific to the mustache (more than on the hat or the glasses box, and more than the
    prompt's "man" puts on the same box), and it sharpens as the face forms."""
    daam = mustache["daam"]
    assert daam["peak_in_box"] >= 0.75
    assert daam["concentration_mean"] >= 1.5
    assert daam["concentration_mean"] > 1.2 * max(daam["on_other_boxes"].values())
    assert daam["concentration_mean"] > 1.2 * daam["control_word_on_box"]
    per_step = np.array(daam["per_step_mean"])
    assert per_step[-5:].mean() > per_step[:5].mean()


def test_the_mid_block_concentrates_every_word_on_the_face_centre(mustache):
    """The 4×4 mid block (a cell is 16 px of the 64 px image, as tall as the mustache box) raises the concentration,
    but it raises the prompt's "man" on the same box even more: part of what it adds is the centre of the face,
    not the mustache."""
    daam, mid = mustache["daam"], mustache["with_mid_block"]
    assert mid["concentration_mean"] > daam["concentration_mean"]
    gain = mid["concentration_mean"] - daam["concentration_mean"]
    assert mid["control_word_on_box"] - daam["control_word_on_box"] > gain


@pytest.mark.xfail(
    strict=True,
    reason="the issue's goal (≥ 2× uniform on the mustache box, judged on DAAM's layers) is not met: 1.73× over "
    "64 seeds, 1.71× on these 8 (docs/ATTENTION.md); this fails once it is, so the docs get updated",
)
def test_the_mustache_word_concentrates_twice_as_much_as_uniform_on_daams_layers(mustache):
    assert mustache["daam"]["concentration_mean"] >= 2.0
