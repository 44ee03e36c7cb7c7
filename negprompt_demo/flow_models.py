"""SD3/SD3.5 and FLUX.1, the flow-matching families that read the text with a T5 encoder: what differs for them.

- Settings (`check_settings`): they always sample with their own FlowMatchEulerDiscreteScheduler ("Euler"); on
  FLUX.1 the guidance setting is true CFG's scale (`guidance_arguments`). A1111 prompt weights, BREAK, escapes and
  negative embeddings are refused (an InputError at `engine.prepare`): those are read by the CLIP chunking of
  `prompts.py`, for SD 1.x/2.x and SDXL; these models read the text as written, T5 carrying up to 256 (SD3) or
  512 (FLUX.1) tokens, and a longer text is cut, which a warning names (`truncation_warnings`).
- Encoding (`encode_flow_runs`): each text through the pipeline's own `encode_prompt` (SD3: two CLIPs and T5;
  FLUX.1: CLIP's pooled and T5), so every run equals a plain diffusers call. Every text is padded to the same
  length by the pipeline itself, so runs of different texts batch without the chunk padding of `prompts.py`.
- A run's `negative` of None is the encoded "" on both (FLUX.1 has no negative branch without a negative prompt:
  the run "without" is true CFG with an empty negative, so only the negative differs between the runs).
- FLUX.1 packs 2×2 latent patches into 64 channels; `spatial_latents` unpacks them for the trace.
"""

from __future__ import annotations

import torch

from negprompt_demo.loading import FLOW_MATCHING_FAMILIES, model_family
from negprompt_demo.prompt_syntax import has_syntax
from negprompt_demo.settings import CompareSettings, InputError

# They always sample with the model's own FlowMatchEulerDiscreteScheduler (engine.SCHEDULERS' DDPM-family samplers
# do not apply to them); it is an Euler sampler, so the settings say "Euler".
FLOW_MATCHING_SCHEDULER = "Euler"
# FLUX.1-dev's distilled guidance (diffusers' and Black Forest Labs' default); the guidance setting is true CFG's.
FLUX_DISTILLED_GUIDANCE = 3.5
# The T5 tokens each family's pipeline reads (its `max_sequence_length` default).
T5_SEQUENCE_LENGTH = {"sd3": 256, "flux": 512}
# The output names of SD3's `encode_prompt` (FLUX.1's is called once per text, see `encode_flow_text`).
SD3_ENCODED_NAMES = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
# What a user must know about a family before comparing (engine.py's docstring says why): the model note's end.
FAMILY_NOTES = {
    "sd3": " SD3 samples with its own flow-matching Euler scheduler; the scheduler setting does not apply.",
    "flux": (
        " FLUX.1 ignores a negative prompt unless true CFG is on: here the guidance scale is true CFG's scale "
        "(above 1; it doubles the sampling time). Both images use it, the first with an empty negative; FLUX.1's "
        "default image (no true CFG) comes as a third picture in the downloads."
    ),
}
# The page's status line when a result carries FLUX.1's plain distilled image (engine.Comparison.distilled).
DISTILLED_NOTE = (
    "FLUX.1: both images use true CFG (the guidance scale), the left one with an empty negative, so only the "
    "negative differs. FLUX.1 by default samples without true CFG and ignores any negative prompt; that image is "
    "distilled_no_true_cfg.png in the downloads (also in the side-by-side picture)."
)


def is_flow_model(pipe) -> bool:
    return model_family(pipe) in FLOW_MATCHING_FAMILIES


def family_name(pipe) -> str:
    return "FLUX.1" if model_family(pipe) == "flux" else "SD3"


def check_settings(pipe, resolved: CompareSettings) -> tuple[CompareSettings, list[str]]:
    """The settings as these families run them, and the warnings that says; InputError for what they cannot read
    (A1111 weights and negative embeddings, see the module docstring)."""
    name = family_name(pipe)
    refused = "A1111 weights / negative embeddings are for SD 1.x/2.x and SDXL; this {} model reads the text as written"
    if resolved.negative_embedding:
        raise InputError(f"{refused.format(name)}. Remove the negative embedding (the file is not read).")
    for text, field_name in ((resolved.prompt, "prompt"), (resolved.negative, "negative prompt")):
        if has_syntax(text):
            raise InputError(
                f"The {field_name} uses A1111 syntax (brackets, weights such as (word:1.3), BREAK or \\ escapes): "
                f"{refused.format(name)}. Write it without brackets."
            )
    if resolved.attention_maps:
        raise InputError(
            f"Attention maps are read from a UNet's cross-attention (SD 1.x/2.x, SDXL); {name} attends jointly to "
            "text and image in a transformer, which this app does not map. Untick “record attention maps”."
        )
    warnings = []
    if resolved.scheduler != FLOW_MATCHING_SCHEDULER:
        warnings.append(
            f"{name} samples with its own flow-matching Euler scheduler; the scheduler '{resolved.scheduler}' does "
            "not apply to it, so both runs used Euler."
        )
        resolved = resolved.replace(scheduler=FLOW_MATCHING_SCHEDULER)
    return resolved, warnings


