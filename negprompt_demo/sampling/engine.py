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
from PIL import Image

from negprompt_demo.models import flow_models
from negprompt_demo.models.embeddings import NegativeEmbedding, read_embedding
from negprompt_demo.models.families import StableDiffusion, family_of
from negprompt_demo.models.flow_models import spatial_latents
from negprompt_demo.models.loading import base_scheduler_config, model_defaults, model_label, pipeline_lock
from negprompt_demo.models.prompts import PromptReading, RunText
from negprompt_demo.models.scheduled_text import encode_scheduled, texts_by_step, used_texts
from negprompt_demo.sampling.attention import AttentionRecorder, plan_attention
from negprompt_demo.sampling.diagnostics import (
    chunk_warnings,
    negative_diagnostics,
    negative_reading,
    settings_warnings,
    step_readings,
)
from negprompt_demo.sampling.guidance import NO_NEGATIVE, BranchHook, NegativePlan
from negprompt_demo.sampling.nag import nag_attention, nag_warnings
from negprompt_demo.sampling.trace import GuidanceTrace, GuidanceTracer, StepRecord
from negprompt_demo.settings import CompareSettings, resolve_settings
from negprompt_demo.syntax.prompt_editing import window_steps

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


@dataclass(frozen=True)
class Run:
    """One run of a seed in a pipeline call: what it is conditioned on and how its negative prompt acts."""

    text: RunText
    plan: NegativePlan | None = None  # None: a run of its own (its negative branch is its text's, at every step)
    unguided: bool = False  # FLUX.1's plain distilled run: no negative branch at all (guidance.BranchHook)


@dataclass
class PreparedRun:
    """A checked comparison, ready to sample: everything `prepare` found, read once, and handed to each sampling
    function (a comparison, a sweep, many seeds). It holds no pipeline, so it crosses ZeroGPU's process boundary.
    The texts are encoded by `sample_runs`, on the device: on ZeroGPU the process that prepares has no GPU."""

    settings: CompareSettings  # resolved: seed, size and the model's defaults filled in
    warnings: list[str]  # what a user must see before the images
    family: StableDiffusion  # the model family's adapter (models.families)
    guided: bool  # whether the call has a negative branch at all (guidance above 1, on FLUX.1 true CFG)
    embedding: NegativeEmbedding | None  # the negative embedding, its file read once
    negative_reading: PromptReading | None  # how the negative prompt is read where it first acts
    chunks: dict[str, int]  # the most 75-token chunks the prompt and the negative fill at any step (T5 reads whole: 1)

    def plan(self, start: float | None = None) -> NegativePlan:
        """The with-run's plan from the settings (`start` overrides the window's start, for a sweep)."""
        settings = self.settings
        start_step, end_step = window_steps(
            settings.negative_start if start is None else start, settings.negative_end, settings.steps
        )
        if settings.negative_mode == "nag":  # the CFG branch stays the empty prompt's: strength and Perp-Neg are CFG's
            return NegativePlan(start_step, end_step)
        return NegativePlan(start_step, end_step, settings.negative_strength, settings.perp_neg)

    def baseline_negative(self) -> str | None:
        """The negative prompt of a run "without" one (see the module docstring)."""
        return "" if self.settings.empty_as_text else None

    def runs(self, plans: list[NegativePlan] | None = None) -> list[Run]:
        """A seed's runs: without the negative prompt first, then one with it per plan (the settings' own plan by
        default; with NAG alone, the with-run's CFG negative branch is the empty prompt's, as the without-run's:
        the negative acts in attention only)."""
        settings = self.settings
        without = Run(RunText(settings.prompt, self.baseline_negative()))
        cfg_negative = settings.negative if settings.negative_mode != "nag" else ""
        negative = cfg_negative or self.baseline_negative()
        plans = [self.plan()] if plans is None else plans
        with_runs = [Run(RunText(settings.prompt, negative), plan) for plan in plans]
        return [without, *with_runs]


