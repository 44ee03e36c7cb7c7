"""Turning a comparison and its trace into pictures, plots and a short reading of the curves.

Nothing here runs a model: every function takes images, a `GuidanceTrace` or a `Comparison` and returns a PIL
image, a matplotlib figure or text, so the CLI, the app and the docs all draw the same things.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from negprompt_demo.sampling.trace import BRANCHES, GuidanceTrace

GUIDANCE_COLORMAP = "inferno"
PUSH_COLORMAP = "viridis"
DIFFERENCE_COLORMAP = "magma"
RUN_COLORS = {"without": "#4c78a8", "with": "#e45756"}
PART_THRESHOLD = 0.05  # runs "part" once their latents differ by 5 % of the latent norm


def enlarge(image: Image.Image, min_side: int = 256) -> Image.Image:
    """Scale up by a whole factor with nearest-neighbour, so a 64 px image shows crisp pixels, not blur."""
    factor = max(1, -(-min_side // min(image.size)))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def run_labels(negative: str) -> tuple[str, str]:
    shown = negative if len(negative) <= 40 else negative[:37] + "..."
    return "no negative prompt", f"negative: {shown}" if negative else "negative: (empty)"


# FLUX.1's third image (engine.Comparison.distilled): the model as it samples by default.
DISTILLED_LABEL = "FLUX.1 default: no true CFG"


def side_by_side(comparison, min_side: int = 384) -> Image.Image:
    """Both images enlarged, labelled, with the settings underneath: the picture to share (on FLUX.1 with true
    CFG, the plain distilled image as a third)."""
    settings = comparison.settings
    panels = list(zip((comparison.without_negative, comparison.with_negative), run_labels(settings.negative)))
    if getattr(comparison, "distilled", None) is not None:
        panels.append((comparison.distilled, DISTILLED_LABEL))
    images = [enlarge(image, min_side) for image, _ in panels]
    gap, pad, label_height = 16, 16, 34
    footer = textwrap.wrap(f"prompt: {settings.prompt}", 90) + [
        f"seed {settings.seed} · {settings.steps} steps · guidance {settings.guidance:g} · {settings.scheduler} · "
        f"{settings.width}x{settings.height} · model {comparison.model}"
    ]
    footer_height = 22 * len(footer) + pad
    width = sum(image.width for image in images) + gap * (len(images) - 1) + 2 * pad
    tallest = max(image.height for image in images)
    height = label_height + tallest + footer_height + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = pad
    for image, (_, label) in zip(images, panels):
        draw.text((x, 8), label, fill="black", font=font(20))
        canvas.paste(image, (x, label_height))
        x += image.width + gap
    y = label_height + tallest + 10
    for line in footer:
        draw.text((pad, y), line, fill="#333333", font=font(16))
        y += 22
    return canvas


def difference_heatmap(first: Image.Image, second: Image.Image, min_side: int = 256) -> tuple[Image.Image, float]:
    """Where the two images differ: mean absolute RGB difference per pixel, coloured. Returns the map and the
    largest difference in 0..1, so a legend can say what the brightest colour means."""
    a = np.asarray(first.convert("RGB"), dtype=np.float32) / 255
    b = np.asarray(second.convert("RGB"), dtype=np.float32) / 255
    difference = np.abs(a - b).mean(axis=2)
    peak = float(difference.max())
    scaled = difference / max(peak, 1 / 255)
    colored = (colormaps[DIFFERENCE_COLORMAP](scaled)[..., :3] * 255).astype(np.uint8)
    return enlarge(Image.fromarray(colored), min_side), peak


def overlay_map(preview: np.ndarray, values: np.ndarray, vmax: float, colormap: str, alpha: float = 0.55):
    """Blend a latent-resolution map (upsampled smoothly) over an x0 preview; values are scaled to 0..vmax."""
    height, width = preview.shape[:2]
    scaled = np.clip(values / max(vmax, 1e-8), 0, 1).astype(np.float32)
    upsampled = np.asarray(Image.fromarray(scaled, mode="F").resize((width, height), Image.BILINEAR))
    colored = colormaps[colormap](np.clip(upsampled, 0, 1))[..., :3]
    blended = (1 - alpha) * preview.astype(np.float32) / 255 + alpha * colored
    return Image.fromarray((blended * 255).round().astype(np.uint8))


def guidance_vmax(trace: GuidanceTrace) -> float:
    """One colour scale for all steps and both runs, so brightness can be compared across the scrubber."""
    return max((step.guidance_peak for step in trace.steps), default=1.0)


def push_vmax(trace: GuidanceTrace) -> float | None:
    """The negative-push maps' colour scale (all steps), or None when they were not recorded."""
    return max((step.push_peak for step in trace.steps if step.push_peak is not None), default=None)


