"""Paired generation: one seed through the pipeline twice — empty negative prompt vs the user's — in ONE call.

Both runs share the prompt, the seed (one generator per batch item, seeded alike, so the starting noise is the
same), the scheduler and every setting; only the negative branch of classifier-free guidance differs:

    ε = ε_neg + s · (ε_text − ε_neg)

The two runs go through the pipeline as one batch, so every denoising step is a single batched denoiser call for
both (UNet or transformer; FLUX.1's true CFG makes two per step, text then negative, each batched for both runs).
Each run equals what a plain diffusers call with that negative prompt gives (tested to ≤ 2/255 on CPU fp32).

"Empty negative" means what a plain call with no negative prompt gets: the encoded empty string "" for SD 1.x/2.x
and SD3, and for SDXL models with `force_zeros_for_empty_prompt` (the base model) all-zero embeddings rather than
"" — unless the settings ask for the encoded "" (`empty_as_text`), the baseline A1111 and ComfyUI users know.

FLUX.1 is guidance-distilled: a plain call samples the text branch alone (its distilled guidance, 3.5, is an input
of the transformer) and ignores a negative prompt. A negative prompt acts only with true CFG (`true_cfg_scale` > 1),
which the guidance setting sets here. On FLUX.1 the run "without" is therefore true CFG with the empty negative "",
so only the negative differs, which is what the comparison asks about; the plain distilled run (no true CFG, what
FLUX.1 gives by default) differs from it, and comes as a third image of the same call (`Comparison.distilled`).
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

from negprompt_demo.models import flow_models
from negprompt_demo.models.embeddings import read_embedding, trigger_in
from negprompt_demo.models.flow_models import guidance_arguments, spatial_latents
from negprompt_demo.models.loading import (
    FLOW_MATCHING_FAMILIES,
    base_scheduler_config,
    denoiser,
    model_defaults,
    model_family,
    model_label,
    native_size,
    pipeline_lock,
)
from negprompt_demo.models.prompts import PromptReading, RunText, chunk_message, read_prompt, text_pairs
from negprompt_demo.models.scheduled_text import encode_scheduled, texts_by_step, used_texts
from negprompt_demo.sampling.attention import AttentionRecorder, plan_attention
from negprompt_demo.sampling.diagnostics import negative_diagnostics
from negprompt_demo.sampling.guidance import NO_NEGATIVE, BranchHook, NegativePlan
from negprompt_demo.sampling.nag import nag_attention, nag_warnings
from negprompt_demo.sampling.trace import GuidanceTrace, GuidanceTracer, StepRecord
from negprompt_demo.settings import SCHEDULER_NAMES, CompareSettings, resolve_settings
from negprompt_demo.syntax.prompt_editing import step_texts, window_steps

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
    negative_reading: PromptReading | None = None  # how the negative prompt was read (tokens, chunks, weights)
    distilled: Image.Image | None = None  # FLUX.1 with true CFG: the plain distilled run (see the module docstring)


# Both runs always use the same scheduler; settings.SCHEDULER_NAMES are the names users pick from.
SCHEDULERS: dict[str, tuple[type, dict]] = {
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "DDIM": (DDIMScheduler, {}),
    "UniPC": (UniPCMultistepScheduler, {}),
}
assert tuple(SCHEDULERS) == SCHEDULER_NAMES


def cfg_active(pipe, guidance: float) -> bool:
    """Whether the call has a negative branch at all: guidance above 1 (on FLUX.1: true CFG), and not an
    LCM-style UNet with guidance built into its timestep embedding."""
    if guidance <= 1:
        return False
    return model_family(pipe) in FLOW_MATCHING_FAMILIES or pipe.unet.config.time_cond_proj_dim is None


def prepare(pipe, settings: CompareSettings) -> tuple[CompareSettings, list[str]]:
    """Validate and complete the settings for this model (the one check of a run's input); return them with the
    warnings a user must see.

    Under the pipeline lock: a fast tokenizer's padding/truncation state is shared, so tokenizing here while
    another thread encodes its prompts gives that thread unpadded embeddings ("Expected size 77 but got 21")."""
    with pipeline_lock(pipe):
        return _prepare_unlocked(pipe, settings)


def _prepare_unlocked(pipe, settings: CompareSettings) -> tuple[CompareSettings, list[str]]:
    resolved = resolve_settings(settings, native_size(pipe), model_defaults(pipe))
    family = model_family(pipe)
    warnings = nag_warnings(resolved, cfg_active(pipe, resolved.guidance))
    if family in FLOW_MATCHING_FAMILIES:  # their scheduler; A1111 syntax and embeddings refused (flow_models.py)
        resolved, family_warnings = flow_models.check_settings(pipe, resolved)
        warnings += family_warnings
    if family == "flux" and resolved.guidance <= 1 and not resolved.uses_nag():
        warnings.append(
            "FLUX.1 is guidance-distilled: it ignores a negative prompt unless true CFG is on (true_cfg_scale > 1), "
            f"and here the guidance scale is true CFG's scale, {resolved.guidance:g}. Both images are the same. Use "
            "a scale above 1 (4 is usual; true CFG doubles the sampling time), or let the negative act in "
            "attention: set “how the negative acts” to nag."
        )
    elif resolved.guidance <= 1 and not resolved.uses_nag():
        warnings.append(
            f"Guidance scale {resolved.guidance:g} ≤ 1 turns classifier-free guidance off, so the negative prompt "
            "has no effect: both images are the same. Use a scale above 1 (7.5 is usual), or let the negative act "
            "in attention: set “how the negative acts” to nag (NAG works at guidance 1 and on distilled models)."
        )
    if not resolved.negative:
        warnings.append("The negative prompt is empty, so both images are the same.")
    elif resolved.guidance > 1 or resolved.uses_nag():
        start, end = window_steps(resolved.negative_start, resolved.negative_end, resolved.steps)
        if start >= end:
            warnings.append(
                f"The negative prompt's window ({resolved.negative_start:g}–{resolved.negative_end:g} of "
                f"{resolved.steps} steps) holds no whole step, so it never acts: both images are the same."
            )
        elif resolved.negative_strength == 0 and resolved.negative_mode == "cfg":
            warnings.append("Negative strength 0 turns the negative prompt off: both images are the same.")
    if family in FLOW_MATCHING_FAMILIES:  # the text as written, T5 reading the long ones up to its limit
        return resolved, warnings + flow_models.text_warnings(pipe, resolved) + negative_diagnostics(pipe, resolved)
    embedding = read_embedding(pipe, resolved.negative_embedding)
    if embedding is not None:
        resolved = resolved.replace(negative_embedding=str(embedding.path))  # a Hub file: its downloaded copy
        if not trigger_in(text_pairs(pipe)[0][1], resolved.negative, embedding):
            warnings.append(
                f"The negative embedding's trigger word {embedding.name} is not in the negative prompt, so the "
                f"embedding is not used: write {embedding.name} in the negative prompt (A1111's rule)."
            )
    chunk_counts = {1}  # the "" of the run without
    for text, field_name in ((resolved.prompt, "prompt"), (resolved.negative, "negative prompt")):
        # with prompt editing, the step text of the most chunks
        distinct = dict.fromkeys(step_texts(text, resolved.steps))
        readings = [read_prompt(pipe, step_text, embedding) for step_text in distinct]
        chunk_counts.update(max(len(reading.chunks), 1) for reading in readings)
        message = chunk_message(max(readings, key=lambda reading: len(reading.chunks)), field_name)
        warnings += [message] if message else []
    if (resolved.attention_maps or resolved.uses_nag()) and len(chunk_counts) > 1 and resolved.guidance > 1:
        reason = "attention maps recorded" if resolved.attention_maps else "NAG"
        warnings.append(
            f"With {reason}, texts of different chunk counts are padded to one length with the "
            "encoded \"\" chunk (A1111's pad_cond_uncond option), not read at their own lengths (A1111's default, "
            f"as otherwise): the images can differ slightly from a run without {reason}."
        )
    return resolved, warnings + negative_diagnostics(pipe, resolved)


def negative_reading(pipe, resolved: CompareSettings) -> PromptReading | None:
    """How the negative prompt is read: tokens by chunk, weights, the embedding's places (None when empty)."""
    if not resolved.negative:
        return None
    first, _ = window_steps(resolved.negative_start, resolved.negative_end, resolved.steps)
    text = step_texts(resolved.negative, resolved.steps)[min(first, resolved.steps - 1)]  # with prompt editing:
    return read_prompt(pipe, text, read_embedding(pipe, resolved.negative_embedding))  # its text when it first acts


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
        active = cfg_active(pipe, resolved.guidance)
        tracer = None
        if trace:
            attention = plan_attention(pipe, resolved) if resolved.attention_maps else None
            spatial = spatial_latents(pipe, resolved)
            tracer = GuidanceTracer(pipe, resolved.guidance, active, resolved.push_map, spatial, attention)
        runs = paired_runs(resolved, [negative_plan(resolved)])
        if model_family(pipe) == "flux" and active:  # the plain distilled run, third (see the module docstring)
            runs.append(Run(RunText(resolved.prompt, None), unguided=True))
        images, nsfw = sample_runs(pipe, resolved, [resolved.seed], runs, tracer, on_step, stop)
        reading = negative_reading(pipe, resolved)
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
        negative_reading=reading,
        distilled=images[2] if len(runs) > 2 else None,
    )


