"""SD3/SD3.5 and FLUX.1, the flow-matching families that read the text with a T5 encoder: what differs for them.

- Settings (`check_settings`): they always sample with their own FlowMatchEulerDiscreteScheduler ("Euler"); on
  FLUX.1 the guidance setting is true CFG's scale (`families.Flux.guidance_arguments`). A1111 prompt weights,
  BREAK, escapes and negative embeddings are refused (an InputError at `engine.prepare`): those are read by the
  CLIP chunking of `prompts.py`, for SD 1.x/2.x and SDXL; these models read the text as written, each encoder up
  to its own limit: CLIP 77 tokens (SD3's two CLIPs, FLUX.1's pooled CLIP), T5 256 (SD3) or 512 (FLUX.1). Every
  encoder that cuts gets a warning that names the words it never sees (`truncation_warnings`).
- Encoding (`encode_flow_runs`): each text through the pipeline's own `encode_prompt` (SD3: two CLIPs and T5;
  FLUX.1: CLIP's pooled and T5), so every run equals a plain diffusers call. Every text is padded to the same
  length by the pipeline itself, so runs of different texts batch without the chunk padding of `prompts.py`.
- A run's `negative` of None is the encoded "" on both (FLUX.1 has no negative branch without a negative prompt:
  the run "without" is true CFG with an empty negative, so only the negative differs between the runs).
- FLUX.1 packs 2×2 latent patches into 64 channels; `spatial_latents` unpacks them for the trace.
"""

from __future__ import annotations

import torch

from negprompt_demo.models.families import FLOW_MATCHING_SCHEDULER, family_of
from negprompt_demo.settings import CompareSettings, InputError
from negprompt_demo.syntax.prompt_syntax import has_syntax

# The output names of SD3's `encode_prompt` (FLUX.1's is called once per text, see `encode_flow_text`).
SD3_ENCODED_NAMES = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
# The page's status line when a result carries FLUX.1's plain distilled image (engine.Comparison.distilled).
DISTILLED_NOTE = (
    "FLUX.1: both images use true CFG (the guidance scale), the left one with an empty negative, so only the "
    "negative differs. FLUX.1 by default samples without true CFG and ignores any negative prompt; that image is "
    "distilled_no_true_cfg.png in the downloads (also in the side-by-side picture)."
)


def check_settings(pipe, resolved: CompareSettings) -> tuple[CompareSettings, list[str]]:
    """The settings as these families run them, and the warnings that says; InputError for what they cannot read
    (A1111 weights and negative embeddings, see the module docstring)."""
    name = family_of(pipe).title
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
    """What each text encoder cuts of the prompt and the negative prompt (`truncation_warnings`)."""
    return truncation_warnings(pipe, resolved.prompt, "prompt") + truncation_warnings(
        pipe, resolved.negative, "negative prompt"
    )


def text_encoders(pipe) -> list[tuple[str, object, int, str]]:
    """(name, tokenizer, tokens it reads with its special tokens, what it gives the model) for each text encoder of
    the pipeline, as its `encode_prompt` calls them: CLIPs at their tokenizer's 77, T5 at `max_sequence_length`."""
    family = family_of(pipe)
    if family.true_cfg:  # FLUX.1
        clips, role = (("CLIP ViT-L", "tokenizer"),), "its pooled vector (all FLUX.1 takes of CLIP)"
    else:
        clips = (("CLIP ViT-L", "tokenizer"), ("OpenCLIP bigG", "tokenizer_2"))
        role = "its pooled vector and its part of the sequence"
    encoders = [
        (name, getattr(pipe, attribute), getattr(pipe, attribute).model_max_length, role)
        for name, attribute in clips
        if getattr(pipe, attribute, None) is not None
    ]
    if getattr(pipe, family.t5_tokenizer, None) is not None:
        encoders.append(("T5", getattr(pipe, family.t5_tokenizer), family.t5_tokens, "the sequence"))
    return encoders


