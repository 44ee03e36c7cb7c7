"""Why might my negative do nothing? Each diagnosis fires on its cause and stays quiet otherwise, and reaches the
run's warnings (status and trace JSON)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from conftest import EMBEDDED_PRESENT

from negprompt_demo.diagnostics import distilled_reason, negative_diagnostics, repeated_words, unseen_words
from negprompt_demo.embedded.faces import caption, caption_vocabulary, caption_words, draw_portrait
from negprompt_demo.engine import compare, prepare
from negprompt_demo.export import trace_document
from negprompt_demo.loading import load_pipeline
from negprompt_demo.settings import CompareSettings


def settings(**changes) -> CompareSettings:
    values = {"prompt": "portrait photo of a man", "negative": "mustache", "seed": 1, "steps": 2, "guidance": 7.5}
    return CompareSettings(**{**values, **changes})


def test_the_caption_vocabulary_holds_every_word_a_caption_can_write():
    rng = random.Random(0)
    vocabulary = caption_vocabulary()
    for _ in range(3000):
        words = caption_words(caption(draw_portrait(rng), rng))
        assert set(words) <= vocabulary, set(words) - vocabulary
    assert {"mustache", "hat", "without", "purple"} <= vocabulary and "blurry" not in vocabulary


@pytest.mark.skipif(not EMBEDDED_PRESENT, reason="embedded model not built")
def test_words_the_embedded_model_never_saw_are_named():
    pipe = load_pipeline(None)
    assert unseen_words(pipe, "blurry, lowres, mustache, Bad-Anatomy") == ["blurry", "lowres", "bad-anatomy"]
    assert unseen_words(pipe, "a red hat, mustache") == []
    _, warnings = prepare(pipe, settings(negative="blurry, lowres"))
    assert any('never saw "blurry", "lowres" in training' in warning for warning in warnings)


def test_words_unseen_are_only_checked_for_the_embedded_model(sd_pipe):
    assert unseen_words(sd_pipe, "blurry") == []


def test_a_negative_that_repeats_the_prompt_is_named(sd_pipe):
    assert repeated_words("portrait photo of a man with a mustache", "mustache, a hat") == ["mustache"]
    assert repeated_words("portrait photo of a man", "a photo, blurry") == []  # function words do not count
    result = compare(sd_pipe, settings(prompt="a man with a red hat", negative="red hat"), trace=False)
    assert any('repeats "red", "hat" from the prompt' in warning for warning in result.warnings)
    assert not any("repeats" in warning for warning in compare(sd_pipe, settings(), trace=False).warnings)


def test_guidance_distilled_models_are_named(sd_pipe):
    lcm = SimpleNamespace(unet=SimpleNamespace(config={"time_cond_proj_dim": 256}), config={}, name_or_path="x")
    assert "LCM" in distilled_reason(lcm)
    turbo = SimpleNamespace(unet=SimpleNamespace(config={}), config={}, name_or_path="stabilityai/sdxl-turbo")
    assert "turbo model" in distilled_reason(turbo)
    assert distilled_reason(sd_pipe) is None
    notes = negative_diagnostics(turbo, settings(guidance=0.0))
    assert any("not used at all" in note for note in notes)
    assert any("images often burn" in note for note in negative_diagnostics(turbo, settings(guidance=7.0)))
    assert any("not used at all" in note for note in negative_diagnostics(lcm, settings(guidance=7.0)))


def test_distilled_models_are_offered_nag(sd_pipe):
    turbo = SimpleNamespace(unet=SimpleNamespace(config={}), config={}, name_or_path="stabilityai/sdxl-turbo")
    notes = negative_diagnostics(turbo, settings(guidance=0.0))
    assert any("not used at all" in note and "to nag: Normalized Attention Guidance" in note for note in notes)
    with_nag = negative_diagnostics(turbo, settings(guidance=0.0, negative_mode="nag"))
    assert not any("not used at all" in note for note in with_nag)


def test_sdxl_says_which_baseline_the_run_without_used(sdxl_pipe):
    result = compare(sdxl_pipe, settings(guidance=5.0), trace=False)
    note = next(warning for warning in result.warnings if "zero embeddings" in warning)
    assert "A1111 and ComfyUI" in note and note in trace_document(result)["warnings"]
    assert not any("zero embeddings" in w for w in negative_diagnostics(sdxl_pipe, settings(empty_as_text=True)))
    assert not any("zero embeddings" in w for w in negative_diagnostics(sdxl_pipe, settings(negative="")))
