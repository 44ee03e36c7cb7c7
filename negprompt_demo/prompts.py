"""Text embeddings for a batch of runs: each run's prompt and negative prompt, encoded once per distinct text.

A pipeline call samples several runs side by side (per seed: the run without the negative prompt, the runs with
it, and optionally the run with the negative phrased in the prompt). diffusers takes the batch's embeddings as
`prompt_embeds` / `negative_prompt_embeds` (plus the pooled ones for SDXL), one row per batch item; this module
builds those rows.

A run's `negative` of None means what a plain diffusers call with no negative prompt uses: the encoded empty
string "" for SD 1.x/2.x, and for SDXL models with `force_zeros_for_empty_prompt` (the base model) all-zero
embeddings. The empty string "" is encoded as text on every model (how A1111 and ComfyUI users know the baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from negprompt_demo.loading import model_family


@dataclass(frozen=True)
class RunText:
    """What one run of a seed is conditioned on."""

    prompt: str
    negative: str | None  # None: the model's own "no negative prompt" (see the module docstring)


def encode_runs(pipe, texts: list[RunText], seed_count: int, cfg_active: bool) -> dict:
    """The embeddings keyword arguments of a pipeline call whose batch is `texts` repeated for each of
    `seed_count` seeds (items [seed0 run0, seed0 run1, ..., seed1 run0, ...])."""
    device = pipe._execution_device
    sdxl = model_family(pipe) == "sdxl"
    encoded: dict[RunText, tuple] = {}
    for text in texts:
        if text not in encoded:
            encoded[text] = pipe.encode_prompt(
                prompt=text.prompt,
                device=device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=cfg_active,
                negative_prompt=text.negative if cfg_active else None,
            )
    rows = [encoded[text] for text in texts]

    def batch(position: int) -> torch.Tensor:
        one_seed = torch.cat([row[position] for row in rows])
        return one_seed.repeat(seed_count, *([1] * (one_seed.ndim - 1)))

    embeds = {"prompt_embeds": batch(0)}
    if sdxl:
        embeds["pooled_prompt_embeds"] = batch(2)
    if cfg_active:
        embeds["negative_prompt_embeds"] = batch(1)
        if sdxl:
            embeds["negative_pooled_prompt_embeds"] = batch(3)
    return embeds
