"""What a comparison is asked to do: every input declared once, and the one check that makes input safe to run.

Each field of `CompareSettings` carries a `Field` (type, range, default, label, help). The page's widgets, the
public `/compare` API, the CLI flags and the example rows are all built from these declarations. Every run, from
any entry point, passes what it received through `resolve_settings` once, in `engine.prepare` before sampling, so
bad input gets the same clear message everywhere and never reaches the pipeline. Opening a link resolves its
values one step earlier too (`Handlers.open_link`), to fill the page's inputs with what will run (the seed drawn,
the model's defaults) and to recognise an example's link; the run then checks those filled-in values again, which
changes nothing (resolved settings resolve to themselves). Adding an input is one field here plus its use in the
engine.

This module imports no torch or diffusers, so the CLI can build its parser (and answer `--help`) at once.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from dataclasses import dataclass
from pathlib import PurePath

from negprompt_demo.fields import MAX_ECHO_CHARS as MAX_ECHO_CHARS  # front ends' messages cut values alike
from negprompt_demo.fields import MAX_PROMPT_CHARS, Field, InputError, Kind
from negprompt_demo.syntax.infotext import parameters_text
from negprompt_demo.syntax.prompt_editing import step_texts
from negprompt_demo.syntax.prompt_syntax import WeightError, parse_weights

# The short list of samplers users know by their A1111 names (the engine maps them to diffusers schedulers).
SCHEDULER_NAMES = ("Euler", "Euler a", "DPM++ 2M Karras", "DDIM", "UniPC")
MAX_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_SEED = 2**32 - 1
MAX_STRENGTH = 10.0
MAX_WEIGHT = 100.0  # |weight| of any stretch of text; A1111 users write 0.5–2, and 1.1^50 is already 117
# How the negative prompt acts: as classifier-free guidance's negative branch, through attention (NAG), or both.
NEGATIVE_MODES = ("cfg", "nag", "both")
MAX_NAG_SCALE, MAX_NAG_TAU = 20.0, 10.0
# The NAG authors' (ChenDarYen/Normalized-Attention-Guidance): τ 2.5 and, in their cross-attention processor
# (SD 1.x/2.x, SDXL), α 0.5; their examples use s = 5 (s = 1, their pipelines' own default, is NAG off).
# A model's defaults may override them (loading.model_defaults: the joint-attention families' α).
NAG_DEFAULTS = {"nag_scale": 5.0, "nag_tau": 2.5, "nag_alpha": 0.5}
MIN_GRID_SEEDS, MAX_GRID_SEEDS, DEFAULT_GRID_SEEDS = 4, 64, 16
# The model name meaning the tiny face model shipped in the package (negprompt_demo/embedded), the default: it
# runs offline. Declared here, beside the other inputs, so front ends read it before torch loads.
EMBEDDED = "embedded"


def default_model() -> str:
    """The model a front end uses when none is named: $NEGPROMPT_MODEL, else the embedded one."""
    return os.environ.get("NEGPROMPT_MODEL") or EMBEDDED


def setting(default, field: Field):
    return dataclasses.field(default=default, metadata={"field": field})


def size_setting(label: str):
    """Width or height: blank or 0 is the model's native size, bounds follow the model (`size_limits`)."""
    help_text = "multiple of 8, half to twice the model's native size; 0: native"
    return setting(None, Field(Kind.INT, label, help_text, step=8, model_default=True, zero_is_blank=True))


