"""The one function that needs the accelerator, `sample_on_device`, and what lets it run in another process.

On Hugging Face ZeroGPU it is wrapped in `spaces.GPU`, which runs it in a forked worker process and pickles its
arguments and every value it yields through a queue; so it is a module-level generator that takes only a model
name, a request and its prepared run (no pipeline, no lock, no closure), loads the pipeline from the module cache,
yields plain picklable events, reports errors as `Failed` (ZeroGPU passes no other exception through intact) and
stops sampling when it is closed (what ZeroGPU and Gradio do when the user cancels). Without `spaces` it is a plain
generator in this process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import queue
import threading
from collections.abc import Iterator

from negprompt_demo.models.loading import load_pipeline
from negprompt_demo.runner.events import Event, Failed, SeedRows, Step
from negprompt_demo.runner.requests import Request
from negprompt_demo.sampling.engine import PreparedRun


def on_accelerator(function):
    """`spaces.GPU` where the `spaces` package is importable (Hugging Face ZeroGPU attaches a GPU only to calls
    wrapped in it), the function itself otherwise."""
    try:
        import spaces
    except ImportError:
        return function
    return spaces.GPU(duration=120)(function)


# Stop flags of the runs in this process, by run id. A run sampled in this process sees its caller's flag at once;
# in a ZeroGPU worker (another process) the id finds no live flag and the run stops when its generator is closed.
stop_flags: dict[str, threading.Event] = {}


@on_accelerator
def sample_on_device(model: str, request: Request, prepared: PreparedRun, run_id: str = "") -> Iterator[Event | Failed]:
    """Sample one checked request (`prepared` from `engine.prepare` of its settings) on a thread of this process,
    yielding each event it emits (a Step per denoising step, seed rows), then its last event, or Failed. Closing
    the generator (or setting the stop flag registered for `run_id` in this process) stops sampling after the step
    it is on; closing returns once the pipeline is free."""
    try:
        pipe = load_pipeline(model)
    except Exception as error:
        yield Failed.of(error)
        return
    events: queue.SimpleQueue = queue.SimpleQueue()
    stop = stop_flags.get(run_id) or threading.Event()

    def run() -> None:
        try:
            events.put(request.sample(pipe, prepared, events.put, stop))
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
