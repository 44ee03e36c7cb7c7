"""Why might my negative prompt do nothing? Plain sentences for the run's status and trace, found before sampling.

Each check is a cause users report in other tools' trackers: a guidance-distilled model that ignores the negative
branch, words the model never learned (where the model says which words it knows, `vocabulary.model_vocabulary`:
the embedded model's text encoder only ever saw its captions' words), a negative that repeats the prompt's words
(the two branches then pull the same way and cancel), and, on SDXL, which baseline the run "without" a negative
prompt used. Words are those the text encoder reads: A1111's syntax (brackets, weights such as "(mustache:1.4)",
escapes, BREAK) is taken out by the parser the encoding uses (`read_words`), so "1.4" is never taken for words.
Settings under which the negative cannot act (guidance ≤ 1, an empty window, strength 0) are here too
(`settings_warnings`), and how the CLIP families read the texts in chunks (`chunk_warnings`); SD3's and FLUX.1's
encoders cutting a text are `flow_models.truncation_warnings`. `engine.prepare` gathers them all.
"""

from __future__ import annotations

from negprompt_demo.models.embeddings import NegativeEmbedding, trigger_in
from negprompt_demo.models.families import StableDiffusion, family_of
from negprompt_demo.models.loading import model_label
from negprompt_demo.models.prompts import PromptReading, chunk_message, read_prompt, text_pairs
from negprompt_demo.models.vocabulary import model_vocabulary, vocabulary_words
from negprompt_demo.settings import CompareSettings
from negprompt_demo.syntax.prompt_editing import step_texts, window_steps
from negprompt_demo.syntax.prompt_syntax import parse_weights

# Words too common to say a negative "repeats" the prompt.
FUNCTION_WORDS = frozenset(
    "a an the of in on at to and or with without no not by for from photo picture image portrait".split()
)


NAG_OFFER = (
    " Set “how the negative acts” to nag (on the page: the “use NAG” button beside it): Normalized Attention "
    "Guidance moves the negative into attention and needs no negative branch."
)


def negative_diagnostics(pipe, settings: CompareSettings, embedding: NegativeEmbedding | None = None) -> list[str]:
    """Everything that makes this run's negative prompt weak or idle, one sentence each (none when all is well);
    `embedding` is the run's negative embedding (`engine.prepare` reads it)."""
    notes = []
    reason = distilled_reason(pipe)
    if reason and (takes_guidance_as_input(pipe) or settings.guidance <= 1):
        if not settings.uses_nag():  # NAG needs no negative branch (nag.py, nag_joint.py): every family has it
            notes.append(
                f"This model is guidance-distilled ({reason}): it samples without classifier-free guidance, so "
                f"there is no negative branch and the negative prompt is not used at all.{NAG_OFFER}"
            )
    elif reason:
        notes.append(
            f"This model is guidance-distilled ({reason}): at guidance {settings.guidance:g} classifier-free "
            "guidance runs and the negative acts, but the model was made for a scale of 0–1 and images often burn."
        )
    if not settings.negative:
        return notes
    unseen = unseen_words(pipe, read_words(settings.negative, settings.steps))
    if unseen:
        notes.append(
            f"This model never saw {_quoted(unseen)} in training (its captions use a small vocabulary): the "
            "words tokenize fine but mean nothing to it, so they push nowhere in particular."
        )
    shared = repeated_words(read_words(settings.prompt, settings.steps), read_words(settings.negative, settings.steps))
    if shared:
        notes.append(
            f"The negative repeats {_quoted(shared)} from the prompt: the prompt pulls toward it and the negative "
            "pushes away from it, so those words largely cancel."
        )
    if settings.perp_neg and settings.guidance > 1:
        notes.append(perp_neg_note(settings))
    family = family_of(pipe)
    if family.two_clips:
        for text, field_name in ((settings.prompt, "prompt"), (settings.negative, "negative prompt")):
            notes += [note for note in [pooled_cut(pipe, text, field_name, embedding)] if note]
    if family.zero_empty_negative(pipe) and not settings.empty_as_text:
        notes.append(
            "The run without a negative used SDXL's zero embeddings (diffusers' default), not the encoded \"\" that "
            'A1111 and ComfyUI use; tick "baseline: encode \\"\\"" to compare against that.'
        )
    return notes


