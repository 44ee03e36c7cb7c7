"""The runner (negprompt_demo/runner/), the one door of every front end, in this process: the order of its typed
events, Steps merged for a consumer that fell behind, errors carried as Failed and raised again as their own class,
and a stop (a set flag, a consumer that leaves) that ends the run after the step it is on, without
Done. The same events across a ZeroGPU worker's process boundary are in tests/app/test_zerogpu.py."""

from __future__ import annotations

import asyncio
import pickle
import threading

import pytest

from negprompt_demo import runner
from negprompt_demo.models.loading import ModelLoadError, load_pipeline, pipeline_lock
from negprompt_demo.runner import (
    CompareRequest,
    DeviceError,
    Done,
    Failed,
    Ready,
    SeedRows,
    Step,
    astream,
    merge_steps,
    stream,
)
from negprompt_demo.sampling.engine import GenerationCancelled, NonFiniteError
from negprompt_demo.settings import CompareSettings, InputError


def test_leaving_the_stream_stops_sampling_after_the_step_it_is_on(tiny_sd_folder, monkeypatch):
    """Leaving `astream` (what Gradio does when Stop cancels the event) ends sampling after the current step and
    frees the pipeline before `aclose` returns; counted in steps, not seconds."""
    pipe = load_pipeline(str(tiny_sd_folder))
    settings = CompareSettings("a red hat", "blue", seed=1, steps=150)
    sampled = []
    original = pipe.unet.forward
    monkeypatch.setattr(pipe.unet, "forward", lambda *a, **k: sampled.append(1) or original(*a, **k))

    async def first_step_then_leave() -> int:
        stream = astream(str(tiny_sd_folder), CompareRequest(settings))
        async for event in stream:
            if isinstance(event, Step):
                await stream.aclose()
                return event.done
        raise AssertionError("no step was streamed")

    seen = asyncio.run(first_step_then_leave())
    assert not pipeline_lock(pipe).locked(), "the run still holds the pipeline after the stream was left"
    assert len(sampled) <= seen + 2, f"sampling went on for {len(sampled) - seen} steps after the consumer left"


SETTINGS = CompareSettings("a red hat", "blue", seed=3, steps=4)


def test_events_are_ready_then_one_step_per_denoising_step_then_done(tiny_sd_folder):
    ready, *steps, done = list(stream(str(tiny_sd_folder), CompareRequest(SETTINGS.replace(seed=None, guidance=1.0))))
    assert isinstance(ready, Ready) and isinstance(done, Done) and all(isinstance(step, Step) for step in steps)
    assert ready.model == str(tiny_sd_folder) and ready.settings.seed is not None  # the input completed, once
    assert ready.settings.width == ready.settings.height == 32  # the model's native size filled in
    assert [(step.done, step.total) for step in steps] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(len(step.records) == 1 for step in steps)
    assert ready.warnings and done.comparison.warnings[: len(ready.warnings)] == ready.warnings  # guidance 1
    assert done.comparison.settings == ready.settings and len(done.comparison.trace.steps) == 4


def test_bad_input_is_raised_before_any_event(tiny_sd_folder):
    events = stream(str(tiny_sd_folder), CompareRequest(SETTINGS.replace(steps=0)))
    with pytest.raises(InputError, match="steps must be between 1 and 150, got 0"):
        next(events)


def test_consecutive_steps_merge_into_the_newest_with_every_record():
    first, second, third = (Step(done, 3, [f"record {done}"]) for done in (1, 2, 3))
    ready, rows, done = Ready(SETTINGS, [], "tiny"), SeedRows([1], {}), object()
    merged = merge_steps([ready, first, second, rows, third, done])
    assert merged[0] is ready and merged[2] is rows and merged[4] is done
    assert (merged[1].done, merged[1].total, merged[1].records) == (2, 3, ["record 1", "record 2"])
    assert merged[3] is third  # a Step after other events stays apart
    assert merge_steps([]) == [] and merge_steps([first]) == [first]


@pytest.mark.parametrize("error", [InputError, ModelLoadError, NonFiniteError, GenerationCancelled])
def test_a_known_error_survives_the_trip_as_failed(error):
    failed = pickle.loads(pickle.dumps(Failed.of(error("the message the page shows"))))  # as a ZeroGPU worker sends
    again = failed.exception()
    assert type(again) is error and str(again) == "the message the page shows"


def test_an_unknown_error_keeps_its_class_name():
    again = Failed.of(KeyError("unet")).exception()
    assert isinstance(again, DeviceError) and again.error_type == "KeyError" and "unet" in str(again)


def test_an_error_during_sampling_is_raised_as_its_own_class(tiny_sd_folder):
    pipe = load_pipeline(str(tiny_sd_folder))
    handle = pipe.unet.register_forward_hook(lambda module, args, output: (output[0] * float("nan"),))
    try:
        with pytest.raises(NonFiniteError, match="became NaN/inf at step 1 of 4"):
            list(stream(str(tiny_sd_folder), CompareRequest(SETTINGS)))
    finally:
        handle.remove()
    assert not pipeline_lock(pipe).locked() and isinstance(
        list(stream(str(tiny_sd_folder), CompareRequest(SETTINGS)))[-1], Done
    )


def test_a_set_stop_flag_ends_the_stream_after_that_step_without_done(tiny_sd_folder):
    stop, seen = threading.Event(), []
    for event in stream(str(tiny_sd_folder), CompareRequest(SETTINGS.replace(steps=150)), stop):
        seen.append(event)
        if isinstance(event, Step) and event.done == 2:
            stop.set()
    assert isinstance(seen[0], Ready) and [event.done for event in seen[1:]] == [1, 2]  # nothing after the stop
    assert not runner.device.stop_flags, "the run's stop flag is still registered"
    assert not pipeline_lock(load_pipeline(str(tiny_sd_folder))).locked()


def test_a_run_gives_the_free_heap_back_when_it_ends(tiny_sd_folder, monkeypatch):
    """After each run the C heap's free pages go back to the system (glibc malloc_trim), once, after the last
    step: a long-lived server's RSS is then what it holds, not the free memory of the largest runs it served."""
    trims = []
    monkeypatch.setattr(runner.device, "_malloc_trim", lambda: trims.append)
    seen = []
    settings = CompareSettings("a man", "mustache", seed=1, steps=2, width=32, height=32)
    for event in runner.stream(str(tiny_sd_folder), CompareRequest(settings)):
        seen.append((type(event).__name__, len(trims)))
    assert seen[-1] == ("Done", 0) and all(count == 0 for _, count in seen)
    assert trims == [0]
