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
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from negprompt_demo.app_config import AppConfig
from negprompt_demo.attention_views import chosen_word, step_attention, word_choices
from negprompt_demo.attributes import sweep_reading
from negprompt_demo.engine import SWEEP_STARTS, GenerationCancelled, NonFiniteError, Sweep
from negprompt_demo.export import trace_document, write_outputs
from negprompt_demo.flow_models import DISTILLED_NOTE, FAMILY_NOTES
from negprompt_demo.legends import difference_with_legend, step_legend
from negprompt_demo.links import link_query, link_values
from negprompt_demo.loading import ModelLoadError, load_pipeline, model_defaults, model_family, native_size
from negprompt_demo.runner import Done, Ready, Step, SweepDone, astream
from negprompt_demo.settings import FIELDS, MAX_SEED, CompareSettings, InputError, resolve_settings, size_limits
from negprompt_demo.trace import GuidanceTrace
from negprompt_demo.tracefile import RUN_MAX_AGE_S, TraceNotFound, TraceStore, remove_old_folders
from negprompt_demo.visualize import (
    CurvesPicture,
    curves_picture,
    describe,
    run_labels,
    step_views,
    sweep_labels,
    sweep_picture,
)

log = logging.getLogger(__name__)

# The inputs of a comparison: the model, then every settings field (declared once, in settings.FIELDS).
INPUT_NAMES = ("model", *FIELDS)
STEP_OUTPUTS = (
    *("x0_without", "guidance_without", "x0_with", "guidance_with", "push", "legend", "curves", "reading"),
    *("branch_prompt", "branch_empty", "branch_negative", "branch_guided", "branch_note"),
    *("attention", "attention_strip", "attention_reading"),
)
UI_OUTPUTS = (
    *("image_without", "image_with", "caption_with", "slider", "difference", "status", "negative_reading", "seed_used"),
    *("downloads", "trace_id", "step", "link", "attention_word"),
    *STEP_OUTPUTS,
)
# What opening a link fills in: the inputs, then the model's size note, the status and the two hidden triggers
# (one starts the comparison, the other shows an example's cached result).
LINK_OUTPUTS = (*INPUT_NAMES, "model_info", "status", "link_run", "link_example")
CLEANUP_INTERVAL_S = 60.0
CURVE_INTERVAL_S = 1.0  # while sampling, redraw the curves (the slowest picture: ~0.25 s) at most this often
USER_ERRORS = (InputError, ModelLoadError, NonFiniteError, GenerationCancelled)


def ordered(updates: dict, names: tuple[str, ...] = UI_OUTPUTS) -> tuple:
    unknown = set(updates) - set(names)
    if unknown:
        raise KeyError(f"not an output of this event: {sorted(unknown)}")
    return tuple(updates.get(name, gr.skip()) for name in names)


def user_message(error: BaseException) -> str:
    """What a user reads for an error: the engine's own message where it is written for users, never a traceback
    (plain text: escape it where it is shown as HTML)."""
    if isinstance(error, USER_ERRORS):
        return str(error)
    log.exception("comparison failed", exc_info=error)
    first_line = (str(error).strip().splitlines() or [""])[0][:300]
    name = getattr(error, "error_type", type(error).__name__)  # runner.DeviceError keeps the original class's name
    return f"The comparison failed ({name}: {first_line}). The page still works; try again."


def input_error(error: BaseException, for_html: bool = True) -> gr.Error:
    """A gr.Error for a user: input mistakes log one line, not a traceback; unexpected errors keep theirs."""
    message = user_message(error)
    if isinstance(error, USER_ERRORS):
        log.info("refused: %s", message)
    return gr.Error(html.escape(message, quote=False) if for_html else message, print_exception=False)


class JobFiles:
    """One job's folder of PNG files, under this process's private output folder."""

    def __init__(self, root: Path):
        self.folder = Path(tempfile.mkdtemp(prefix="job-", dir=root))
        self.count = 0

    def png(self, picture: Image.Image | np.ndarray | None, name: str) -> str | None:
        """Write a picture (PIL or [H, W, 3] uint8) as a new PNG of this job; None stays None."""
        if picture is None:
            return None
        if isinstance(picture, np.ndarray):
            picture = Image.fromarray(picture)
        self.count += 1
        path = self.folder / f"{self.count:04d}-{name}.png"
        picture.save(path, format="PNG")
        return str(path)