def pooled_cut(pipe, text: str, field_name: str, embedding=None) -> str | None:
    """SDXL reads a long text whole, in 75-token chunks, but its pooled text vector (OpenCLIP bigG's, added to the
    time embedding) is the first chunk's, as in A1111: the words after the first chunk, if any, named."""
    reading = read_prompt(pipe, text, embedding)
    if len(reading.chunks) <= 1:
        return None
    rest = " ".join(" ".join(span.text.strip() for span in chunk if span.text.strip()) for chunk in reading.chunks[1:])
    shown = rest if len(rest) <= 120 else rest[:119] + "…"
    return (
        f"SDXL's pooled text vector (OpenCLIP bigG's) is read from the {field_name}'s first chunk only, as A1111 "
        f'does: the words after it ("{shown}") steer the image through cross-attention alone.'
    )


def comfyui_neg_scale(strength: float, guidance: float) -> float:
    """ComfyUI's Perp-Neg `neg_scale` for our strength m at guidance g: its result x0_∅ + g·(pos − s·perp) is ours,
    ε_∅ + g·(ε_text − ε_∅) − m·(g − 1)·(ε_n − ε_∅)⊥, when s = m·(g − 1)/g."""
    return strength * (guidance - 1) / guidance


def perp_neg_note(settings: CompareSettings) -> str:
    """Perp-Neg's strength on ComfyUI's scale, and which projection is used (the page, status and trace say it)."""
    scale = comfyui_neg_scale(settings.negative_strength, settings.guidance)
    return (
        f"Perp-Neg: strength {settings.negative_strength:g} is ComfyUI's PerpNegGuider neg_scale {scale:.3g} at "
        f"guidance {settings.guidance:g} (neg_scale = strength·(g − 1)/g). The push is projected per image, as in "
        "the authors' code; ComfyUI projects over the whole batch (the same for a batch of one)."
    )


def read_words(text: str, steps: int = 1) -> str:
    """Every word its encoder reads at some step, A1111's syntax taken out: prompt editing and alternation
    (`[a:b:0.5]`, `[a|b]`) are read as the texts of the steps (`prompt_editing.step_texts`), and in each the
    weights' numbers, brackets, escapes and BREAK are syntax, not words (`prompt_syntax.parse_weights`)."""
    texts = dict.fromkeys(step_texts(text, max(steps, 1)))
    return " ".join(part.text for step_text in texts for part in parse_weights(step_text) if part.weight is not None)


DISTILLED_NAMES = ("turbo", "lcm", "lightning")  # SDXL-Turbo / SD-Turbo (ADD), LCM, SDXL-Lightning


def takes_guidance_as_input(pipe) -> bool:
    """An LCM UNet is conditioned on the guidance scale instead of running CFG (the engine then runs none)."""
    unet = getattr(pipe, "unet", None)
    return unet is not None and unet.config.get("time_cond_proj_dim") is not None


def distilled_reason(pipe) -> str | None:
    """Why a model samples without CFG, if it does: an LCM UNet takes the guidance scale as an input; Turbo, LCM
    and Lightning checkpoints say so in their names (they were trained to sample in 1–8 steps with no CFG)."""
    if takes_guidance_as_input(pipe):
        return "its UNet takes the guidance scale as an input, as LCM models do"
    name = model_label(pipe).lower()
    found = next((word for word in DISTILLED_NAMES if word in name), None)
    return f"a {found} model, trained to sample without classifier-free guidance" if found else None


