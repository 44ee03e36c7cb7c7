"""Pictures of a many-seeds run: the grids side by side, and the "sampling space" drawn from real samples.

The article this demo follows draws the sampling space as a region ("all men") with a part cut out by the negative
prompt ("men with mustache"). Here it is measured: each image's probe score for the attribute (how surely the
probe sees it; > 0 means present) is a dot on one axis, one row per column, so the part of the space the negative
removes is seen as dots leaving the right-hand side of the line.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from negprompt_demo.sampling.many_seeds import COLUMNS
from negprompt_demo.views.attributes import GridReading, grid_reading
from negprompt_demo.views.visualize import enlarge, font

COLUMN_COLORS = {"without": "#4c78a8", "phrased": "#f58518", "with": "#e45756"}


def column_titles(negative: str) -> dict[str, str]:
    return {
        "without": "no negative prompt",
        "phrased": f'"…without {negative}" in the prompt',
        "with": f'negative prompt "{negative}"',
    }


def grid_picture(grid, marks: dict[str, list[bool | None]] | None = None, per_row: int = 4) -> Image.Image:
    """Every column's images as a block of `per_row` seeds a row, blocks side by side in the article's order, each
    image with its seed (and yes/no where `marks` says whether the attribute is there)."""
    columns = [column for column in COLUMNS if column in grid.columns]
    side, gap, header = 96, 4, 24
    rows = -(-len(grid.seeds) // per_row)
    block = per_row * (side + gap)
    canvas = Image.new("RGB", (len(columns) * (block + 16), header + rows * (side + gap + 14)), "white")
    draw = ImageDraw.Draw(canvas)
    titles = column_titles(grid.settings.negative)
    for c, column in enumerate(columns):
        x0 = c * (block + 16)
        draw.text((x0 + 2, 4), titles[column], fill=COLUMN_COLORS[column], font=font(13))
        for i, (seed, image) in enumerate(zip(grid.seeds, grid.images[column])):
            x, y = x0 + (i % per_row) * (side + gap), header + (i // per_row) * (side + gap + 14)
            canvas.paste(enlarge(image, side).resize((side, side), Image.NEAREST), (x, y))
            mark = None if marks is None else marks[column][i]
            label = f"seed {seed}" + ("" if mark is None else " · yes" if mark else " · no")
            draw.text((x + 2, y + side), label, fill="black", font=font(11))
    return canvas


def marked_grid_picture(grid) -> Image.Image:
    """The grids as one picture, with the probe's marks where it knows the attribute the negative names."""
    reading = grid_reading(grid)
    marks = None
    if reading is not None and reading.attribute is not None:
        marks = {column: list(reading.scores[column][reading.attribute] > 0) for column in grid.columns}
    return grid_picture(grid, marks)


def sampling_space_figure(reading: GridReading, attribute: str, negative: str, columns: tuple[str, ...]) -> Figure:
    """One row of dots per column: each seed's probe score for `attribute`; the line at 0 is the probe's
    decision (right of it: present)."""
    shown = [column for column in COLUMNS if column in columns]
    titles = column_titles(negative)
    figure = Figure(figsize=(7.0, 0.9 + 0.55 * len(shown)), dpi=100)
    axes = figure.add_subplot()
    jitter = np.random.default_rng(0)  # fixed: the same grid always draws the same picture
    for row, column in enumerate(reversed(shown)):
        score = reading.scores[column][attribute]
        rate = reading.rate(column, attribute)
        y = row + jitter.uniform(-0.18, 0.18, len(score))
        axes.scatter(score, y, s=22, color=COLUMN_COLORS[column], alpha=0.8, edgecolors="none")
        corrected = reading.present(column, attribute) != (score > 0)  # a click overruled the probe
        if corrected.any():
            axes.scatter(score[corrected], y[corrected], s=70, facecolors="none", edgecolors="black", linewidths=1.2)
        axes.text(1.01, row, f"{rate.present}/{rate.total}", transform=axes.get_yaxis_transform(), va="center")
    axes.axvline(0, color="black", linewidth=1)
    axes.set_yticks(range(len(shown)), [titles[column] for column in reversed(shown)])
    axes.set_ylim(-0.6, len(shown) - 0.4)
    axes.set_xlabel(f"probe score for {attribute}:  ← no {attribute}  |  {attribute} →")
    figure.suptitle(  # over the whole figure: above the axes alone it was cut at the sides
        f"The sampling space over {len(score)} seeds, as the probe sees {attribute} (ringed: corrected by a click)",
        fontsize=9,
    )
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


def figure_image(figure: Figure) -> Image.Image:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