def nag_vmax(trace: GuidanceTrace) -> float | None:
    """The ‖Z − Z⁺‖ maps' colour scale (all steps), or None where NAG did not act."""
    return max((step.nag_peak for step in trace.steps if step.nag_peak is not None), default=None)


def step_views(trace: GuidanceTrace, index: int, min_side: int = 256) -> dict[str, Image.Image]:
    """Pictures of one step: each run's x0 preview, the same with its guidance map overlaid, and the negative-push
    map and what each guidance branch alone predicts when they were recorded. Keys: x0_without, x0_with,
    guidance_without, guidance_with; push, nag, branch_prompt, branch_empty, branch_negative (optional)."""
    step = trace.steps[index]
    vmax = guidance_vmax(trace)
    views = {}
    for run_index, run in enumerate(("without", "with")):
        preview = step.previews[run_index]
        views[f"x0_{run}"] = enlarge(Image.fromarray(preview), min_side)
        guidance = step.guidance_map[run_index].float().numpy()
        views[f"guidance_{run}"] = enlarge(overlay_map(preview, guidance, vmax, GUIDANCE_COLORMAP), min_side)
    if step.push_map is not None:
        push = step.push_map.float().numpy()
        views["push"] = enlarge(overlay_map(step.previews[1], push, push_vmax(trace), PUSH_COLORMAP), min_side)
    if step.nag_map is not None:  # how far NAG moved the with-run's attention output (nag.py)
        moved = step.nag_map.float().numpy()
        views["nag"] = enlarge(overlay_map(step.previews[1], moved, nag_vmax(trace), PUSH_COLORMAP), min_side)
    if step.branch_previews is not None:  # recorded with the push map
        for branch, preview in zip(BRANCHES, step.branch_previews):
            views[f"branch_{branch}"] = enlarge(Image.fromarray(preview), min_side)
    return views


def curves_figure(trace: GuidanceTrace) -> Figure:
    """Guidance magnitude of each run, run divergence and guidance cosine over the steps."""
    steps = np.arange(1, len(trace.steps) + 1)
    figure = Figure(figsize=(7, 5.5), dpi=100)
    figure.subplots_adjust(left=0.12, right=0.98, top=0.86, bottom=0.09, hspace=0.12)
    axes = figure.subplots(3, 1, sharex=True)
    # The push under the runs (dashed, thinner), the with-negative run on top: no line hides another
    if trace.steps and trace.steps[0].push_mean is not None:
        axes[0].plot(steps, trace.series("push"), color="#54a24b", linestyle="--", linewidth=1.2, label="negative push",
                     zorder=2)  # fmt: skip
    axes[0].plot(steps, trace.series("guidance_without"), color=RUN_COLORS["without"], label="no negative", zorder=3)
    axes[0].plot(steps, trace.series("guidance_with"), color=RUN_COLORS["with"], label="with negative", zorder=4)
    axes[0].set_ylabel("mean ‖ε_text − ε_neg‖")
    # above the plot, outside the data: a legend inside covered the lines' ends
    axes[0].legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, fontsize=8, frameon=False)
    axes[1].plot(steps, 100 * trace.series("divergence"), color="#72b7b2")
    axes[1].axhline(100 * PART_THRESHOLD, color="#999999", linewidth=0.8, linestyle=":")
    axes[1].set_ylabel("runs differ (%)")
    axes[2].plot(steps, trace.series("guidance_cosine"), color="#b279a2")
    axes[2].set_ylabel("guidance cosine")
    axes[2].set_ylim(-1.05, 1.05)
    axes[2].set_xlabel("denoising step")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.set_xlim(0.5, max(len(steps), 1) + 0.5)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    active = [step.negative_active for step in trace.steps]
    if trace.cfg_active and active and not all(active):  # a window: shade the steps where the negative acts
        for axis in axes:
            for first, last in _spans(active):
                axis.axvspan(first + 0.5, last + 1.5, color=RUN_COLORS["with"], alpha=0.1, linewidth=0)
        figure.suptitle("shaded: the steps where the negative prompt acts", fontsize=9, y=0.99)
    if not trace.cfg_active:
        figure.suptitle("guidance scale ≤ 1: classifier-free guidance is off", fontsize=9, y=0.99)
    return figure


