"""What the embedded model's attribute probe sees in images, for the views that can say "the mustache is gone".

Only the embedded model has a probe (it knows the attributes its procedural training portraits had); for any other
model these return nothing and the views fall back to image distances.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from negprompt_demo.embedded.faces import ATTRIBUTES
from negprompt_demo.sampling.many_seeds import COLUMNS
from negprompt_demo.settings import EMBEDDED  # the shipped model's label: the one model the probe knows


def probed_attribute(model: str, negative: str) -> str | None:
    """The attribute of the embedded model's probe that a negative prompt names, if any."""
    if model != EMBEDDED:
        return None
    words = negative.lower().replace(",", " ").split()
    return next((attribute for attribute in ATTRIBUTES if attribute in words), None)


def attribute_present(attribute: str, images: list[Image.Image]) -> list[bool]:
    """Whether the probe sees `attribute` in each image."""
    return [bool(flag) for flag in _probe().predict(images)[attribute]]


@functools.cache
def _probe():
    from negprompt_demo.embedded.probe import Probe

    return Probe()


def sweep_reading(sweep) -> tuple[list[str] | None, str]:
    """Marks under a sweep's images and its reading (`visualize.describe_sweep`): with the probe when the
    negative names an attribute it knows, else by image distance."""
    from negprompt_demo.views.visualize import describe_sweep

    attribute = probed_attribute(sweep.model, sweep.settings.negative)
    if attribute is None:
        return None, describe_sweep(sweep)
    present = attribute_present(attribute, [sweep.without_negative, *sweep.with_negative])
    marks = [f"{attribute}: {'yes' if flag else 'no'}" for flag in present]
    return marks, describe_sweep(sweep, present, attribute)


# --- many seeds: rates with intervals, and what else the negative moved -----------------------------------------


@dataclass(frozen=True)
class Rate:
    """How many of `total` images show something, with its Wilson 95 % interval."""

    present: int
    total: int

    @property
    def share(self) -> float:
        return self.present / self.total if self.total else float("nan")

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """Wilson's score interval (1927): unlike p ± z·se it stays in [0, 1] and is not a point at 0/16 or 16/16,
        which matters with a few seeds."""
        n, p = self.total, self.share
        if n == 0:
            return 0.0, 1.0
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def text(self) -> str:
        low, high = self.interval()
        return f"{self.present}/{self.total} ({100 * self.share:.0f} %, CI {100 * low:.0f}–{100 * high:.0f} %)"


def difference_interval(before: Rate, after: Rate) -> tuple[float, float]:
    """95 % interval of after − before from the two Wilson intervals (Newcombe 1998, method 10). It treats the
    columns as independent samples; on the same seeds they are paired, so it is on the wide (cautious) side."""
    (low1, high1), (low2, high2) = before.interval(), after.interval()
    p1, p2 = before.share, after.share
    change = p2 - p1
    return change - math.sqrt((p2 - low2) ** 2 + (high1 - p1) ** 2), change + math.sqrt(
        (high2 - p2) ** 2 + (p1 - low1) ** 2
    )


@dataclass
class GridReading:
    """What the probe sees in a many-seeds grid: every attribute's score per image and column, and its rates."""

    attribute: str | None  # the attribute the negative names, if the probe knows it
    scores: dict[str, dict[str, np.ndarray]]  # column → attribute → logit per seed (> 0: present)
    # column → per seed: the page's marks for the named attribute (the probe's, corrected by clicks); None: probe's
    marks: dict[str, list[bool]] | None = None

    def present(self, column: str, attribute: str) -> np.ndarray:
        """Per seed, whether `attribute` counts as present: a user's mark for the named attribute, else the probe."""
        if self.marks is not None and attribute == self.attribute and column in self.marks:
            return np.asarray(self.marks[column], dtype=bool)
        return self.scores[column][attribute] > 0

    def rate(self, column: str, attribute: str) -> Rate:
        present = self.present(column, attribute)
        return Rate(int(present.sum()), len(present))


def grid_reading(grid) -> GridReading | None:
    """The probe's reading of a many-seeds grid (`many_seeds.SeedGrid`); None for models without a probe."""
    if grid.model != EMBEDDED:
        return None
    probe = _probe()
    scores = {column: probe.scores(grid.images[column]) for column in grid.columns}
    return GridReading(probed_attribute(grid.model, grid.settings.negative), scores)


def rate_line(name: str, rates: dict[str, Rate], negative: str) -> str:
    """'mustache: 7/16 (…) → "… without mustache" in the prompt 8/16 (…) → negative "mustache" 0/16 (…)'."""
    labels = {
        "without": "no negative",
        "phrased": f'"…without {negative}" in the prompt',
        "with": f'negative "{negative}"',
    }
    shown = [f"{labels[column]} {rates[column].text()}" for column in COLUMNS if column in rates]
    return f"**{name}**: " + " → ".join(shown)


def side_effects(reading: GridReading) -> list[dict]:
    """Every attribute the probe knows, no negative vs the negative: the rates, the change and its interval;
    `moved` when the interval excludes no change (for an attribute the negative does not name: a side effect)."""
    rows = []
    for attribute in ATTRIBUTES:
        before, after = reading.rate("without", attribute), reading.rate("with", attribute)
        low, high = difference_interval(before, after)
        rows.append(
            {
                "attribute": attribute,
                "without": before,
                "with": after,
                "change": after.share - before.share,
                "interval": (low, high),
                "moved": low > 0 or high < 0,
                "named": attribute == reading.attribute,
            }
        )
    return rows


def side_effects_markdown(rows: list[dict]) -> str:
    """The side-effects table for the page and docs; a change whose interval excludes 0 is in bold."""
    lines = ["| attribute | no negative | with the negative | change (95 % CI) |", "|---|---|---|---|"]
    for row in rows:
        low, high = row["interval"]
        change = f"{100 * row['change']:+.0f} pts ({100 * low:+.0f} to {100 * high:+.0f})"
        if row["moved"]:
            change = f"**{change}**" + (" ← named by the negative" if row["named"] else " ← side effect")
        lines.append(f"| {row['attribute']} | {row['without'].text()} | {row['with'].text()} | {change} |")
    return "\n".join(lines)


def grid_document(grid, reading: GridReading | None) -> dict:
    """A many-seeds run as JSON (the API's and the CLI's): what ran, each image's mark and, with the probe, every
    attribute's rate per column with its interval and the side effects."""
    document = {
        "model": grid.model,
        "settings": grid.settings.as_dict(),
        "seeds": grid.seeds,
        "columns": {
            column: {"prompt": prompt, "negative": negative} for column, (prompt, negative) in grid.prompts.items()
        },
        "seconds": round(grid.seconds, 3),
    }
    if reading is None:
        return document
    document["attribute"] = reading.attribute
    document["probe_scores"] = {
        column: {name: [round(float(value), 3) for value in score] for name, score in scores.items()}
        for column, scores in reading.scores.items()
    }
    document["rates"] = {
        column: {
            name: {"present": rate.present, "total": rate.total, "interval_95": [round(v, 4) for v in rate.interval()]}
            for name in ATTRIBUTES
            for rate in [reading.rate(column, name)]
        }
        for column in grid.columns
    }
    if "with" in grid.columns:
        document["side_effects"] = [
            {
                "attribute": row["attribute"],
                "change": round(row["change"], 4),
                "interval_95": [round(v, 4) for v in row["interval"]],
                "moved": row["moved"],
            }
            for row in side_effects(reading)
        ]
    return document