def generate_pairs(pipe, settings: CompareSettings, seeds: list[int]) -> list[tuple[Image.Image, Image.Image]]:
    """Many seeds at once, no trace: (image with empty negative, image with the negative) per seed, all in ONE
    batched pipeline call. Used for evaluation, where one seed per call would waste most of the time."""
    if not seeds:
        return []
    with pipeline_lock(pipe):
        resolved, _ = _prepare_unlocked(pipe, settings.replace(seed=seeds[0]))
        runs = paired_runs(resolved, [negative_plan(resolved)])
        images, _ = sample_runs(pipe, resolved, [int(seed) for seed in seeds], runs, None, None, None)
    return [(images[2 * i], images[2 * i + 1]) for i in range(len(seeds))]


def negative_plan(settings: CompareSettings, start: float | None = None) -> NegativePlan:
    """The with-run's plan from the settings (`start` overrides the window's start, for a sweep)."""
    start_step, end_step = window_steps(
        settings.negative_start if start is None else start, settings.negative_end, settings.steps
    )
    if settings.negative_mode == "nag":  # the CFG branch stays the empty prompt's: strength and Perp-Neg are CFG's
        return NegativePlan(start_step, end_step)
    return NegativePlan(start_step, end_step, settings.negative_strength, settings.perp_neg)


