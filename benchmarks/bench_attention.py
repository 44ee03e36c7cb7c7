"""Benchmark 8: what the attention maps cost. The traced paired call with the maps vs without (goal ≤ 25 % on the
embedded model), the maps' memory per run, and a check that the images are the same either way.

With the maps off the engine runs the same code as before they existed (no processor is swapped: a null context
stands where the recording one would be), so "off" is the trace's own time (benchmark 2).

    python -m benchmarks.bench_attention
    python -m benchmarks.bench_attention --model sd15-random --device cuda --size 512 --steps 30   # GPU, SD-1.5
"""

from __future__ import annotations

import argparse

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
    spread,
    synchronize,
    time_interleaved,
)
from negprompt_demo.sampling.engine import compare, prepare
from negprompt_demo.settings import CompareSettings

ATTENTION_GOAL = 0.25


def run(args: argparse.Namespace, pipe) -> list[Row]:
    size = {"width": args.size, "height": args.size}
    prepared = prepare(pipe, CompareSettings(PROMPT, NEGATIVE, seed=SEED, steps=args.steps, **size))
    settings = prepared.settings
    with_maps = settings.replace(attention_maps=True)
    off, on = compare(pipe, settings), compare(pipe, with_maps)
    difference = max(
        int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())
        for a, b in ((off.without_negative, on.without_negative), (off.with_negative, on.with_negative))
    )
    kept = [step.attention_maps for step in on.trace.steps if step.attention_maps is not None]
    map_bytes = sum(maps.numel() * maps.element_size() for maps in kept)
    cases = {
        "maps off": lambda: compare(pipe, settings, trace=True),
        "maps on": lambda: compare(pipe, with_maps, trace=True),
    }
    with MachineLoad() as load:
        times = time_interleaved(cases, repeats=args.repeats, sync=lambda: synchronize(pipe))
    overhead = median(times["maps on"]) / median(times["maps off"]) - 1
    command = command_line("bench_attention", args, ["model", "device", "threads", "repeats", "steps", "size"])
    plan = on.trace.attention
    details = {name: spread(values) for name, values in times.items()}
    details["words mapped"] = ", ".join(f"{word.source}:{word.text}" for word in plan.words)
    shape = f"{len(kept)} steps × {len(plan.words)} words × {plan.map_size[0]}×{plan.map_size[1]}"
    details["maps kept"] = f"{shape} = {map_bytes / 2**20:.2f} MiB"
    details["largest image difference on/off (0-255)"] = difference
    details["other processes' CPU use (cores)"] = round(load.other_cores, 2)
    goal = f"≤ {100 * ATTENTION_GOAL:.0f} %"
    return [
        Row("attention maps overhead", f"{100 * overhead:+.1f} %", goal, overhead <= ATTENTION_GOAL, command, details),
        Row("attention maps: images on vs off", f"max {difference}/255", "≤ 2/255", difference <= 2, command),
    ]


def main() -> None:
    model_benchmark_main(__doc__.splitlines()[0], run)


if __name__ == "__main__":
    main()
