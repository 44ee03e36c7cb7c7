"""Prompts as A1111 reads them, in tokens (models/prompts.py): chunks of 75 tokens, the encoding of each with its
weights, and long prompts and negatives in the one paired call (the tiny tokenizer reads one character per token;
the weights' syntax itself is in tests/unit/syntax/test_prompt_syntax.py)."""

from __future__ import annotations

import numpy as np
import torch

from negprompt_demo.models.prompts import encode_runs, encode_text, read_prompt, tokenize_chunks
from negprompt_demo.sampling.engine import compare
from negprompt_demo.settings import CompareSettings

PROMPT, SEED, STEPS = "portrait photo of a man", 1234, 4


def test_break_inside_brackets_is_one_chunk_with_the_token_break(sd_pipe):
    tokenizer = sd_pipe.tokenizer
    chunks = tokenize_chunks(tokenizer, "(ab BREAK cd)", None)
    assert len(chunks) == 1 and chunks[0].weights.count(-1.1) == len(
        tokenizer("BREAK", add_special_tokens=False).input_ids
    )


def test_chunks_of_75_with_comma_backtrack(sd_pipe):
    tokenizer = sd_pipe.tokenizer
    long = tokenize_chunks(tokenizer, "a" * 100, None)
    assert [len(chunk.ids) for chunk in long] == [75, 25]
    # a chunk that would end within 20 tokens after a comma ends after the comma instead (A1111's backtrack)
    comma = tokenize_chunks(tokenizer, "a" * 70 + ", " + "b" * 10, None)
    assert [len(chunk.ids) for chunk in comma] == [71, 10]
    assert tokenizer.decode(comma[0].ids[-1:]) == ","
    assert [len(chunk.ids) for chunk in tokenize_chunks(tokenizer, "ab BREAK cd", None)] == [2, 2]
    weighted = tokenize_chunks(tokenizer, "ab (cd:1.5)", None)[0]
    assert weighted.weights == [1.0, 1.0, 1.5, 1.5]


def encoded_plain(pipe, text: str) -> torch.Tensor:
    return pipe.encode_prompt(text, "cpu", 1, False)[0]


def test_unweighted_chunk_equals_diffusers_encoding(sd_pipe):
    """The chunked path encodes a chunk exactly as diffusers encodes a prompt (start, end, padding)."""
    hidden, _ = encode_text(sd_pipe, "(a photo of a cat:1)", None)  # syntax, so the chunked path; weight 1
    assert torch.equal(hidden, encoded_plain(sd_pipe, "a photo of a cat"))


def test_weights_scale_token_vectors_then_restore_the_mean(sdxl_pipe):
    """A1111's "Original" emphasis, in each SDXL text encoder: each token's output vector times its weight, then
    the chunk's mean restored."""
    hidden, _ = encode_text(sdxl_pipe, "ab (cd:1.5)", None)
    plain = sdxl_pipe.encode_prompt("ab cd", device="cpu", do_classifier_free_guidance=False)[0]  # same tokens
    weights = torch.ones(77)
    weights[3:5] = 1.5  # after the start token and "ab"
    for half in (slice(0, 32), slice(32, 64)):  # text_encoder, text_encoder_2
        expected = plain[..., half] * weights[None, :, None]
        expected = expected * (plain[..., half].mean() / expected.mean())
        assert torch.allclose(hidden[..., half], expected, atol=1e-5)
    assert not torch.allclose(hidden, plain, atol=1e-3)


def test_weights_without_mean_restore_where_the_mean_is_near_zero(sd_pipe):
    """The tiny SD text encoder's output has mean ~1e-9 (LayerNorm without bias): restoring it would divide rounding
    noise by rounding noise, so the weights apply alone (A1111's "No norm")."""
    hidden, _ = encode_text(sd_pipe, "ab (cd:1.5)", None)
    plain = encoded_plain(sd_pipe, "ab cd")
    weights = torch.ones(77)
    weights[3:5] = 1.5
    assert torch.allclose(hidden, plain * weights[None, :, None], atol=1e-6)


def test_long_text_is_chunks_each_encoded_alone(sd_pipe):
    text = "a" * 75 + " " + "b" * 10
    hidden, _ = encode_text(sd_pipe, text, None)
    assert hidden.shape == (1, 154, 32)
    assert torch.equal(hidden[:, :77], encoded_plain(sd_pipe, "a" * 75))
    assert torch.equal(hidden[:, 77:], encoded_plain(sd_pipe, "b" * 10))


