"""Colour legends for the page: the step view's scales and the difference map with its own.

Kept apart from `visualize.py` (shared by the CLI and the docs) because these exist only to lay the page out.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from negprompt_demo.sampling.trace import GuidanceTrace
from negprompt_demo.views.visualize import (
    DIFFERENCE_COLORMAP,
    GUIDANCE_COLORMAP,
    PUSH_COLORMAP,
    difference_heatmap,
    font,
    guidance_vmax,
    push_vmax,
)


def stack(images: list[Image.Image], gap: int = 6) -> Image.Image:
    """Images one under the other on white, left-aligned."""
    width = max(image.width for image in images)
    height = sum(image.height for image in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    y = 0
    for image in images:
        canvas.paste(image, (0, y))
        y += image.height + gap
    return canvas


def legend_bar(colormap: str, vmax: float, label: str, width: int = 320) -> Image.Image:
    """A colour scale from 0 to `vmax` with its label above it. ASCII labels only: Pillow's built-in font has no
    Greek letters or norm bars."""
    bar_top, bar_height = 20, 14
    canvas = Image.new("RGB", (width, bar_top + bar_height + 20), "white")
    strip = (colormaps[colormap](np.linspace(0, 1, width))[None, :, :3] * 255).astype(np.uint8)
    canvas.paste(Image.fromarray(np.repeat(strip, bar_height, axis=0)), (0, bar_top))
    draw = ImageDraw.Draw(canvas)
    draw.text((0, 2), label, fill="black", font=font(13))
    draw.text((0, bar_top + bar_height + 3), "0", fill="black", font=font(13))
    top = f"{vmax:.3g}"
    draw.text(
        (width - draw.textlength(top, font=font(13)) - 1, bar_top + bar_height + 3), top, fill="black", font=font(13)
    )
    return canvas


def step_legend(trace: GuidanceTrace) -> Image.Image:
    """What the overlay colours mean: one scale for the guidance maps (shared by all steps and both runs) and,
    when recorded, one for the negative-push map."""
    bars = [legend_bar(GUIDANCE_COLORMAP, guidance_vmax(trace), "guidance map: |eps_text - eps_neg| per pixel")]
    push_peak = push_vmax(trace)
    if push_peak is not None:
        bars.append(legend_bar(PUSH_COLORMAP, push_peak, "negative push: |eps_empty - eps_neg| per pixel"))
    return stack(bars)


def difference_with_legend(first: Image.Image, second: Image.Image) -> tuple[Image.Image, float]:
    """The difference heat map with its colour scale underneath; also returns the peak difference (0..1)."""
    heatmap, peak = difference_heatmap(first, second)
    legend = legend_bar(DIFFERENCE_COLORMAP, peak * 255, "mean |RGB difference| (0-255)", width=heatmap.width)
    return stack([heatmap, legend]), peak