def text_warnings(pipe, resolved: CompareSettings) -> list[str]:
    """What the T5 encoder cuts of the prompt and the negative prompt (`truncation_warnings`)."""
    return truncation_warnings(pipe, resolved.prompt, "prompt") + truncation_warnings(
        pipe, resolved.negative, "negative prompt"
    )


def reading_tokenizer(pipe):
    """The T5 tokenizer, whose limit decides what the model reads (its CLIP encoders read 77 tokens, but T5
    carries the longer text), and that limit; CLIP's where a T5 encoder was left out of the pipeline."""
    family = model_family(pipe)
    t5 = {"sd3": "tokenizer_3", "flux": "tokenizer_2"}[family]
    if getattr(pipe, t5, None) is not None:
        return getattr(pipe, t5), T5_SEQUENCE_LENGTH[family]
    return pipe.tokenizer, pipe.tokenizer.model_max_length


def token_count(pipe, text: str) -> tuple[int, int]:
    """(tokens of the text, tokens the model reads), special tokens left out of both."""
    tokenizer, limit = reading_tokenizer(pipe)
    special = tokenizer.num_special_tokens_to_add()  # CLIP: start and end; T5: end only
    ids = tokenizer(text, truncation=False, add_special_tokens=False, verbose=False).input_ids
    return len(ids), limit - special


def truncation_warnings(pipe, text: str, field_name: str) -> list[str]:
    """A text encoder reads a fixed number of tokens (SD3's T5 256, FLUX.1's T5 512, special tokens included); say
    exactly which words it never sees."""
    tokenizer, limit = reading_tokenizer(pipe)
    if not text:
        return []
    ids = tokenizer(text, truncation=False, add_special_tokens=True, verbose=False).input_ids
    if len(ids) <= limit:
        return []
    special = tokenizer.num_special_tokens_to_add()
    cut = tokenizer.decode(ids[limit - 1 : -1]).strip()
    return [
        f"The {field_name} is {len(ids) - special} tokens long but the text encoder reads only {limit - special}; "
        f'these words were cut: "{cut}"'
    ]


def encode_flow_runs(pipe, texts: list, seed_count: int, cfg_active: bool) -> dict:
    """`prompts.encode_runs` for these families: the embeddings keyword arguments of a call whose batch is `texts`
    (`prompts.RunText`s) repeated for each of `seed_count` seeds."""
    encoded: dict = {}
    for text in texts:
        if text not in encoded:
            encoded[text] = encode_flow_text(pipe, text, cfg_active)
    rows = [encoded[text] for text in texts]

    def batch(name: str) -> torch.Tensor:
        one_seed = torch.cat([row[name] for row in rows])
        return one_seed.repeat(seed_count, *([1] * (one_seed.ndim - 1)))

    return {name: batch(name) for name in rows[0]}


def encode_flow_text(pipe, text, cfg_active: bool) -> dict[str, torch.Tensor]:
    """One run's embeddings by keyword name, one row each; the negative ones only with classifier-free guidance."""
    device = pipe._execution_device
    if model_family(pipe) == "flux":  # FLUX.1 encodes one text at a time; its negative is a second text (true CFG)
        prompt_embeds, pooled, _ = pipe.encode_prompt(prompt=text.prompt, prompt_2=None, device=device)
        embeds = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}
        if cfg_active:
            negative_embeds, negative_pooled, _ = pipe.encode_prompt(
                prompt=text.negative or "", prompt_2=None, device=device
            )
            embeds |= {"negative_prompt_embeds": negative_embeds, "negative_pooled_prompt_embeds": negative_pooled}
        return embeds
    outputs = pipe.encode_prompt(
        prompt=text.prompt,
        prompt_2=None,
        prompt_3=None,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=cfg_active,
        negative_prompt=text.negative if cfg_active else None,
    )
    return {name: value for name, value in zip(SD3_ENCODED_NAMES, outputs) if value is not None}


def guidance_arguments(family: str, guidance: float) -> dict:
    """The guidance setting as the pipeline's arguments: classifier-free guidance's scale, except on FLUX.1, where
    it is true CFG's scale and the distilled guidance stays at its default (see engine.py's docstring)."""
    if family == "flux":
        return {"true_cfg_scale": guidance, "guidance_scale": FLUX_DISTILLED_GUIDANCE}
    return {"guidance_scale": guidance}


def spatial_latents(pipe, settings: CompareSettings):
    """How the trace reads the denoiser's latents as [n, c, h, w]: FLUX.1 packs 2×2 patches into 64 channels
    (`FluxPipeline._unpack_latents` undoes it); the other families' latents are spatial already."""
    if model_family(pipe) != "flux":
        return None
    return lambda packed: pipe._unpack_latents(packed, settings.height, settings.width, pipe.vae_scale_factor)