def step_outputs(
    trace: GuidanceTrace,
    index: int,
    files: JobFiles,
    curves: CurvesPicture | None,
    word=None,
    strip: np.ndarray | None = None,
    attention: bool = True,
) -> dict:
    """The step view for step `index` (0-based): both runs' x0 with and without the guidance overlay, the push
    map, the legend, when given the run's curves, the curves with that step marked and their reading, and the
    chosen word's attention map with its strip over the steps (`strip`: that word's maps at the kept steps, read
    from the trace in memory when not given; `attention=False` leaves those outputs as they are)."""
    views = step_views(trace, index)
    updates = {name: files.png(views.get(name), name) for name in ("x0_without", "guidance_without", "x0_with")}
    updates["guidance_with"] = files.png(views["guidance_with"], "guidance_with")
    updates["push"] = files.png(views.get("push"), "push")
    for branch in ("prompt", "empty", "negative"):
        updates[f"branch_{branch}"] = files.png(views.get(f"branch_{branch}"), f"branch_{branch}")
    updates["branch_guided"] = updates["x0_with"] if "branch_prompt" in views else None
    updates["branch_note"] = branch_note(trace, index, "branch_prompt" in views)
    updates["legend"] = files.png(step_legend(trace), "legend")
    if curves is not None:
        updates["curves"] = files.png(curves.marked(index), "curves")
        updates["reading"] = describe(trace)
    if attention:
        updates.update(attention_outputs(trace, index, files, word, strip))
    return updates


def branch_note(trace: GuidanceTrace, index: int, recorded: bool) -> str:
    """What the branch row shows at this step, in the article's words."""
    if not trace.cfg_active:
        return "Guidance is off (scale ≤ 1): there is only the prompt's prediction, so no branches to compare."
    if not recorded:
        return "Tick “record what the empty prompt predicts” to see what each branch predicts at every step."
    step = trace.steps[index]
    note = (
        f"Step {index + 1}, from the with-negative run's current sample: the **prompt** alone (conditional), the "
        "**empty prompt** alone (unconditional: it still heads for a decent image, but it could be anything), "
        f"the **negative prompt** alone, and the **guided step** the sampler took = negative + "
        f"{trace.guidance_scale:g} × (prompt − negative): the negative took the empty prompt's place."
    )
    if not step.negative_active:
        note += " At this step the negative does not act (outside its window): its branch is the empty prompt's."
    return note


def attention_outputs(trace: GuidanceTrace, index: int, files: JobFiles, word, strip: np.ndarray | None) -> dict:
    """The chosen word's map over the with-run's x0 at step `index`, its strip over the kept steps and a reading."""
    overlay, picture, reading = step_attention(trace, index, word, strip)
    return {
        "attention": files.png(overlay, "attention"),
        "attention_strip": files.png(picture, "attention_strip"),
        "attention_reading": reading,
    }


def status_text(settings: CompareSettings, model: str, warnings: list[str], note: str) -> str:
    lines = [
        f"**{note}** · seed `{settings.seed}` · {settings.steps} steps · guidance {settings.guidance:g} · "
        f"{settings.scheduler} · {settings.width}×{settings.height} px · model `{html.escape(model)}`"
    ]
    lines += [f"⚠️ {html.escape(warning, quote=False)}" for warning in warnings]
    return "\n\n".join(lines)


def reading_text(reading) -> str:
    """How the negative prompt was read (`prompts.PromptReading`), under the status line."""
    return "" if reading is None else f"**How the negative prompt was read:** {reading.markdown()}"


def caption_for(negative: str) -> str:
    return f"**{html.escape(run_labels(negative)[1], quote=False)}**"


def live_trace(records: list, guidance: float) -> GuidanceTrace:
    """The steps recorded so far as a trace, to draw while sampling. The tracer writes a NaN cosine exactly when
    classifier-free guidance is off, which is how a partial trace knows."""
    cfg_active = bool(records) and math.isfinite(records[0].guidance_cosine)
    return GuidanceTrace(guidance, cfg_active, "epsilon", steps=list(records))