def test_plain_prompts_take_diffusers_own_path(sd_pipe, monkeypatch):
    calls = []
    original = sd_pipe.encode_prompt
    monkeypatch.setattr(sd_pipe, "encode_prompt", lambda *a, **k: calls.append(k["prompt"]) or original(*a, **k))
    from negprompt_demo.models.prompts import RunText

    encode_runs(sd_pipe, [RunText(PROMPT, ""), RunText(PROMPT, "mustache, hat")], 1, True)
    assert sorted(calls) == sorted([PROMPT, "", "mustache, hat"])
    assert read_prompt(sd_pipe, "mustache, hat").plain


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def plain_embeds_call(pipe, prompt_embeds, negative_embeds, guidance=7.5, **extra):
    image = pipe(
        prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative_embeds,
        generator=torch.Generator().manual_seed(SEED),
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        width=32,
        height=32,
        output_type="np",
        **extra,
    ).images[0]
    return (image * 255).round().astype(np.int16)


def test_long_negative_in_the_paired_call(sd_pipe):
    """A 2-chunk negative is read whole: the words past 75 tokens act (they used to be cut). Each branch is read at
    its own length (tests/test_scheduled_text.py compares with a per-branch loop)."""
    negative = "x" * 75 + "mustache"
    result = compare(sd_pipe, CompareSettings(PROMPT, negative, seed=SEED, steps=STEPS), trace=False)
    cut = compare(sd_pipe, CompareSettings(PROMPT, "x" * 75, seed=SEED, steps=STEPS), trace=False)
    assert np.abs(pixels(cut.with_negative) - pixels(result.with_negative)).max() > 2, "the second chunk must act"
    assert result.negative_reading is not None and len(result.negative_reading.chunks) == 2


def test_weighted_negative_acts(sd_pipe):
    plain = compare(sd_pipe, CompareSettings(PROMPT, "mustache", seed=SEED, steps=STEPS), trace=False)
    weighted = compare(sd_pipe, CompareSettings(PROMPT, "(mustache:1.6)", seed=SEED, steps=STEPS), trace=False)
    assert np.array_equal(pixels(plain.without_negative), pixels(weighted.without_negative))
    assert np.abs(pixels(plain.with_negative) - pixels(weighted.with_negative)).max() > 2
    assert "×1.6" in weighted.negative_reading.markdown()


def test_sdxl_long_prompt_pads_the_zero_baseline_with_zeros(sdxl_pipe):
    prompt = PROMPT + " " + "y" * 70
    result = compare(sdxl_pipe, CompareSettings(prompt, "(mustache:1.3)", seed=SEED, steps=STEPS, guidance=5.0))
    assert "The prompt is 89 tokens: read in 2 chunks of 75 (A1111 style), none cut." in result.warnings
    from negprompt_demo.models.prompts import RunText

    embeds = encode_runs(sdxl_pipe, [RunText(prompt, None), RunText(prompt, "(mustache:1.3)")], 1, True)
    assert embeds["prompt_embeds"].shape == (2, 154, 64)
    assert embeds["negative_prompt_embeds"].shape == (2, 154, 64)
    assert not embeds["negative_prompt_embeds"][0].any() and not embeds["negative_pooled_prompt_embeds"][0].any()
    hidden, pooled = encode_text(sdxl_pipe, prompt, None)
    tokenizer = sdxl_pipe.tokenizer_2
    first_chunk = [tokenizer.bos_token_id, *tokenize_chunks(tokenizer, prompt, None)[0].ids, tokenizer.eos_token_id]
    assert torch.equal(
        pooled, sdxl_pipe.text_encoder_2(torch.tensor([first_chunk]))[0]
    )  # the pooled embedding is the first chunk's, as A1111
    without = plain_embeds_call(
        sdxl_pipe,
        embeds["prompt_embeds"][:1],
        embeds["negative_prompt_embeds"][:1],
        guidance=5.0,
        pooled_prompt_embeds=embeds["pooled_prompt_embeds"][:1],
        negative_pooled_prompt_embeds=embeds["negative_pooled_prompt_embeds"][:1],
    )
    assert np.abs(pixels(result.without_negative) - without).max() <= 2
