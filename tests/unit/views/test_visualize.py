"""Trace → pictures: enlarged crisp images, overlays, curves, the reading text, the side-by-side picture."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from negprompt_demo.models.previews import fill_previews
from negprompt_demo.sampling.engine import compare
from negprompt_demo.settings import CompareSettings
from negprompt_demo.views import visualize
from negprompt_demo.views.legends import step_legend


@pytest.fixture(scope="module")
def comparison(sd_pipe):
    result = compare(sd_pipe, CompareSettings("portrait photo of a man", "mustache", seed=3, steps=8, push_map=True))
    fill_previews(sd_pipe, result.trace.steps)
    return result


def test_enlarge_keeps_pixels_crisp():
    image = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8))
    big = visualize.enlarge(image, 256)
    assert big.size == (512, 256)  # the short side reaches 256 by a whole factor
    assert set(np.unique(np.asarray(big))) == {0, 255}  # nearest neighbour: no blended greys


def test_step_views_and_legend(comparison):
    views = visualize.step_views(comparison.trace, 3)
    branches = {"branch_prompt", "branch_empty", "branch_negative"}  # recorded with the push map
    assert set(views) == {"x0_without", "x0_with", "guidance_without", "guidance_with", "push", *branches}
    assert all(min(view.size) >= 256 for view in views.values())
    assert np.asarray(views["guidance_with"]).std() > 0
    legend = step_legend(comparison.trace)  # guidance scale and, as the push map was recorded, the push scale
    assert legend.size[0] == 320 and legend.size[1] > 100
    peaks = [float(step.guidance_map.float().max()) for step in comparison.trace.steps]
    assert visualize.guidance_vmax(comparison.trace) == pytest.approx(max(peaks), rel=1e-3)


def test_difference_heatmap(comparison):
    heat, peak = visualize.difference_heatmap(comparison.without_negative, comparison.with_negative)
    assert peak > 0 and min(heat.size) >= 256
    _, same = visualize.difference_heatmap(comparison.with_negative, comparison.with_negative)
    assert same == 0


def test_curves_mark_the_chosen_step(comparison):
    curves = visualize.curves_picture(comparison.trace)
    assert len(curves.step_x) == len(comparison.trace.steps) and len(curves.spans) == 3
    assert curves.step_x == sorted(curves.step_x)  # steps run left to right
    base, marked = np.asarray(curves.image), np.asarray(curves.marked(4))
    changed = np.nonzero((base != marked).any(axis=2))
    assert set(changed[1]) <= set(range(curves.step_x[4] - 1, curves.step_x[4] + 2))  # only around step 5's column
    assert len(set(changed[0])) > 0.8 * sum(bottom - top for top, bottom in curves.spans)  # across every axis


def test_describe_reads_the_curves(comparison, sd_pipe):
    text = visualize.describe(comparison.trace)
    assert "The runs part at step" in text and "The negative prompt moves the predicted image most" in text
    same = compare(sd_pipe, CompareSettings("portrait photo of a man", "", seed=3, steps=4))
    assert "never part" in visualize.describe(same.trace)
    off = compare(sd_pipe, CompareSettings("portrait photo of a man", "mustache", seed=3, steps=4, guidance=1))
    assert "guidance was off" in visualize.describe(off.trace)


def test_side_by_side_and_frames(comparison):
    picture = visualize.side_by_side(comparison)
    assert picture.width > 2 * 384 and picture.height > 384
    frames = visualize.step_frames(comparison.trace, "mustache")
    assert len(frames) == 8 and frames[0].size == frames[-1].size
