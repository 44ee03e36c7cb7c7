"""The page's event functions: they turn widget values into engine calls and engine results into widget values.

No generation logic lives here. A comparison runs in `engine.compare` on a worker thread; this module streams its
per-step records to the page, turns errors into messages, and draws results with `visualize`/`plots`.

Outputs of the comparison events are addressed by name (`UI_OUTPUTS`); `app.py` lays out one component per name.
A handler returns a dict of the names it changes, and `ordered` fills the rest with `gr.skip()`.
"""

from __future__ import annotations

import asyncio
import functools
import html
import logging
import math
import random
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import gradio as gr

from negprompt_demo.engine import GenerationCancelled, NonFiniteError, compare, pipeline_lock, prepare
from negprompt_demo.export import trace_document, write_outputs
from negprompt_demo.loading import EMBEDDED, ModelLoadError, load_pipeline, model_defaults, native_size
from negprompt_demo.plots import difference_with_legend, step_legend
from negprompt_demo.previews import LivePreviews, fill_previews
from negprompt_demo.settings import MAX_SEED, CompareSettings, InputError, size_limits
from negprompt_demo.trace import GuidanceTrace
from negprompt_demo.tracefile import load_trace, save_trace
from negprompt_demo.visualize import curves_figure, describe, run_labels, step_views

log = logging.getLogger(__name__)

# Hub models offered next to the embedded one: SD 1.5, a popular SD 1.5 fine-tune, SDXL base.
KNOWN_MODELS = (
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "Lykon/dreamshaper-8",
    "stabilityai/stable-diffusion-xl-base-1.0",
)
# The widgets a comparison reads, in the order every comparison handler takes them.
INPUT_NAMES = ("prompt", "negative", "seed", "steps", "guidance", "scheduler", "width", "height", "model", "push_map")
UI_OUTPUTS = (
    "image_without",
    "image_with",
    "caption_with",
    "slider",
    "difference",
    "status",
    "seed_used",
    "downloads",
    "trace_file",
    "step",
    *("x0_without", "guidance_without", "x0_with", "guidance_with", "push"),
    "legend",
    "curves",
    "reading",
)
STEP_OUTPUTS = ("x0_without", "guidance_without", "x0_with", "guidance_with", "push", "legend", "curves", "reading")
CURVE_INTERVAL_S = 1.0  # while sampling, redraw the (slowest) curves plot at most this often
OUTPUT_ROOT = Path(tempfile.gettempdir()) / "negprompt-demo"
OUTPUT_MAX_AGE_S = 3600


@dataclass
class AppConfig:
    """How the page is served: which models it offers and whether visitors may name others."""

    default_model: str = EMBEDDED
    models: list[str] = field(default_factory=lambda: [EMBEDDED, *KNOWN_MODELS])
    lock_models: bool = False  # public deployments: only `models`, no free-text model field
    concurrency: int = 1  # generations at once per device
    max_queue: int = 16  # requests waiting beyond that are refused with "queue full"

    def __post_init__(self) -> None:
        # The default model is always offered, and first.
        self.models = [self.default_model] + [name for name in self.models if name != self.default_model]

    def check_model(self, name: str | None) -> str:
        """Server-side model check: a locked deployment refuses any name it does not list, whatever the browser sent."""
        name = (name or "").strip() or self.default_model
        if self.lock_models and name not in self.models:
            raise InputError(f"This deployment only offers these models: {', '.join(self.models)}.")
        return name


def ordered(updates: dict, names: tuple[str, ...] = UI_OUTPUTS) -> tuple:
    unknown = set(updates) - set(names)
    if unknown:
        raise KeyError(f"not an output of this event: {sorted(unknown)}")
    return tuple(updates.get(name, gr.skip()) for name in names)


def settings_from_inputs(
    prompt, negative, seed, steps, guidance, scheduler, width, height, push_map
) -> CompareSettings:
    """Widget values as they arrive (None for a cleared number) → settings; `engine.prepare` validates them all."""
    return CompareSettings(
        prompt=prompt,
        negative=negative or "",
        seed=seed,
        steps=steps,
        guidance=guidance,
        scheduler=scheduler,
        width=width,
        height=height,
        push_map=bool(push_map),
    )