def _spans(flags: list[bool]) -> list[tuple[int, int]]:
    """(first, last) 0-based indices of each run of True."""
    spans, start = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            spans.append((start, i - 1))
            start = None
    return spans


@dataclass
class CurvesPicture:
    """The curves drawn once per run, with where each step lies on it, so marking the chosen step (every move of
    the step slider) is a line drawn on a picture, not a new plot: Agg renders the plot in ~0.25 s on a slow core.
    """

    image: Image.Image
    step_x: list[int]  # pixel column of each step
    spans: list[tuple[int, int]]  # each axis's pixel rows (top, bottom)

    def marked(self, index: int) -> Image.Image:
        """The picture with step `index` (0-based) marked by a vertical line across every axis."""
        picture = self.image.copy()
        draw = ImageDraw.Draw(picture)
        x = self.step_x[min(max(index, 0), len(self.step_x) - 1)] if self.step_x else 0
        for top, bottom in self.spans:
            draw.line([(x, top), (x, bottom)], fill=(80, 80, 80), width=2)
        return picture


def curves_picture(trace: GuidanceTrace) -> CurvesPicture:
    """Render `curves_figure` once and measure where its steps and axes are, for `CurvesPicture.marked`."""
    figure = curves_figure(trace)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    height = image.height
    axes = figure.axes
    steps = np.arange(1, len(trace.steps) + 1)
    columns = axes[0].transData.transform(np.stack([steps, np.zeros_like(steps)], axis=1))[:, 0] if len(steps) else []
    spans = []
    for axis in axes:
        box = axis.get_window_extent()
        spans.append((int(round(height - box.y1)), int(round(height - box.y0))))
    return CurvesPicture(image, [int(round(x)) for x in columns], spans)


def describe(trace: GuidanceTrace) -> str:
    """A few sentences that read the curves for the user: when the runs part, when the negative acts."""
    total = len(trace.steps)
    if total == 0:
        return "No steps were recorded."
    nag_steps = [step.index + 1 for step in trace.steps if step.nag_mean is not None]
    if not trace.cfg_active and nag_steps:
        return (
            f"Classifier-free guidance was off (scale ≤ 1); the negative prompt acted in attention (NAG) on steps "
            f"{nag_steps[0]}–{nag_steps[-1]}: the NAG map shows where it moved the attention output."
        )
    if not trace.cfg_active:
        return "Classifier-free guidance was off (scale ≤ 1), so the negative prompt had no effect on any step."
    divergence = trace.series("divergence")
    parted = np.nonzero(divergence > PART_THRESHOLD)[0]
    sentences = []
    if parted.size == 0:
        sentences.append(
            f"The two runs never part: their latents stay within {100 * divergence.max():.1f} % of each other "
            f"over all {total} steps."
        )
    else:
        sentences.append(f"The runs part at step {parted[0] + 1} of {total}.")
        sentences.append(f"At the end their latents differ by {100 * divergence[-1]:.0f} %.")
    effect = _negative_effect(trace)
    if effect.max() > 0:
        strong = np.nonzero(effect >= 0.5 * effect.max())[0]
        first, last = strong[0] + 1, strong[-1] + 1
        window = f"at step {first}" if first == last else f"between steps {first} and {last}"
        sentences.append(f"The negative prompt moves the predicted image most {window}.")
    cosine = trace.series("guidance_cosine")
    sentences.append(
        f"The two runs' guidance directions agree {'closely' if cosine.mean() > 0.9 else 'only partly'} "
        f"(mean cosine {cosine.mean():.2f})."
    )
    return " ".join(sentences)


def _negative_effect(trace: GuidanceTrace) -> np.ndarray:
    """How far the negative prompt moves the predicted image x0 at each step.

    Its push on ε (the push map's mean when recorded, else how far the with-run's guidance turns away from the
    without-run's, weighted by its size) moves x0 = x_t/√ᾱ − σ·ε by σ times as much: a large push on ε at the
    last, nearly noise-free steps barely changes the image, a small one at the first steps decides it.
    """
    push = trace.series("push")
    if not np.isfinite(push).all():
        cosine = np.nan_to_num(trace.series("guidance_cosine"), nan=1.0)
        push = (1 - cosine) * trace.series("guidance_with")
    return push * np.array([step.sigma for step in trace.steps], dtype=np.float64)