def prepare(pipe, settings: CompareSettings) -> PreparedRun:
    """Validate and complete the settings for this model (the one check of a run's input), and read what the run
    needs once: the family, the negative embedding, how the negative is read, the warnings a user must see.

    Under the pipeline lock: a fast tokenizer's padding/truncation state is shared, so tokenizing here while
    another thread encodes its prompts gives that thread unpadded embeddings ("Expected size 77 but got 21")."""
    with pipeline_lock(pipe):
        family = family_of(pipe)
        resolved = resolve_settings(settings, family.native_size(pipe), model_defaults(pipe))
        guided = family.guided(pipe, resolved.guidance)
        warnings = nag_warnings(resolved, guided)
        if family.flow_matching:  # their scheduler; A1111 syntax and embeddings refused (flow_models.py)
            resolved, family_warnings = flow_models.check_settings(pipe, resolved)
            warnings += family_warnings
        warnings += settings_warnings(family, resolved)
        embedding, chunks = None, {"prompt": 1, "negative": 1}
        if family.flow_matching:  # the text as written, T5 reading the long ones up to its limit
            warnings += flow_models.text_warnings(pipe, resolved)
        else:
            embedding = read_embedding(pipe, resolved.negative_embedding)
            if embedding is not None:
                resolved = resolved.replace(negative_embedding=str(embedding.path))  # a Hub file: its downloaded copy
            readings = step_readings(pipe, resolved, embedding)
            chunks = {name: max(max(len(reading.chunks), 1) for reading in texts) for name, texts in readings.items()}
            warnings += chunk_warnings(pipe, resolved, embedding, readings)
        warnings += negative_diagnostics(pipe, resolved, embedding)
        reading = negative_reading(pipe, resolved, embedding)
    return PreparedRun(resolved, warnings, family, guided, embedding, reading, chunks)


def compare(
    pipe,
    settings: CompareSettings,
    *,
    trace: bool = True,
    on_step: StepCallback | None = None,
    stop: threading.Event | None = None,
) -> Comparison:
    """Check the settings, then run one seed with and without the negative prompt (see `run_paired`)."""
    prepared = prepare(pipe, settings)
    comparison = run_paired(pipe, prepared, trace=trace, on_step=on_step, stop=stop)
    comparison.warnings[:0] = prepared.warnings
    return comparison


def run_paired(
    pipe,
    prepared: PreparedRun,
    *,
    trace: bool = True,
    on_step: StepCallback | None = None,
    stop: threading.Event | None = None,
) -> Comparison:
    """Run one seed with and without the negative prompt, in one batched pipeline call, recording the trace.

    The warnings in the result are only those the run itself found (a safety checker's blanking); `prepared`'s
    own are the caller's to show."""
    started = time.perf_counter()
    resolved = prepared.settings
    with pipeline_lock(pipe):
        tracer = None
        if trace:
            attention = plan_attention(pipe, resolved) if resolved.attention_maps else None
            spatial = spatial_latents(pipe, resolved)
            tracer = GuidanceTracer(pipe, resolved.guidance, prepared.guided, resolved.push_map, spatial, attention)
        runs = prepared.runs()
        if prepared.family.true_cfg and prepared.guided:  # the plain distilled run, third (the module docstring)
            runs.append(Run(RunText(resolved.prompt, None), unguided=True))
        images, nsfw = sample_runs(pipe, prepared, [resolved.seed], runs, tracer=tracer, on_step=on_step, stop=stop)
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
        negative_reading=prepared.negative_reading,
        distilled=images[2] if len(runs) > 2 else None,
    )


def generate_pairs(pipe, settings: CompareSettings, seeds: list[int]) -> list[tuple[Image.Image, Image.Image]]:
    """Many seeds at once, no trace: (image with empty negative, image with the negative) per seed, all in ONE
    batched pipeline call. Used for evaluation, where one seed per call would waste most of the time."""
    if not seeds:
        return []
    prepared = prepare(pipe, settings.replace(seed=seeds[0]))
    with pipeline_lock(pipe):
        images, _ = sample_runs(pipe, prepared, [int(seed) for seed in seeds], prepared.runs())
    return [(images[2 * i], images[2 * i + 1]) for i in range(len(seeds))]


