"""The article's row on the first screen: one seed three ways from the engine, kept on disk, and a reading that only
says what was measured."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from negprompt_demo.page import article as article_module
from negprompt_demo.page.article import article_row, reading


def test_the_row_is_sampled_once_then_read_back(tiny_sd_folder, tmp_path, monkeypatch):
    values = {"prompt": "Portrait photo of a man.", "negative": "mustache", "seed": 3, "steps": 3}
    row = article_row(str(tiny_sd_folder), values, tmp_path / "article")
    assert list(row.pictures) == ["without", "phrased", "with"]  # the article's order
    assert row.prompts == {
        "without": ["Portrait photo of a man.", ""],
        "phrased": ["Portrait photo of a man without mustache.", ""],
        "with": ["Portrait photo of a man.", "mustache"],
    }
    pixels = {column: np.asarray(Image.open(path)) for column, path in row.pictures.items()}
    assert not np.array_equal(pixels["without"], pixels["with"])
    assert not np.array_equal(pixels["without"], pixels["phrased"])
    assert row.seed == 3 and "Compare the middle image with the right one" in row.reading  # no probe: no claim
    assert "without mustache" in row.caption("phrased") and "negative “mustache”" in row.caption("with")

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled again although the row is on disk")

    monkeypatch.setattr(article_module, "stream", no_sampling)
    again = article_row(str(tiny_sd_folder), values, tmp_path / "article")  # a restart
    assert again.prompts == row.prompts and again.reading == row.reading


@pytest.mark.parametrize(
    ("seen", "verdict"),
    [
        ([True, True, False], "did not remove it, the negative prompt did"),
        ([True, False, False], "do not split as in the article's case"),
    ],
)
def test_the_reading_says_what_the_probe_saw(monkeypatch, seen, verdict):
    monkeypatch.setattr(article_module, "probed_attribute", lambda model, negative: "mustache")
    monkeypatch.setattr(article_module, "attribute_present", lambda attribute, images: seen)
    images = dict.fromkeys(("without", "phrased", "with"))
    text = reading("embedded", "mustache", images)
    assert verdict in text
    assert "no negative prompt: a mustache" in text and 'negative prompt "mustache": no mustache' in text
