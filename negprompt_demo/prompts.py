"""Text embeddings for a batch of runs: each run's prompt and negative prompt, encoded once per distinct text.

A pipeline call samples several runs side by side (per seed: the run without the negative prompt, the runs with
it, and optionally the run with the negative phrased in the prompt). diffusers takes the batch's embeddings as
`prompt_embeds` / `negative_prompt_embeds` (plus the pooled ones for SDXL, SD3 and FLUX.1), one row per batch
item; this module builds those rows.

A run's `negative` of None means what a plain diffusers call with no negative prompt uses: the encoded empty
string "" for SD 1.x/2.x and SD3, and for SDXL models with `force_zeros_for_empty_prompt` (the base model)
all-zero embeddings. FLUX.1 has no negative branch without one (true CFG needs a negative prompt), so there None is
the encoded "" as well: the run "without" is true CFG with an empty negative, and only the negative differs between
the runs. The empty string "" is encoded as text on every model (how A1111 and ComfyUI users know the baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from negprompt_demo.loading import model_family

# The output names of each family's `encode_prompt` (FLUX.1's is called once per text, see `encode_text`).
ENCODED_NAMES = {
    "sd": ("prompt_embeds", "negative_prompt_embeds"),
    "sdxl": ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"),
    "sd3": ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"),
}


@dataclass(frozen=True)
class RunText:
    """What one run of a seed is conditioned on."""

    prompt: str
    negative: str | None  # None: the model's own "no negative prompt" (see the module docstring)


def encode_runs(pipe, texts: list[RunText], seed_count: int, cfg_active: bool) -> dict:
    """The embeddings keyword arguments of a pipeline call whose batch is `texts` repeated for each of
    `seed_count` seeds (items [seed0 run0, seed0 run1, ..., seed1 run0, ...])."""
    encoded: dict[RunText, dict[str, torch.Tensor]] = {}
    for text in texts:
        if text not in encoded:
            encoded[text] = encode_text(pipe, text, cfg_active)
    rows = [encoded[text] for text in texts]

    def batch(name: str) -> torch.Tensor:
        one_seed = torch.cat([row[name] for row in rows])
        return one_seed.repeat(seed_count, *([1] * (one_seed.ndim - 1)))

    return {name: batch(name) for name in rows[0]}


def encode_text(pipe, text: RunText, cfg_active: bool) -> dict[str, torch.Tensor]:
    """One run's embeddings by keyword name, one row each; the negative ones only with classifier-free guidance."""
    device = pipe._execution_device
    family = model_family(pipe)
    if family == "flux":  # FLUX.1 encodes one text at a time; its negative is a second text (true CFG)
        prompt_embeds, pooled, _ = pipe.encode_prompt(prompt=text.prompt, prompt_2=None, device=device)
        embeds = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}
        if cfg_active:
            negative_embeds, negative_pooled, _ = pipe.encode_prompt(
                prompt=text.negative or "", prompt_2=None, device=device
            )
            embeds |= {"negative_prompt_embeds": negative_embeds, "negative_pooled_prompt_embeds": negative_pooled}
        return embeds
    extra = {"prompt_2": None, "prompt_3": None} if family == "sd3" else {}
    outputs = pipe.encode_prompt(
        prompt=text.prompt,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=cfg_active,
        negative_prompt=text.negative if cfg_active else None,
        **extra,
    )
    return {name: value for name, value in zip(ENCODED_NAMES[family], outputs) if value is not None}