@dataclass
class CompareSettings:
    """One comparison: the same prompt and seed, once with an empty negative prompt and once with `negative`.

    Blank fields (None) mean "random" for the seed and "the model's default" for the rest; `resolve_settings`
    fills them, so resolved settings say exactly what ran."""

    prompt: str = setting("", Field(Kind.TEXT, "prompt", "what the image should show", maximum=MAX_PROMPT_CHARS))
    negative: str = setting(
        "",
        Field(
            Kind.TEXT,
            "negative prompt",
            "what to steer away from (compared with an empty one)",
            maximum=MAX_PROMPT_CHARS,
        ),
    )
    seed: int | None = setting(
        None, Field(Kind.INT, "seed", "-1 or blank: random; the seed used is always reported", -1, MAX_SEED, 1)
    )
    steps: int | None = setting(None, Field(Kind.INT, "steps", "denoising steps", 1, MAX_STEPS, 1, model_default=True))
    guidance: float | None = setting(
        None,
        Field(Kind.FLOAT, "guidance scale", "classifier-free guidance scale (FLUX.1: true CFG's scale)", 0.0,
              MAX_GUIDANCE, 0.5, model_default=True),
    )  # fmt: skip
    scheduler: str | None = setting(
        None,
        Field(Kind.CHOICE, "scheduler", "sampler, the same for both runs", choices=SCHEDULER_NAMES, model_default=True),
    )
    width: int | None = size_setting("width (px)")
    height: int | None = size_setting("height (px)")
    negative_start: float = setting(
        0.0,
        Field(Kind.FLOAT, "negative starts at", "fraction of the steps before the negative acts (A1111 [neg:0.3])", 0.0,
              1.0, 0.05),
    )  # fmt: skip
    negative_end: float = setting(
        1.0,
        Field(Kind.FLOAT, "negative ends at", "fraction of the steps after which it stops (A1111 [neg::0.6])", 0.0,
              1.0, 0.05),
    )  # fmt: skip
    negative_strength: float = setting(
        1.0,
        Field(Kind.FLOAT, "negative strength", "how hard to push away from the negative: 0 none, 1 plain CFG, 2 twice",
              0.0, MAX_STRENGTH, 0.1),
    )  # fmt: skip
    negative_mode: str = setting(
        "cfg",
        Field(Kind.CHOICE, "how the negative acts", "cfg: as the negative branch of classifier-free guidance; nag: in "
              "attention (Normalized Attention Guidance, works at guidance 1 and on distilled models); both",
              choices=NEGATIVE_MODES),
    )  # fmt: skip
    nag_scale: float | None = setting(
        None,
        Field(Kind.FLOAT, "NAG scale", "NAG's s: Z = s·Z⁺ − (s − 1)·Z⁻ before normalising; 1: no NAG (the authors' "
              "convention)", 1.0, MAX_NAG_SCALE, 0.5, model_default=True),
    )  # fmt: skip
    nag_tau: float | None = setting(
        None,
        Field(Kind.FLOAT, "NAG tau", "NAG's τ: the extrapolated attention output is at most τ times the prompt's (L1, "
              "per token)", 1.0, MAX_NAG_TAU, 0.1, model_default=True),
    )  # fmt: skip
    nag_alpha: float | None = setting(
        None,
        Field(Kind.FLOAT, "NAG alpha", "NAG's α: how much of the normalised output replaces the prompt's; 0: no NAG",
              0.0, 1.0, 0.05, model_default=True),
    )  # fmt: skip
    perp_neg: bool = setting(
        False,
        Field(Kind.FLAG, "Perp-Neg", "remove only the part of the negative's push perpendicular to the prompt's, per "
              "image; strength m is ComfyUI's neg_scale m·(g−1)/g at guidance g (0.867 for m = 1 at 7.5)"),
    )  # fmt: skip
    push_map: bool = setting(
        True,
        Field(
            Kind.FLAG,
            "record what the empty prompt predicts",
            "one extra UNet item per step: the negative-push map and each branch's prediction in the step view",
        ),
    )
    empty_as_text: bool = setting(
        False,
        Field(Kind.FLAG, 'baseline: encode ""', 'SDXL: the run without a negative uses the encoded "" (as A1111 and '
              "ComfyUI do), not diffusers' zero embeddings; the same on other models"),
    )  # fmt: skip
    attention_maps: bool = setting(
        False,
        Field(Kind.FLAG, "record attention maps", "where each word of the negative and the prompt looks, per step "
              "(costs memory: up to 32 MiB per run)"),
    )  # fmt: skip
    attention_mid_block: bool = setting(
        False,
        Field(Kind.FLAG, "attention maps: include the mid block", "off: DAAM's layers (the UNet's down and up blocks' "
              "cross-attention); on: the mid block's too (coarser, often more concentrated)"),
    )  # fmt: skip
    negative_embedding: str = setting(
        "",
        Field(Kind.FILE, "negative embedding", "a textual-inversion .safetensors file (EasyNegative, badhandv4…) or "
              "owner/name/file.safetensors on the Hub; its file name is the trigger word to write in the negative "
              "prompt"),
    )  # fmt: skip

    def replace(self, **changes) -> CompareSettings:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def parameters_text(self, model: str) -> str:
        """A1111-style `parameters` text, so other tools can read back how an image was made (infotext.py: the
        window as A1111 prompt editing, settings A1111 lacks as extra keys)."""
        return parameters_text(self, model)

    def uses_nag(self) -> bool:
        return self.negative_mode in ("nag", "both")

    def nag_parameters(self) -> str:
        """The NAG inputs as A1111-style extra keys ("" when the negative acts through CFG only); "Negative mode"
        says whether the negative prompt also took CFG's negative branch."""
        if not self.uses_nag():
            return ""
        return (
            f", Negative mode: {self.negative_mode}, NAG scale: {self.nag_scale:g}, NAG tau: {self.nag_tau:g}, "
            f"NAG alpha: {self.nag_alpha:g}"
        )


