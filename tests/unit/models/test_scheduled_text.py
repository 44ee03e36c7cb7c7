"""A1111 prompt editing during sampling: each run's prompt and negative follow their schedules (A1111's step
counting), checked against a sampling loop written out by hand with each step's texts; still one batched UNet
call per step, each distinct text encoded once, and the trace says which text each branch used."""

from __future__ import annotations

import numpy as np
import torch

from negprompt_demo.models import prompts
from negprompt_demo.sampling.engine import compare
from negprompt_demo.settings import CompareSettings
from negprompt_demo.syntax.prompt_editing import step_texts

PROMPT, SEED, STEPS, GUIDANCE = "portrait photo of a man", 99, 10, 7.5


@torch.no_grad()
def reference_loop(pipe, prompt_at, negative_at) -> np.ndarray:
    """Plain CFG written out: at step k the UNet sees the prompt text prompt_at[k] and the negative text
    negative_at[k] (each encoded by diffusers itself, or given as embeddings), two separate calls."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(STEPS)
    encode = lambda text: text if torch.is_tensor(text) else pipe.encode_prompt(text, "cpu", 1, False)[0]  # noqa: E731
    size = pipe.unet.config.sample_size
    shape = (1, pipe.unet.config.in_channels, size, size)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(SEED)) * scheduler.init_noise_sigma
    for index, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(latents, t)
        eps_negative = pipe.unet(model_input, t, encoder_hidden_states=encode(negative_at[index])).sample
        eps_text = pipe.unet(model_input, t, encoder_hidden_states=encode(prompt_at[index])).sample
        latents = scheduler.step(eps_negative + GUIDANCE * (eps_text - eps_negative), t, latents).prev_sample
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    image = (image / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    return (image * 255).round().astype(np.int16)


def run(pipe, prompt=PROMPT, negative="mustache", **changes):
    settings = CompareSettings(prompt, negative, seed=SEED, steps=STEPS, guidance=GUIDANCE, scheduler="Euler")
    return compare(pipe, settings.replace(**changes))


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_a_scheduled_negative_uses_each_steps_text(sd_pipe):
    # A1111: [mustache:0.3] of 10 steps is "" at k = 0…3, "mustache" from k = 4
    result = run(sd_pipe, negative="[mustache:0.3]")
    expected = reference_loop(sd_pipe, [PROMPT] * STEPS, [""] * 4 + ["mustache"] * 6)
    assert np.abs(pixels(result.with_negative) - expected).max() <= 2
    assert [step.texts["negative"] for step in result.trace.steps] == [""] * 4 + ["mustache"] * 6


def test_from_to_and_alternation_in_the_negative(sd_pipe):
    for negative in ("[beard:mustache:0.5]", "[beard|hat] glasses", "[[beard:hat:0.2]|mustache]"):
        result = run(sd_pipe, negative=negative, push_map=False)
        expected = reference_loop(sd_pipe, [PROMPT] * STEPS, step_texts(negative, STEPS))
        assert np.abs(pixels(result.with_negative) - expected).max() <= 2, negative
        assert [step.texts["negative"] for step in result.trace.steps] == step_texts(negative, STEPS)


def test_both_runs_follow_the_prompts_schedule(sd_pipe):
    prompt = "portrait photo of a [man|woman], [smiling::0.6]"
    result = run(sd_pipe, prompt=prompt, negative="hat")
    prompt_at = step_texts(prompt, STEPS)
    assert prompt_at[:3] == ["portrait photo of a man, smiling"] * 2 + ["portrait photo of a woman, smiling"]
    assert np.abs(pixels(result.without_negative) - reference_loop(sd_pipe, prompt_at, [""] * STEPS)).max() <= 2
    assert np.abs(pixels(result.with_negative) - reference_loop(sd_pipe, prompt_at, ["hat"] * STEPS)).max() <= 2
    assert [step.texts["prompt"] for step in result.trace.steps] == prompt_at


def test_the_window_wraps_the_negatives_own_schedule(sd_pipe):
    # window 0.2–1 of 10 (acts from k = 3) around [beard:mustache:0.6] (mustache from k = 7)
    result = run(sd_pipe, negative="[beard:mustache:0.6]", negative_start=0.2, push_map=False)
    # outside the window the negative branch is the run without's: None, the model's own "no negative" ("" here)
    expected_texts = [None] * 3 + ["beard"] * 4 + ["mustache"] * 3
    assert [step.texts["negative"] for step in result.trace.steps] == expected_texts
    expected = reference_loop(sd_pipe, [PROMPT] * STEPS, [text or "" for text in expected_texts])
    assert np.abs(pixels(result.with_negative) - expected).max() <= 2


def test_one_unet_call_per_step_and_each_text_encoded_once(sd_pipe, monkeypatch):
    sizes, encoded = [], []
    original_forward, original_encode = sd_pipe.unet.forward, prompts.encode_text
    monkeypatch.setattr(
        sd_pipe.unet,
        "forward",
        lambda sample, *a, **k: sizes.append(sample.shape[0]) or original_forward(sample, *a, **k),
    )
    monkeypatch.setattr(
        prompts, "encode_text", lambda pipe, text, emb: encoded.append(text) or original_encode(pipe, text, emb)
    )
    run(sd_pipe, negative="[beard|hat] glasses", push_map=False)
    assert sizes == [4] * STEPS
    assert sorted(encoded) == sorted([PROMPT, "", "beard glasses", "hat glasses"])


def test_sdxl_swaps_the_pooled_embedding_too(sdxl_pipe):
    # "[hat::0.5]" (hat at k = 0…5, then "") is the window 0–0.5 of "hat" with the encoded "" as its baseline:
    # one goes through the per-step conditioning (hidden states and pooled), the other through the window.
    settings = CompareSettings(PROMPT, "[hat::0.5]", seed=SEED, steps=STEPS, guidance=GUIDANCE, empty_as_text=True)
    scheduled = compare(sdxl_pipe, settings, trace=False)
    window = compare(sdxl_pipe, settings.replace(negative="hat", negative_end=0.5), trace=False)
    assert np.abs(pixels(scheduled.with_negative) - pixels(window.with_negative)).max() <= 2
    assert np.abs(pixels(scheduled.with_negative) - pixels(scheduled.without_negative)).max() > 2, "no effect"


def test_texts_of_different_lengths_are_each_read_at_their_own(sd_pipe, monkeypatch):
    """A1111's default (pad_cond_uncond off): a 2-chunk negative with a 1-chunk prompt is not padded; the UNet is
    called once per length, only then, and each run equals a loop that calls the UNet per branch."""
    negative = "x" * 75 + "mustache"
    sizes = []
    original = sd_pipe.unet.forward
    monkeypatch.setattr(
        sd_pipe.unet, "forward", lambda sample, *a, **k: sizes.append(sample.shape[0]) or original(sample, *a, **k)
    )
    result = run(sd_pipe, negative=negative, push_map=False)
    assert sizes == [3, 1] * STEPS  # 77 places: "" and both prompts; 154: the negative
    long_negative = prompts.encode_text(sd_pipe, negative, None)[0]
    assert long_negative.shape[1] == 154
    with_negative = reference_loop(sd_pipe, [PROMPT] * STEPS, [long_negative] * STEPS)
    assert np.abs(pixels(result.with_negative) - with_negative).max() <= 2
    without = reference_loop(sd_pipe, [PROMPT] * STEPS, [""] * STEPS)
    assert np.abs(pixels(result.without_negative) - without).max() <= 2
    sizes.clear()
    run(sd_pipe, negative="mustache", push_map=False)
    assert sizes == [4] * STEPS  # one length: one call


def test_the_step_view_names_the_texts_where_they_change(sd_pipe):
    from negprompt_demo.page.step_view import branch_note

    result = run(sd_pipe, negative="[beard:mustache:0.5]")
    assert "the negative branch reads “beard”" in branch_note(result.trace, 0, True)
    assert "the negative branch reads “mustache”" in branch_note(result.trace, STEPS - 1, True)
    plain = run(sd_pipe, negative="mustache")
    assert "Prompt editing" not in branch_note(plain.trace, 0, True)


def test_attention_maps_pad_texts_of_different_lengths_and_say_so(sd_pipe):
    result = run(sd_pipe, negative="x" * 75 + "mustache", attention_maps=True)
    assert all(step.attention_maps is not None for step in result.trace.steps)
    assert any("pad_cond_uncond option" in warning for warning in result.warnings)
    assert not any("pad_cond_uncond" in warning for warning in run(sd_pipe, negative="x" * 75 + "mustache").warnings)
