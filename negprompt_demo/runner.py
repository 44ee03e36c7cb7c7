"""One comparison as a stream of typed events, for every front end: the page, the API and the CLI.

    Ready(settings, warnings, model)   the input was checked (once, here) and completed
    Step(done, total, records)         denoising steps finished since the last Step (newest last)
    Done(comparison)                   both images and the whole trace, every step's x0 picture drawn
    SweepDone(sweep)                   or, for the "when does it act?" sweep, its images
    SeedRows(seeds, images)            or, for the many-seeds view, each chunk of seeds as it finishes,
    SeedsDone(grid)                    and then the whole grid

The sampling itself runs in `sample_on_device`, the one function that needs the accelerator. On Hugging Face
ZeroGPU it is wrapped in `spaces.GPU`, which runs it in a forked worker process and pickles its arguments and
every value it yields through a queue; so it is a module-level generator that takes only a model name and
settings, loads the pipeline from the module cache, yields plain picklable events, reports errors as `Failed`
(ZeroGPU passes no other exception through intact) and stops sampling when it is closed (what ZeroGPU and
Gradio do when the user cancels). Without `spaces` it is a plain generator in this process.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from negprompt_demo.models.loading import ModelLoadError, load_pipeline, model_label, pipeline_lock
from negprompt_demo.models.previews import LivePreviews, fill_previews
from negprompt_demo.sampling.cost import CostLimits, Request, check_request
from negprompt_demo.sampling.engine import (
    Comparison,
    GenerationCancelled,
    NonFiniteError,
    prepare,
    run_paired,
)
from negprompt_demo.sampling.many_seeds import SeedGrid, new_grid, sample_grid
from negprompt_demo.sampling.sweep import Sweep, sweep_starts
from negprompt_demo.sampling.trace import StepRecord
from negprompt_demo.settings import CompareSettings, InputError


@dataclass
class Ready:
    settings: CompareSettings  # resolved: seed, size and the model's defaults filled in
    warnings: list[str]
    model: str


@dataclass
class Step:
    done: int
    total: int
    records: list[StepRecord]  # oldest first; a record has x0 pictures when the live view was due to show one


@dataclass
class Done:
    comparison: Comparison


@dataclass
class SweepDone:
    sweep: Sweep


@dataclass
class SeedRows:
    seeds: list[int]
    images: dict  # column → one image per seed of `seeds`


@dataclass
class SeedsDone:
    grid: SeedGrid  # every image; on the device side only its timing (`stream` fills in the rows it was sent)


class DeviceError(RuntimeError):
    """An unexpected error in the sampling function, by the name of its original class."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


@dataclass
class Failed:
    """An error inside `sample_on_device`, as plain text so it survives the trip from a ZeroGPU worker."""

    error_type: str
    message: str

    @classmethod
    def of(cls, error: BaseException) -> Failed:
        return cls(type(error).__name__, str(error))

    def exception(self) -> Exception:
        """The error again, as the class the page knows how to word (unknown ones keep their name)."""
        known = {cls.__name__: cls for cls in (InputError, ModelLoadError, NonFiniteError, GenerationCancelled)}
        if self.error_type in known:
            return known[self.error_type](self.message)
        return DeviceError(self.error_type, self.message)


Event = Ready | Step | Done | SweepDone | SeedRows | SeedsDone


def on_accelerator(function):
    """`spaces.GPU` where the `spaces` package is importable (Hugging Face ZeroGPU attaches a GPU only to calls
    wrapped in it), the function itself otherwise."""
    try:
        import spaces
    except ImportError:
        return function
    return spaces.GPU(duration=120)(function)


GONE_POLL_S = 0.2  # how often a running job looks whether its client is still there

# Stop flags of the runs in this process, by run id. A run sampled in this process sees its caller's flag at once;
# in a ZeroGPU worker (another process) the id finds no live flag and the run stops when its generator is closed.
_stop_flags: dict[str, threading.Event] = {}


@on_accelerator
def sample_on_device(model: str, settings: CompareSettings, run_id: str = "") -> Iterator[Step | Done | Failed]:
    """Sample one checked comparison (`settings` from `engine.prepare`), yielding a Step after every denoising
    step and then Done, or Failed. Closing the generator (or setting the stop flag registered for `run_id` in
    this process) stops sampling after the step it is on; closing returns once the pipeline is free."""

    def work(pipe, emit, stop) -> Done:
        on_step = step_reporter(emit)
        live = LivePreviews(pipe)  # each x0 picture costs a decode; a page shows a few per second at most

        def decode_and_report(done: int, total: int, record: StepRecord) -> None:
            live.decode_if_due(done, total, record)
            on_step(done, total, record)

        comparison = run_paired(pipe, settings, on_step=decode_and_report, stop=stop)
        with pipeline_lock(pipe):  # the VAE is pipeline state too
            fill_previews(pipe, comparison.trace.steps)  # the pictures the live view skipped
        return Done(comparison)

    yield from _events_of(model, run_id, work)


@on_accelerator
def sweep_on_device(
    model: str, settings: CompareSettings, starts: tuple[float, ...], run_id: str = ""
) -> Iterator[Step | SweepDone | Failed]:
    """The "when does it act?" sweep (`sweep.sweep_starts`), on the device like `sample_on_device`."""

    def work(pipe, emit, stop) -> SweepDone:
        return SweepDone(sweep_starts(pipe, settings, starts, on_step=step_reporter(emit), stop=stop))

    yield from _events_of(model, run_id, work)


