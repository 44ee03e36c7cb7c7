"""The attention-map evidence on the embedded model (docs/ATTENTION.md), on the first 8 held-out seeds that show a
mustache without the negative prompt: where the negative word "mustache" looks vs where the mustache is drawn."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EMBEDDED_PRESENT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not EMBEDDED_PRESENT, reason="the embedded model is not in this checkout"),
]

# The study's first 8 seeds for "mustache" (`attention_study.present_seeds`: from 7000 on, a mustache without the
# negative prompt); listed here to spare the test the 32-seed search, and checked with the probe below.
SEEDS = (7000, 7001, 7004, 7006, 7007, 7009, 7012, 7013)


@pytest.fixture(scope="module")
def mustache():
    from negprompt_demo.embedded.probe import Probe
    from negprompt_demo.embedded_tools.attention_study import seed_maps, summarize
    from negprompt_demo.embedded_tools.evaluate import sampling_settings
    from negprompt_demo.loading import load_pipeline

    pipe = load_pipeline(None)
    sampling = sampling_settings(pipe)
    runs = [seed_maps(pipe, "mustache", seed, sampling) for seed in SEEDS]
    assert Probe().predict([run.without for run in runs])["mustache"].all(), "a seed shows no mustache without it"
    return summarize("mustache", runs)


def test_the_mustache_word_looks_at_the_mustache(mustache):
    """What the maps do show (64 seeds in docs/ATTENTION.md): the map's peak lies on the mustache, its mass is
    well above uniform there and is specific to the mustache: not on the hat or the glasses, and more than the
    prompt's "man" puts on the same box."""
    assert mustache["peak_in_box"] >= 0.75
    assert mustache["concentration_mean"] >= 1.5
    assert mustache["concentration_mean"] > 1.3 * max(mustache["on_other_boxes"].values())
    assert mustache["concentration_mean"] > mustache["control_word_on_box"]
    per_step = np.array(mustache["per_step_mean"])
    assert per_step[-5:].mean() > per_step[:5].mean()  # the map sharpens as the face forms


@pytest.mark.xfail(
    strict=True,
    reason="the issue's goal (≥ 2× uniform on the mustache box) is not met: 1.97× over 64 seeds, 1.87× on these "
    "8 (docs/ATTENTION.md); this fails once it is, so the docs get updated",
)
def test_the_mustache_word_concentrates_twice_as_much_as_uniform(mustache):
    assert mustache["concentration_mean"] >= 2.0
