"""The only door for front ends (the page, the API, the CLI): a request in, a stream of typed events out.

    Ready(settings, warnings, model)   the input was checked (once, here) and completed
    Step(done, total, records)         denoising steps finished since the last Step (newest last)
    Done(comparison)                   a CompareRequest's images and whole trace, every step's x0 picture drawn
    SweepDone(sweep)                   or a SweepRequest's images
    SeedRows(seeds, images)            or, for a SeedsRequest, each chunk of seeds as it finishes,
    SeedsDone(grid)                    and then the whole grid

`stream` loads the model, checks the request's settings (`engine.prepare`) and its cost, then hands the request
and its prepared run to `device.sample_on_device`, the one function that needs the accelerator (on ZeroGPU it runs
in another process). `astream` is `stream` for an event loop.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

from negprompt_demo.models.flow_models import DISTILLED_NOTE
from negprompt_demo.models.loading import ModelLoadError, load_pipeline, model_label
from negprompt_demo.runner import device
from negprompt_demo.runner.events import (
    DeviceError,
    Done,
    Event,
    Failed,
    Ready,
    SeedRows,
    SeedsDone,
    Step,
    SweepDone,
)
from negprompt_demo.runner.model_info import (
    ModelInfo,
    model_fingerprint,
    model_info,
    model_info_of,
    weights_fingerprint,
)
from negprompt_demo.runner.requests import CompareRequest, Request, SeedsRequest, SweepRequest
from negprompt_demo.sampling.attention import AttentionPlan
from negprompt_demo.sampling.cost import CostLimits, check_request
from negprompt_demo.sampling.engine import Comparison, GenerationCancelled, NonFiniteError, prepare
from negprompt_demo.sampling.many_seeds import COLUMNS, SeedGrid, new_grid, phrased_by_default
from negprompt_demo.sampling.sweep import SWEEP_STARTS, Sweep
from negprompt_demo.sampling.trace import RUNS, GuidanceTrace, StepRecord

GONE_POLL_S = 0.2  # how often a running job looks whether its client is still there

# The one door: front ends (page, API, CLI) import only this package, `settings` and `views`, so the requests they
# make, the events they read, what they know of a model, the errors they word and the result types they show are
# all named here.
__all__ = [
    "CompareRequest", "SweepRequest", "SeedsRequest", "Request", "stream", "astream", "merge_steps",
    "Event", "Ready", "Step", "Done", "SweepDone", "SeedRows", "SeedsDone",
    "ModelInfo", "model_info", "model_info_of", "weights_fingerprint", "model_fingerprint",
    "ModelLoadError", "NonFiniteError", "GenerationCancelled", "DeviceError",
    "Comparison", "Sweep", "SWEEP_STARTS", "SeedGrid", "COLUMNS", "phrased_by_default", "CostLimits",
    "GuidanceTrace", "StepRecord", "RUNS", "AttentionPlan", "DISTILLED_NOTE",
]  # fmt: skip


def stream(
    model: str, request: Request, stop: threading.Event | None = None, limits: CostLimits | None = None
) -> Iterator[Event]:
    """Load the model, check the request's settings, then sample it on the device, yielding Ready, Steps and the
    request's own last event (Done, SweepDone, or SeedRows per chunk and SeedsDone with the whole grid).

    Errors are raised as the engine's own classes. When `stop` is set, the run ends after the step it is on and
    the iterator ends without its last event. Weights are checked before sampling; with `limits` (a shared
    instance) also the prompt chunks and the estimated device time (`cost.check_request`)."""
    pipe = load_pipeline(model)
    prepared = prepare(pipe, request.settings)
    check_request(pipe, prepared.settings, prepared.chunks, request.workload(), limits)
    yield Ready(prepared.settings, prepared.warnings, model_label(pipe))
    run_id = uuid.uuid4().hex
    device.stop_flags[run_id] = stop or threading.Event()
    grid = None  # a SeedsRequest's whole grid, assembled here from the rows the device sends once
    if isinstance(request, SeedsRequest):
        grid = new_grid(prepared.settings, model_label(pipe), request.phrased)
    events = device.sample_on_device(model, request, prepared, run_id)
    try:
        for event in events:
            if isinstance(event, Failed):
                raise event.exception()
            if isinstance(event, Done):
                event.comparison.warnings[:0] = prepared.warnings
            if isinstance(event, SeedRows):
                grid.add(event.seeds, event.images)
            if isinstance(event, SeedsDone):
                grid.seconds = event.grid.seconds
                event = SeedsDone(grid)
            yield event
            if not isinstance(event, (Step, SeedRows)) or (stop is not None and stop.is_set()):
                return
    finally:
        events.close()
        device.stop_flags.pop(run_id, None)


async def astream(
    model: str,
    request: Request,
    limits: CostLimits | None = None,
    gone: Callable[[], bool] | None = None,
) -> AsyncIterator[Event]:
    """`stream` on a worker thread, for an event loop. When the page falls behind, waiting Steps are merged into
    one (records concatenated), so it always draws the newest. If the consumer stops (Stop button, a cancelled
    API job), the run is told to stop and this waits until the device is free again.

    `gone` tells whether the client has left; it is polled on the event loop every GONE_POLL_S whether or not
    anyone is reading this iterator (Gradio stops reading a job whose client left, without closing it), and the
    run then stops after the step it is on."""
    loop = asyncio.get_running_loop()
    updates: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    finished = object()

    async def watch() -> None:
        while not stop.is_set():
            if gone():
                stop.set()
                return
            await asyncio.sleep(GONE_POLL_S)

    def pump() -> None:
        try:
            for event in stream(model, request, stop, limits):
                loop.call_soon_threadsafe(updates.put_nowait, event)
        except BaseException as error:  # handed to the event loop, raised there
            loop.call_soon_threadsafe(updates.put_nowait, error)
        finally:
            loop.call_soon_threadsafe(updates.put_nowait, finished)

    worker = threading.Thread(target=pump, name="negprompt-compare", daemon=True)
    worker.start()
    watcher = loop.create_task(watch()) if gone is not None else None
    try:
        while True:
            batch = [await updates.get()]
            while not updates.empty():
                batch.append(updates.get_nowait())
            for event in merge_steps(batch):
                if event is finished:
                    return
                if isinstance(event, BaseException):
                    raise event
                yield event
    finally:
        if watcher is not None:
            watcher.cancel()
        if worker.is_alive():
            stop.set()
            await asyncio.to_thread(worker.join)


def merge_steps(events: list) -> list:
    """Consecutive Step events as one, so a consumer that fell behind skips to the newest step."""
    merged: list = []
    for event in events:
        if isinstance(event, Step) and merged and isinstance(merged[-1], Step):
            merged[-1] = Step(event.done, event.total, merged[-1].records + event.records)
        else:
            merged.append(event)
    return merged
