"""Benchmark 5: how a comparison's time grows with the number of steps (10/25/50) and with the image size
(half, native, double the model's native size), with the trace on.

Time ≈ fixed part + steps × per-step part, so we fit that line; for size we report the exponent k in
time ∝ pixels^k between sizes (k = 1: linear in pixels, as convolutions are; self-attention over the latent
pixels is quadratic and pushes k above 1 at large sizes).

    python -m benchmarks.bench_scaling
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from benchmarks.common import (
    NEGATIVE,
    PROMPT,
    SEED,
    MachineLoad,
    Row,
    command_line,
    median,
    model_benchmark_main,
    synchronize,
    time_interleaved,
)
from negprompt_demo.models.families import family_of
from negprompt_demo.sampling.engine import compare
from negprompt_demo.settings import CompareSettings, size_limits

STEP_COUNTS = (10, 25, 50)


def run(args: argparse.Namespace, pipe) -> list[Row]:
    native = family_of(pipe).native_size(pipe)
    low, high = size_limits(native)
    sizes = sorted({max(low, native // 2 // 8 * 8), native, min(high, native * 2)})
    base = CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=args.steps, width=native, height=native)

    cases = {f"{steps} steps": base.replace(steps=steps) for steps in STEP_COUNTS}
    cases.update({f"{size} px": base.replace(width=size, height=size) for size in sizes if size != native})
    runs = {name: (lambda settings=settings: compare(pipe, settings, trace=True)) for name, settings in cases.items()}
    with MachineLoad() as load:
        times = time_interleaved(runs, repeats=args.repeats, sync=lambda: synchronize(pipe))
    medians = {name: median(values) for name, values in times.items()}
    medians[f"{native} px"] = medians[f"{args.steps} steps"] if args.steps in STEP_COUNTS else None

    per_step, fixed = np.polyfit(STEP_COUNTS, [medians[f"{steps} steps"] for steps in STEP_COUNTS], 1)
    step_figure = " / ".join(f"{medians[f'{steps} steps']:.2f}" for steps in STEP_COUNTS) + " s"
    command = command_line("bench_scaling", args, ["model", "device", "threads", "repeats", "steps"])
    rows = [
        Row(
            name=f"scaling: {'/'.join(map(str, STEP_COUNTS))} steps at {native} px",
            figure=step_figure,
            goal="reported only",
            met=None,
            command=command,
            details={
                "fit": f"{fixed:.3f} s + {1000 * per_step:.1f} ms × steps (linear: O(steps))",
                "other processes' CPU use (cores)": round(load.other_cores, 2),
            },
        )
    ]
    if medians[f"{native} px"] is not None:
        shown = [size for size in sizes if medians.get(f"{size} px") is not None]
        size_figure = " / ".join(f"{medians[f'{size} px']:.2f}" for size in shown) + " s"
        exponents = []
        for a, b in zip(shown, shown[1:]):
            k = math.log(medians[f"{b} px"] / medians[f"{a} px"]) / math.log((b * b) / (a * a))
            exponents.append(f"{a}→{b} px: time ∝ pixels^{k:.2f}")
        rows.append(
            Row(
                name=f"scaling: {'/'.join(map(str, shown))} px at {args.steps} steps",
                figure=size_figure,
                goal="reported only",
                met=None,
                command=command,
                details={"exponents": exponents},
            )
        )
    return rows


def main() -> None:
    model_benchmark_main(__doc__.splitlines()[0], run)


if __name__ == "__main__":
    main()