def embedding_name(path: str) -> str:
    """An embedding's name: its file name without the extension, as A1111 names embeddings."""
    return PurePath(path).stem


FIELDS: dict[str, Field] = {f.name: f.metadata["field"] for f in dataclasses.fields(CompareSettings)}
DEFAULTS: dict = {f.name: f.default for f in dataclasses.fields(CompareSettings)}


# The many-seeds view's own inputs, beside a comparison's (its `seed` is the first seed).
GRID_FIELDS: dict[str, Field] = {
    "seed_count": Field(Kind.INT, "seeds", "how many seeds, from the seed on", MIN_GRID_SEEDS, MAX_GRID_SEEDS, 1),
    "phrased": Field(
        Kind.FLAG,
        "third column: the negative phrased in the prompt",
        'the prompt + " without <negative>" with an empty negative; blank: on when the negative is short',
    ),
}
GRID_DEFAULTS = {"seed_count": DEFAULT_GRID_SEEDS, "phrased": None}


def resolve_grid(seed_count, phrased) -> tuple[int, bool | None]:
    """The many-seeds inputs checked like every other input; `phrased` None means "on when the negative is short"."""
    count = DEFAULT_GRID_SEEDS if seed_count is None else GRID_FIELDS["seed_count"].parse(seed_count, "seeds")
    return count, None if phrased is None else GRID_FIELDS["phrased"].parse(phrased, "phrased")


def size_limits(native: int) -> tuple[int, int]:
    """Sizes allowed for a model whose native resolution is `native` px: half to double, multiples of 8."""
    return max(8, (native // 2) // 8 * 8), native * 2


def resolve_settings(settings: CompareSettings, native_size: int, defaults: dict) -> CompareSettings:
    """Check every field and fill the blanks (seed, the model's defaults) so the result says exactly what will run.

    `defaults` is the model's (steps, guidance, scheduler, optionally width/height). Raises InputError with a
    message that names the field and what is allowed.
    """
    defaults = {"width": native_size, "height": native_size, **NAG_DEFAULTS, **defaults}
    values = {}
    for name, field in FIELDS.items():
        value = getattr(settings, name)
        if field.is_blank(value):  # the model's default, else the field's own (None for the seed: random)
            value = defaults[name] if field.model_default else DEFAULTS[name]
        values[name] = None if value is None else field.parse(value, name)

    if not values["prompt"]:
        raise InputError("The prompt is empty: write what the image should show.")
    if values["seed"] is None or values["seed"] == -1:
        values["seed"] = random.randint(0, MAX_SEED)  # blank or -1 means "random", as in A1111
    if values["negative_start"] > values["negative_end"]:
        raise InputError(
            f"The negative starts at {values['negative_start']:g} of the steps but ends at "
            f"{values['negative_end']:g}: the start must not come after the end."
        )
    for name in ("prompt", "negative"):
        check_weights(values[name], FIELDS[name].label, values["steps"])
    low, high = size_limits(native_size)
    for name in ("width", "height"):
        if values[name] % 8 != 0:
            raise InputError(f"{name} must be a multiple of 8, got {values[name]}.")
        if not low <= values[name] <= high:
            raise InputError(f"{name} must be between {low} and {high} px for this model, got {values[name]}.")
    return CompareSettings(**values)


def check_weights(text: str, label: str, steps: int = 1) -> None:
    """Every step's text reads as A1111 weights (where A1111 would stop with an error, the user gets a message), and
    no weight is one that no model reads sensibly (500 nested "(" is 1.1^500 ≈ 5e20; a 400-digit number is
    infinite): it is refused, named, before any sampling, where it would otherwise end in NaN far from its cause."""
    for step_text in dict.fromkeys(step_texts(text, steps)):
        try:
            fragments = parse_weights(step_text)
        except WeightError as error:
            raise InputError(f"In the {label}: {error}") from None
        for fragment in fragments:
            weight = fragment.weight
            if weight is None or (math.isfinite(weight) and abs(weight) <= MAX_WEIGHT):
                continue
            shown = f"{weight:.3g}" if math.isfinite(weight) else "too large to be a number"
            snippet = fragment.text.strip()[:30] + ("…" if len(fragment.text.strip()) > 30 else "")
            raise InputError(
                f"The {label} gives “{snippet}” a weight of {shown}; weights must be between −{MAX_WEIGHT:g} and "
                f"{MAX_WEIGHT:g} (each “(” multiplies by 1.1, (word:w) sets w). Remove the extra brackets or lower it."
            )