def unseen_words(pipe, negative: str) -> list[str]:
    """The negative's words that the model was never trained on, where it says which words it knows
    (`vocabulary.model_vocabulary`: the embedded model does); none for a model that ships no vocabulary."""
    vocabulary = model_vocabulary(pipe)
    if vocabulary is None:
        return []
    return list(dict.fromkeys(word for word in vocabulary_words(negative) if word not in vocabulary))


def repeated_words(prompt: str, negative: str) -> list[str]:
    """Content words that are in both the prompt and the negative."""
    prompt_words = set(_words(prompt))
    return list(dict.fromkeys(word for word in _words(negative) if word in prompt_words))


def _words(text: str) -> list[str]:
    cleaned = "".join(ch if ch.isalnum() else " " for ch in text.lower()).split()
    return [word for word in cleaned if word not in FUNCTION_WORDS and not word.isdigit()]


def _quoted(words: list[str]) -> str:
    shown = ", ".join(f'"{word}"' for word in words[:6])
    return shown + (f" and {len(words) - 6} more" if len(words) > 6 else "")


def settings_warnings(family: StableDiffusion, resolved: CompareSettings) -> list[str]:
    """Settings under which the negative prompt cannot act: both images would be the same."""
    warnings = []
    if family.true_cfg and resolved.guidance <= 1 and not resolved.uses_nag():
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
    return warnings


def step_readings(pipe, resolved: CompareSettings, embedding: NegativeEmbedding | None) -> dict[str, list]:
    """How the CLIP families read the prompt and the negative (A1111's chunking: BREAK, commas), each distinct
    step text of prompt editing once, by field."""
    readings = {}
    for name in ("prompt", "negative"):
        distinct = dict.fromkeys(step_texts(getattr(resolved, name), resolved.steps))
        readings[name] = [read_prompt(pipe, step_text, embedding) for step_text in distinct]
    return readings


def chunk_warnings(
    pipe, resolved: CompareSettings, embedding: NegativeEmbedding | None, readings: dict[str, list]
) -> list[str]:
    """How the CLIP families read the texts: an embedding without its trigger word, texts past one chunk, and
    texts of different chunk counts padded to one length where batch rows must line up."""
    warnings = []
    if embedding is not None and not trigger_in(text_pairs(pipe)[0][1], resolved.negative, embedding):
        warnings.append(
            f"The negative embedding's trigger word {embedding.name} is not in the negative prompt, so the "
            f"embedding is not used: write {embedding.name} in the negative prompt (A1111's rule)."
        )
    counts = {1}  # the "" of the run without
    for name, field_name in (("prompt", "prompt"), ("negative", "negative prompt")):
        counts.update(max(len(reading.chunks), 1) for reading in readings[name])
        message = chunk_message(max(readings[name], key=lambda reading: len(reading.chunks)), field_name)
        warnings += [message] if message else []
    if (resolved.attention_maps or resolved.uses_nag()) and len(counts) > 1 and resolved.guidance > 1:
        reason = "attention maps recorded" if resolved.attention_maps else "NAG"
        warnings.append(
            f"With {reason}, texts of different chunk counts are padded to one length with the "
            "encoded \"\" chunk (A1111's pad_cond_uncond option), not read at their own lengths (A1111's default, "
            f"as otherwise): the images can differ slightly from a run without {reason}."
        )
    return warnings


def negative_reading(pipe, resolved: CompareSettings, embedding: NegativeEmbedding | None) -> PromptReading | None:
    """How the negative prompt is read: tokens by chunk, weights, the embedding's places (None when empty)."""
    if not resolved.negative:
        return None
    first, _ = window_steps(resolved.negative_start, resolved.negative_end, resolved.steps)
    text = step_texts(resolved.negative, resolved.steps)[min(first, resolved.steps - 1)]  # with prompt editing:
    return read_prompt(pipe, text, embedding)  # its text when it first acts
