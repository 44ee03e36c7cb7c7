"""Step scrubber: what one move of the step slider costs the server after a 150-step run (trace with push map).

Each move reads the stored trace by its id (every step's scalars, the shown step's arrays memory-mapped) and
draws the step view and marks the step on the stored curves, exactly as `handlers.show_step` does.
Goals (issue 9): < 0.3 s per move and < 50 MB resident memory added by scrubbing, whatever step is asked for.

    python -m benchmarks.bench_scrub
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    NEGATIVE,
    PROMPT,
    MachineLoad,
    Row,
    command_line,
    compare_as_the_app_does,
    median,
    model_benchmark_main,
    rss_bytes,
)
from negprompt_demo.page.jobs import JobFiles
from negprompt_demo.page.step_view import step_outputs
from negprompt_demo.page.tracefile import TraceStore
from negprompt_demo.settings import CompareSettings
from negprompt_demo.views.visualize import curves_picture

STEPS, MOVES = 150, 40
GOALS = {"seconds": 0.3, "rss_mib": 50}


def run(args: argparse.Namespace, pipe) -> list[Row]:
    folder = Path(tempfile.mkdtemp())
    (folder / "jobs").mkdir()
    store = TraceStore(folder / "runs")
    result = compare_as_the_app_does(pipe, CompareSettings(PROMPT, NEGATIVE, seed=1, steps=STEPS, push_map=True))
    trace_id = store.save(result.trace, curves_picture(result.trace), owner="bench")
    del result
    gc.collect()
    moves = [random.Random(0).randrange(STEPS) for _ in range(MOVES)]
    seconds, before = [], rss_bytes()
    with MachineLoad() as load:
        for index in moves:
            started = time.perf_counter()
            trace, curves = store.load(trace_id, index, owner="bench")
            step_outputs(trace, index, JobFiles(folder / "jobs"), curves)
            seconds.append(time.perf_counter() - started)
            del trace
    gc.collect()
    added_mib = (rss_bytes() - before) / 2**20
    per_move = median(seconds)
    return [
        Row(
            name=f"scrub: one step-slider move after a {STEPS}-step run",
            figure=f"{per_move:.3f} s, +{added_mib:.0f} MiB",
            goal=f"< {GOALS['seconds']} s, < {GOALS['rss_mib']} MiB",
            met=per_move < GOALS["seconds"] and added_mib < GOALS["rss_mib"],
            command=command_line("bench_scrub", args, ["model", "device", "threads"]),
            details={
                "moves": MOVES,
                "seconds per move (median, max)": f"{per_move:.3f}, {max(seconds):.3f}",
                "RSS before / after scrubbing": f"{before / 2**20:.0f} / {rss_bytes() / 2**20:.0f} MiB",
                "stored trace on disk": f"{sum(p.stat().st_size for p in folder.rglob('*.npy')) / 2**20:.1f} MiB",
                "other processes' CPU use (cores)": round(load.other_cores, 2),
            },
        )
    ]


def main() -> None:
    model_benchmark_main(__doc__.splitlines()[0], run)


if __name__ == "__main__":
    main()
