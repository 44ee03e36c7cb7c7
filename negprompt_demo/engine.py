"""Paired generation: one seed through the pipeline twice — empty negative prompt vs the user's — in ONE call.

Both runs share the prompt, the seed (one generator per batch item, seeded alike, so the starting noise is the
same), the scheduler and every setting; only the negative branch of classifier-free guidance differs:

    ε = ε_neg + s · (ε_text − ε_neg)

The two runs go through the pipeline as one batch, so every denoising step is a single batched UNet call for both.
Each run equals what a plain diffusers call with that negative prompt gives (tested to ≤ 2/255 on CPU fp32).

"Empty negative" means what a plain call with no negative prompt gets: the encoded empty string "" for SD 1.x/2.x,
and for SDXL models with `force_zeros_for_empty_prompt` (the base model) all-zero embeddings rather than "".
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from PIL import Image

from negprompt_demo.attention import AttentionRecorder, plan_attention, recording
from negprompt_demo.guidance import NO_NEGATIVE, BranchHook, NegativePlan, window_steps
from negprompt_demo.loading import (
    base_scheduler_config,
    model_defaults,
    model_family,
    model_label,
    native_size,
    pipeline_lock,
)
from negprompt_demo.settings import SCHEDULER_NAMES, CompareSettings, resolve_settings
from negprompt_demo.trace import GuidanceTrace, GuidanceTracer, StepRecord

# on_step(done_steps, total_steps, record): record is None when the trace is off.
StepCallback = Callable[[int, int, "StepRecord | None"], None]


class GenerationCancelled(RuntimeError):
    """The caller's stop flag ended the run between two steps."""


class NonFiniteError(RuntimeError):
    """The sample became NaN or infinite; the message names the step."""


@dataclass
class Comparison:
    """The result of one paired run: both images, the settings that really ran (seed included) and the trace."""

    without_negative: Image.Image
    with_negative: Image.Image
    settings: CompareSettings
    model: str
    trace: GuidanceTrace | None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


# Both runs always use the same scheduler; settings.SCHEDULER_NAMES are the names users pick from.
SCHEDULERS: dict[str, tuple[type, dict]] = {
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "DDIM": (DDIMScheduler, {}),
    "UniPC": (UniPCMultistepScheduler, {}),
}
assert tuple(SCHEDULERS) == SCHEDULER_NAMES


def prepare(pipe, settings: CompareSettings) -> tuple[CompareSettings, list[str]]:
    """Validate and complete the settings for this model (the one check of a run's input); return them with the
    warnings a user must see.

    Under the pipeline lock: a fast tokenizer's padding/truncation state is shared, so tokenizing here while
    another thread encodes its prompts gives that thread unpadded embeddings ("Expected size 77 but got 21")."""
    with pipeline_lock(pipe):
        return _prepare_unlocked(pipe, settings)


def _prepare_unlocked(pipe, settings: CompareSettings) -> tuple[CompareSettings, list[str]]:
    resolved = resolve_settings(settings, native_size(pipe), model_defaults(pipe))
    warnings = []
    if resolved.guidance <= 1:
        warnings.append(
            f"Guidance scale {resolved.guidance:g} ≤ 1 turns classifier-free guidance off, so the negative prompt "
            "has no effect: both images are the same. Use a scale above 1 (7.5 is usual)."
        )
    if not resolved.negative:
        warnings.append("The negative prompt is empty, so both images are the same.")
    elif resolved.guidance > 1:
        start, end = window_steps(resolved.negative_start, resolved.negative_end, resolved.steps)
        if start >= end:
            warnings.append(
                f"The negative prompt's window ({resolved.negative_start:g}–{resolved.negative_end:g} of "
                f"{resolved.steps} steps) holds no whole step, so it never acts: both images are the same."
            )
        elif resolved.negative_strength == 0:
            warnings.append("Negative strength 0 turns the negative prompt off: both images are the same.")
    warnings += truncation_warnings(pipe, resolved.prompt, "prompt")
    warnings += truncation_warnings(pipe, resolved.negative, "negative prompt")
    return resolved, warnings


