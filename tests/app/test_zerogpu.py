"""The app's device call run the way Hugging Face ZeroGPU runs it: `runner.device.sample_on_device` wrapped by a
stand-in for `spaces.GPU` (tests/support/spaces_standin.py) that forks a worker and pickles arguments and every
yielded value. Streaming, the final images, errors and Stop must all survive that boundary."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from negprompt_demo import runner as plain_runner
from negprompt_demo.models.loading import load_pipeline
from negprompt_demo.runner import CompareRequest, SeedsRequest, SweepRequest, device
from negprompt_demo.sampling.engine import NonFiniteError, compare
from negprompt_demo.settings import CompareSettings
from tests.support import spaces_standin

pytestmark = pytest.mark.slow
SETTINGS = CompareSettings("a red hat", "blue", seed=3, steps=6, push_map=True)


@pytest.fixture
def zerogpu_runner(monkeypatch):
    """`runner` as on a Space: its device function wrapped by (the stand-in for) `spaces.GPU`, exactly as
    `device.on_accelerator` wraps it at import when `spaces` is importable (checked below). The module is not
    re-imported: the handlers hold its event classes."""
    monkeypatch.setitem(sys.modules, "spaces", spaces_standin)
    spaces_standin.calls.clear()
    monkeypatch.setattr(device, "sample_on_device", device.on_accelerator(device.sample_on_device))
    return plain_runner


def test_on_accelerator_wraps_in_spaces_gpu_when_spaces_is_importable(monkeypatch):
    def generator():
        yield 1

    assert device.on_accelerator(generator) is generator  # no `spaces`: the function itself
    monkeypatch.setitem(sys.modules, "spaces", spaces_standin)
    wrapped = device.on_accelerator(generator)
    assert wrapped is not generator and list(wrapped()) == [1] and spaces_standin.calls[-1] == "generator"


def test_streams_every_step_and_returns_the_same_images_as_in_process(zerogpu_runner, tiny_sd_folder):
    events = list(zerogpu_runner.stream(str(tiny_sd_folder), CompareRequest(SETTINGS)))
    assert spaces_standin.calls == ["sample_on_device"], "the device call did not go through spaces.GPU"
    ready, *steps, done = events
    assert isinstance(ready, zerogpu_runner.Ready) and isinstance(done, zerogpu_runner.Done)
    assert [step.done for step in steps] == list(range(1, 7))
    assert steps[-1].records[0].previews is not None  # the live picture crossed the process boundary

    comparison = done.comparison
    reference = compare(load_pipeline(str(tiny_sd_folder)), SETTINGS)
    for got, expected in (
        (comparison.without_negative, reference.without_negative),
        (comparison.with_negative, reference.with_negative),
    ):
        assert np.array_equal(np.asarray(got), np.asarray(expected))
    assert len(comparison.trace.steps) == 6 and all(step.previews is not None for step in comparison.trace.steps)
    assert comparison.trace.steps[0].push_map is not None


def test_an_error_in_the_worker_keeps_its_message(zerogpu_runner, tiny_sd_folder):
    pipe = load_pipeline(str(tiny_sd_folder))
    handle = pipe.unet.register_forward_hook(lambda module, args, output: (output[0] * float("nan"),))
    try:  # the forked worker inherits the hook
        with pytest.raises(NonFiniteError, match="became NaN/inf at step 1 of 6"):
            list(zerogpu_runner.stream(str(tiny_sd_folder), CompareRequest(SETTINGS)))
    finally:
        handle.remove()


def test_stop_closes_the_worker_generator_and_sampling_ends(zerogpu_runner, tiny_sd_folder, tmp_path):
    """Stop in the main process cannot reach the worker's memory: it closes the generator, the stand-in sets
    the worker's stop event, and the worker closes `sample_on_device` after the next step. The worker's UNet
    calls are counted in a file (a hook the fork inherits), so no timing is involved."""
    pipe = load_pipeline(str(tiny_sd_folder))
    calls = tmp_path / "unet_calls"
    handle = pipe.unet.register_forward_hook(lambda *_: calls.open("a").write("x") and None)
    stop = threading.Event()
    seen = []
    try:
        for event in zerogpu_runner.stream(str(tiny_sd_folder), CompareRequest(SETTINGS.replace(steps=150)), stop):
            seen.append(event)
            if isinstance(event, zerogpu_runner.Step) and event.done == 2:
                stop.set()
    finally:  # the stream has ended: the stand-in joined its worker when the generator was closed
        handle.remove()
    steps = [event.done for event in seen if isinstance(event, zerogpu_runner.Step)]
    assert steps[-1] == 2 and not any(isinstance(event, zerogpu_runner.Done) for event in seen)
    assert len(calls.read_text()) <= 5, f"the worker sampled {len(calls.read_text())} of 150 steps after Stop"
    # The next comparison runs normally: nothing was left holding the pipeline in this process.
    last = list(zerogpu_runner.stream(str(tiny_sd_folder), CompareRequest(SETTINGS)))[-1]
    assert isinstance(last, zerogpu_runner.Done)


def test_the_sweep_crosses_the_process_boundary_too(zerogpu_runner, tiny_sd_folder):
    events = list(zerogpu_runner.stream(str(tiny_sd_folder), SweepRequest(SETTINGS, (0.0, 0.5))))
    assert spaces_standin.calls == ["sample_on_device"]
    sweep = events[-1].sweep
    assert len(sweep.with_negative) == 2 and sweep.start_steps == [0, 4]


def test_the_many_seeds_rows_cross_the_process_boundary_as_they_finish(zerogpu_runner, tiny_sd_folder):
    events = list(zerogpu_runner.stream(str(tiny_sd_folder), SeedsRequest(SETTINGS, 4, True)))
    assert spaces_standin.calls == ["sample_on_device"]
    rows = [event for event in events if isinstance(event, zerogpu_runner.SeedRows)]
    assert [row.seeds for row in rows] == [[3], [4, 5, 6]]  # the first seed alone, then the rest
    grid = events[-1].grid
    assert grid.seeds == [3, 4, 5, 6] and grid.columns == ("without", "phrased", "with") and grid.seconds > 0
    in_process = compare(load_pipeline(str(tiny_sd_folder)), SETTINGS.replace(seed=5), trace=False)
    assert np.abs(np.asarray(grid.images["with"][2], int) - np.asarray(in_process.with_negative, int)).max() <= 2
