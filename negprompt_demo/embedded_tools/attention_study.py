"""Do the attention maps mean something? On the embedded model the drawing code knows where each attribute is drawn
(`faces.ATTRIBUTE_REGIONS`), so a negative word's map can be checked against the place it should look.

For each attribute (mustache, hat, glasses) and the first seeds from 7000 on (held out: the examples, tables and
grids use seeds below 1000) whose run *without* the negative prompt shows the attribute (the probe says so), one
comparison "portrait photo of a man" vs negative "<attribute>" with attention maps on, through the app's engine,
once per layer set: DAAM's (the UNet's down and up blocks, the page's default) and with the mid block added.
The negative word's map (the with-run's negative branch) is summed over the steps, upsampled to the 64 px image
(bilinear), and its concentration on the attribute's box is

    concentration = (share of the map's mass inside the box) / (share of the image the box covers)

1 is a map spread evenly; the box's inverse area share (e.g. 8.3 for the mustache box) is all of it inside.
The same is measured per step (when the map forms), on the other attributes' boxes (does it look at *its*
attribute?) and for the prompt's word "man" on the same box (a word that names no part).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from negprompt_demo.embedded.faces import ATTRIBUTE_REGIONS, SIZE
from negprompt_demo.embedded.probe import Probe
from negprompt_demo.sampling.engine import compare, generate_pairs
from negprompt_demo.settings import CompareSettings

STUDY_ATTRIBUTES = ("mustache", "hat", "glasses")
PROMPT = "portrait photo of a man"
CONTROL_WORD = "man"
FIRST_SEED = 7000
GOAL = 2.0  # the mustache word should put at least twice the uniform share of its mass on the mustache
# The layer sets measured, by key: whether the UNet's mid block is mapped too (the goal is judged on DAAM's set).
LAYER_SETS = {"daam": False, "with_mid_block": True}
LAYER_SET_TITLES = {
    "daam": "DAAM's layers: the UNet's down and up blocks (the page's default)",
    "with_mid_block": "with the mid block added (the option)",
}


@dataclass
class SeedMaps:
    """One seed's comparison: both images and, over the steps, the negative word's and the control word's maps."""

    seed: int
    without: Image.Image
    with_negative: Image.Image
    negative: np.ndarray  # [steps, h, w]
    control: np.ndarray  # [steps, h, w]


def present_seeds(pipe, probe: Probe, attribute: str, count: int, sampling: dict, chunk: int = 32) -> list[int]:
    """The first `count` seeds from FIRST_SEED whose image without the negative prompt shows `attribute`."""
    settings = CompareSettings(PROMPT, attribute, **sampling)
    found: list[int] = []
    start = FIRST_SEED
    while len(found) < count:
        if start - FIRST_SEED > 20 * count + chunk:
            raise RuntimeError(f"fewer than {count} seeds show a {attribute} without the negative prompt")
        seeds = list(range(start, start + chunk))
        pairs = generate_pairs(pipe, settings, seeds)
        shown = probe.predict([pair[0] for pair in pairs])[attribute]
        found += [seed for seed, flag in zip(seeds, shown) if flag]
        start += chunk
    return found[:count]


def seed_maps(pipe, attribute: str, seed: int, sampling: dict, mid_block: bool = False) -> SeedMaps:
    """One comparison with attention maps on (DAAM's layers, or with the mid block); the maps of the negative
    word and of the control word."""
    settings = CompareSettings(
        PROMPT, attribute, seed=seed, attention_maps=True, attention_mid_block=mid_block, **sampling
    )
    result = compare(pipe, settings)
    words = result.trace.attention.words
    negative = next(i for i, w in enumerate(words) if w.source == "negative" and w.text == attribute)
    control = next(i for i, w in enumerate(words) if w.source == "prompt" and w.text == CONTROL_WORD)
    maps = torch.stack([step.attention_maps.float() for step in result.trace.steps])
    return SeedMaps(
        seed, result.without_negative, result.with_negative, maps[:, negative].numpy(), maps[:, control].numpy()
    )