def truncation_warnings(pipe, text: str, field_name: str) -> list[str]:
    """CLIP reads 77 tokens (75 words-pieces plus start/end); say exactly which words it never sees."""
    tokenizer = pipe.tokenizer if pipe.tokenizer is not None else pipe.tokenizer_2
    if not text or tokenizer is None:
        return []
    ids = tokenizer(text, truncation=False, add_special_tokens=True).input_ids
    limit = tokenizer.model_max_length
    if len(ids) <= limit:
        return []
    cut = tokenizer.decode(ids[limit - 1 : -1]).strip()
    return [
        f"The {field_name} is {len(ids) - 2} tokens long but the text encoder reads only {limit - 2}; "
        f'these words were cut: "{cut}"'
    ]


def compare(
    pipe,
    settings: CompareSettings,
    *,
    trace: bool = True,
    on_step: StepCallback | None = None,
    stop: threading.Event | None = None,
) -> Comparison:
    """Check the settings, then run one seed with and without the negative prompt (see `run_paired`)."""
    resolved, warnings = prepare(pipe, settings)
    comparison = run_paired(pipe, resolved, trace=trace, on_step=on_step, stop=stop)
    comparison.warnings[:0] = warnings
    return comparison


def run_paired(
    pipe,
    resolved: CompareSettings,
    *,
    trace: bool = True,
    on_step: StepCallback | None = None,
    stop: threading.Event | None = None,
) -> Comparison:
    """Run one seed with and without the negative prompt, in one batched pipeline call, recording the trace.

    `resolved` must come from `prepare` (it is not checked again); the warnings in the result are only those the
    run itself found (a safety checker's blanking)."""
    started = time.perf_counter()
    with pipeline_lock(pipe):
        cfg_active = resolved.guidance > 1 and pipe.unet.config.time_cond_proj_dim is None
        attention = plan_attention(pipe, resolved) if trace and resolved.attention_maps else None
        tracer = GuidanceTracer(pipe, resolved.guidance, cfg_active, resolved.push_map, attention) if trace else None
        images, nsfw = _sample(pipe, resolved, [resolved.seed], [negative_plan(resolved)], tracer, on_step, stop)
    warnings = [
        f"The model's safety checker blanked the image {run} the negative prompt."
        for run, flagged in zip(("without", "with"), nsfw)
        if flagged
    ]
    return Comparison(
        without_negative=images[0],
        with_negative=images[1],
        settings=resolved,
        model=model_label(pipe),
        trace=None if tracer is None else tracer.trace,
        warnings=warnings,
        seconds=time.perf_counter() - started,
    )


SWEEP_STARTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)


@dataclass
class Sweep:
    """One seed without the negative prompt and with it starting at several points of the sampling, from one
    batched pipeline call (the steps before each start are shared with the run without it)."""

    without_negative: Image.Image
    with_negative: list[Image.Image]  # one per start, in the order of `starts`
    starts: list[float]
    start_steps: list[int]  # the 0-based step at which each start's negative first acts
    settings: CompareSettings
    model: str
    seconds: float = 0.0


def sweep_starts(
    pipe,
    resolved: CompareSettings,
    starts: tuple[float, ...] = SWEEP_STARTS,
    *,
    on_step: StepCallback | None = None,
    stop: threading.Event | None = None,
) -> Sweep:
    """ "When does the negative act?": the settings' negative started at each of `starts` (fractions of the steps;
    its end, strength and Perp-Neg as set), all runs in ONE pipeline call. `resolved` must come from `prepare`."""
    started = time.perf_counter()
    plans = [negative_plan(resolved, start) for start in starts]
    with pipeline_lock(pipe):
        images, _ = _sample(pipe, resolved, [resolved.seed], plans, None, on_step, stop)
    return Sweep(
        without_negative=images[0],
        with_negative=images[1:],
        starts=list(starts),
        start_steps=[plan.start_step for plan in plans],
        settings=resolved,
        model=model_label(pipe),
        seconds=time.perf_counter() - started,
    )


def generate_pairs(pipe, settings: CompareSettings, seeds: list[int]) -> list[tuple[Image.Image, Image.Image]]:
    """Many seeds at once, no trace: (image with empty negative, image with the negative) per seed, all in ONE
    batched pipeline call. Used for evaluation, where one seed per call would waste most of the time."""
    if not seeds:
        return []
    with pipeline_lock(pipe):
        resolved, _ = _prepare_unlocked(pipe, settings.replace(seed=seeds[0]))
        images, _ = _sample(pipe, resolved, [int(seed) for seed in seeds], [negative_plan(resolved)], None, None, None)
    return [(images[2 * i], images[2 * i + 1]) for i in range(len(seeds))]


