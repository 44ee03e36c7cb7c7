"""The page's examples (page/examples.py): the examples file opens with the article's case, the example cache folder
follows the weights and the file, and the first example on the embedded model shows two different images."""

from __future__ import annotations

import asyncio
import copy

import numpy as np
import pytest
import torch

from negprompt_demo.page import examples as example_module
from negprompt_demo.page.app import build_app
from negprompt_demo.page.app_config import AppConfig
from negprompt_demo.page.examples import EXAMPLES_FILE, example_cache_folder, example_rows
from negprompt_demo.page.handlers import EXAMPLE_NAMES
from negprompt_demo.runner import model_info, model_info_of, weights_fingerprint
from negprompt_demo.settings import EMBEDDED
from tests.support.handler_calls import make, named, pixels
from tests.support.paths import EMBEDDED_PRESENT


def test_examples_file_starts_with_the_articles_case():
    rows, labels = example_rows(
        EXAMPLES_FILE, {"steps": 25, "guidance": 7.5, "scheduler": "Euler", "width": 64, "height": 64}, "embedded"
    )
    first, second = (dict(zip(EXAMPLE_NAMES, row, strict=True)) for row in rows[:2])
    assert (first["prompt"], first["negative"]) == ("Portrait photo of a man.", "mustache")
    assert "without mustache" in second["prompt"]
    assert len(rows) == len(labels) >= 4 and all(row[EXAMPLE_NAMES.index("model")] == "embedded" for row in rows)


def test_example_cache_folder_follows_the_weights_and_the_examples_file(sd_pipe, tmp_path, monkeypatch):
    """A retrained model or edited examples get a fresh example cache; nothing else moves it."""
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "cache"))
    examples = tmp_path / "examples.json"
    examples.write_bytes(EXAMPLES_FILE.read_bytes())
    monkeypatch.setattr(example_module, "EXAMPLES_FILE", examples)
    pipe = copy.deepcopy(sd_pipe)

    def cache_folder(pipe):
        return example_cache_folder(model_info_of(pipe).label, weights_fingerprint(pipe))

    original = cache_folder(pipe)
    assert original.parent == tmp_path / "cache"
    assert cache_folder(pipe) == original
    assert cache_folder(sd_pipe) == original  # equal weights in another object: the same cache

    for component in ("unet", "vae", "text_encoder"):
        parameter = list(getattr(pipe, component).parameters())[-1]  # not the first tensor: every one counts
        with torch.no_grad():
            kept = parameter.view(-1)[0].item()
            parameter.view(-1)[0] += 0.25
            try:
                assert cache_folder(pipe) != original, f"a changed {component} weight"
            finally:
                parameter.view(-1)[0] = kept
        assert cache_folder(pipe) == original

    text = examples.read_text(encoding="utf-8")
    examples.write_text(text.replace("mustache", "beard", 1), encoding="utf-8")
    assert cache_folder(pipe) != original, "edited examples"
    examples.write_text(text, encoding="utf-8")
    assert cache_folder(pipe) == original


@pytest.mark.slow
@pytest.mark.skipif(not EMBEDDED_PRESENT, reason="the embedded model has not been trained into the package yet")
def test_first_example_on_the_embedded_model_shows_two_different_images(tmp_path, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path))
    config = AppConfig()
    build_app(config)
    defaults = model_info(EMBEDDED).defaults
    rows, _ = example_rows(EXAMPLES_FILE, defaults, config.default_model)
    final = named(asyncio.run(make(config, tmp_path_factory).compare_example(*rows[0])))
    assert not np.array_equal(pixels(final["image_without"]), pixels(final["image_with"]))
    assert final["trace_id"].startswith("example-")  # stored beside the example cache, readable by every session
    assert final["x0_with"] is not None and "step" in final["reading"]