def upsampled(maps: np.ndarray) -> np.ndarray:
    """[..., h, w] latent-resolution maps → [..., SIZE, SIZE] (bilinear, as the page shows them)."""
    tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))
    flat = tensor.reshape(-1, 1, *tensor.shape[-2:])
    return (
        F.interpolate(flat, (SIZE, SIZE), mode="bilinear", align_corners=False)
        .reshape(*tensor.shape[:-2], SIZE, SIZE)
        .numpy()
    )


def concentration(maps: np.ndarray, attribute: str) -> np.ndarray:
    """Mass share inside the attribute's box over the box's area share, for each [..., h, w] map."""
    x0, y0, x1, y1 = ATTRIBUTE_REGIONS[attribute]
    pictures = upsampled(maps)
    inside = pictures[..., y0:y1, x0:x1].sum(axis=(-1, -2))
    total = np.maximum(pictures.sum(axis=(-1, -2)), 1e-12)
    return (inside / total) / ((x1 - x0) * (y1 - y0) / SIZE**2)


def peak_inside(maps: np.ndarray, attribute: str) -> np.ndarray:
    """Whether each map's brightest pixel (at 64 px) lies in the attribute's box."""
    x0, y0, x1, y1 = ATTRIBUTE_REGIONS[attribute]
    pictures = upsampled(maps)
    rows, columns = np.unravel_index(pictures.reshape(len(pictures), -1).argmax(axis=1), (SIZE, SIZE))
    return (rows >= y0) & (rows < y1) & (columns >= x0) & (columns < x1)


def summarize(attribute: str, runs: list[SeedMaps]) -> dict:
    """The numbers of one attribute over its seeds."""
    totals = np.stack([run.negative.sum(axis=0) for run in runs])  # over the steps
    values = concentration(totals, attribute)
    per_step = np.stack([concentration(run.negative, attribute) for run in runs])  # [seeds, steps]
    x0, y0, x1, y1 = ATTRIBUTE_REGIONS[attribute]
    return {
        "seeds": [run.seed for run in runs],
        "box": [x0, y0, x1, y1],
        "box_area_share": round((x1 - x0) * (y1 - y0) / SIZE**2, 4),
        "concentration_mean": round(float(values.mean()), 3),
        "concentration_median": round(float(np.median(values)), 3),
        "concentration_min": round(float(values.min()), 3),
        "concentration_max": round(float(values.max()), 3),
        "share_of_seeds_at_least_2x": round(float((values >= GOAL).mean()), 3),
        "peak_in_box": round(float(peak_inside(totals, attribute).mean()), 3),
        "per_step_mean": [round(float(v), 3) for v in per_step.mean(axis=0)],
        "on_other_boxes": {
            other: round(float(concentration(totals, other).mean()), 3)
            for other in STUDY_ATTRIBUTES
            if other != attribute
        },
        "control_word_on_box": round(
            float(concentration(np.stack([r.control.sum(0) for r in runs]), attribute).mean()), 3
        ),
    }


def attention_study(pipe, count: int, sampling: dict, attributes=STUDY_ATTRIBUTES) -> tuple[dict, dict]:
    """(numbers per layer set and attribute, the runs per layer set and attribute for the figure). The seeds are
    found once per attribute; each layer set maps the same comparisons (the images do not depend on it)."""
    probe = Probe()
    results: dict = {key: {} for key in LAYER_SETS}
    runs: dict = {key: {} for key in LAYER_SETS}
    for attribute in attributes:
        seeds = present_seeds(pipe, probe, attribute, count, sampling)
        for key, mid_block in LAYER_SETS.items():
            runs[key][attribute] = [seed_maps(pipe, attribute, seed, sampling, mid_block) for seed in seeds]
            results[key][attribute] = summarize(attribute, runs[key][attribute])
            shown = {k: v for k, v in results[key][attribute].items() if k not in ("seeds", "per_step_mean")}
            print(key, attribute, shown, flush=True)
    document = {"prompt": PROMPT, "sampling": sampling, "seeds_per_attribute": count, "goal": GOAL}
    return {**document, "layer_sets": results}, runs