def step_frames(trace: GuidanceTrace, negative: str, min_side: int = 192) -> list[Image.Image]:
    """Both runs' x0 previews side by side at every step: the frames of the step animation."""
    frames = []
    labels = run_labels(negative)
    for step in trace.steps:
        left = enlarge(Image.fromarray(step.previews[0]), min_side)
        right = enlarge(Image.fromarray(step.previews[1]), min_side)
        canvas = Image.new("RGB", (left.width + right.width + 12, left.height + 48), "white")
        canvas.paste(left, (0, 24))
        canvas.paste(right, (left.width + 12, 24))
        draw = ImageDraw.Draw(canvas)
        draw.text((4, 4), labels[0], fill="black", font=font(14))
        draw.text((left.width + 16, 4), labels[1], fill="black", font=font(14))
        draw.text((4, left.height + 28), f"step {step.index + 1}/{len(trace.steps)}", fill="black", font=font(14))
        frames.append(canvas)
    return frames


def sweep_labels(sweep) -> list[str]:
    """'no negative', then when each start's negative first acts, in 1-based steps as the page counts them."""
    total = sweep.settings.steps
    return ["no negative"] + [
        "never (empty window)" if step >= total else f"from step {step + 1}/{total}" for step in sweep.start_steps
    ]


def describe_sweep(sweep, present: list[bool] | None = None, attribute: str | None = None) -> str:
    """Read the sweep in a sentence. With `present` (the attribute seen in [without, each start]), say up to
    which start the negative removes it; otherwise say how far each start's image is from the one without it."""
    total = sweep.settings.steps
    steps = [step + 1 for step in sweep.start_steps]
    if present is not None and attribute:
        if not present[0]:
            return f"There is no {attribute} without the negative prompt on this seed, so there is nothing to remove."
        removed = [step for step, seen in zip(steps, present[1:]) if not seen]
        kept = [step for step, seen in zip(steps, present[1:]) if seen]
        if not removed:
            return f"The {attribute} stays whenever the negative starts, even at step {steps[0]} of {total}."
        if not kept or max(removed) < min(kept):
            later = f"; starting at step {min(kept)} or later leaves it" if kept else ""
            return f"The {attribute} is gone if the negative starts by step {max(removed)} of {total}{later}."
        return (
            f"The {attribute} is gone when the negative starts at step {', '.join(map(str, removed))} of {total}, "
            f"and stays when it starts at step {', '.join(map(str, kept))}: not a clean cut on this seed."
        )
    without = np.asarray(sweep.without_negative, dtype=np.float32)
    moved = [float(np.abs(np.asarray(image, dtype=np.float32) - without).mean()) for image in sweep.with_negative]
    if max(moved) == 0:
        return "The negative prompt changes nothing on this seed, whenever it starts."
    kept = [step for step, value in zip(steps, moved) if value >= 0.5 * moved[0]]
    return (
        "How far each image is from the one without the negative (mean pixel difference, 0–255): "
        + ", ".join(f"{value:.1f} from step {step}" for step, value in zip(steps, moved))
        + f". Starting by step {max(kept)} of {total} keeps at least half of the change the negative makes from "
        "the first step."
    )


def sweep_picture(sweep, marks: list[str] | None = None, min_side: int = 160) -> Image.Image:
    """The sweep's images in a row, each labelled with when its negative starts (and a mark under it, e.g. the
    probe's reading)."""
    labels = sweep_labels(sweep)
    images = [enlarge(image, min_side) for image in [sweep.without_negative, *sweep.with_negative]]
    width, height, gap = images[0].width, images[0].height, 8
    rows = 2 if marks else 1
    canvas = Image.new("RGB", (len(images) * (width + gap) - gap, height + 22 * rows + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for i, image in enumerate(images):
        x = i * (width + gap)
        canvas.paste(image, (x, 22))
        draw.text((x + 2, 3), labels[i], fill="black", font=font(13))
        if marks:
            draw.text((x + 2, height + 26), marks[i], fill="black", font=font(13))
    return canvas
