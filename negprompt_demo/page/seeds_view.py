"""The page's many-seeds section ("the sampling space"): its layout and its event functions.

The article's experiments on N seeds at once: the prompt with no negative, the negative phrased in the prompt,
and the negative prompt — three grids from one batched call per chunk of seeds, shown as the chunks finish. The
embedded model's probe marks each image and the section reads the rates with their intervals, the sampling space
and what else the negative moved; for other models a click on an image toggles "has it" so a user can count.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import gradio as gr

from negprompt_demo.page.door import DEVICE_LANE
from negprompt_demo.page.handlers import INPUT_NAMES, Handlers
from negprompt_demo.page.jobs import JobFiles
from negprompt_demo.page.messages import input_error, user_message
from negprompt_demo.page.widgets import field_widget
from negprompt_demo.runner import COLUMNS, Ready, SeedGrid, SeedRows, SeedsDone, SeedsRequest, Step, phrased_by_default
from negprompt_demo.settings import DEFAULTS, GRID_DEFAULTS, GRID_FIELDS, resolve_grid
from negprompt_demo.views.attributes import (
    GridReading,
    Rate,
    grid_document,
    grid_reading,
    rate_line,
    side_effects,
    side_effects_markdown,
)
from negprompt_demo.views.seed_pictures import column_titles, figure_image, sampling_space_figure

INTRO = """## Many seeds: the sampling space
One seed shows one sample. Here the same prompt runs on many seeds, three ways on the same starting noise:
**no negative prompt** (the prompt gives men with and without a mustache), the negative **phrased in the prompt**
("…without mustache": the text encoder barely reads "without", so it asks for a mustache), and the **negative
prompt** (guidance pushes away from it). Click an image to mark whether it has the thing you are counting."""
# the progress line is an output too (always left as it is): Gradio tracks an event's progress on its outputs
SEEDS_OUTPUTS = (
    *("grid_without", "grid_phrased", "grid_with", "seeds_status", "space", "effects", "marks", "seeds_progress"),
)
GRID_INPUTS = ("seed_count", "phrased")


def seeds_panel() -> dict:
    """The section's widgets by name: its own inputs, the button, three galleries, the readings and the marks."""
    gr.Markdown(INTRO)
    panel: dict = {}
    with gr.Row(equal_height=True):
        panel["seed_count"] = field_widget("seed_count", GRID_FIELDS["seed_count"], GRID_DEFAULTS["seed_count"])
        # on when the negative is short (`phrased_by_default`, the same rule as a blank `phrased` in the CLI): for
        # the page's first negative now, then for each one typed (`wire_seeds`)
        phrased = phrased_by_default(DEFAULTS["negative"])
        panel["phrased"] = field_widget("phrased", GRID_FIELDS["phrased"], phrased)
        panel["button"] = gr.Button("Run many seeds", variant="secondary", elem_id="seeds-button", scale=0)
    panel["seeds_status"] = gr.Markdown(
        "The grids use the prompt, negative and settings above.", elem_id="seeds-status"
    )
    panel["seeds_progress"] = gr.Markdown("", elem_id="seeds-progress", min_height=28)  # not over the rate line
    for column, title in (
        ("without", "no negative prompt"),
        ("phrased", "…without X in the prompt"),
        ("with", "negative prompt"),
    ):  # one above the other: the same seed sits at the same place in each grid
        panel[f"grid_{column}"] = gr.Gallery(
            label=title,
            columns=8,  # fixed columns and height: the first streamed seed is one cell, never the whole width
            height=290,  # two rows of 8 at full width; more seeds scroll inside
            object_fit="contain",
            format="png",
            allow_preview=False,
            elem_id=f"grid-{column}",
            elem_classes=["pixelated"],
            buttons=["download"],
        )
    panel["space"] = gr.Image(
        show_label=False, format="png", type="filepath", interactive=False, elem_id="space", buttons=["download"]
    )
    panel["effects"] = gr.Markdown(elem_id="effects")
    panel["marks"] = gr.State(None)  # server-side: the shown grid's files, seeds and marks, for the clicks
    return panel


