"""Pictures of latents: the predicted clean sample x0 at each step, shown while and after sampling.

The trace records x0 as latents only; pictures are decoded when something shows them (`fill_previews`), so a
traced call spends no decoder time on steps nobody looks at.

A small VAE (the embedded model's) is decoded for real. Big models' VAEs cost too much per step, so their latents
are mapped to RGB with the published linear 4×3 factors (the same approximation ComfyUI and A1111 use for live
previews), at latent resolution.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time

import numpy as np
import torch

from negprompt_demo.loading import model_family

# Published latent→RGB factors (rows: latent channels, columns: R, G, B) for the scaled latents diffusers samples.
LATENT_RGB_FACTORS = {
    "sd": (
        [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]],
        [0.0, 0.0, 0.0],
    ),
    "sdxl": (
        [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]],
        [0.1084, -0.0175, -0.0011],
    ),
}
# A VAE decoder this small is cheap enough to run at every step.
SMALL_VAE_PARAMETERS = 5_000_000
# While sampling, the app decodes and shows x0 pictures at most this often (a page shows a few per second at
# most); the steps in between are decoded in one batch after the run, for the scrubber and the animation.
LIVE_PREVIEW_INTERVAL_S = 0.1


@functools.cache
def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            flags = next((line.split(":", 1)[1].split() for line in file if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def uses_vae_for_previews(pipe) -> bool:
    decoder_size = sum(p.numel() for p in pipe.vae.decoder.parameters())
    return decoder_size <= SMALL_VAE_PARAMETERS or pipe.vae.config.latent_channels != 4


@torch.no_grad()
def decode_previews(pipe, latents: torch.Tensor, family: str) -> np.ndarray:
    """[n, c, h, w] latents → [n, H, W, 3] uint8 pictures."""
    if uses_vae_for_previews(pipe):
        vae = pipe.vae
        scaled = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
        precision = contextlib.nullcontext()
        if scaled.device.type == "cpu":
            # oneDNN's CPU convolutions run ~1.4x faster on channels-last input (same numbers to ~1e-5); the
            # module's weights stay as they are. On CPUs with bfloat16 instructions, bf16 is another ~1.6x
            # (previews only: within 5/255 of fp32, 0.5/255 on average; the result images stay fp32).
            # Together they took the embedded model's preview decodes from 0.28 s to 0.12 s of a ~0.9 s
            # comparison (docs/BENCHMARKS.md, "Profile and fixes").
            scaled = scaled.contiguous(memory_format=torch.channels_last)
            if scaled.dtype == torch.float32 and cpu_has_bfloat16():
                precision = torch.autocast("cpu", dtype=torch.bfloat16)
        with precision:
            images = vae.decode(scaled, return_dict=False)[0].float()
        images = (images / 2 + 0.5).clamp(0, 1)
    else:
        factors, bias = LATENT_RGB_FACTORS[family]
        weight = torch.tensor(factors, dtype=torch.float32)
        rgb = torch.einsum("nchw,cr->nrhw", latents.float().cpu(), weight) + torch.tensor(bias).view(1, 3, 1, 1)
        images = ((rgb + 1) / 2).clamp(0, 1)
    images = torch.nan_to_num(images, nan=0.0)
    return (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def fill_previews(pipe, steps: list) -> None:
    """Decode the x0 previews of the trace steps (`StepRecord`s) that have none yet, in one batch."""
    missing = [step for step in steps if step.previews is None]
    if not missing:
        return
    latents = torch.cat([step.x0_latents for step in missing])
    pictures = decode_previews(pipe, latents, model_family(pipe))
    start = 0
    for step in missing:  # each run's x0, and each branch's when they were recorded
        step.previews = pictures[start : start + len(step.x0_latents)]
        start += len(step.x0_latents)


class LivePreviews:
    """The live view's pictures while sampling: a step's x0 is decoded when the last decoded one is at least
    LIVE_PREVIEW_INTERVAL_S old, and always at the last step. One per run; the app and its benchmark share it."""

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self.last_decoded = -math.inf

    def decode_if_due(self, done: int, total: int, record) -> bool:
        """Decode `record`'s pictures if it is time; say whether it was."""
        if done < total and time.monotonic() - self.last_decoded < LIVE_PREVIEW_INTERVAL_S:
            return False
        fill_previews(self.pipe, [record])
        self.last_decoded = time.monotonic()
        return True
