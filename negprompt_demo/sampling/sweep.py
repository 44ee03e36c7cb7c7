"""The "when does it act?" sweep: one seed without the negative prompt and with it starting at several points of
the sampling, all in one batched pipeline call (the steps before each start are shared with the run without it)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from PIL import Image

from negprompt_demo.models.loading import model_label, pipeline_lock
from negprompt_demo.sampling.engine import PreparedRun, StepCallback, sample_runs
from negprompt_demo.settings import CompareSettings

SWEEP_STARTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)


@dataclass
class Sweep:
    """One seed without the negative prompt and with it starting at several points of the sampling, from one
    batched pipeline call (the steps before each start are shared with the run without it)."""

    without_negative: Image.Image
    with_negative: list[Image.Image]  # one per start, in the order of `starts`
    starts: list[float]
    start_steps: list[int]  # the 0-based step at which each start's negative first acts
    settings: CompareSettings
    model: str
    seconds: float = 0.0


def sweep_starts(
    pipe,
    prepared: PreparedRun,
    starts: tuple[float, ...] = SWEEP_STARTS,
    *,
    on_step: StepCallback | None = None,
    stop: threading.Event | None = None,
) -> Sweep:
    """ "When does the negative act?": the settings' negative started at each of `starts` (fractions of the steps;
    its end, strength and Perp-Neg as set), all runs in ONE pipeline call."""
    started = time.perf_counter()
    resolved = prepared.settings
    plans = [prepared.plan(start) for start in starts]
    with pipeline_lock(pipe):
        runs = prepared.runs(plans)
        images, _ = sample_runs(pipe, prepared, [resolved.seed], runs, on_step=on_step, stop=stop)
    return Sweep(
        without_negative=images[0],
        with_negative=images[1:],
        starts=list(starts),
        start_steps=[plan.start_step for plan in plans],
        settings=resolved,
        model=model_label(pipe),
        seconds=time.perf_counter() - started,
    )
