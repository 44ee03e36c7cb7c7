"""What a comparison is asked to do, and the checks that turn user input into something safe to run.

Every entry point (CLI, Gradio page, public API) builds a `CompareSettings` and passes it through
`resolve_settings`, so bad input gets the same clear message everywhere and never reaches the pipeline.
"""

from __future__ import annotations

import dataclasses
import math
import random
import unicodedata
from dataclasses import dataclass

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

# The short list of samplers users know by their A1111 names; both runs always use the same one.
SCHEDULERS: dict[str, tuple[type, dict]] = {
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "DDIM": (DDIMScheduler, {}),
    "UniPC": (UniPCMultistepScheduler, {}),
}

MIN_STEPS, MAX_STEPS = 1, 150
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 30.0
MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 2000


class InputError(ValueError):
    """Input a user can fix; its message is shown to them as it is."""


@dataclass
class CompareSettings:
    """One comparison: the same prompt and seed, once with an empty negative prompt and once with `negative`."""

    prompt: str
    negative: str = ""
    seed: int | None = None
    steps: int = 25
    guidance: float = 7.5
    scheduler: str = "Euler"
    width: int | None = None
    height: int | None = None
    push_map: bool = False

    def replace(self, **changes) -> CompareSettings:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def parameters_text(self, model: str) -> str:
        """A1111-style `parameters` text, so other tools can read back how an image was made."""
        return (
            f"{self.prompt}\nNegative prompt: {self.negative}\n"
            f"Steps: {self.steps}, Sampler: {self.scheduler}, CFG scale: {self.guidance:g}, Seed: {self.seed}, "
            f"Size: {self.width}x{self.height}, Model: {model}"
        )


def size_limits(native: int) -> tuple[int, int]:
    """Sizes allowed for a model whose native resolution is `native` px: half to double, multiples of 8."""
    return max(8, (native // 2) // 8 * 8), native * 2


def resolve_settings(settings: CompareSettings, native_size: int, defaults: dict | None = None) -> CompareSettings:
    """Check every field and fill the blanks (seed, size) so the result says exactly what will run.

    Raises InputError with a message that names the field and the allowed range.
    """
    defaults = defaults or {}
    prompt = _clean_text(settings.prompt, "prompt")
    negative = _clean_text(settings.negative, "negative prompt")
    if not prompt:
        raise InputError("The prompt is empty: write what the image should show.")

    steps = _as_int(settings.steps, "steps")
    if not MIN_STEPS <= steps <= MAX_STEPS:
        raise InputError(f"steps must be between {MIN_STEPS} and {MAX_STEPS}, got {steps}.")

    guidance = _as_float(settings.guidance, "guidance scale")
    if not MIN_GUIDANCE <= guidance <= MAX_GUIDANCE:
        raise InputError(f"guidance scale must be between {MIN_GUIDANCE:g} and {MAX_GUIDANCE:g}, got {guidance:g}.")

    if settings.scheduler not in SCHEDULERS:
        raise InputError(f"Unknown scheduler {settings.scheduler!r}; choose one of: {', '.join(SCHEDULERS)}.")

    seed = None if settings.seed in (None, "") else _as_int(settings.seed, "seed")
    if seed is None or seed == -1:
        seed = random.randint(0, MAX_SEED)  # blank or -1 means "random", as in A1111
    elif not 0 <= seed <= MAX_SEED:
        raise InputError(f"seed must be between 0 and {MAX_SEED} (or -1 for random), got {seed}.")

    low, high = size_limits(native_size)
    sizes = []
    for name, value in (("width", settings.width), ("height", settings.height)):
        value = defaults.get(name, native_size) if value in (None, "", 0) else _as_int(value, name)
        if value % 8 != 0:
            raise InputError(f"{name} must be a multiple of 8, got {value}.")
        if not low <= value <= high:
            raise InputError(f"{name} must be between {low} and {high} px for this model, got {value}.")
        sizes.append(value)

    return CompareSettings(
        prompt=prompt,
        negative=negative,
        seed=seed,
        steps=steps,
        guidance=guidance,
        scheduler=settings.scheduler,
        width=sizes[0],
        height=sizes[1],
        push_map=bool(settings.push_map),
    )


def _clean_text(text: str | None, field: str) -> str:
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InputError(f"The {field} must be text.")
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(f"The {field} is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}.")
    # Control characters (NUL, escape sequences) mean nothing to a text encoder; newlines become spaces.
    kept = "".join(" " if ch in "\n\r\t" else ch for ch in text if unicodedata.category(ch) != "Cc" or ch in "\n\r\t")
    return " ".join(kept.split())


def _as_int(value, field: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{field} must be a whole number, got {value!r}.")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise InputError(f"{field} must be a whole number, got {value!r}.")
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise InputError(f"{field} must be a whole number, got {value!r}.") from None


def _as_float(value, field: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{field} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise InputError(f"{field} must be a finite number, got {value!r}.")
    return number
