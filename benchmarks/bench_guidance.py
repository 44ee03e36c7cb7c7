"""When and how strongly the negative acts: what the window and the strength cost (issue 10).

Both as ratios measured in one run, cases interleaved: a negative that starts at half the steps against one that
starts at once (the shared steps before the start are one run's UNet items, not two: goal ≤ 0.8×), and the
three-branch batch (strength ≠ 1: ε_∅ of the with-run as a fifth item in the same UNet call) against the plain
two-run batch (goal ≤ 1.5×). Run it on a model whose UNet dominates the step — the SD-1.5 architecture with random
weights (the embedded model's UNet costs the same at batch 2 and 4 on a CPU, so it cannot show a saving):

    python -m benchmarks.bench_guidance --model sd15-random --size 256 --steps 4 --repeats 1 --threads 1  # CPU
    python -m benchmarks.bench_guidance --model sd15-random --device cuda --size 512 --steps 30  # GPU
"""

from __future__ import annotations

import argparse

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
from negprompt_demo.sampling.engine import compare
from negprompt_demo.settings import CompareSettings

GOALS = {"late start": 0.8, "three-branch": 1.5}


def run(args: argparse.Namespace, pipe) -> list[Row]:
    settings = CompareSettings(
        PROMPT, NEGATIVE, seed=SEED, steps=args.steps, width=args.size, height=args.size, scheduler="Euler"
    )
    cases = {
        "start 0": lambda: compare(pipe, settings, trace=False),
        "start 0.5": lambda: compare(pipe, settings.replace(negative_start=0.5), trace=False),
        "strength 2 (three-branch)": lambda: compare(pipe, settings.replace(negative_strength=2.0), trace=False),
    }
    with MachineLoad() as load:
        times = time_interleaved(cases, args.repeats, sync=lambda: synchronize(pipe))
    base = median(times["start 0"])
    late, three = median(times["start 0.5"]) / base, median(times["strength 2 (three-branch)"]) / base
    command = command_line("bench_guidance", args, ["model", "device", "threads", "size", "steps", "repeats"])
    details = {name: spread(values) for name, values in times.items()}
    details["other processes' CPU use (cores)"] = round(load.other_cores, 2)
    return [
        Row("window: negative from half the steps vs from the start", f"{late:.2f}×", "≤ 0.8×", late <= 0.8, command,
            details),
        Row("strength ≠ 1: three-branch batch vs two-branch", f"{three:.2f}×", "≤ 1.5×", three <= 1.5, command, {}),
    ]  # fmt: skip


def main() -> None:
    model_benchmark_main(__doc__.splitlines()[0], run)


if __name__ == "__main__":
    main()
