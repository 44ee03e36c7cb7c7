"""The page's event functions: widget values in, runner events out as widget values.

No generation logic lives here: `runner.astream` runs a comparison and reports it as typed events, and each
handler maps those events to the page's outputs. Outputs are addressed by name (`UI_OUTPUTS`); `app.py` lays out
one component per name, a handler returns a dict of the names it changes, and `ordered` fills in `gr.skip()`.

Every picture a handler returns is a PNG file written for that one job (`JobFiles`), never a PIL image: Gradio
caches a returned PIL image under the hash of its bytes and rewrites that file in place, so two jobs with equal
pictures (two users running the same example) would truncate a file another client is downloading.
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import gradio as gr

from negprompt_demo.page.app_config import AppConfig
from negprompt_demo.page.jobs import JobFiles, StepFiles
from negprompt_demo.page.links import NOT_IN_LINKS, link_query, link_values
from negprompt_demo.page.messages import (
    caption_for,
    input_error,
    reading_text,
    run_context,
    status_text,
    user_message,
)
from negprompt_demo.page.step_view import STEP_OUTPUTS, live_trace, step_outputs, step_slider, telling_step
from negprompt_demo.page.tracefile import (
    RUN_MAX_AGE_S,
    TraceKind,
    TraceNotFound,
    TraceStore,
    remove_old_folders,
    trim_folders,
)
from negprompt_demo.page.widgets import range_note
from negprompt_demo.runner import (
    DISTILLED_NOTE,
    SWEEP_STARTS,
    CompareRequest,
    CostLimits,
    Done,
    ModelInfo,
    ModelLoadError,
    Ready,
    Request,
    Step,
    Sweep,
    SweepDone,
    SweepRequest,
    astream,
    model_info,
)
from negprompt_demo.settings import FIELDS, MAX_SEED, CompareSettings, InputError, resolve_settings
from negprompt_demo.views.attention_views import chosen_word, word_choices
from negprompt_demo.views.attributes import sweep_reading
from negprompt_demo.views.export import trace_document, write_outputs
from negprompt_demo.views.legends import difference_with_legend
from negprompt_demo.views.visualize import (
    curves_picture,
    sweep_labels,
    sweep_picture,
)

log = logging.getLogger(__name__)

# The inputs of a comparison: the model, then every settings field (declared once, in settings.FIELDS).
INPUT_NAMES = ("model", *FIELDS)
# An example's inputs: all but the negative embedding (an example never carries a file, and Gradio 6.31's example
# loader returns one value too few when an input has no example value in any row: the click then fails).
EXAMPLE_NAMES = tuple(name for name in INPUT_NAMES if name != "negative_embedding")
UI_OUTPUTS = (
    *("image_without", "image_with", "caption_with", "slider", "difference", "status", "negative_reading", "seed_used"),
    *("downloads", "trace_id", "step", "link", "attention_word", "progress"),
    *STEP_OUTPUTS,
)
# What opening a link fills in: the inputs, then the model's size note, the status and the two hidden triggers
# (one starts the comparison, the other shows an example's cached result).
LINK_OUTPUTS = (*INPUT_NAMES, "model_info", "status", "link_run", "link_example")
# What choosing a model changes: its note, then the fields it has defaults for.
MODEL_OUTPUTS = ("model_info", "steps", "guidance", "scheduler", "width", "height")
CLEANUP_INTERVAL_S = 60.0
CURVE_INTERVAL_S = 1.0  # while sampling, redraw the curves (the slowest picture: ~0.25 s) at most this often


def ordered(updates: dict, names: tuple[str, ...] = UI_OUTPUTS) -> tuple:
    unknown = set(updates) - set(names)
    if unknown:
        raise KeyError(f"not an output of this event: {sorted(unknown)}")
    return tuple(updates.get(name, gr.skip()) for name in names)


class Handlers:
    """The page's event functions, bound to one app's config (its model policy), trace store and output folder:
    compare_ui (the Compare button), compare_example (Gradio's example cache), compare_api (public /compare),
    sweep_ui (the sweep's button), sweep_api (public /sweep), open_link (page load: a link's inputs),
    model_selected (the model selector) and show_step (the step slider and the word chips). The many-seeds
    section's events, public /seeds among them, are `seeds_view.SeedsHandlers`, which share this object."""

    def __init__(self, config: AppConfig, traces: TraceStore, output_root: Path):
        self.config, self.traces, self.output_root = config, traces, output_root
        self._last_cleanup = -math.inf
        self.examples: list[dict] = []  # the example rows by input name: a link to one shows its cached result
        self.door = None  # door.Door once the queue exists: tells a running job that its client has gone
        self.limits = CostLimits(config.max_request_seconds, config.max_chunks) if config.shared else None

    def stream(self, request: gr.Request | None, model: str, job: Request) -> AsyncIterator:
        """`runner.astream` with this deployment's cost limits, stopped when the client of `request` leaves."""
        gone = self.door.gone(request) if self.door is not None else None
        return astream(model, job, limits=self.limits, gone=gone)

    def new_job(self) -> JobFiles:
        """A folder for one job's files. Before it, jobs' folders older than RUN_MAX_AGE_S go (looked for at most
        once a minute), and this process's folder (jobs, run traces and, when `launch.serve` put it there, Gradio's
        cache) is trimmed to RUN_FOLDER_CAP, oldest first."""
        if time.monotonic() - self._last_cleanup > CLEANUP_INTERVAL_S:
            remove_old_folders(self.output_root, RUN_MAX_AGE_S)
            self._last_cleanup = time.monotonic()
        private = self.output_root.parent
        trim_folders([self.output_root, private / "traces", private / "gradio"])
        return JobFiles(self.output_root)

    def unpack(self, values: dict) -> tuple[str, CompareSettings]:
        model = self.config.check_model(values.pop("model", None))
        self.config.check_embedding(values.get("negative_embedding"))
        return model, CompareSettings(**values)

    def final_outputs(
        self, comparison, kind: TraceKind = TraceKind.RUN, owner: str | None = None, model: str | None = None
    ) -> dict:
        """Every output of the page for a finished comparison (also what the example cache stores); `model` is the
        name it was asked for (the link names it), by default the loaded model's label."""
        settings, trace = comparison.settings, comparison.trace
        files = self.new_job()
        written = write_outputs(comparison, files.folder)
        trace.negative_strength, trace.perp_neg = settings.negative_strength, settings.perp_neg
        trace.negative_mode = settings.negative_mode
        curves = curves_picture(trace)
        trace_id = self.traces.save(trace, curves, kind=kind, owner=owner)
        difference, peak = difference_with_legend(comparison.without_negative, comparison.with_negative)
        note = f"Done in {comparison.seconds:.1f} s. The images differ by up to {100 * peak:.0f} % (difference map)"
        warnings = comparison.warnings + ([DISTILLED_NOTE] if "distilled" in written else [])
        without_png, with_png = str(written["without_negative"]), str(written["with_negative"])
        shown_step = telling_step(trace)
        return {
            "image_without": without_png,
            "image_with": with_png,
            "caption_with": caption_for(settings.negative),
            "slider": (without_png, with_png),
            "difference": files.png(difference, "difference"),
            "status": status_text(settings, comparison.model, warnings, note),
            "negative_reading": reading_text(comparison.negative_reading),
            "seed_used": settings.seed,
            "downloads": [str(written[name]) for name in ("side_by_side", "steps_gif", "trace") if name in written]
            + [without_png, with_png]
            + ([str(written["distilled"])] if "distilled" in written else []),
            "trace_id": trace_id,
            "step": step_slider(len(trace.steps), shown_step + 1),
            "link": link_query(model or comparison.model, settings, self.config.default_model),
            "attention_word": gr.update(choices=word_choices(trace), value=chosen_word(trace, None)),
            **step_outputs(trace, shown_step, files, curves),
            "progress": "",  # the progress line is an output so that Gradio tracks the run's progress there
        }

    async def compare_ui(self, request: gr.Request = None, progress=gr.Progress(), **values) -> AsyncIterator[tuple]:  # noqa: B008
        """Stream previews, the step view and the curves while sampling, then the full result."""
        try:
            model, settings = self.unpack(values)
            progress(0, desc="loading the model")
            files, records, last_curves = self.new_job(), [], 0.0
            async for event in self.stream(request, model, CompareRequest(settings)):
                if isinstance(event, Ready):
                    settings = event.settings
                    for warning in event.warnings:
                        gr.Warning(html.escape(warning, quote=False))
                    yield ordered(
                        {
                            "status": status_text(settings, event.model, event.warnings, "Sampling both runs…"),
                            "negative_reading": "",  # the last result's, until this run's is known
                            "seed_used": settings.seed,
                            "caption_with": caption_for(settings.negative),
                            "trace_id": "",  # the scrubber rests until this run's trace exists
                            "link": "",  # a link is for a finished comparison
                            # the last run's word maps go; this run's are drawn when it is done
                            "attention_word": gr.update(choices=[], value=None),
                            **dict.fromkeys(("attention", "attention_strip", "attention_reading"), None),
                        }
                    )
                elif isinstance(event, Step):
                    records += event.records
                    progress((event.done, event.total), desc=f"step {event.done} of {event.total}", unit="steps")
                    if records[-1].previews is None:
                        continue  # not a step the live view draws
                    draw_curves = time.monotonic() - last_curves > CURVE_INTERVAL_S  # Done draws the final ones
                    trace = live_trace(records, settings)
                    curves = await asyncio.to_thread(curves_picture, trace) if draw_curves else None
                    # attention maps are drawn once the run is done (the live trace does not know its words yet)
                    updates = await asyncio.to_thread(
                        step_outputs, trace, event.done - 1, files, curves, attention=False
                    )
                    last_curves = time.monotonic() if draw_curves else last_curves
                    updates.update(
                        image_without=files.png(records[-1].previews[0], "live_without"),
                        image_with=files.png(records[-1].previews[1], "live_with"),
                        step=step_slider(event.total, event.done),
                    )  # not the status text: an update still in flight after Stop would overwrite "Stopped"
                    yield ordered(updates)
                elif isinstance(event, Done):
                    progress(1.0, desc="drawing the results")
                    owner = request.session_hash if request is not None else None
                    final = await asyncio.to_thread(self.final_outputs, event.comparison, TraceKind.RUN, owner, model)
                    yield ordered(final)
        except Exception as error:
            # Shown in the status line and as a toast; the last result stays on the page, and no output box
            # turns into an "Error" badge, so the page reads as still working (it is).
            message = html.escape(user_message(error), quote=False)
            gr.Warning(message, title="Could not compare")
            yield ordered({"status": f"❌ **Could not compare.** {message}"})

    async def compare_example(self, *values) -> tuple:
        """An example's result, computed on its first click and then served from Gradio's example cache."""
        try:
            model, settings = self.unpack(dict(zip(EXAMPLE_NAMES, values, strict=True)))
            async for event in astream(model, CompareRequest(settings)):
                if isinstance(event, Done):
                    final = await asyncio.to_thread(
                        self.final_outputs, event.comparison, TraceKind.EXAMPLE, None, model
                    )
                    return ordered(final)
        except Exception as error:
            raise input_error(error) from None
        raise gr.Error("The comparison ended without a result.")

    async def compare_api(self, request: gr.Request = None, progress=gr.Progress(), **values):  # noqa: B008
        """Public `/compare`: (image without negative, image with negative, seed used, trace JSON), the images as
        PNG files with their generation parameters. Cancelling the job stops sampling after the current step."""
        try:
            model, settings = self.unpack(values)
            async for event in self.stream(request, model, CompareRequest(settings)):
                if isinstance(event, Step):
                    progress((event.done, event.total), desc="sampling", unit="steps")
                elif isinstance(event, Done):
                    comparison = event.comparison
                    written = await asyncio.to_thread(write_outputs, comparison, self.new_job().folder)
                    return (
                        str(written["without_negative"]),
                        str(written["with_negative"]),
                        comparison.settings.seed,
                        trace_document(comparison),
                    )
        except Exception as error:
            raise input_error(error, for_html=False) from None  # API clients get the message as plain text
        raise gr.Error("The comparison ended without a result.")

    async def sweep_ui(self, request: gr.Request = None, progress=gr.Progress(), **values) -> tuple:  # noqa: B008
        """ "When does it act?": the negative started at several steps, one batched call; (picture, reading)."""
        try:
            sweep = await self.run_sweep(values, progress, request)
        except Exception as error:
            raise input_error(error) from None
        marks, reading = sweep_reading(sweep)
        picture = self.new_job().png(sweep_picture(sweep, marks), "sweep")
        return picture, f"{run_context(sweep.settings)}\n\n{reading}"

    async def sweep_api(self, request: gr.Request = None, progress=gr.Progress(), **values) -> tuple:  # noqa: B008
        """Public `/sweep`: (the images, no negative first; what each is) — see `sweep.sweep_starts`."""
        try:
            sweep = await self.run_sweep(values, progress, request)
        except Exception as error:
            raise input_error(error, for_html=False) from None
        files = self.new_job()
        images = [sweep.without_negative, *sweep.with_negative]
        marks, reading = sweep_reading(sweep)
        labels = sweep_labels(sweep)
        gallery = [(files.png(image, f"sweep{i}"), label) for i, (image, label) in enumerate(zip(images, labels))]
        info = {
            "seed": sweep.settings.seed,
            "settings": sweep.settings.as_dict(),
            "starts": sweep.starts,
            "start_steps": [step + 1 for step in sweep.start_steps],
            "labels": labels,
            "marks": marks,
            "reading": reading,
        }
        return gallery, info

    async def run_sweep(self, values: dict, progress, request: gr.Request | None = None) -> Sweep:
        model, settings = self.unpack(values)
        async for event in self.stream(request, model, SweepRequest(settings, SWEEP_STARTS)):
            if isinstance(event, Step):
                progress((event.done, event.total), desc="sampling the sweep", unit="steps")
            elif isinstance(event, SweepDone):
                return event.sweep
        raise gr.Error("The sweep ended without a result.")

    def open_link(self, request: gr.Request) -> tuple:
        """On page load: a URL whose query names comparison inputs (`links.link_values`) fills them, checked as
        typed input is (model policy, `resolve_settings`), and starts the comparison through `link_run` (or, for
        an example's exact inputs, shows its cached result through `link_example`). A bad value leaves the page as
        it is, with the same message as typed input in the status line."""
        params = dict(request.query_params) if request is not None else {}
        values = link_values(params)
        if values is None:
            return ordered({}, LINK_OUTPUTS)  # a plain visit
        try:
            model = self.config.check_model(values.pop("model", None))
            info = model_info(model)
            settings = resolve_settings(CompareSettings(**values), info.native_size, info.defaults)
        except Exception as error:
            message = html.escape(user_message(error), quote=False)
            gr.Warning(message, title="Could not open the link")
            return ordered({"status": f"❌ **Could not open the link.** {message}"}, LINK_OUTPUTS)
        inputs = {"model": model, **settings.as_dict()}
        updates = {
            **{name: value for name, value in inputs.items() if name not in NOT_IN_LINKS},  # the upload stays as is
            **{name: size_update(name, info, inputs[name]) for name in ("width", "height")},
            "model_info": info.note,
            "status": "Opening the linked comparison…",
        }
        same = [i for i, row in enumerate(self.examples) if self._resolved(row, info) == inputs]
        updates.update({"link_example": str(same[0])} if same else {"link_run": "1"})
        return ordered(updates, LINK_OUTPUTS)

    @staticmethod
    def _resolved(row: dict, info: ModelInfo) -> dict | None:
        """An example row as resolved inputs, to compare with a link's."""
        values = dict(row)
        model = values.pop("model")
        try:
            settings = resolve_settings(CompareSettings(**values), info.native_size, info.defaults)
            return {"model": model, **settings.as_dict()}
        except InputError:
            return None

    def model_selected(self, name: str | None) -> tuple:
        """Load the chosen model and adopt its defaults (steps, guidance, scheduler, size limits)."""
        try:
            info = model_info(self.config.check_model(name))
        except (InputError, ModelLoadError) as error:
            return ordered({"model_info": f"⚠️ {html.escape(str(error), quote=False)}"}, MODEL_OUTPUTS)
        return ordered(model_widgets(info), MODEL_OUTPUTS)

    def show_step(self, trace_id: str | None, step: float, word, request: gr.Request) -> tuple:
        """Redraw the step view for the step the slider points at and the chosen word's attention map, from the
        stored trace of the shown result."""
        if not trace_id:
            return ordered({}, STEP_OUTPUTS)  # nothing compared yet (or a run is still streaming)
        try:
            index = int(step) - 1 if isinstance(step, (int, float)) and math.isfinite(step) else 0
            owner = request.session_hash if request is not None else None
            trace, curves = self.traces.load(trace_id, index, owner)
            word = chosen_word(trace, word)
            strip = self.traces.word_maps(trace_id, word, owner) if word is not None else None
            folder = self.traces.picture_folder(trace_id, owner)
        except (TraceNotFound, OSError, ValueError):
            raise gr.Error(
                "This result is no longer stored on the server; run Compare again.", print_exception=False
            ) from None
        if not trace.steps:
            return ordered({}, STEP_OUTPUTS)
        index = min(max(index, 0), len(trace.steps) - 1)
        files = StepFiles(folder, f"{index}-{word}")  # one set of pictures per step and word, written once
        return ordered(step_outputs(trace, index, files, curves, word, strip), STEP_OUTPUTS)


def model_widgets(info: ModelInfo) -> dict:
    """What choosing a model changes, by output name (`MODEL_OUTPUTS`): its note and the fields it has defaults for."""
    return {
        "model_info": info.note,
        **{name: gr.update(value=info.defaults[name]) for name in ("steps", "guidance", "scheduler")},
        **{name: size_update(name, info, info.defaults[name]) for name in ("width", "height")},
    }


def size_update(name: str, info: ModelInfo, value: int) -> dict:
    """A size box's update for a model: its value and the model's range under it."""
    return gr.update(info=range_note(name, FIELDS[name], info.size_limits), value=value)


def random_seed() -> int:
    return random.randint(0, MAX_SEED)