def user_message(error: BaseException) -> str:
    """What the page shows for an error: the engine's own message where it is written for users, never a traceback."""
    if isinstance(error, (InputError, ModelLoadError, NonFiniteError, GenerationCancelled)):
        message = str(error)
    else:
        log.exception("comparison failed", exc_info=error)
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        message = f"The comparison failed ({type(error).__name__}: {first_line}). The page still works; try again."
    return html.escape(message, quote=False)  # gr.Error renders HTML


# --- running a comparison ---------------------------------------------------------------------------------------


def on_accelerator(function):
    """`spaces.GPU` where the `spaces` package is importable (Hugging Face ZeroGPU attaches a GPU only to calls
    wrapped in it; elsewhere it has no effect), the function itself otherwise."""
    try:
        import spaces
    except ImportError:
        return function
    return spaces.GPU(duration=120)(function)


@on_accelerator
def run_on_device(pipe, settings: CompareSettings, on_step, stop: threading.Event):
    """The one call that uses the accelerator: the comparison, then the x0 pictures the live view skipped."""
    comparison = compare(pipe, settings, on_step=on_step, stop=stop)
    fill_previews(pipe, comparison.trace.steps)
    return comparison


async def stream_comparison(model: str, settings: CompareSettings) -> AsyncIterator[tuple]:
    """Run one comparison on a worker thread and yield what happens, newest first when the page falls behind:

    ("ready", resolved_settings, warnings) once the input is validated,
    ("step", done, total, records_so_far) after a denoising step whose x0 pictures were drawn (at most every
        LIVE_PREVIEW_INTERVAL_S, and the last; steps are skipped, never reordered),
    ("done", comparison) at the end.

    Errors are raised as they are. If the consumer stops (the user pressed Stop, the client cancelled), the run is
    told to stop and this waits until it has ended after its current step, so the device is free again.
    """
    loop = asyncio.get_running_loop()
    updates: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    records = []

    def post(item: tuple) -> None:
        loop.call_soon_threadsafe(updates.put_nowait, item)

    def work() -> None:
        try:
            pipe = load_pipeline(model)
            live = LivePreviews(pipe)  # each x0 picture costs a decode; a page shows a few per second at most

            def on_step(done: int, total: int, record) -> None:
                records.append(record)
                if live.decode_if_due(done, total, record):
                    post(("step", done, total, list(records)))

            with pipeline_lock(pipe):  # tokenizers are not thread-safe; the engine tokenizes under this lock too
                resolved, warnings = prepare(pipe, settings)
            post(("ready", resolved, warnings))
            post(("done", run_on_device(pipe, resolved, on_step, stop)))
        except BaseException as error:  # handed to the event loop, raised there
            post(("error", error))

    worker = threading.Thread(target=work, name="negprompt-compare", daemon=True)
    worker.start()
    try:
        while True:
            batch = [await updates.get()]
            while not updates.empty():
                batch.append(updates.get_nowait())
            for item in batch:  # every non-step item, but only the newest step
                if item[0] == "error":
                    raise item[1]
                if item[0] == "step" and item is not batch[-1]:
                    continue
                yield item
                if item[0] == "done":
                    return
    finally:
        if worker.is_alive():
            stop.set()
            await asyncio.to_thread(worker.join)


def new_output_dir() -> Path:
    """A fresh folder for one comparison's files; folders older than an hour are removed (Gradio has copied their
    files into its own cache by then)."""
    OUTPUT_ROOT.mkdir(parents=True, exist_ok=True)
    for old in OUTPUT_ROOT.iterdir():
        try:
            if time.time() - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix="compare-", dir=OUTPUT_ROOT))


def live_trace(records: list, guidance: float) -> GuidanceTrace:
    """The steps recorded so far as a trace, to draw while sampling. The tracer writes a NaN cosine exactly when
    classifier-free guidance is off, which is how a partial trace knows."""
    cfg_active = bool(records) and math.isfinite(records[0].guidance_cosine)
    return GuidanceTrace(guidance, cfg_active, "epsilon", steps=list(records))