class Handlers:
    """The page's event functions, bound to one app's config (its model policy), trace store and output folder:
    compare_ui (the Compare button), compare_example (Gradio's example cache), compare_api (public /compare),
    open_link (page load: a link's inputs), model_selected (the model selector) and show_step (the step slider)."""

    def __init__(self, config: AppConfig, traces: TraceStore, output_root: Path):
        self.config, self.traces, self.output_root = config, traces, output_root
        self._last_cleanup = -math.inf
        self.examples: list[dict] = []  # the example rows by input name: a link to one shows its cached result

    def new_job(self) -> JobFiles:
        """A folder for one job's files; jobs' folders older than RUN_MAX_AGE_S go, looked for at most once a
        minute (a slider move is a job too, and should not list the whole folder each time)."""
        if time.monotonic() - self._last_cleanup > CLEANUP_INTERVAL_S:
            remove_old_folders(self.output_root, RUN_MAX_AGE_S)
            self._last_cleanup = time.monotonic()
        return JobFiles(self.output_root)

    def unpack(self, values: dict) -> tuple[str, CompareSettings]:
        model = self.config.check_model(values.pop("model", None))
        self.config.check_embedding(values.get("negative_embedding"))
        return model, CompareSettings(**values)

    def final_outputs(self, comparison, kind: str = "run", owner: str | None = None, model: str | None = None) -> dict:
        """Every output of the page for a finished comparison (also what the example cache stores); `model` is the
        name it was asked for (the link names it), by default the loaded model's label."""
        settings, trace = comparison.settings, comparison.trace
        files = self.new_job()
        written = write_outputs(comparison, files.folder)
        curves = curves_picture(trace)
        trace_id = self.traces.save(trace, curves, kind=kind, owner=owner)
        difference, peak = difference_with_legend(comparison.without_negative, comparison.with_negative)
        note = f"Done in {comparison.seconds:.1f} s. The images differ by up to {100 * peak:.0f} % (difference map)"
        warnings = comparison.warnings + ([DISTILLED_NOTE] if "distilled" in written else [])
        without_png, with_png = str(written["without_negative"]), str(written["with_negative"])
        last = len(trace.steps) - 1
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
            "step": gr.update(maximum=max(1, len(trace.steps)), value=len(trace.steps)),
            "link": link_query(model or comparison.model, settings, self.config.default_model),
            "attention_word": gr.update(choices=word_choices(trace), value=chosen_word(trace, None)),
            **step_outputs(trace, last, files, curves),
        }

    async def compare_ui(self, request: gr.Request, progress=gr.Progress(), **values) -> AsyncIterator[tuple]:  # noqa: B008
        """Stream previews, the step view and the curves while sampling, then the full result."""
        try:
            model, settings = self.unpack(values)
            progress(0, desc="loading the model")
            files, records, last_curves = self.new_job(), [], 0.0
            async for event in astream(model, settings):
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
                    trace = live_trace(records, settings.guidance)
                    curves = await asyncio.to_thread(curves_picture, trace) if draw_curves else None
                    # attention maps are drawn once the run is done (the live trace does not know its words yet)
                    updates = await asyncio.to_thread(
                        step_outputs, trace, event.done - 1, files, curves, attention=False
                    )
                    last_curves = time.monotonic() if draw_curves else last_curves
                    updates.update(
                        image_without=files.png(records[-1].previews[0], "live_without"),
                        image_with=files.png(records[-1].previews[1], "live_with"),
                        step=gr.update(maximum=event.total, value=event.done),
                    )  # not the status text: an update still in flight after Stop would overwrite "Stopped"
                    yield ordered(updates)
                elif isinstance(event, Done):
                    progress(1.0, desc="drawing the results")
                    owner = request.session_hash if request is not None else None
                    final = await asyncio.to_thread(self.final_outputs, event.comparison, "run", owner, model)
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
            model, settings = self.unpack(dict(zip(INPUT_NAMES, values, strict=True)))
            async for event in astream(model, settings):
                if isinstance(event, Done):
                    final = await asyncio.to_thread(self.final_outputs, event.comparison, "example", None, model)
                    return ordered(final)
        except Exception as error:
            raise input_error(error) from None
        raise gr.Error("The comparison ended without a result.")

    async def compare_api(self, progress=gr.Progress(), **values):  # noqa: B008
        """Public `/compare`: (image without negative, image with negative, seed used, trace JSON), the images as
        PNG files with their generation parameters. Cancelling the job stops sampling after the current step."""
        try:
            model, settings = self.unpack(values)
            async for event in astream(model, settings):
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

    async def sweep_ui(self, progress=gr.Progress(), **values) -> tuple:  # noqa: B008
        """ "When does it act?": the negative started at several steps, one batched call; (picture, reading)."""
        try:
            sweep = await self.run_sweep(values, progress)
        except Exception as error:
            raise input_error(error) from None
        marks, reading = sweep_reading(sweep)
        picture = self.new_job().png(sweep_picture(sweep, marks), "sweep")
        return picture, reading

    async def sweep_api(self, progress=gr.Progress(), **values) -> tuple:  # noqa: B008
        """Public `/sweep`: (the images, no negative first; what each is) — see `engine.sweep_starts`."""
        try:
            sweep = await self.run_sweep(values, progress)
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

    async def run_sweep(self, values: dict, progress) -> Sweep:
        model, settings = self.unpack(values)
        async for event in astream(model, settings, sweep=SWEEP_STARTS):
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
            pipe = load_pipeline(model)
            defaults, native = model_defaults(pipe), native_size(pipe)
            settings = resolve_settings(CompareSettings(**values), native, defaults)
        except Exception as error:
            message = html.escape(user_message(error), quote=False)
            gr.Warning(message, title="Could not open the link")
            return ordered({"status": f"❌ **Could not open the link.** {message}"}, LINK_OUTPUTS)
        inputs = {"model": model, **settings.as_dict()}
        low, high = size_limits(native)
        updates = {
            **inputs,
            **{name: gr.update(minimum=low, maximum=high, value=inputs[name]) for name in ("width", "height")},
            "model_info": f"Native size {native} px; sizes {low}–{high} px allowed.",
            "status": "Opening the linked comparison…",
        }
        same = [i for i, row in enumerate(self.examples) if self._resolved(row, native, defaults) == inputs]
        updates.update({"link_example": str(same[0])} if same else {"link_run": "1"})
        return ordered(updates, LINK_OUTPUTS)

    @staticmethod
    def _resolved(row: dict, native: int, defaults: dict) -> dict | None:
        """An example row as resolved inputs, to compare with a link's."""
        values = dict(row)
        model = values.pop("model")
        try:
            return {"model": model, **resolve_settings(CompareSettings(**values), native, defaults).as_dict()}
        except InputError:
            return None

    def model_selected(self, name: str | None) -> tuple:
        """Load the chosen model and adopt its defaults (steps, guidance, scheduler, size limits)."""
        try:
            pipe = load_pipeline(self.config.check_model(name))
        except (InputError, ModelLoadError) as error:
            return (f"⚠️ {html.escape(str(error), quote=False)}", *(gr.skip(),) * 5)
        return model_widgets(pipe)

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
        except (TraceNotFound, OSError, ValueError):
            raise gr.Error(
                "This result is no longer stored on the server; run Compare again.", print_exception=False
            ) from None
        if not trace.steps:
            return ordered({}, STEP_OUTPUTS)
        index = min(max(index, 0), len(trace.steps) - 1)
        return ordered(step_outputs(trace, index, self.new_job(), curves, word, strip), STEP_OUTPUTS)


def model_widgets(pipe) -> tuple:
    """(info text, steps, guidance, scheduler, width, height) updates for a loaded model."""
    defaults, native = model_defaults(pipe), native_size(pipe)
    low, high = size_limits(native)
    sizes = [gr.update(minimum=low, maximum=high, value=defaults.get(name, native)) for name in ("width", "height")]
    info = f"Native size {native} px; sizes {low}–{high} px allowed." + FAMILY_NOTES.get(model_family(pipe), "")
    return (
        info,
        gr.update(value=defaults["steps"]),
        gr.update(value=defaults["guidance"]),
        gr.update(value=defaults["scheduler"]),
        *sizes,
    )


def random_seed() -> int:
    return random.randint(0, MAX_SEED)


def stopped_message() -> str:
    return "**Stopped.** Sampling ended after the step it was on; the page is ready for the next comparison."