def study_figure(runs: dict[str, dict[str, list[SeedMaps]]], results: dict, examples: int = 3) -> Image.Image:
    """Per attribute: a few seeds' images without the negative (box drawn) and the negative word's map summed over
    the steps over it, for each layer set, then the concentration per step of both layer sets."""
    first = runs["daam"]
    columns = (1 + len(LAYER_SETS)) * examples + 1
    figure = Figure(figsize=(1.45 * columns + 1.6, 1.75 * len(first)), dpi=100)
    figure.subplots_adjust(left=0.02, right=0.98, top=0.93, bottom=0.07, wspace=0.08, hspace=0.55)
    grid = figure.add_gridspec(len(first), columns, width_ratios=[1] * (columns - 1) + [2.4])
    titles = {"daam": "DAAM map", "with_mid_block": "+ mid block"}
    for row, attribute in enumerate(first):
        x0, y0, x1, y1 = ATTRIBUTE_REGIONS[attribute]
        for i in range(min(examples, len(first[attribute]))):
            panels = [(f"seed {first[attribute][i].seed}", None)]
            panels += [(titles[key], upsampled(runs[key][attribute][i].negative.sum(axis=0))) for key in LAYER_SETS]
            for j, (title, overlay) in enumerate(panels):
                axis = figure.add_subplot(grid[row, (1 + len(LAYER_SETS)) * i + j])
                axis.imshow(np.asarray(first[attribute][i].without))
                if overlay is not None:
                    axis.imshow(overlay, cmap="turbo", alpha=0.6, interpolation="bilinear")
                axis.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="white", lw=1.2))
                axis.set_xticks([])
                axis.set_yticks([])
                axis.set_title(title, fontsize=7)
        axis = figure.add_subplot(grid[row, -1])
        for key, style in zip(LAYER_SETS, ("-", "--")):
            per_step = results[key][attribute]["per_step_mean"]
            axis.plot(range(1, len(per_step) + 1), per_step, color="#e45756", ls=style, label=titles[key])
        axis.axhline(1, color="#999999", lw=0.8, ls=":")
        axis.axhline(GOAL, color="#4c78a8", lw=0.8, ls="--")
        axis.set_title(f'"{attribute}": concentration per step', fontsize=8)
        axis.tick_params(labelsize=7)
        axis.set_xlabel("step", fontsize=7)
        axis.legend(fontsize=6, loc="lower right")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def study_table(attributes: dict) -> list[str]:
    """One layer set's table rows."""
    lines = [
        "| negative word | seeds | concentration on its box: mean (median, min–max) | seeds ≥ 2× | peak in box | "
        'on the other boxes | prompt word "man" on the same box |',
        "|---|---|---|---|---|---|---|",
    ]
    for attribute, row in attributes.items():
        others = ", ".join(f"{name} {value:.2f}" for name, value in row["on_other_boxes"].items())
        lines.append(
            f"| {attribute} | {len(row['seeds'])} | **{row['concentration_mean']:.2f}×** "
            f"({row['concentration_median']:.2f}, {row['concentration_min']:.2f}–{row['concentration_max']:.2f}) | "
            f"{100 * row['share_of_seeds_at_least_2x']:.0f} % | {100 * row['peak_in_box']:.0f} % | {others} | "
            f"{row['control_word_on_box']:.2f}× |"
        )
    return lines


def study_markdown(res: dict) -> str:
    """The results tables of docs/ATTENTION.md (one per layer set), and a sentence that reads the mustache row of
    DAAM's layer set against the goal."""
    lines = []
    for key, attributes in res["layer_sets"].items():
        lines += [f"**{LAYER_SET_TITLES[key]}**", "", *study_table(attributes), ""]
    mustache = res["layer_sets"]["daam"].get("mustache")
    if mustache is not None:
        met = mustache["concentration_mean"] >= res["goal"]
        lines.append(
            f"Goal (judged on DAAM's layers): the mustache word at least {res['goal']:g}× uniform on the mustache "
            "box — " + ("**met**." if met else f"**not met** ({mustache['concentration_mean']:.2f}×).")
        )
    return "\n".join(lines) + "\n"


def write_study(res: dict, runs: dict, out: Path) -> None:
    """OUT.json, OUT.md (the table) and OUT.png (the figure)."""
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(study_markdown(res))
    study_figure(runs, res["layer_sets"]).save(out.with_suffix(".png"))
