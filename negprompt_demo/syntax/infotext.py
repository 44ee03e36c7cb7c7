"""The PNG `parameters` text ("infotext"), written so that AUTOMATIC1111's web UI reads it back to what ran.

A1111 reads the negative prompt line with its prompt-editing schedule (`prompt_editing.py`) and each step's text
with its weight parser (`prompt_syntax.py`). The window fields are written into that line as prompt editing with
whole step numbers, `[[negative:S]::E]` (S, E: the switch points; a number without a decimal point is a step in
every A1111 version, where a fraction such as 1.0 was read differently before and after A1111 1.6):

- the negative as typed, when wrapping it gives A1111 the same text at every step (checked with our own A1111
  reading);
- otherwise (a ":", "|" or bracket that A1111 would take as syntax once the text is inside `[…:S]`, e.g.
  `ratio 16:9`, `a|b`, `(unbalanced`) the same reading rewritten: each stretch of one weight with its syntax
  characters escaped (`\\:`, `\\|`, `\\(`…) and its weight written out `(text:1.1)`, one `[before:after:step]`
  per change of text;
- a window that holds no step (start 1.0, or start ≥ end), or strength 0, leaves the negative line empty, which is
  what ran, and keeps the typed negative under the extra key "Unused negative".

Settings A1111 has no equivalent of are extra keys A1111 keeps but does not act on: "Negative strength",
"Perp-Neg", "Negative embedding" (A1111 finds an embedding by its name in the text instead), 'Empty baseline: ""',
and NAG's ("Negative mode", "NAG scale", "NAG tau", "NAG alpha"; in mode "nag" the negative acted only in attention,
so the Negative prompt line is empty and the text is under "NAG negative").
"""

from __future__ import annotations

import json
from pathlib import PurePath

from negprompt_demo.syntax.prompt_editing import step_texts, window_steps
from negprompt_demo.syntax.prompt_syntax import BREAK, parse_weights

_ESCAPED = "\\()[]:|"


def window_negative(negative: str, start: float, end: float, steps: int) -> str | None:
    """The negative and its window as one A1111 prompt-editing text (None: the window holds no step)."""
    first, stop = window_steps(start, end, steps)
    if not negative or first >= stop:
        return None
    wanted = [text if first <= step < stop else "" for step, text in enumerate(step_texts(negative, steps))]
    typed = _wrapped(negative, first, stop, steps)
    if step_texts(typed, steps) == wanted:
        return typed
    return _explicit_schedule(wanted)


def _wrapped(text: str, first: int, stop: int, steps: int) -> str:
    if first > 0:  # acts from step S + 1: [text:S]
        text = f"[{text}:{first - 1}]"
    if stop < steps:  # acts up to step E: [text::E]
        text = f"[{text}::{stop - 1}]"
    return text


def _explicit_schedule(texts: list[str]) -> str:
    """One nested `[before:after:step]` per change of the per-step texts, each text in escaped weights."""
    written = weights_text(texts[0])
    for step in range(1, len(texts)):
        if texts[step] != texts[step - 1]:
            written = f"[{written}:{weights_text(texts[step])}:{step - 1}]"
    return written


def weights_text(text: str) -> str:
    """The text's A1111 reading written with escapes and explicit weights only (no stray syntax)."""
    pieces = []
    for fragment in parse_weights(text):
        if fragment.weight is None:
            pieces.append(f" {BREAK} ")
        elif fragment.text == BREAK and fragment.weight < 0:  # the word "BREAK" (see prompt_syntax)
            pieces.append(f"({BREAK}:{_number(-fragment.weight)})")
        elif fragment.weight == 1:
            pieces.append(_escape(fragment.text))
        elif fragment.text:
            pieces.append(f"({_escape(fragment.text)}:{_number(fragment.weight)})")
    return "".join(pieces)


def _escape(text: str) -> str:
    return "".join("\\" + char if char in _ESCAPED else char for char in text)


def _number(value: float) -> str:
    written = repr(value)
    return written if "e" not in written else f"{value:.20f}".rstrip("0")


def quote(value: str) -> str:
    """An extra key's value as A1111 writes one: JSON-quoted when it holds a comma, colon or line break."""
    return json.dumps(value, ensure_ascii=False) if any(char in value for char in ",:\n") else value


def parameters_text(settings, model: str) -> str:
    """A1111-style `parameters` of resolved `settings` (see the module docstring)."""
    negative = window_negative(settings.negative, settings.negative_start, settings.negative_end, settings.steps)
    negative = negative if settings.negative_strength != 0 else None  # strength 0: the run without, exactly
    if settings.negative_mode == "nag":  # the negative acted in attention only: CFG's negative branch was ""
        negative = None
    extra = "" if negative is not None or not settings.negative else f", Unused negative: {quote(settings.negative)}"
    if settings.negative_mode == "nag":
        extra = f", NAG negative: {quote(settings.negative)}"
    extra += settings.nag_parameters()
    extra += "" if settings.negative_strength == 1 else f", Negative strength: {settings.negative_strength:g}"
    extra += ", Perp-Neg: True" if settings.perp_neg else ""
    if settings.negative_embedding:
        extra += f", Negative embedding: {quote(PurePath(settings.negative_embedding).stem)}"
    extra += ', Empty baseline: ""' if settings.empty_as_text else ""  # SDXL's run without: "" instead of zeros
    return (
        f"{settings.prompt}\nNegative prompt: {negative or ''}\n"
        f"Steps: {settings.steps}, Sampler: {settings.scheduler}, CFG scale: {settings.guidance:g}, "
        f"Seed: {settings.seed}, Size: {settings.width}x{settings.height}{extra}, Model: {model}"
    )