def step_outputs(trace: GuidanceTrace, index: int, with_curves: bool = True) -> dict:
    """The step view for step `index` (0-based): both runs' x0 with and without the guidance overlay, the push
    map, the legend and, unless skipped, the curves with that step marked and their reading."""
    views = step_views(trace, index)
    updates = {
        "x0_without": views["x0_without"],
        "guidance_without": views["guidance_without"],
        "x0_with": views["x0_with"],
        "guidance_with": views["guidance_with"],
        "push": views.get("push"),
        "legend": step_legend(trace),
    }
    if with_curves:
        updates["curves"] = curves_figure(trace, index)
        updates["reading"] = describe(trace)
    return updates


def status_text(settings: CompareSettings, model: str, warnings: list[str], note: str) -> str:
    lines = [
        f"**{note}** · seed `{settings.seed}` · {settings.steps} steps · guidance {settings.guidance:g} · "
        f"{settings.scheduler} · {settings.width}×{settings.height} px · model `{html.escape(model)}`"
    ]
    lines += [f"⚠️ {html.escape(warning, quote=False)}" for warning in warnings]
    return "\n\n".join(lines)


def final_outputs(comparison) -> dict:
    """Every output of the page for a finished comparison (also what the example cache stores)."""
    settings, trace = comparison.settings, comparison.trace
    out_dir = new_output_dir()
    files = write_outputs(comparison, out_dir)
    trace_path = save_trace(trace, out_dir / "trace.npz", settings.negative)
    difference, peak = difference_with_legend(comparison.without_negative, comparison.with_negative)
    note = f"Done in {comparison.seconds:.1f} s. The images differ by up to {100 * peak:.0f} % (difference map)"
    last = len(trace.steps) - 1
    return {
        "image_without": comparison.without_negative,
        "image_with": comparison.with_negative,
        "caption_with": caption_for(settings.negative),
        "slider": (comparison.without_negative, comparison.with_negative),
        "difference": difference,
        "status": status_text(settings, comparison.model, comparison.warnings, note),
        "seed_used": settings.seed,
        "downloads": [str(files[name]) for name in ("side_by_side", "steps_gif", "trace") if name in files]
        + [str(files["without_negative"]), str(files["with_negative"])],
        "trace_file": str(trace_path),
        "step": gr.update(maximum=max(1, len(trace.steps)), value=len(trace.steps)),
        **step_outputs(trace, last),
    }


def caption_for(negative: str) -> str:
    return f"**{html.escape(run_labels(negative)[1], quote=False)}**"


class Handlers(NamedTuple):
    compare_ui: Callable  # the Compare button: streams, then shows the full result
    compare_example: Callable  # an example's result, for Gradio's example cache
    compare_api: Callable  # public /compare
    model_selected: Callable  # the model selector: load it, adopt its defaults