@on_accelerator
def seeds_on_device(
    model: str, settings: CompareSettings, count: int, phrased: bool | None, run_id: str = ""
) -> Iterator[Step | SeedRows | SeedsDone | Failed]:
    """The many-seeds view (`many_seeds.sample_grid`): each chunk of seeds is sent as it finishes, then SeedsDone
    with an empty grid that carries the timing (the images were sent once, in the rows)."""

    def work(pipe, emit, stop) -> SeedsDone:
        grid = new_grid(settings, model_label(pipe), phrased)
        on_rows = lambda seeds, images: emit(SeedRows(seeds, images))  # noqa: E731
        sample_grid(pipe, grid, count, on_rows=on_rows, on_step=step_reporter(emit), stop=stop)
        timing = new_grid(settings, grid.model, phrased)
        timing.seconds = grid.seconds
        return SeedsDone(timing)

    yield from _events_of(model, run_id, work)


def step_reporter(emit):
    """An engine step callback that sends each step as a Step event."""

    def on_step(done: int, total: int, record: StepRecord | None) -> None:
        emit(Step(done, total, [] if record is None else [record]))

    return on_step


def _events_of(model: str, run_id: str, work) -> Iterator:
    """Run `work(pipe, emit, stop)` on a thread of this process and yield each event it emits (a Step per
    denoising step, seed rows), then what it returned, or Failed. Closing this generator sets the stop flag and
    waits for the pipeline."""
    try:
        pipe = load_pipeline(model)
    except Exception as error:
        yield Failed.of(error)
        return
    events: queue.SimpleQueue = queue.SimpleQueue()
    stop = _stop_flags.get(run_id) or threading.Event()

    def run() -> None:
        try:
            events.put(work(pipe, events.put, stop))
        except Exception as error:
            events.put(Failed.of(error))

    worker = threading.Thread(target=run, name="negprompt-sample", daemon=True)
    worker.start()
    try:
        while True:
            event = events.get()
            yield event
            if not isinstance(event, (Step, SeedRows)):
                return
    finally:
        stop.set()
        worker.join()
        release_free_heap()


def release_free_heap() -> None:
    """Give the C heap's free pages back to the system after a run: glibc's `malloc_trim(0)` (~20 ms), nothing
    where there is no glibc.

    Why: a run's tensors are freed into glibc's arenas (one per sampling thread), which keep the pages; a long-lived
    server's RSS then holds the free memory of the largest mix of runs it has served, 130–250 MiB of ~950 on the
    embedded model (bench_soak --probe), and wanders with the order of requests instead of reaching a plateau."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (no C library found, or one without it: macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def stream(
    model: str,
    settings: CompareSettings,
    stop: threading.Event | None = None,
    sweep: tuple[float, ...] | None = None,
    seeds: tuple[int, bool | None] | None = None,
    limits: CostLimits | None = None,
) -> Iterator[Event]:
    """Load the model, check the settings, then sample on the device, yielding Ready, Steps and Done (or, with
    `sweep` starts, SweepDone; or, with `seeds` = (count, phrased) from `settings.resolve_grid`, SeedRows per
    chunk and SeedsDone with the whole grid).

    Errors are raised as the engine's own classes. When `stop` is set, the run ends after the step it is on and
    the iterator ends without Done. Weights are checked before sampling; with `limits` (a shared instance) also
    the prompt chunks and the estimated device time (`cost.check_request`)."""
    pipe = load_pipeline(model)
    resolved, warnings = prepare(pipe, settings)
    if sweep is not None:
        request = Request("sweep", runs=len(sweep))
    elif seeds is not None:
        request = Request("seeds", runs=2 if seeds[1] is False else 3, seeds=seeds[0])
    else:
        request = Request()
    check_request(pipe, resolved, request, limits)
    yield Ready(resolved, warnings, model_label(pipe))
    run_id = uuid.uuid4().hex
    _stop_flags[run_id] = stop or threading.Event()
    if sweep is not None:
        device = sweep_on_device(model, resolved, tuple(sweep), run_id)
    elif seeds is not None:
        device = seeds_on_device(model, resolved, *seeds, run_id)
        grid = new_grid(resolved, model_label(pipe), seeds[1])
    else:
        device = sample_on_device(model, resolved, run_id)
    try:
        for event in device:
            if isinstance(event, Failed):
                raise event.exception()
            if isinstance(event, Done):
                event.comparison.warnings[:0] = warnings
            if isinstance(event, SeedRows):
                grid.add(event.seeds, event.images)
            if isinstance(event, SeedsDone):
                grid.seconds = event.grid.seconds
                event = SeedsDone(grid)
            yield event
            if not isinstance(event, (Step, SeedRows)) or (stop is not None and stop.is_set()):
                return
    finally:
        device.close()
        _stop_flags.pop(run_id, None)


async def astream(
    model: str,
    settings: CompareSettings,
    sweep: tuple[float, ...] | None = None,
    seeds: tuple[int, bool | None] | None = None,
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
            for event in stream(model, settings, stop, sweep, seeds, limits):
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
