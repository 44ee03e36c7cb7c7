"""Why might my negative do nothing? Each diagnosis fires on its cause and stays quiet otherwise, and reaches the
run's warnings (status and trace JSON)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from diffusers import StableDiffusionPipeline

from negprompt_demo.models.loading import load_pipeline
from negprompt_demo.sampling.diagnostics import distilled_reason, negative_diagnostics, repeated_words, unseen_words
from negprompt_demo.sampling.engine import compare, prepare
from negprompt_demo.settings import CompareSettings
from negprompt_demo.views.export import trace_document
from tests.support.paths import EMBEDDED_PRESENT


def settings(**changes) -> CompareSettings:
    values = {"prompt": "portrait photo of a man", "negative": "mustache", "seed": 1, "steps": 2, "guidance": 7.5}
    return CompareSettings(**{**values, **changes})


@pytest.mark.skipif(not EMBEDDED_PRESENT, reason="embedded model not built")
def test_words_the_embedded_model_never_saw_are_named():
    pipe = load_pipeline(None)
    assert unseen_words(pipe, "blurry, lowres, mustache, Bad-Anatomy") == ["blurry", "lowres", "bad-anatomy"]
    assert unseen_words(pipe, "a red hat, mustache") == []
    warnings = prepare(pipe, settings(negative="blurry, lowres")).warnings
    assert any('never saw "blurry", "lowres" in training' in warning for warning in warnings)


def test_words_unseen_are_only_checked_for_the_embedded_model(sd_pipe):
    assert unseen_words(sd_pipe, "blurry") == []


def test_a_negative_that_repeats_the_prompt_is_named(sd_pipe):
    assert repeated_words("portrait photo of a man with a mustache", "mustache, a hat") == ["mustache"]
    assert repeated_words("portrait photo of a man", "a photo, blurry") == []  # function words do not count
    result = compare(sd_pipe, settings(prompt="a man with a red hat", negative="red hat"), trace=False)
    assert any('repeats "red", "hat" from the prompt' in warning for warning in result.warnings)
    assert not any("repeats" in warning for warning in compare(sd_pipe, settings(), trace=False).warnings)


class StandIn(StableDiffusionPipeline):
    """An SD pipeline of no weights: a UNet configuration and a name are all the checks read."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


def stand_in(unet_config: dict, name: str) -> StandIn:
    return StandIn(unet=SimpleNamespace(config=unet_config), _internal_dict={"_name_or_path": name})


def test_guidance_distilled_models_are_named(sd_pipe):
    lcm = stand_in({"time_cond_proj_dim": 256}, "x")
    assert "LCM" in distilled_reason(lcm)
    turbo = stand_in({}, "stabilityai/sdxl-turbo")
    assert "turbo model" in distilled_reason(turbo)
    assert distilled_reason(sd_pipe) is None
    notes = negative_diagnostics(turbo, settings(guidance=0.0))
    assert any("not used at all" in note for note in notes)
    assert any("images often burn" in note for note in negative_diagnostics(turbo, settings(guidance=7.0)))
    assert any("not used at all" in note for note in negative_diagnostics(lcm, settings(guidance=7.0)))


def test_distilled_models_are_offered_nag(sd_pipe):
    turbo = stand_in({}, "stabilityai/sdxl-turbo")
    notes = negative_diagnostics(turbo, settings(guidance=0.0))
    assert any("not used at all" in note and "to nag" in note and "use NAG" in note for note in notes)
    with_nag = negative_diagnostics(turbo, settings(guidance=0.0, negative_mode="nag"))
    assert not any("not used at all" in note for note in with_nag)


def test_sdxl_says_which_baseline_the_run_without_used(sdxl_pipe):
    result = compare(sdxl_pipe, settings(guidance=5.0), trace=False)
    note = next(warning for warning in result.warnings if "zero embeddings" in warning)
    assert "A1111 and ComfyUI" in note and note in trace_document(result)["warnings"]
    assert not any("zero embeddings" in w for w in negative_diagnostics(sdxl_pipe, settings(empty_as_text=True)))
    assert not any("zero embeddings" in w for w in negative_diagnostics(sdxl_pipe, settings(negative="")))


@pytest.mark.skipif(not EMBEDDED_PRESENT, reason="embedded model not built")
def test_syntax_is_not_taken_for_words_on_the_embedded_model():
    """Weights, brackets, escapes and BREAK are A1111 syntax the encoder never reads as words: "(mustache:1.4)"
    has no unseen "1", "4"; only the words inside the syntax are checked."""
    pipe = load_pipeline(None)
    schedules = ("[mustache:0.3]", "[hat::0.6]", "[[mustache:hat:0.25]::12]", "[mustache|hat]")  # prompt editing
    for negative in ("(mustache:1.4)", "[[mustache]], (hat:0.8) BREAK glasses", "\\(mustache\\)", *schedules):
        warnings = prepare(pipe, settings(negative=negative)).warnings
        assert not any("never saw" in warning for warning in warnings), (negative, warnings)
    warnings = prepare(pipe, settings(negative="(blurry:1.4), mustache BREAK [lowres]")).warnings
    unseen = next(warning for warning in warnings if "never saw" in warning)
    assert 'never saw "blurry", "lowres" in training' in unseen
    warnings = prepare(pipe, settings(negative="[mustache:blurry:0.5]", steps=20)).warnings  # "blurry" from step 11 on
    assert any('never saw "blurry" in training' in warning for warning in warnings)
    warnings = prepare(
        pipe, settings(prompt="portrait photo of a man with a (mustache:1.2)", negative="(mustache:1.5)")
    ).warnings
    assert any('repeats "mustache" from the prompt' in warning for warning in warnings)


