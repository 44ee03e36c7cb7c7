"""When and how strongly the negative acts (window, strength, Perp-Neg): the engine's one batched call against a
sampling loop written out by hand, the shared steps before the window opens, and what the trace records."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from negprompt_demo.sampling.engine import compare
from negprompt_demo.settings import CompareSettings
from negprompt_demo.syntax.prompt_editing import window_steps

PROMPT, NEGATIVE, SEED, STEPS, GUIDANCE = "portrait photo of a man", "mustache", 99, 10, 7.5


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@torch.no_grad()
def reference_loop(pipe, start=0.0, end=1.0, strength=1.0, perp_neg=False, negative=NEGATIVE) -> np.ndarray:
    """The with-run, written out step by step with three separate UNet calls (ε_∅, ε_text, ε_n) and the formula
    of the issue: ε = ε_∅ + g·(ε_text − ε_∅) − m·(g − 1)·d inside the window (d = ε_n − ε_∅, or its part
    perpendicular to ε_text − ε_∅ for Perp-Neg), plain ε_∅ + g·(ε_text − ε_∅) outside."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(STEPS)
    text, empty = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt=None)
    _, negative_embeds = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt=negative)
    size = pipe.unet.config.sample_size
    shape = (1, pipe.unet.config.in_channels, size, size)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(SEED)) * scheduler.init_noise_sigma
    first, last = window_steps(start, end, STEPS)
    for index, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(latents, t)
        eps_empty, eps_text, eps_negative = (pipe.unet(model_input, t, encoder_hidden_states=e).sample for e in (
            empty, text, negative_embeds))  # fmt: skip
        guided = eps_empty + GUIDANCE * (eps_text - eps_empty)
        if first <= index < last:
            push = eps_negative - eps_empty
            if perp_neg:
                direction = eps_text - eps_empty
                push = push - (push * direction).sum() / direction.square().sum() * direction
            guided = guided - strength * (GUIDANCE - 1) * push
        latents = scheduler.step(guided, t, latents).prev_sample
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    image = (image / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    return (image * 255).round().astype(np.int16)


def run(pipe, **changes):
    settings = CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS, guidance=GUIDANCE, scheduler="Euler")
    return compare(pipe, settings.replace(**changes))


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"negative_start": 0.3},
        {"negative_end": 0.6},
        {"negative_start": 0.2, "negative_end": 0.7},
        {"negative_strength": 2.0},
        {"negative_strength": 0.5, "negative_start": 0.4},
        {"perp_neg": True},
        {"perp_neg": True, "negative_strength": 3.0, "negative_end": 0.5},
    ],
    ids=["plain", "start", "end", "window", "strength-2", "strength-half-late", "perp-neg", "perp-strong-early"],
)
def test_with_run_equals_the_hand_written_loop(sd_pipe, changes):
    result = run(sd_pipe, **changes)
    reference = reference_loop(
        sd_pipe,
        changes.get("negative_start", 0.0),
        changes.get("negative_end", 1.0),
        changes.get("negative_strength", 1.0),
        changes.get("perp_neg", False),
    )
    assert np.abs(pixels(result.with_negative) - reference).max() <= 2
    assert np.abs(pixels(result.without_negative) - reference_loop(sd_pipe, negative=None)).max() <= 2
    if changes:  # the setting is seen: the image is neither the plain with-run nor the without-run
        assert np.abs(reference - reference_loop(sd_pipe)).max() >= 1
        assert np.abs(reference - reference_loop(sd_pipe, negative=None)).max() >= 1


def test_sdxl_runs_take_the_window_and_strength_too(sdxl_pipe):
    """SDXL's extra conditioning (pooled text embeddings, time ids) follows each item the hook sends."""
    settings = CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS, guidance=5.0)
    plain = compare(sdxl_pipe, settings)
    late = compare(sdxl_pipe, settings.replace(negative_start=0.5, negative_strength=2.0, perp_neg=True))
    off = compare(sdxl_pipe, settings.replace(negative_strength=0.0))
    assert np.array_equal(pixels(off.with_negative), pixels(plain.without_negative))
    assert np.array_equal(pixels(late.without_negative), pixels(plain.without_negative))
    assert np.abs(pixels(late.with_negative) - pixels(plain.with_negative)).max() > 2


