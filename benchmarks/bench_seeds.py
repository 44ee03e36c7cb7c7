"""Many seeds: what one seed of the many-seeds view costs next to one comparison, and how soon the first row shows.

The view samples 16 seeds × 3 columns (no negative, "…without X" in the prompt, the negative) at 20 steps, the
first seed alone and the rest in one call, exactly as `many_seeds.sample_grid` does for the page. A comparison is
timed the way the app runs it (trace with the push map and x0 pictures). Goals (issue 11): per seed less than one
comparison, first row ≤ 2 s and 16 seeds ≤ 10 s on 2 CPU cores (embedded model).

    python -m benchmarks.bench_seeds
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import (
    NEGATIVE,
    PROMPT,
    MachineLoad,
    Row,
    command_line,
    compare_as_the_app_does,
    median,
    model_benchmark_main,
    synchronize,
)
from negprompt_demo.sampling.engine import prepare
from negprompt_demo.sampling.many_seeds import new_grid, sample_grid
from negprompt_demo.settings import CompareSettings

SEEDS, STEPS = 16, 20
GOALS = {"first_row_s": 2.0, "total_s": 10.0, "per_seed_ratio": 1.0}


def run(args: argparse.Namespace, pipe) -> list[Row]:
    size = {"width": args.size, "height": args.size} if args.size else {}
    prepared = prepare(pipe, CompareSettings(PROMPT, NEGATIVE, seed=100, steps=STEPS, **size))
    settings = prepared.settings

    def grid_once() -> tuple[float, float]:
        started = time.perf_counter()
        first = []
        on_rows = lambda seeds, images: first.append(time.perf_counter() - started) if not first else None  # noqa: E731
        sample_grid(pipe, prepared, new_grid(settings, "bench", True), SEEDS, on_rows=on_rows)
        synchronize(pipe)
        return first[0], time.perf_counter() - started

    def compare_once() -> float:
        started = time.perf_counter()
        compare_as_the_app_does(pipe, settings)
        synchronize(pipe)
        return time.perf_counter() - started

    grid_once(), compare_once()  # warm-up
    grids, comparisons = [], []
    with MachineLoad() as load:
        for _ in range(args.repeats):
            grids.append(grid_once())
            comparisons.append(compare_once())
    first_row, total = median([g[0] for g in grids]), median([g[1] for g in grids])
    comparison = median(comparisons)
    ratio = total / SEEDS / comparison
    command = command_line("bench_seeds", args, ["model", "device", "threads", "size"])
    return [
        Row(
            name=f"many seeds: one seed of {SEEDS} × 3 columns vs one comparison ({STEPS} steps)",
            figure=f"{ratio:.2f}×",
            goal=f"< {GOALS['per_seed_ratio']:g}×",
            met=ratio < GOALS["per_seed_ratio"],
            command=command,
            details={"seconds per seed": f"{total / SEEDS:.3f}", "seconds per comparison": f"{comparison:.3f}"},
        ),
        Row(
            name=f"many seeds: first row, all {SEEDS} seeds",
            figure=f"{first_row:.2f} s, {total:.2f} s",
            goal=f"≤ {GOALS['first_row_s']:g} s, ≤ {GOALS['total_s']:g} s",
            met=first_row <= GOALS["first_row_s"] and total <= GOALS["total_s"],
            command=command,
            details={
                "repeats": args.repeats,
                "first row (each)": ", ".join(f"{g[0]:.2f}" for g in grids),
                "all seeds (each)": ", ".join(f"{g[1]:.2f}" for g in grids),
                "other processes' CPU use (cores)": round(load.other_cores, 2),
            },
        ),
    ]


def main() -> None:
    model_benchmark_main(__doc__.splitlines()[0], run)


if __name__ == "__main__":
    main()