def test_read_words_drops_only_syntax():
    from negprompt_demo.sampling.diagnostics import read_words

    assert read_words("(mustache:1.4)").split() == ["mustache"]
    # prompt editing: "blurry" is read from step 11 of 20 on (A1111's [to:when]); at 2 steps the switch (after
    # step int(0.5·2) = 1) comes too late; at 1 step it is int(0.5) = 0, which A1111 drops: "blurry" from the start
    words = set(read_words("((red hat)), [blurry:0.5] BREAK lowres", 20).split())
    assert words == {"red", "hat", ",", "blurry", "lowres"}
    assert read_words("((red hat)), [blurry:0.5] BREAK lowres", 2).split() == ["red", "hat", ",", "lowres"]
    assert read_words("((red hat)), [blurry:0.5] BREAK lowres", 1).split() == ["red", "hat", ",", "blurry", "lowres"]
    assert read_words("ratio 16:9") == "ratio 16:9"  # a ":" outside "(…:number)" is text, as A1111 reads it


def test_sd3_names_every_encoder_that_cuts_and_the_words_it_loses(sd3_pipe):
    """SD3's two CLIPs read 75 tokens, T5 255 (the tiny tokenizers: one token per letter). A 94-token prompt: both
    CLIPs lose its last four words (one sentence names both), T5 reads it all; the warning is a run warning like
    the others (status and trace JSON). diffusers' own log agrees on what CLIP cuts."""
    prompt = "portrait photo of a man with a mustache and " + "x" * 40 + " zebra stripes and dots"  # 35+40+19
    result = compare(sd3_pipe, settings(prompt=prompt, negative="hat", guidance=4.5, steps=1), trace=False)
    cut = [warning for warning in result.warnings if "were cut" in warning]
    assert cut == [
        "The prompt is 94 tokens long for CLIP ViT-L and OpenCLIP bigG, which read only 75; these words were cut "
        'from their pooled vector and their part of the sequence: "zebra stripes and dots". T5 reads further and '
        "reads them."
    ]
    assert cut[0] in trace_document(result)["warnings"]
    long_negative = " ".join(["hat"] * 25)  # 75 CLIP tokens exactly: nothing cut; one more word is cut whole
    assert not [w for w in prepare(sd3_pipe, settings(negative=long_negative, guidance=4.5)).warnings if "cut" in w]
    warnings = prepare(sd3_pipe, settings(negative=long_negative + " mustache", guidance=4.5)).warnings
    assert [w for w in warnings if "were cut" in w][0].startswith("The negative prompt is 83 tokens long")
    assert any(w.endswith('sequence: "mustache". T5 reads further and reads them.') for w in warnings)
    very_long = "a" * 254 + " zebra"  # T5 ("▁" + a letter each) cuts too: a sentence for the CLIPs, one for T5
    warnings = [w for w in prepare(sd3_pipe, settings(prompt=very_long, guidance=4.5)).warnings if "were cut" in w]
    assert len(warnings) == 2 and warnings[0].endswith("T5 reads further, but cuts too (below).")
    assert warnings[1] == (
        'The prompt is 261 tokens long for T5, which reads only 255; these words were cut from the sequence: "zebra".'
    )


def test_sdxl_names_the_words_its_pooled_vector_does_not_read(sdxl_pipe):
    """SDXL reads a long text in chunks (nothing cut from the sequence), but its pooled vector is the first
    chunk's: the words after it are named, for the prompt and the negative (after BREAK too)."""
    long_prompt = "portrait photo of a man with " + "x" * 60 + " zebra stripes"  # 23 + 60 + 12 letters: 2 chunks
    result = compare(sdxl_pipe, settings(prompt=long_prompt, negative="(hat:1.2) BREAK mustache", guidance=5.0))
    pooled = [warning for warning in result.warnings if "pooled text vector" in warning]
    assert len(pooled) == 2 and pooled[0].endswith('words after it ("xxxxxxxx zebra stripes") steer the image '
                                                    "through cross-attention alone.")  # fmt: skip
    assert "negative prompt's first chunk" in pooled[1] and '("mustache")' in pooled[1]
    assert pooled[0] in trace_document(result)["warnings"]
    assert not [w for w in negative_diagnostics(sdxl_pipe, settings(guidance=5.0)) if "pooled" in w]