def make_handlers(config: AppConfig) -> Handlers:
    """The comparison handlers bound to one app's config (its model policy)."""

    def unpack(values: tuple) -> tuple[str, CompareSettings]:
        named = dict(zip(INPUT_NAMES, values, strict=True))
        model = config.check_model(named.pop("model"))
        return model, settings_from_inputs(**named)

    async def compare_ui(*values, progress=gr.Progress()) -> AsyncIterator[tuple]:  # noqa: B008
        """Stream previews, the step view and the curves while sampling, then the full result."""
        try:
            model, settings = unpack(values)
            progress(0, desc="loading the model")
            last_curves = 0.0
            async for event in stream_comparison(model, settings):
                if event[0] == "ready":
                    resolved, warnings = event[1], event[2]
                    for warning in warnings:
                        gr.Warning(html.escape(warning, quote=False))
                    yield ordered(
                        {
                            "status": status_text(resolved, model, warnings, "Sampling both runs…"),
                            "seed_used": resolved.seed,
                            "caption_with": caption_for(resolved.negative),
                            "trace_file": None,  # the scrubber rests until this run's trace exists
                        }
                    )
                elif event[0] == "step":
                    done, total, records = event[1], event[2], event[3]
                    progress((done, total), desc=f"step {done} of {total}", unit="steps")
                    trace = live_trace(records, settings.guidance)
                    draw_curves = time.monotonic() - last_curves > CURVE_INTERVAL_S or done == total
                    updates = await asyncio.to_thread(step_outputs, trace, done - 1, draw_curves)
                    if draw_curves:
                        last_curves = time.monotonic()
                    previews = records[-1].previews
                    updates.update(
                        image_without=previews[0],
                        image_with=previews[1],
                        step=gr.update(maximum=total, value=done),
                    )  # not the status text: an update still in flight after Stop would overwrite "Stopped"
                    yield ordered(updates)
                else:
                    progress(1.0, desc="drawing the results")
                    yield ordered(await asyncio.to_thread(final_outputs, event[1]))
        except Exception as error:
            # Shown in the status line and as a toast; the last result stays on the page, and no output box
            # turns into an "Error" badge, so the page reads as still working (it is).
            message = user_message(error)
            gr.Warning(message, title="Could not compare")
            yield ordered({"status": f"❌ **Could not compare.** {message}"})

    async def compare_example(*values) -> tuple:
        """An example's result, computed on its first click and then served from Gradio's example cache."""
        try:
            model, settings = unpack(values)
            async for event in stream_comparison(model, settings):
                if event[0] == "done":
                    return ordered(await asyncio.to_thread(final_outputs, event[1]))
        except Exception as error:
            raise gr.Error(user_message(error)) from None
        raise gr.Error("The comparison ended without a result.")

    async def compare_api(
        prompt: str,
        negative: str,
        seed: float | None,
        steps: float,
        guidance: float,
        scheduler: str,
        width: float | None,
        height: float | None,
        model: str | None,
        push_map: bool,
        progress=gr.Progress(),  # noqa: B008
    ):
        """Public `/compare`: (image without negative, image with negative, seed used, trace JSON). Cancelling the
        job stops sampling after the current step."""
        try:
            chosen, settings = unpack(
                (prompt, negative, seed, steps, guidance, scheduler, width, height, model, push_map)
            )
            async for event in stream_comparison(chosen, settings):
                if event[0] == "step":
                    progress((event[1], event[2]), desc="sampling", unit="steps")
                elif event[0] == "done":
                    comparison = event[1]
                    return (
                        comparison.without_negative,
                        comparison.with_negative,
                        comparison.settings.seed,
                        trace_document(comparison),
                    )
        except Exception as error:
            raise gr.Error(user_message(error)) from None
        raise gr.Error("The comparison ended without a result.")

    def model_selected(name: str | None) -> tuple:
        """Load the chosen model and adopt its defaults (steps, guidance, scheduler, size limits)."""
        try:
            pipe = load_pipeline(config.check_model(name))
        except (InputError, ModelLoadError) as error:
            message = html.escape(str(error), quote=False)
            return (f"⚠️ {message}", *(gr.skip(),) * 5)
        return model_widgets(pipe)

    return Handlers(compare_ui, compare_example, compare_api, model_selected)


def model_widgets(pipe) -> tuple:
    """(info text, steps, guidance, scheduler, width, height) updates for a loaded model."""
    defaults, native = model_defaults(pipe), native_size(pipe)
    low, high = size_limits(native)
    sizes = [gr.update(minimum=low, maximum=high, value=defaults.get(name, native)) for name in ("width", "height")]
    info = f"Native size {native} px; sizes {low}–{high} px allowed."
    return (
        info,
        gr.update(value=defaults["steps"]),
        gr.update(value=defaults["guidance"]),
        gr.update(value=defaults["scheduler"]),
        *sizes,
    )


# --- the step scrubber and small helpers ------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _cached_trace(path: str, mtime: float) -> tuple[GuidanceTrace, str]:
    return load_trace(path)


def show_step(trace_path: str | None, step: float) -> tuple:
    """Redraw the step view for the step the slider points at, from the trace file of the shown comparison."""
    if not trace_path:
        return ordered({}, STEP_OUTPUTS)  # nothing compared yet (or a run is still streaming)
    try:
        trace, _ = _cached_trace(trace_path, Path(trace_path).stat().st_mtime)
    except (OSError, ValueError, KeyError):
        raise gr.Error("This result is no longer stored on the server; run Compare again.") from None
    if not trace.steps:
        return ordered({}, STEP_OUTPUTS)
    index = min(max(int(step) - 1, 0), len(trace.steps) - 1)
    return ordered(step_outputs(trace, index), STEP_OUTPUTS)


def random_seed() -> int:
    return random.randint(0, MAX_SEED)


def stopped_message() -> str:
    return "**Stopped.** Sampling ended after the step it was on; the page is ready for the next comparison."