def wire_seeds(config, events: Handlers, inputs: dict, panel: dict) -> None:
    """The section's events: the run (streams each chunk's rows), the phrased default and the clicks."""
    seeds = SeedsHandlers(events)
    panel["button"].click(
        seeds.seeds_ui,
        inputs_kwargs={**inputs, "seed_count": panel["seed_count"], "phrased": panel["phrased"]},
        outputs=[panel[name] for name in SEEDS_OUTPUTS],
        api_visibility="private",
        concurrency_id=DEVICE_LANE,
        concurrency_limit=config.concurrency,
        show_progress_on=[panel["seeds_progress"]],
    )
    inputs["negative"].change(
        phrased_by_default, inputs["negative"], panel["phrased"], queue=False, api_visibility="private"
    )
    for column in COLUMNS:
        panel[f"grid_{column}"].select(
            seeds.toggler(column),
            panel["marks"],
            [panel[f"grid_{column}"], panel["seeds_status"], panel["space"], panel["effects"], panel["marks"]],
            queue=False,
            api_visibility="private",
        )


@dataclass
class ShownGrid:
    """The grids on the page, kept in the section's `gr.State` between events so a click can flip a mark and
    recount: filled as the chunks arrive, marked when the run is done."""

    negative: str
    warnings: str  # the run's warnings as Markdown paragraphs, appended to every status
    seeds: list[int] = field(default_factory=list)
    paths: dict[str, list[str]] = field(default_factory=dict)  # column → its image files, in `seeds` order
    marks: dict[str, list[bool]] | None = None  # column → "has it" per seed; None until the run is done
    name: str = ""  # what is counted: the probe's attribute, else the negative
    note: str = ""  # the run's timing and how to mark, under the rate line
    reading: GridReading | None = None  # the probe's (embedded model): the space and side effects follow the marks
    columns: tuple[str, ...] = ()
    files: JobFiles | None = None  # where the redrawn sampling space is written


