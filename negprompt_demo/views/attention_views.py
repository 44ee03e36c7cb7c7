"""Pictures of the attention maps (`attention.py`): one word's map over the with-run's x0 at a step, and a strip of
that word's map over the steps, with the words as the page's chips.

Like `visualize.py`, nothing here runs a model. Each map is scaled to its own maximum: a map shows *where* a word
looks at that step (its shape); the level of DAAM's mean over layers and heads says little across words and steps.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from negprompt_demo.sampling.trace import GuidanceTrace
from negprompt_demo.views.visualize import enlarge, font, overlay_map

ATTENTION_OFF = "Tick **record attention maps** (sampling settings) and compare again to see where each word looks."
ATTENTION_COLORMAP = "turbo"
SOURCE_MARKS = {"negative": "−", "prompt": "+"}
STRIP_COLUMNS = 25


def word_choices(trace: GuidanceTrace) -> list[tuple[str, int]]:
    """The chips: (label, word index), the negative's words first ("− mustache"), then the prompt's ("+ man")."""
    if trace.attention is None:
        return []
    return [(f"{SOURCE_MARKS[word.source]} {word.text}", i) for i, word in enumerate(trace.attention.words)]


def chosen_word(trace: GuidanceTrace, word) -> int | None:
    """The word index a chip value names, or the first word when the value is missing or not one of them."""
    if trace.attention is None or not trace.attention.words:
        return None
    is_number = isinstance(word, (int, float)) and not isinstance(word, bool)
    if is_number and float(word).is_integer() and 0 <= word < len(trace.attention.words):
        return int(word)
    return 0


def map_at(trace: GuidanceTrace, index: int, word: int) -> tuple[int, np.ndarray] | None:
    """(step, map) of `word` at the last step at or before `index` that kept maps (every step unless the memory
    bound thinned them out), or None."""
    for step in reversed(trace.steps[: index + 1]):
        if step.attention_maps is not None:
            return step.index, step.attention_maps[word].float().numpy()
    return None


def word_maps(trace: GuidanceTrace) -> np.ndarray | None:
    """Every kept step's maps of a trace in memory, [kept steps, words, h, w]."""
    kept = [step.attention_maps.float().numpy() for step in trace.steps if step.attention_maps is not None]
    return np.stack(kept) if kept else None


def word_overlay(preview: np.ndarray, values: np.ndarray, min_side: int = 256) -> Image.Image:
    """A word's map over an x0 picture, scaled to the map's own maximum (a blank map: the picture alone)."""
    if float(values.max()) <= 0:
        return enlarge(Image.fromarray(preview), min_side)
    return enlarge(overlay_map(preview, values, float(values.max()), ATTENTION_COLORMAP, alpha=0.6), min_side)


def word_strip(maps: np.ndarray, steps: list[int], chosen: int | None, tile: int = 40) -> Image.Image:
    """One word's map at each kept step (0-based `steps`), each scaled to its own maximum, in rows of
    STRIP_COLUMNS, the step numbers above; the tile of step `chosen` is framed."""
    columns = min(len(steps), STRIP_COLUMNS)
    rows = -(-len(steps) // columns)
    label, gap = 14, 3
    canvas = Image.new("RGB", (columns * (tile + gap) - gap, rows * (tile + label + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    every = max(1, len(steps) // 10)  # at most about ten step numbers per strip
    for i, (step, values) in enumerate(zip(steps, maps)):
        x, y = (i % columns) * (tile + gap), (i // columns) * (tile + label + gap)
        scaled = values / max(float(values.max()), 1e-8)
        colored = (colormaps[ATTENTION_COLORMAP](scaled)[..., :3] * 255).astype(np.uint8)
        canvas.paste(Image.fromarray(colored).resize((tile, tile), Image.BILINEAR), (x, y + label))
        if i % every == 0 or step == chosen:
            draw.text((x + 1, y), str(step + 1), fill="black", font=font(11))
        if step == chosen:
            draw.rectangle([x, y + label, x + tile - 1, y + label + tile - 1], outline="white", width=2)
            draw.rectangle([x - 1, y + label - 1, x + tile, y + label + tile], outline="black", width=1)
    return canvas


def attention_reading(trace: GuidanceTrace, index: int, word: int) -> str:
    """What the overlay shows, in a sentence or two (Markdown)."""
    plan = trace.attention
    chosen = plan.words[word]
    found = map_at(trace, index, word)
    branch = "the negative branch" if chosen.source == "negative" else "the text branch"
    text = f"**{chosen.text}** ({chosen.source}, {len(chosen.positions)} token(s)) on {branch} of the run with the "
    text += "negative prompt"
    shown = trace.steps[index]
    if found is not None and found[0] != shown.index:
        text += f"; map of step {found[0] + 1} (maps kept every {plan.stride} steps to bound memory)"
        shown = trace.steps[found[0]]
    if chosen.source == "negative" and (not trace.cfg_active or not shown.negative_active):
        text += ". The negative prompt does not act at this step, so its words get no attention (blank map)"
    return f"{text}. Each map is scaled to its own maximum. {plan.note}"


def step_attention(
    trace: GuidanceTrace, index: int, word, strip: np.ndarray | None = None
) -> tuple[Image.Image | None, Image.Image | None, str]:
    """The step view's attention pictures for step `index`: the chosen word's map over the with-run's x0, its
    strip over the kept steps (`strip`: [kept steps, h, w], read from the trace in memory when not given) and
    the reading."""
    word = chosen_word(trace, word)
    if word is None:
        return None, None, ATTENTION_OFF if trace.attention is None else "Neither prompt has a word to map."
    found = map_at(trace, index, word)
    if strip is None:
        every = word_maps(trace)
        strip = every[:, word] if every is not None else None
    steps = trace.attention.recorded_steps
    overlay = word_overlay(trace.steps[index].previews[1], found[1]) if found is not None else None
    shown = found[0] if found is not None else None
    picture = word_strip(strip, steps, shown) if strip is not None and steps and len(strip) == len(steps) else None
    return overlay, picture, attention_reading(trace, index, word)