def test_strength_zero_and_an_empty_window_equal_the_without_run(sd_pipe):
    for changes in ({"negative_strength": 0.0}, {"negative_start": 0.5, "negative_end": 0.5}):
        result = run(sd_pipe, **changes)
        assert np.array_equal(pixels(result.with_negative), pixels(result.without_negative)), changes
        assert any("both images are the same" in warning for warning in result.warnings), changes


def test_a_late_negative_shares_the_steps_before_it(sd_pipe, monkeypatch):
    """Before the window opens both runs are one computation: the UNet is asked for 2 items, not 4, per step;
    with strength ≠ 1 the third branch is one more item, in the same single call per step."""
    sizes = []
    original = sd_pipe.unet.forward

    def counting(sample, *args, **kwargs):
        sizes.append(sample.shape[0])
        return original(sample, *args, **kwargs)

    monkeypatch.setattr(sd_pipe.unet, "forward", counting)
    run(sd_pipe, negative_start=0.5, push_map=False)
    assert sizes == [2] * 6 + [4] * 4  # A1111's [neg:0.5] at 10 steps: from k = 6
    sizes.clear()
    run(sd_pipe, negative_strength=1.5, negative_start=0.3, push_map=False)
    assert sizes == [2] * 4 + [5] * 6  # one UNet call per step, ε_∅ of the with-run as a fifth item
    sizes.clear()
    run(sd_pipe, push_map=False)
    assert sizes == [4] * STEPS  # a plain negative, nothing recorded: exactly the pipeline's own batch
    sizes.clear()
    run(sd_pipe)
    assert sizes == [5] * STEPS  # the page's default records ε_∅ (push map, branch predictions): one more item


def test_the_trace_records_the_window(sd_pipe):
    result = run(sd_pipe, negative_start=0.3, negative_end=0.8, push_map=True)
    active = [step.negative_active for step in result.trace.steps]
    assert active == [False] * 4 + [True] * 5 + [False]  # A1111: k = 4…8
    pushes = [step.push_mean for step in result.trace.steps]
    assert all(push == 0 for push, acts in zip(pushes, active) if not acts) and all(p > 0 for p in pushes[4:9])
    divergence = [step.divergence for step in result.trace.steps]
    assert divergence[:4] == [0.0] * 4 and divergence[4] > 0  # the runs part when the window opens


@pytest.mark.slow
def test_sweep_runs_every_start_in_one_call_sharing_the_early_steps(sd_pipe, monkeypatch):
    from negprompt_demo.sampling.engine import prepare
    from negprompt_demo.sampling.sweep import sweep_starts

    sizes = []
    original = sd_pipe.unet.forward
    monkeypatch.setattr(
        sd_pipe.unet, "forward", lambda sample, *a, **k: sizes.append(sample.shape[0]) or original(sample, *a, **k)
    )
    prepared = prepare(sd_pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS, guidance=GUIDANCE))
    resolved = prepared.settings
    sweep = sweep_starts(sd_pipe, prepared, (0.0, 0.3, 0.6))
    # one call per step; each start's run joins the batch when its negative starts (2 items each: neg + text)
    assert sizes == [4] * 4 + [6] * 3 + [8] * 3
    assert sweep.start_steps == [0, 4, 7]
    for start, image in zip((0.0, 0.3, 0.6), sweep.with_negative):  # each equals its own comparison
        single = compare(sd_pipe, resolved.replace(negative_start=start))
        assert np.abs(pixels(image) - pixels(single.with_negative)).max() <= 2
    assert np.abs(pixels(sweep.without_negative) - pixels(single.without_negative)).max() <= 2