@dataclass(frozen=True)
class Run:
    """One run of a seed in a pipeline call: what it is conditioned on and how its negative prompt acts."""

    text: RunText
    plan: NegativePlan | None = None  # None: a run of its own (its negative branch is its text's, at every step)
    unguided: bool = False  # FLUX.1's plain distilled run: no negative branch at all (guidance.BranchHook)


def baseline_negative(settings: CompareSettings) -> str | None:
    """The negative prompt of a run "without" one (see the module docstring)."""
    return "" if settings.empty_as_text else None


def paired_runs(settings: CompareSettings, plans: list[NegativePlan]) -> list[Run]:
    """A seed's runs: without the negative prompt first, then one with it per plan (with NAG alone, the with-run's
    CFG negative branch is the empty prompt's, as the without-run's: the negative acts in attention only)."""
    without = Run(RunText(settings.prompt, baseline_negative(settings)))
    cfg_negative = settings.negative if settings.negative_mode != "nag" else ""
    negative = cfg_negative or baseline_negative(settings)
    return [without, *(Run(RunText(settings.prompt, negative), plan) for plan in plans)]


@torch.no_grad()
def sample_runs(pipe, settings: CompareSettings, seeds: list[int], runs: list[Run], tracer, on_step, stop):
    """The single pipeline call: every seed sampled once per run in `runs`, all from the seed's noise; batch items
    are [seed0 run0, seed0 run1, ..., seed1 run0, ...]. `runs[0]` must be the seed's run without the negative
    prompt: a run with a negative plan shares its steps before the window opens and takes its ε_∅."""
    family = model_family(pipe)
    if family in FLOW_MATCHING_FAMILIES:
        pipe.scheduler = type(pipe.scheduler).from_config(base_scheduler_config(pipe))
    else:
        scheduler_class, scheduler_kwargs = SCHEDULERS[settings.scheduler]
        pipe.scheduler = scheduler_class.from_config(base_scheduler_config(pipe), **scheduler_kwargs)
    active = cfg_active(pipe, settings.guidance)
    embedding = read_embedding(pipe, settings.negative_embedding)
    texts = [run.text for run in runs]
    embeddings, conditioning, lengths = encode_scheduled(pipe, texts, len(seeds), active, settings.steps, embedding)
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds for _ in runs]
    plans = [NO_NEGATIVE if run.plan is None else run.plan for run in runs] * len(seeds)
    first_of_seed = [item // len(runs) * len(runs) for item in range(len(plans))]
    source = [item if runs[item % len(runs)].plan is None else first_of_seed[item] for item in range(len(plans))]
    hook = BranchHook(
        denoiser(pipe),
        plans,
        source,
        push_runs=(1,) if tracer is not None and tracer.push_map else (),
        capture=tracer is not None,
        split_calls=family == "flux" and active,  # FLUX.1's true CFG: text call, then negative call, per step
        unguided=tuple(item for item in range(len(plans)) if runs[item % len(runs)].unguided),
        conditioning=conditioning,
        # attention maps and NAG read batch rows of one batched call: there, texts are padded to one length
        # (A1111's pad_cond_uncond option; prepare says so)
        lengths=None if (tracer is not None and tracer.attention) or settings.uses_nag() else lengths,
    )
    by_step = texts_by_step(texts, settings.steps) if tracer is not None else None
    total = settings.steps
    item_plans = [None if hook.source[item] == item else plan for item, plan in enumerate(plans)]
    nag = nag_attention(pipe, settings, item_plans, hook.call, embedding, 1 if tracer is not None else None)
    # Cross-attention maps of the with-run (run 1) of a single-seed traced call, when its tracer asks for them.
    attention = (
        AttentionRecorder(pipe.unet, tracer.attention, hook.call) if tracer is not None and tracer.attention else None
    )

    def on_step_end(pipeline, index: int, timestep, callback_kwargs: dict) -> dict:
        latents = callback_kwargs["latents"]
        if not torch.isfinite(latents).all():
            raise NonFiniteError(
                f"The sample became NaN/inf at step {index + 1} of {total}; the model or its precision (fp16) "
                "broke down. Try another scheduler, fewer steps or a lower guidance scale."
            )
        maps = attention.take() if attention is not None else None
        nag_map = nag.take_map() if nag is not None else None
        record = None
        if tracer is not None:
            record = tracer.record_step(index, latents, hook.captured, maps, nag_map)
            record.texts = used_texts(by_step[index], record.negative_active)
        hook.step_done()
        if on_step is not None:
            on_step(index + 1, total, record)
        if stop is not None and stop.is_set():
            raise GenerationCancelled(f"Stopped after step {index + 1} of {total}.")
        return callback_kwargs

    nag_context = nag if nag is not None else contextlib.nullcontext()
    with hook, nag_context, attention if attention is not None else contextlib.nullcontext():
        output = pipe(
            **embeddings,
            **guidance_arguments(family, settings.guidance),
            num_inference_steps=settings.steps,
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
