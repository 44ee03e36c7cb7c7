"""Benchmark 1: the paired comparison (both runs in one batched call, trace on) vs the naive way (two sequential
plain diffusers calls with the same settings). Goal: ≤ 1.0× on CPU with the embedded model, ≤ 0.7× on a GPU with
the SD-1.5 architecture at 512 px fp16.

    python -m benchmarks.bench_paired                                   # CPU, embedded model
    python -m benchmarks.bench_paired --model sd15-random --device cuda --size 512
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.common import (
    NEGATIVE,
    PROMPT,
    SEED,
    MachineLoad,
    Row,
    command_line,
    median,
    model_benchmark_main,
    spread,
    synchronize,
    time_interleaved,
)
from negprompt_demo.models.families import SCHEDULERS
from negprompt_demo.sampling.engine import compare, prepare
from negprompt_demo.settings import CompareSettings


def naive_pair(pipe, settings: CompareSettings) -> list:
    """What a user would write without this project: one plain call without a negative prompt, one with it."""
    scheduler_class, kwargs = SCHEDULERS[settings.scheduler]
    if not isinstance(pipe.scheduler, scheduler_class):
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, **kwargs)
    images = []
    for negative in (None, settings.negative):
        output = pipe(
            prompt=settings.prompt,
            negative_prompt=negative,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            width=settings.width,
            height=settings.height,
            generator=torch.Generator(device="cpu").manual_seed(settings.seed),
        )
        images.append(output.images[0])
    return images


def max_difference(a, b) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def run(args: argparse.Namespace, pipe) -> list[Row]:
    prepared = prepare(
        pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=args.steps, width=args.size, height=args.size)
    )
    settings = prepared.settings
    # The two ways must give the same pictures, or the speed comparison would mean nothing.
    paired = compare(pipe, settings, trace=True)
    naive = naive_pair(pipe, settings)
    difference = max(max_difference(paired.without_negative, naive[0]), max_difference(paired.with_negative, naive[1]))

    with MachineLoad() as load:
        times = time_interleaved(
            {"naive": lambda: naive_pair(pipe, settings), "paired": lambda: compare(pipe, settings, trace=True)},
            repeats=args.repeats,
            sync=lambda: synchronize(pipe),
        )
    ratio = median(times["paired"]) / median(times["naive"])
    goal = 0.7 if pipe.device.type == "cuda" else 1.0
    return [
        Row(
            name="paired vs naive",
            figure=f"{ratio:.2f}×",
            goal=f"≤ {goal}×",
            met=ratio <= goal,
            command=command_line("bench_paired", args, ["model", "device", "threads", "repeats", "steps", "size"]),
            details={
                "paired (one batched call, trace on)": spread(times["paired"]),
                "naive (two plain calls)": spread(times["naive"]),
                "max pixel difference paired vs naive": difference,
                "other processes' CPU use (cores)": round(load.other_cores, 2),
                "settings": f"{settings.steps} steps, {settings.width}×{settings.height}, {settings.scheduler}",
            },
        )
    ]


def main() -> None:
    model_benchmark_main(__doc__.splitlines()[0], run)


if __name__ == "__main__":
    main()
