"""What one request may cost: weights checked before sampling everywhere, and on a shared instance a cap on prompt
chunks and a budget of device time per request, refused up front with a message that says what to lower.

The device time of a request is estimated from the model on this device: `device_rates` times one UNet call and
one VAE decode at the model's native size (once per loaded pipeline), and `estimate_seconds` scales them by what
the request asks for:

    UNet items per step × steps × latent pixels × (1 + CHUNK_COST × (chunks − 1)) × (attention maps: ×1.5)
    + decoded pictures × latent pixels

A comparison samples 2 runs (4 UNet items a step, 5 with the push map or Perp-Neg), the sweep 1 + 6 runs, many
seeds 2–3 runs per seed; every step's x0 picture of a comparison is decoded for the step view. A1111 puts no
limit on chunks (75 tokens each, and BREAK starts one); a shared instance caps them, since each one lengthens
every cross-attention and adds a word map per token.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import torch

from negprompt_demo.models.families import family_of
from negprompt_demo.models.loading import pipeline_lock
from negprompt_demo.settings import InputError

CHUNK_COST = 0.25  # extra UNet time per extra chunk (measured +8 % for 10 chunks on the embedded model; SD 1.5's
# cross-attention is a larger share, so the estimate is kept on the safe side)
ATTENTION_COST = 1.5  # recording every word's map per step (measured on the embedded model, docs/BENCHMARKS.md)


@dataclass(frozen=True)
class CostLimits:
    """A shared instance's bounds on one request."""

    max_seconds: float = 30.0  # estimated device time
    max_chunks: int = 3  # per text (prompt, negative): 225 tokens


@dataclass(frozen=True)
class Workload:
    """What a request asks the device to do, beyond its settings: how many runs and seeds one call samples."""

    kind: str = "compare"  # "compare", "sweep" or "seeds"
    runs: int = 2  # paired runs sampled together (sweep: 1 + starts; seeds: columns)
    seeds: int = 1


def check_request(pipe, settings, chunks: dict[str, int], request: Workload, limits: CostLimits | None) -> None:
    """The up-front checks of one request (`settings` resolved, its weights checked there; `chunks` the most
    chunks the prompt and the negative fill, as `engine.prepare` read them): chunks and device time on a shared
    instance (`limits`)."""
    if limits is None:
        return
    for name, count in chunks.items():
        if count > limits.max_chunks:
            label = "prompt" if name == "prompt" else "negative prompt"
            raise InputError(
                f"The {label} fills {count} chunks of 75 tokens; this shared instance reads at most "
                f"{limits.max_chunks} ({75 * limits.max_chunks} tokens). Shorten it, or run the app on your machine."
            )
    seconds = estimate_seconds(pipe, settings, request, max(chunks.values()))
    if seconds > limits.max_seconds:
        raise InputError(
            f"This request would take about {seconds:.0f} s of device time ({describe(settings, request)}); a "
            f"request on this shared instance may take at most {limits.max_seconds:.0f} s. Use fewer steps, seeds "
            "or pixels, or run the app on your own machine."
        )


def describe(settings, request: Workload) -> str:
    seeds = f"{request.seeds} seeds × " if request.kind == "seeds" else ""
    return f"{seeds}{settings.steps} steps at {settings.width}×{settings.height} px"


def estimate_seconds(pipe, settings, request: Workload, chunks: int = 1) -> float:
    """The estimated device time of a request (module docstring), from this device's rates for `pipe`."""
    small_batch, large_batch, decode_rate = device_rates(pipe)
    scale = getattr(pipe, "vae_scale_factor", 8)
    pixels = (settings.width // scale) * (settings.height // scale)
    extra = int(settings.push_map) or int(settings.perp_neg)
    if request.kind == "seeds":
        items, decodes = request.seeds * request.runs * 2, request.seeds * request.runs
    elif request.kind == "sweep":
        items, decodes = 2 + request.runs * (2 + extra), 1 + request.runs
    else:
        items, decodes = 4 + extra, 2 * settings.steps
    unet_rate = large_batch if items >= LARGE_BATCH else small_batch  # a large batch costs less per item
    per_item = unet_rate * (1 + CHUNK_COST * (chunks - 1)) * (ATTENTION_COST if settings.attention_maps else 1.0)
    return items * settings.steps * pixels * per_item + decodes * pixels * decode_rate


_rates: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
SMALL_BATCH, LARGE_BATCH = 4, 8  # a comparison's UNet batch; many seeds and the sweep batch 8 or more


def device_rates(pipe) -> tuple[float, float, float]:
    """(seconds per UNet item per latent pixel in a batch of SMALL_BATCH, the same in a batch of LARGE_BATCH,
    seconds per decoded picture per latent pixel) on this device, measured once per pipeline at its native size
    (the fastest of two tries after a warm-up)."""
    if pipe in _rates:
        return _rates[pipe]
    family = family_of(pipe)
    if family.joint_attention:  # a transformer model (SD3, FLUX.1): no UNet call to time, assume a large one
        _rates[pipe] = (2e-5, 2e-5, 2e-6)
        return _rates[pipe]
    side = family.native_size(pipe) // pipe.vae_scale_factor
    unet = [unet_seconds(pipe, batch, side) / (batch * side * side) for batch in (SMALL_BATCH, LARGE_BATCH)]
    latents = torch.zeros(1, pipe.vae.config.latent_channels, side, side, device=pipe.device, dtype=pipe.vae.dtype)
    timings = []
    with pipeline_lock(pipe), torch.inference_mode():
        for _ in range(3):
            started = time.perf_counter()
            pipe.vae.decode(latents)
            timings.append(time.perf_counter() - started)
    _rates[pipe] = (*unet, min(timings[1:]) / (side * side))
    return _rates[pipe]


def unet_seconds(pipe, batch: int, side: int) -> float:
    """One UNet call on `batch` latents of side × side with a one-chunk context (the fastest of two, warm)."""
    denoiser, dtype = pipe.unet, pipe.unet.dtype
    latents = torch.zeros(batch, denoiser.config.in_channels, side, side, device=pipe.device, dtype=dtype)
    context = torch.zeros(batch, 77, denoiser.config.cross_attention_dim, device=pipe.device, dtype=dtype)
    extra = {}
    if getattr(denoiser.config, "addition_embed_type", None) == "text_time":  # SDXL
        pooled = pipe.text_encoder_2.config.projection_dim if pipe.text_encoder_2 is not None else 1280
        extra["added_cond_kwargs"] = {
            "text_embeds": torch.zeros(batch, pooled, device=pipe.device, dtype=dtype),
            "time_ids": torch.zeros(batch, 6, device=pipe.device, dtype=dtype),
        }
    timings = []
    with pipeline_lock(pipe), torch.inference_mode():
        for _ in range(3):
            started = time.perf_counter()
            denoiser(latents, 500, encoder_hidden_states=context, **extra)
            timings.append(time.perf_counter() - started)
    return min(timings[1:])
