"""Load figure: 50 consecutive comparisons in one process, the way the app runs them (trace, pictures).
Resident memory after the first few vs after the last; goal: grows < 5 % (no leaked hooks, traces or tensors).

    python -m benchmarks.bench_memory
"""

from __future__ import annotations

import argparse
import gc

from benchmarks.common import (
    NEGATIVE,
    PROMPT,
    MachineLoad,
    Row,
    command_line,
    compare_as_the_app_does,
    model_benchmark_main,
    rss_bytes,
)
from negprompt_demo.settings import CompareSettings

RUNS, SETTLE = 50, 5
GOAL = 0.05


def run(args: argparse.Namespace, pipe) -> list[Row]:
    readings = []
    with MachineLoad() as load:
        for run_index in range(RUNS):
            settings = CompareSettings(
                PROMPT, f"{NEGATIVE} {run_index}", seed=run_index, steps=args.steps, push_map=run_index % 2 == 0
            )
            result = compare_as_the_app_does(pipe, settings)
            del result
            gc.collect()
            readings.append(rss_bytes())
    settled, last = readings[SETTLE - 1], readings[-1]
    growth = last / settled - 1
    return [
        Row(
            name=f"memory: RSS growth over comparisons {SETTLE}→{RUNS}",
            figure=f"{100 * growth:+.2f} %",
            goal=f"< {100 * GOAL:.0f} %",
            met=growth < GOAL,
            command=command_line("bench_memory", args, ["model", "device", "threads", "steps"]),
            details={
                "RSS after comparison 1": f"{readings[0] / 2**20:.0f} MiB",
                f"RSS after comparison {SETTLE}": f"{settled / 2**20:.0f} MiB",
                f"RSS after comparison {RUNS}": f"{last / 2**20:.0f} MiB",
                "peak of the 50 readings": f"{max(readings) / 2**20:.0f} MiB",
                "other processes' CPU use (cores)": round(load.other_cores, 2),
            },
        )
    ]


def main() -> None:
    model_benchmark_main(__doc__.splitlines()[0], run)


if __name__ == "__main__":
    main()
