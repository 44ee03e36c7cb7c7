"""Pictures of latents: the predicted clean sample x0 at each step, shown while and after sampling.

The trace records x0 as latents only; pictures are decoded when something shows them (`fill_previews`), so a
traced call spends no decoder time on steps nobody looks at.

A small VAE (the embedded model's) is decoded for real. Big models' VAEs cost too much per step, so their latents
are mapped to RGB with the published linear factors (4×3 for SD 1.x/2.x and SDXL, 16×3 for SD3's and FLUX.1's
16-channel latents; the same approximation ComfyUI and A1111 use for live previews), at latent resolution. FLUX.1's
latents reach this module unpacked (the trace unpacks its 2×2 patches), so every family's are [n, c, h, w].
"""

from __future__ import annotations

import contextlib
import functools
import math
import time

import numpy as np
import torch

from negprompt_demo.models.families import family_of

# Published latent→RGB factors (rows: latent channels, columns: R, G, B) and bias, for the scaled latents diffusers
# samples (SD3/FLUX.1: (z − shift)·scale, ComfyUI's "process_in" space). Source: ComfyUI, comfy/latent_formats.py,
# classes SD15, SDXL, SD3 and Flux (github.com/comfyanonymous/ComfyUI).
LATENT_RGB_FACTORS = {
    "sd": (
        [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]],
        [0.0, 0.0, 0.0],
    ),
    "sdxl": (
        [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]],
        [0.1084, -0.0175, -0.0011],
    ),
    "sd3": (
        [[-0.0922, -0.0175, 0.0749], [0.0311, 0.0633, 0.0954], [0.1994, 0.0927, 0.0458], [0.0856, 0.0339, 0.0902],
         [0.0587, 0.0272, -0.0496], [-0.0006, 0.1104, 0.0309], [0.0978, 0.0306, 0.0427], [-0.0042, 0.1038, 0.1358],
         [-0.0194, 0.0020, 0.0669], [-0.0488, 0.0130, -0.0268], [0.0922, 0.0988, 0.0951], [-0.0278, 0.0524, -0.0542],
         [0.0332, 0.0456, 0.0895], [-0.0069, -0.0030, -0.0810], [-0.0596, -0.0465, -0.0293],
         [-0.1448, -0.1463, -0.1189]],
        [0.2394, 0.2135, 0.1925],
    ),
    "flux": (
        [[-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433], [-0.0174, 0.0160, 0.0617],
         [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115], [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259],
         [-0.0245, 0.0250, 0.1180], [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
         [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499],
         [-0.1262, -0.0982, -0.0778]],
        [-0.0329, -0.0718, -0.0851],
    ),
}  # fmt: skip
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
    """A real decode for a small VAE, or for latents no published factors fit (a custom VAE's channel count)."""
    decoder_size = sum(p.numel() for p in pipe.vae.decoder.parameters())
    factors, _ = LATENT_RGB_FACTORS.get(family_of(pipe).key, ([], []))
    return decoder_size <= SMALL_VAE_PARAMETERS or pipe.vae.config.latent_channels != len(factors)


@torch.no_grad()
def decode_previews(pipe, latents: torch.Tensor) -> np.ndarray:
    """[n, c, h, w] latents → [n, H, W, 3] uint8 pictures."""
    if uses_vae_for_previews(pipe):
        vae = pipe.vae
        scaled = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
        if vae.config.get("shift_factor") is not None:  # SD3's and FLUX.1's VAEs: z = latents / scale + shift
            scaled = scaled + vae.config.shift_factor
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
        factors, bias = LATENT_RGB_FACTORS[family_of(pipe).key]
        weight = torch.tensor(factors, dtype=torch.float32)
        rgb = torch.einsum("nchw,cr->nrhw", latents.float().cpu(), weight) + torch.tensor(bias).view(1, 3, 1, 1)
        images = ((rgb + 1) / 2).clamp(0, 1)
    images = torch.nan_to_num(images, nan=0.0)
    return (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def fill_previews(pipe, steps: list) -> None:
    """Decode the x0 previews of the trace steps (`StepRecord`s) that have none yet, in one batch: each run's
    (`previews`) and, where they were recorded, each guidance branch's alone (`branch_previews`)."""
    missing = [step for step in steps if step.previews is None]
    if not missing:
        return
    latents = []
    for step in missing:  # per step: each run's x0, then each branch's where they were recorded
        latents += [step.x0_latents] + ([] if step.branch_x0_latents is None else [step.branch_x0_latents])
    pictures = decode_previews(pipe, torch.cat(latents))
    start = 0
    for step in missing:
        step.previews = pictures[start : start + len(step.x0_latents)]
        start += len(step.x0_latents)
        if step.branch_x0_latents is not None:
            step.branch_previews = pictures[start : start + len(step.branch_x0_latents)]
            start += len(step.branch_x0_latents)


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