def reading_tokenizer(pipe):
    """The T5 tokenizer, whose limit decides what the model reads (its CLIP encoders read 77 tokens, but T5
    carries the longer text), and that limit; CLIP's where a T5 encoder was left out of the pipeline."""
    family = family_of(pipe)
    if getattr(pipe, family.t5_tokenizer, None) is not None:
        return getattr(pipe, family.t5_tokenizer), family.t5_tokens
    return pipe.tokenizer, pipe.tokenizer.model_max_length


def token_count(pipe, text: str) -> tuple[int, int]:
    """(tokens of the text, tokens the model reads), special tokens left out of both."""
    tokenizer, limit = reading_tokenizer(pipe)
    special = tokenizer.num_special_tokens_to_add()  # CLIP: start and end; T5: end only
    ids = tokenizer(text, truncation=False, add_special_tokens=False, verbose=False).input_ids
    return len(ids), limit - special


def truncation_warnings(pipe, text: str, field_name: str) -> list[str]:
    """One warning for every text encoder that cuts `text` (SD3's CLIPs at 77 tokens while T5 reads 256, T5 itself
    past its limit): which encoder, how much it reads and exactly which words it never sees."""
    if not text:
        return []
    encoders = text_encoders(pipe)
    cuts = {name: _cut(tokenizer, text, limit) for name, tokenizer, limit, _ in encoders}
    same: dict[tuple, list[str]] = {}  # SD3's two CLIPs tokenize alike: one sentence names both
    for name, _, _, role in encoders:
        if cuts[name] is not None:
            same.setdefault((*cuts[name], role), []).append(name)
    warnings = []
    for (count, read, cut, role), names in same.items():
        if "T5" not in names and "T5" in cuts:
            still = " T5 reads further" + (", but cuts too (below)." if cuts["T5"] else " and reads them.")
        else:
            still = ""
        role = role if len(names) == 1 else role.replace("its", "their")
        warnings.append(
            f"The {field_name} is {count} tokens long for {' and '.join(names)}, which read{'s' * (len(names) == 1)} "
            f"only {read}; these words were cut from {role}: {cut}.{still}"
        )
    return warnings


def _cut(tokenizer, text: str, limit: int) -> tuple[int, int, str] | None:
    """(tokens of the text, tokens the encoder reads, the words it cuts), special tokens left out; None if nothing
    is cut. CLIP reads [start] 75 tokens [end] of 77; T5 255 tokens [end] of 256. The words are whole words as
    typed, from the first word the encoder does not read to the end (a word it reads in part is named so)."""
    special = tokenizer.num_special_tokens_to_add()
    count = _token_count(tokenizer, text)
    read = limit - special
    if count <= read:
        return None
    words = text.split()
    low, high = 0, len(words)  # the most leading words whose tokens all fit: `low`
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if _token_count(tokenizer, " ".join(words[:middle])) <= read else (low, middle - 1)
    if _token_count(tokenizer, " ".join(words[:low])) == read:  # the cut falls between two words
        return count, read, _quote(" ".join(words[low:]))
    rest = f" and {_quote(' '.join(words[low + 1 :]))}" if low + 1 < len(words) else ""
    return count, read, f"the end of {_quote(words[low])}{rest}"  # the encoder reads the word's first tokens


def _quote(text: str, limit: int = 120) -> str:
    return f'"{text}"' if len(text) <= limit else f'"{text[: limit - 1]}…"'


def _token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, truncation=False, add_special_tokens=False, verbose=False).input_ids)


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
    if family_of(pipe).true_cfg:  # FLUX.1 encodes one text at a time; its negative is a second text (true CFG)
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


def spatial_latents(pipe, settings: CompareSettings):
    """How the trace reads the denoiser's latents as [n, c, h, w]: FLUX.1 packs 2×2 patches into 64 channels
    (`FluxPipeline._unpack_latents` undoes it); the other families' latents are spatial already."""
    if not family_of(pipe).true_cfg:  # FLUX.1's packed latents
        return None
    return lambda packed: pipe._unpack_latents(packed, settings.height, settings.width, pipe.vae_scale_factor)