def negative_plan(settings: CompareSettings, start: float | None = None) -> NegativePlan:
    """The with-run's plan from the settings (`start` overrides the window's start, for a sweep)."""
    start_step, end_step = window_steps(
        settings.negative_start if start is None else start, settings.negative_end, settings.steps
    )
    return NegativePlan(start_step, end_step, settings.negative_strength, settings.perp_neg)


@torch.no_grad()
def _sample(pipe, settings: CompareSettings, seeds: list[int], with_plans: list[NegativePlan], tracer, on_step, stop):
    """The single pipeline call. Each seed has one run without the negative prompt and one per plan in
    `with_plans`; batch items are [seed0 without, seed0 with plan 1, ..., seed1 without, ...]."""
    scheduler_class, scheduler_kwargs = SCHEDULERS[settings.scheduler]
    pipe.scheduler = scheduler_class.from_config(base_scheduler_config(pipe), **scheduler_kwargs)
    cfg_active = settings.guidance > 1 and pipe.unet.config.time_cond_proj_dim is None
    runs = 1 + len(with_plans)
    embeddings = _run_embeddings(pipe, settings, len(seeds), runs, cfg_active)
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds for _ in range(runs)]
    plans = [NO_NEGATIVE, *with_plans] * len(seeds)
    source = [item // runs * runs for item in range(len(plans))]
    hook = BranchHook(
        pipe.unet,
        plans,
        source,
        push_runs=(1,) if tracer is not None and tracer.push_map else (),
        capture=tracer is not None,
    )
    total = settings.steps
    # Cross-attention maps of the with-run (run 1) of a single-seed traced call, when its tracer asks for them.
    attention = AttentionRecorder(tracer.attention, hook) if tracer is not None and tracer.attention else None

    def on_step_end(pipeline, index: int, timestep, callback_kwargs: dict) -> dict:
        latents = callback_kwargs["latents"]
        if not torch.isfinite(latents).all():
            raise NonFiniteError(
                f"The sample became NaN/inf at step {index + 1} of {total}; the model or its precision (fp16) "
                "broke down. Try another scheduler, fewer steps or a lower guidance scale."
            )
        maps = attention.take() if attention is not None else None
        record = tracer.record_step(index, latents, hook.captured, maps) if tracer is not None else None
        hook.step_done()
        if on_step is not None:
            on_step(index + 1, total, record)
        if stop is not None and stop.is_set():
            raise GenerationCancelled(f"Stopped after step {index + 1} of {total}.")
        return callback_kwargs

    with hook, recording(pipe.unet, attention) if attention is not None else contextlib.nullcontext():
        output = pipe(
            **embeddings,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            width=settings.width,
            height=settings.height,
            generator=generators,
            output_type="np",
            callback_on_step_end=on_step_end,
        )
    pixels = output.images
    if not np.isfinite(pixels).all():
        raise NonFiniteError("The decoded image contains NaN/inf (the VAE failed, often fp16 overflow).")
    images = [Image.fromarray((image * 255).round().astype(np.uint8)) for image in pixels]
    nsfw = getattr(output, "nsfw_content_detected", None) or [False] * len(images)
    return images, nsfw


def _run_embeddings(pipe, settings: CompareSettings, seed_count: int, runs: int, cfg_active: bool) -> dict:
    """Text embeddings for the batch, encoded once per distinct text and repeated per run and seed.

    The without-run's negative is what a plain call with no negative prompt uses (see the module docstring),
    which for SDXL is not the same as encoding "".
    """
    device = pipe._execution_device
    sdxl = model_family(pipe) == "sdxl"

    def encode(negative: str | None):
        return pipe.encode_prompt(
            prompt=settings.prompt,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=cfg_active,
            negative_prompt=negative,
        )

    without = encode(None)
    with_negative = encode(settings.negative or None) if cfg_active and settings.negative else without
    count = runs * seed_count
    embeds = {"prompt_embeds": without[0].repeat(count, 1, 1)}
    if sdxl:
        embeds["pooled_prompt_embeds"] = without[2].repeat(count, 1)
    if cfg_active:
        one_seed = torch.cat([without[1]] + [with_negative[1]] * (runs - 1))
        embeds["negative_prompt_embeds"] = one_seed.repeat(seed_count, 1, 1)
        if sdxl:
            pooled = torch.cat([without[3]] + [with_negative[3]] * (runs - 1))
            embeds["negative_pooled_prompt_embeds"] = pooled.repeat(seed_count, 1)
    return embeds
