"""Many seeds at once: the sampling space of a prompt, without and with the negative prompt.

One prompt over N seeds, each seed sampled in the same pipeline call as (1) the prompt with an empty negative
prompt, (2) the prompt with the negative prompt and, optionally, (3) the negative phrased in the prompt
("portrait photo of a man without mustache") with an empty negative — the three experiments of the article this
demo follows, side by side on the same starting noise. Runs (1) and (2) are exactly a comparison's two runs
(window, strength and Perp-Neg as set); run (3) is a plain run of its own prompt.

The seeds go through the pipeline in chunks: the first chunk is one seed, so the first row is on the page after
one seed's sampling time, and the rest go in as few calls as the memory bound (`MAX_BATCH_LATENT_PIXELS`) allows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from negprompt_demo.models.loading import model_label, pipeline_lock
from negprompt_demo.models.prompts import RunText
from negprompt_demo.sampling.engine import PreparedRun, Run, StepCallback, sample_runs
from negprompt_demo.settings import CompareSettings

# The most latent pixels (batch items × latent height × latent width) one call may hold: 8 SDXL items at
# 1024 px (128×128 latents), i.e. 48 SD-1.5 items at 512 px. Items are runs; the UNet sees twice as many (CFG).
MAX_BATCH_LATENT_PIXELS = 8 * 128 * 128
PHRASED_MAX_WORDS = 4  # the third column is on by default for negatives this short ("mustache", "a red hat")
# The grid's columns in reading order: the prompt, "without X" written in it, the negative prompt.
COLUMNS = ("without", "phrased", "with")


def phrased_prompt(prompt: str, negative: str) -> str:
    """The negative phrased inside the prompt, as people first try it (the text encoder ignores "without"), before
    the prompt's closing full stop: "Portrait photo of a man." → "Portrait photo of a man without mustache."."""
    body, stop = (prompt[:-1], ".") if prompt.endswith(".") else (prompt, "")
    return f"{body} without {negative}{stop}"


def phrased_by_default(negative: str) -> bool:
    """The third column is shown by default when the negative is short enough to read as one thing."""
    return 0 < len(negative.split()) <= PHRASED_MAX_WORDS and "," not in negative


@dataclass
class SeedGrid:
    """The images of a many-seeds run, column by column (`COLUMNS` order, the phrased one only when asked),
    one image per seed; filled chunk by chunk while sampling."""

    settings: CompareSettings  # resolved; `seed` is the first seed
    model: str
    columns: tuple[str, ...]
    prompts: dict[str, tuple[str, str]]  # column → (prompt, negative prompt) as run
    seeds: list[int] = field(default_factory=list)
    images: dict[str, list[Image.Image]] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, seeds: list[int], images: dict[str, list[Image.Image]]) -> None:
        self.seeds += seeds
        for column in self.columns:
            self.images.setdefault(column, []).extend(images[column])


def new_grid(resolved: CompareSettings, model: str, phrased: bool | None) -> SeedGrid:
    """An empty grid for these settings (`resolved` from `engine.prepare`); `phrased` None: the third column
    when the negative is short."""
    phrased = phrased_by_default(resolved.negative) if phrased is None else phrased
    columns = tuple(column for column in COLUMNS if column != "phrased" or (phrased and resolved.negative))
    prompts = {
        "without": (resolved.prompt, ""),
        "with": (resolved.prompt, resolved.negative),
        "phrased": (phrased_prompt(resolved.prompt, resolved.negative), ""),
    }
    return SeedGrid(resolved, model, columns, {column: prompts[column] for column in columns})


def seed_chunks(seeds: list[int], runs: int, latent_pixels: int) -> list[list[int]]:
    """The first seed alone (the first row comes quickly), then the rest in calls as large as the memory bound
    lets them be, of equal size."""
    per_call = max(1, MAX_BATCH_LATENT_PIXELS // (runs * latent_pixels))
    chunks, rest = [seeds[:1]], seeds[1:]
    calls = -(-len(rest) // per_call)
    for i in range(calls):
        chunks.append(rest[i * len(rest) // calls : (i + 1) * len(rest) // calls])
    return [chunk for chunk in chunks if chunk]


def sample_grid(
    pipe,
    prepared: PreparedRun,
    grid: SeedGrid,
    count: int,
    *,
    on_rows: Callable[[list[int], dict[str, list[Image.Image]]], None] | None = None,
    on_step: StepCallback | None = None,
    stop: threading.Event | None = None,
) -> SeedGrid:
    """Sample `count` seeds from the grid's first seed on, chunk by chunk, filling `grid` and calling
    `on_rows(seeds, images by column)` after each chunk. Steps are counted over the whole grid."""
    started = time.perf_counter()
    settings = grid.settings
    runs, run_columns = prepared.runs(), ["without", "with"]  # the batch's order: the paired runs first
    if not settings.negative:
        runs, run_columns = runs[:1], ["without"]  # no negative: the with-column is the without-column (warned)
    if "phrased" in grid.columns:
        runs.append(Run(RunText(grid.prompts["phrased"][0], prepared.baseline_negative())))
        run_columns.append("phrased")
    seeds = [(settings.seed + i) % 2**32 for i in range(count)]
    scale = pipe.vae_scale_factor
    chunks = seed_chunks(seeds, len(runs), (settings.width // scale) * (settings.height // scale))
    total, done = settings.steps * len(chunks), 0

    def count_steps(step: int, steps: int, record) -> None:
        if on_step is not None:
            on_step(done + step, total, record)

    for chunk in chunks:
        with pipeline_lock(pipe):
            images, _ = sample_runs(pipe, prepared, chunk, runs, on_step=count_steps, stop=stop)
        by_column = {column: images[k :: len(runs)] for k, column in enumerate(run_columns)}
        by_column.setdefault("with", by_column["without"])
        grid.add(chunk, by_column)
        done += settings.steps
        if on_rows is not None:
            on_rows(chunk, by_column)
    grid.seconds = time.perf_counter() - started
    grid.model = model_label(pipe)
    return grid
