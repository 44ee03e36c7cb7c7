"""What a front end can ask of the device, as requests of one kind: a comparison, the "when does it act?" sweep,
or many seeds. Each carries the settings it was asked with (checked once, by `engine.prepare`, in `runner.stream`),
says what it costs (`workload`, for a shared instance's budget) and samples itself on the device (`sample`),
sending its events through `emit` and returning the last one. Requests are small frozen values: they cross
ZeroGPU's process boundary with the prepared run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from negprompt_demo.models.loading import model_label, pipeline_lock
from negprompt_demo.models.previews import LivePreviews, fill_previews
from negprompt_demo.runner.events import Done, SeedRows, SeedsDone, Step, SweepDone
from negprompt_demo.sampling.cost import Workload
from negprompt_demo.sampling.engine import PreparedRun, run_paired
from negprompt_demo.sampling.many_seeds import new_grid, sample_grid
from negprompt_demo.sampling.sweep import SWEEP_STARTS, sweep_starts
from negprompt_demo.sampling.trace import StepRecord
from negprompt_demo.settings import CompareSettings

Emit = Callable[[object], None]


def step_reporter(emit: Emit):
    """An engine step callback that sends each step as a Step event."""

    def on_step(done: int, total: int, record: StepRecord | None) -> None:
        emit(Step(done, total, [] if record is None else [record]))

    return on_step


@dataclass(frozen=True)
class CompareRequest:
    """One seed with and without the negative prompt, traced: Steps (with live x0 pictures), then Done."""

    settings: CompareSettings

    def workload(self) -> Workload:
        return Workload()

    def sample(self, pipe, prepared: PreparedRun, emit: Emit, stop: threading.Event) -> Done:
        on_step = step_reporter(emit)
        live = LivePreviews(pipe)  # each x0 picture costs a decode; a page shows a few per second at most

        def decode_and_report(done: int, total: int, record: StepRecord) -> None:
            live.decode_if_due(done, total, record)
            on_step(done, total, record)

        comparison = run_paired(pipe, prepared, on_step=decode_and_report, stop=stop)
        with pipeline_lock(pipe):  # the VAE is pipeline state too
            fill_previews(pipe, comparison.trace.steps)  # the pictures the live view skipped
        return Done(comparison)


@dataclass(frozen=True)
class SweepRequest:
    """The negative started at each of `starts` (fractions of the steps), in one call: Steps, then SweepDone."""

    settings: CompareSettings
    starts: tuple[float, ...] = SWEEP_STARTS

    def workload(self) -> Workload:
        return Workload("sweep", runs=len(self.starts))

    def sample(self, pipe, prepared: PreparedRun, emit: Emit, stop: threading.Event) -> SweepDone:
        return SweepDone(sweep_starts(pipe, prepared, self.starts, on_step=step_reporter(emit), stop=stop))


@dataclass(frozen=True)
class SeedsRequest:
    """`count` seeds from the settings' seed on, without / with the negative (and phrased in the prompt: `phrased`,
    None for the default of `many_seeds.phrased_by_default`); `count` and `phrased` from `settings.resolve_grid`.
    Each chunk of seeds is sent as it finishes (SeedRows), then SeedsDone with an empty grid that carries the
    timing (the images were sent once, in the rows; `runner.stream` assembles the whole grid)."""

    settings: CompareSettings
    count: int
    phrased: bool | None = None

    def workload(self) -> Workload:
        return Workload("seeds", runs=2 if self.phrased is False else 3, seeds=self.count)

    def sample(self, pipe, prepared: PreparedRun, emit: Emit, stop: threading.Event) -> SeedsDone:
        grid = new_grid(prepared.settings, model_label(pipe), self.phrased)
        on_rows = lambda seeds, images: emit(SeedRows(seeds, images))  # noqa: E731
        sample_grid(pipe, prepared, grid, self.count, on_rows=on_rows, on_step=step_reporter(emit), stop=stop)
        timing = new_grid(prepared.settings, grid.model, self.phrased)
        timing.seconds = grid.seconds
        return SeedsDone(timing)


Request = CompareRequest | SweepRequest | SeedsRequest