class SeedsHandlers:
    """Event functions of the many-seeds section, sharing the page's `Handlers` (model policy, job files)."""

    def __init__(self, events: Handlers):
        self.events = events

    def run_grid(self, values: dict, request: gr.Request | None = None) -> AsyncIterator:
        """The runner's events of one many-seeds run, its own inputs checked: Ready, Steps, SeedRows per chunk,
        then SeedsDone with the whole grid."""
        count, phrased = resolve_grid(values.pop("seed_count", None), values.pop("phrased", None))
        model, settings = self.events.unpack(values)
        return self.events.stream(request, model, SeedsRequest(settings, count, phrased))

    async def seeds_ui(self, request: gr.Request = None, progress=gr.Progress(), **values) -> AsyncIterator[tuple]:  # noqa: B008
        """Stream the rows into the three galleries, then the probe's reading (or the click-to-count line)."""
        files, shown = self.events.new_job(), None
        try:
            async for event in self.run_grid(values, request):
                if isinstance(event, Ready):
                    warnings = "".join(f"\n\n⚠️ {html.escape(w, quote=False)}" for w in event.warnings)
                    shown = ShownGrid(event.settings.negative, warnings)
                    yield self.outputs({"seeds_status": "Sampling the first seed…" + warnings})
                elif isinstance(event, Step):
                    progress((event.done, event.total), desc="sampling the seeds", unit="steps")
                elif isinstance(event, SeedRows):
                    shown.seeds += event.seeds
                    for column, images in event.images.items():
                        paths = [files.png(image, f"{column}-{seed}") for seed, image in zip(event.seeds, images)]
                        shown.paths.setdefault(column, []).extend(paths)
                    note = f"{len(shown.seeds)} seeds done, sampling the rest…" + shown.warnings
                    yield self.outputs({**self.galleries(shown), "seeds_status": note})
                elif isinstance(event, SeedsDone):
                    yield self.outputs(await asyncio.to_thread(self.finished, event.grid, shown, files))
        except Exception as error:
            message = html.escape(user_message(error), quote=False)
            gr.Warning(message, title="Could not run the seeds")
            yield self.outputs({"seeds_status": f"❌ **Could not run the seeds.** {message}"})

    def finished(self, grid: SeedGrid, shown: ShownGrid, files: JobFiles) -> dict:
        """The final galleries with marks, the rate line, the sampling space and the side effects."""
        reading = grid_reading(grid)
        negative = grid.settings.negative or "it"
        note = f"{len(grid.seeds)} seeds × {len(grid.columns)} columns in {grid.seconds:.1f} s."
        updates = {"space": None, "effects": ""}
        if reading is not None and reading.attribute is not None:
            shown.name = reading.attribute
            shown.marks = {c: [bool(v > 0) for v in reading.scores[c][reading.attribute]] for c in grid.columns}
            shown.reading, shown.columns, shown.files = reading, grid.columns, files
            reading.marks = shown.marks  # the same lists the clicks flip: rate line, plot and table agree
            updates |= self.readings(shown)
            how = f"The probe marked every image (✓ {html.escape(reading.attribute)}, ✗ none); click one to correct it."
        else:
            shown.name = negative
            shown.marks = {column: [False] * len(grid.seeds) for column in grid.columns}
            how = f"Click each image that has {html.escape(negative, quote=False)} to count it (✓)."
        if reading is not None and "with" in grid.columns:
            updates["effects"] = effects_markdown(reading)
        shown.note = f"{note} {how}{shown.warnings}"
        return {**self.galleries(shown), "seeds_status": self.status(shown), **updates, "marks": shown}

    @staticmethod
    def readings(shown: ShownGrid) -> dict:
        """The sampling space and the side-effects table for the shown marks (after each click, too)."""
        reading, negative = shown.reading, shown.negative or "it"
        space = sampling_space_figure(reading, reading.attribute, negative, shown.columns)
        updates = {"space": shown.files.png(figure_image(space), "sampling-space")}
        if "with" in shown.columns:
            updates["effects"] = effects_markdown(reading)
        return updates

    def status(self, shown: ShownGrid) -> str:
        rates = {column: Rate(sum(marks), len(marks)) for column, marks in shown.marks.items()}
        return (
            rate_line(html.escape(shown.name, quote=False), rates, html.escape(shown.negative, quote=False))
            + "\n\n"
            + shown.note
        )

    def galleries(self, shown: ShownGrid) -> dict:
        titles = column_titles(shown.negative)
        updates = {}
        for column in COLUMNS:
            paths = shown.paths.get(column)
            if paths is None:
                updates[f"grid_{column}"] = gr.update(value=[], label=titles[column] + " (off)")
                continue
            marks = (shown.marks or {}).get(column)
            captions = [
                f"seed {seed}" + ("" if marks is None else " ✓" if marks[i] else " ✗")
                for i, seed in enumerate(shown.seeds)
            ]
            updates[f"grid_{column}"] = gr.update(value=list(zip(paths, captions)), label=titles[column])
        return updates

    def toggler(self, column: str):
        """The click on an image of `column`: flip its mark and recount."""

        def toggle(shown: ShownGrid | None, event: gr.SelectData) -> tuple:
            if shown is None or shown.marks is None or column not in shown.marks:
                return (gr.skip(),) * 5
            marks = shown.marks[column]
            if 0 <= event.index < len(marks):
                marks[event.index] = not marks[event.index]
            drawn = self.readings(shown) if shown.reading is not None else {}
            space, effects = drawn.get("space", gr.skip()), drawn.get("effects", gr.skip())
            return self.galleries(shown)[f"grid_{column}"], self.status(shown), space, effects, shown

        return toggle

    async def seeds_api(self, request: gr.Request = None, progress=gr.Progress(), **values) -> tuple:  # noqa: B008
        """Public `/seeds`: (every image, captioned "column · seed", in the article's order; the run as JSON)."""
        try:
            async for event in self.run_grid(values, request):
                if isinstance(event, Step):
                    progress((event.done, event.total), desc="sampling the seeds", unit="steps")
                elif isinstance(event, SeedsDone):
                    return await asyncio.to_thread(self.api_result, event.grid)
        except Exception as error:
            raise input_error(error, for_html=False) from None
        raise gr.Error("The seeds ended without a result.")

    def api_result(self, grid: SeedGrid) -> tuple:
        files = self.events.new_job()
        gallery = [
            (files.png(image, f"{column}-{seed}"), f"{column} · seed {seed}")
            for column in COLUMNS
            if column in grid.columns
            for seed, image in zip(grid.seeds, grid.images[column])
        ]
        return gallery, grid_document(grid, grid_reading(grid))

    def outputs(self, updates: dict) -> tuple:
        return tuple(updates.get(name, gr.skip()) for name in SEEDS_OUTPUTS)


SEEDS_API_INPUTS = (*INPUT_NAMES, *GRID_INPUTS)


def effects_markdown(reading) -> str:
    return (
        "**What else the negative moved** (every attribute the probe knows; bold: the 95 % interval of the change "
        "excludes 0):\n\n" + side_effects_markdown(side_effects(reading))
    )