@torch.no_grad()
def sample_runs(
    pipe,
    prepared: PreparedRun,
    seeds: list[int],
    runs: list[Run],
    *,
    tracer: GuidanceTracer | None = None,
    on_step: StepCallback | None = None,
    stop: threading.Event | None = None,
) -> tuple[list[Image.Image], list[bool]]:
    """The single pipeline call: every seed sampled once per run in `runs`, all from the seed's noise; batch items
    are [seed0 run0, seed0 run1, ..., seed1 run0, ...]. `runs[0]` must be the seed's run without the negative
    prompt: a run with a negative plan shares its steps before the window opens and takes its ε_∅. Returns the
    images and, per image, whether a safety checker blanked it. The caller holds the pipeline lock."""
    settings, family = prepared.settings, prepared.family
    pipe.scheduler = family.scheduler(pipe, settings.scheduler, base_scheduler_config(pipe))
    texts = [run.text for run in runs]
    embeddings, conditioning, lengths = encode_scheduled(
        pipe, texts, len(seeds), prepared.guided, settings.steps, prepared.embedding
    )
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds for _ in runs]
    hook = branch_hook(pipe, prepared, runs, len(seeds), tracer, conditioning, lengths)
    plans = hook.plans
    item_plans = [None if hook.source[item] == item else plan for item, plan in enumerate(plans)]
    nag = nag_attention(pipe, settings, item_plans, hook.call, prepared.embedding, 1 if tracer is not None else None)
    # Cross-attention maps of the with-run (run 1) of a single-seed traced call, when its tracer asks for them.
    attention = (
        AttentionRecorder(pipe.unet, tracer.attention, hook.call) if tracer is not None and tracer.attention else None
    )
    on_step_end = step_end_callback(hook, tracer, nag, attention, texts, settings.steps, on_step, stop)
    nag_context = nag if nag is not None else contextlib.nullcontext()
    with hook, nag_context, attention if attention is not None else contextlib.nullcontext():
        output = pipe(
            **embeddings,
            **family.guidance_arguments(settings.guidance),
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


def branch_hook(pipe, prepared: PreparedRun, runs: list[Run], seed_count: int, tracer, conditioning, lengths):
    """The guidance hook of one call: each batch item's negative plan, the item whose steps it shares before its
    window opens (the seed's run without the negative), and what the tracer asks it to capture."""
    family = prepared.family
    plans = [NO_NEGATIVE if run.plan is None else run.plan for run in runs] * seed_count
    first_of_seed = [item // len(runs) * len(runs) for item in range(len(plans))]
    source = [item if runs[item % len(runs)].plan is None else first_of_seed[item] for item in range(len(plans))]
    return BranchHook(
        family.denoiser(pipe),
        plans,
        source,
        push_runs=(1,) if tracer is not None and tracer.push_map else (),
        capture=tracer is not None,
        split_calls=family.true_cfg and prepared.guided,  # FLUX.1's true CFG: text call, then negative call
        unguided=tuple(item for item in range(len(plans)) if runs[item % len(runs)].unguided),
        conditioning=conditioning,
        # attention maps and NAG read batch rows of one batched call: there, texts are padded to one length
        # (A1111's pad_cond_uncond option; prepare says so)
        lengths=None if (tracer is not None and tracer.attention) or prepared.settings.uses_nag() else lengths,
    )


def step_end_callback(hook: BranchHook, tracer, nag, attention, texts: list[RunText], total: int, on_step, stop):
    """The pipeline's `callback_on_step_end`: checks the sample, records the step's trace from what the hooks
    captured, reports it, and stops the run when the stop flag is set."""
    by_step = texts_by_step(texts, total) if tracer is not None else None

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

    return on_step_end
