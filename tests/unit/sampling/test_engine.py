"""Paired generation: equality with plain diffusers calls, one batched call, warnings, cancellation (faults such as
NaN are in test_faults.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from negprompt_demo.models.families import SCHEDULERS
from negprompt_demo.sampling.engine import GenerationCancelled, compare, generate_pairs
from negprompt_demo.settings import CompareSettings

PROMPT, NEGATIVE, SEED, STEPS = "portrait photo of a man", "mustache", 1234, 6


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def plain_call(pipe, negative, seed=SEED, steps=STEPS, guidance=7.5, size=32):
    """What a user gets from diffusers directly; negative=None means 'no negative prompt given'."""
    kwargs = {} if negative is None else {"negative_prompt": negative}
    image = pipe(
        prompt=PROMPT,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=steps,
        guidance_scale=guidance,
        width=size,
        height=size,
        output_type="np",
        **kwargs,
    ).images[0]
    return (image * 255).round().astype(np.int16)


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_sd_runs_equal_plain_calls(sd_pipe, scheduler):
    result = compare(sd_pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS, scheduler=scheduler))
    # plain calls with the same scheduler (compare() left it installed on the pipeline)
    assert type(sd_pipe.scheduler) is SCHEDULERS[scheduler][0]
    assert np.abs(pixels(result.without_negative) - plain_call(sd_pipe, "")).max() <= 2
    assert np.abs(pixels(result.with_negative) - plain_call(sd_pipe, NEGATIVE)).max() <= 2
    assert np.abs(pixels(result.with_negative) - pixels(result.without_negative)).max() > 10, "runs must differ"


@pytest.mark.parametrize("scheduler", ["Euler", "Euler a"])
def test_sdxl_runs_equal_plain_calls(sdxl_pipe, scheduler):
    settings = CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS, guidance=5.0, scheduler=scheduler)
    result = compare(sdxl_pipe, settings)
    # "without" is what a plain SDXL call with NO negative prompt gives: zero embeddings, not ""
    without = plain_call(sdxl_pipe, None, guidance=5.0)
    assert np.abs(pixels(result.without_negative) - without).max() <= 2
    assert np.abs(pixels(result.with_negative) - plain_call(sdxl_pipe, NEGATIVE, guidance=5.0)).max() <= 2
    encoded_empty = plain_call(sdxl_pipe, "", guidance=5.0)
    assert np.abs(encoded_empty - without).max() > 2, "zero embeddings and '' must really differ on this model"
    # the switch: compare against the encoded "" (A1111's and ComfyUI's baseline), with the same negative run
    as_text = compare(sdxl_pipe, settings.replace(empty_as_text=True))
    assert np.abs(pixels(as_text.without_negative) - encoded_empty).max() <= 2
    assert np.abs(pixels(as_text.with_negative) - pixels(result.with_negative)).max() <= 2


def test_one_batched_unet_call_per_step(sd_pipe):
    batches = []
    handle = sd_pipe.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        compare(sd_pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS), trace=False)
    finally:
        handle.remove()
    assert batches == [4] * STEPS  # [neg without, neg with, text without, text with], once per step


def test_generate_pairs_matches_compare_per_seed(sd_pipe):
    seeds = [3, 4, 5]
    pairs = generate_pairs(sd_pipe, CompareSettings(PROMPT, NEGATIVE, steps=STEPS), seeds)
    assert len(pairs) == 3
    for seed, (without, with_negative) in zip(seeds, pairs):
        single = compare(sd_pipe, CompareSettings(PROMPT, NEGATIVE, seed=seed, steps=STEPS), trace=False)
        assert np.abs(pixels(without) - pixels(single.without_negative)).max() <= 2
        assert np.abs(pixels(with_negative) - pixels(single.with_negative)).max() <= 2


def test_random_seed_is_reported_and_reproducible(sd_pipe):
    first = compare(sd_pipe, CompareSettings(PROMPT, NEGATIVE, seed=None, steps=3), trace=False)
    assert isinstance(first.settings.seed, int)
    again = compare(sd_pipe, CompareSettings(PROMPT, NEGATIVE, seed=first.settings.seed, steps=3), trace=False)
    assert np.array_equal(pixels(first.with_negative), pixels(again.with_negative))


def test_low_guidance_warns_and_gives_identical_images(sd_pipe):
    result = compare(sd_pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=3, guidance=1.0))
    assert any("no effect" in warning for warning in result.warnings)
    assert np.array_equal(pixels(result.with_negative), pixels(result.without_negative))
    assert result.trace.cfg_active is False


def test_empty_negative_warns(sd_pipe):
    result = compare(sd_pipe, CompareSettings(PROMPT, "", seed=SEED, steps=3))
    assert any("negative prompt is empty" in warning for warning in result.warnings)
    assert np.array_equal(pixels(result.with_negative), pixels(result.without_negative))


def test_long_prompts_are_read_in_chunks_not_cut(sd_pipe):
    # the tiny tokenizer is character-level: 75 characters fill one chunk
    prompt = "a" * 75 + "zebra"
    result = compare(sd_pipe, CompareSettings(prompt, "x" * 74 + "yq", seed=SEED, steps=2), trace=False)
    notes = [warning for warning in result.warnings if "chunks of 75" in warning]
    assert notes == [
        "The prompt is 80 tokens: read in 2 chunks of 75 (A1111 style), none cut.",
        "The negative prompt is 76 tokens: read in 2 chunks of 75 (A1111 style), none cut.",
    ]
    assert not any("cut:" in warning for warning in result.warnings)


def test_stop_flag_ends_between_steps_and_pipeline_stays_usable(sd_pipe):
    stop = threading.Event()
    seen = []

    def on_step(done, total, record):
        seen.append(done)
        if done == 2:
            stop.set()

    with pytest.raises(GenerationCancelled, match="after step 2 of 10"):
        compare(sd_pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=10), on_step=on_step, stop=stop)
    assert seen == [1, 2]
    assert len(sd_pipe.unet._forward_hooks) == 0
    fresh = compare(sd_pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS))
    assert np.abs(pixels(fresh.with_negative) - plain_call(sd_pipe, NEGATIVE)).max() <= 2


def test_on_step_streams_every_step_with_its_record(sd_pipe):
    updates = []
    compare(
        sd_pipe,
        CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=STEPS),
        on_step=lambda done, total, record: updates.append(
            (done, total, record.index, record.x0_latents.shape, record.branch_x0_latents.shape)
        ),
    )
    assert [update[:3] for update in updates] == [(i, STEPS, i - 1) for i in range(1, STEPS + 1)]
    # both runs' x0, and what the with-run's prompt, empty and negative branches predict (push map, on by default)
    assert all(update[3:] == ((2, 4, 16, 16), (3, 4, 16, 16)) for update in updates)


def test_concurrent_compares_do_not_mix(sd_pipe):
    """Two threads on one pipeline: the lock serialises them, each gets its own seed's images."""
    results = {}

    def run(seed):
        results[seed] = compare(sd_pipe, CompareSettings(PROMPT, NEGATIVE, seed=seed, steps=4), trace=True)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (11, 12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seed in (11, 12):
        alone = compare(sd_pipe, CompareSettings(PROMPT, NEGATIVE, seed=seed, steps=4), trace=False)
        assert np.array_equal(pixels(results[seed].with_negative), pixels(alone.with_negative))
        assert len(results[seed].trace.steps) == 4
